"""AbdomenCTCT loader (Learn2Reg 2022 layout) on a fixture in the real layout."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from ofg.data.abdomen import open_abdomen
from ofg.data.fixtures import make_abdomen_fixture
from ofg.data.labels import ABDOMEN_LABEL_NAMES
from ofg.io import DataError, save_nifti
from filetree import nii, tree_state

SHAPE = (8, 10, 12)


@pytest.fixture(scope="module")
def root(tmp_path_factory) -> Path:
    return make_abdomen_fixture(tmp_path_factory.mktemp("abd"), shape=SHAPE, n_subjects=7)


def test_label_names():
    assert list(ABDOMEN_LABEL_NAMES) == list(range(1, 14))
    assert ABDOMEN_LABEL_NAMES[1] == "spleen" and ABDOMEN_LABEL_NAMES[6] == "liver"
    assert (
        ABDOMEN_LABEL_NAMES[10] == "portal and splenic vein"
        and ABDOMEN_LABEL_NAMES[13] == "right adrenal gland"
    )


def test_semantics(root):
    ds = open_abdomen(root, image_size=None)
    assert ds.image_size == SHAPE and ds.spacing == (2.0, 2.0, 2.0)
    assert ds.labels == list(range(1, 14)) and ds.bidirectional and not ds.augment_flips
    # Val: all pairs of subjects 1, 4, 7 (fixed earlier, moving later); keys are (moving, fixed).
    assert ds.pairs("val").keys == (
        ("AbdomenCTCT_0004", "AbdomenCTCT_0001"),
        ("AbdomenCTCT_0007", "AbdomenCTCT_0001"),
        ("AbdomenCTCT_0007", "AbdomenCTCT_0004"),
    )
    subjects = ["AbdomenCTCT_0002", "AbdomenCTCT_0003", "AbdomenCTCT_0005", "AbdomenCTCT_0006"]
    assert ds.pairs("train").keys == tuple((a, b) for i, a in enumerate(subjects) for b in subjects[i + 1 :])
    assert ds.pairs("test").keys == ds.pairs("val").keys
    pair = ds.pairs("val")[1]
    hu_moving = nii(root / "imagesTr/AbdomenCTCT_0007_0000.nii.gz")
    assert hu_moving.min() < -900 and hu_moving.max() > 900  # the fixture is in HU
    np.testing.assert_allclose(pair.moving, hu_moving / 500.0, rtol=1e-6)  # HU / 500
    np.testing.assert_allclose(
        pair.fixed, nii(root / "imagesTr/AbdomenCTCT_0001_0000.nii.gz") / 500.0, rtol=1e-6
    )
    np.testing.assert_array_equal(pair.moving_label, nii(root / "labelsTr/AbdomenCTCT_0007_0000.nii.gz"))
    assert pair.moving.dtype == np.float32 and set(np.unique(pair.fixed_label)) <= set(range(14))
    scaled = open_abdomen(root, image_size=None, intensity_scale=1000.0).pairs("val")[1]
    np.testing.assert_allclose(scaled.moving, hu_moving / 1000.0, rtol=1e-6)


def test_paper_size(root):
    ds = open_abdomen(root)
    assert ds.image_size == (192, 160, 256)
    with pytest.raises(
        DataError,
        match=r"AbdomenCTCT_0002_0000.nii.gz: wrong image size.*expected \(192, 160, 256\), found \(8, 10, 12\)",
    ):
        ds.pairs("train")[0]


def test_bad_inputs(tmp_path):
    with pytest.raises(DataError, match="AbdomenCTCT data root not found"):
        open_abdomen(tmp_path / "none")
    root = make_abdomen_fixture(tmp_path / "a", shape=(5, 5, 5), n_subjects=4)
    content = json.loads((root / "AbdomenCTCT_dataset.json").read_text())
    content["registration_val"][0]["moving"] = "./imagesTr/AbdomenCTCT_0099_0000.nii.gz"
    (root / "AbdomenCTCT_dataset.json").write_text(json.dumps(content))
    with pytest.raises(
        DataError,
        match=r"registration_val\[0\].moving points to a missing image file: .*AbdomenCTCT_0099_0000",
    ):
        open_abdomen(root, image_size=None)
    (root / "AbdomenCTCT_dataset.json").unlink()
    with pytest.raises(DataError, match="Learn2Reg dataset JSON not found: .*AbdomenCTCT_dataset.json"):
        open_abdomen(root, image_size=None)
    with pytest.raises(ValueError, match="intensity_scale"):
        open_abdomen(root, intensity_scale=0)


def test_nan_and_grid_errors(tmp_path):
    root = make_abdomen_fixture(tmp_path / "a", shape=(5, 5, 5), n_subjects=4)
    ds = open_abdomen(root, image_size=None)
    image = root / "imagesTr" / "AbdomenCTCT_0002_0000.nii.gz"
    bad = np.zeros((5, 5, 5), np.float32)
    bad[1, 2, 3] = np.nan
    save_nifti(image, bad)
    with pytest.raises(DataError, match="AbdomenCTCT_0002_0000.nii.gz: image holds 1 NaN/Inf"):
        ds.pairs("train")[0]
    save_nifti(image, np.zeros((5, 5, 6), np.float32))
    with pytest.raises(DataError, match=r"expected \(5, 5, 5\), found \(5, 5, 6\)"):
        ds.pairs("train")[0]


def test_nothing_written_under_root(root):
    before = tree_state(root)
    ds = open_abdomen(root, image_size=None)
    for split in ("train", "val", "test"):
        list(ds.pairs(split))
    assert tree_state(root) == before
