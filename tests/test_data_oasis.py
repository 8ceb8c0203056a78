"""OASIS loader: Learn2Reg NIfTI layout and TransMorph pkl layout, on fixtures in the real layouts."""

from __future__ import annotations

import glob
import json
import pickle
import random
from pathlib import Path

import numpy as np
import pytest

from ofg.data.fixtures import make_oasis_fixture
from ofg.data.oasis import open_oasis
from ofg.data.pairing import reference_epoch_pairs
from ofg.io import DataError, save_nifti
from filetree import nii, tree_state

SHAPE = (10, 12, 8)


@pytest.fixture(scope="module")
def nifti_root(tmp_path_factory) -> Path:
    return make_oasis_fixture(
        tmp_path_factory.mktemp("oasis"), layout="nifti", shape=SHAPE, n_train=4, n_val=2, n_test=1
    )


@pytest.fixture(scope="module")
def pkl_root(tmp_path_factory) -> Path:
    return make_oasis_fixture(
        tmp_path_factory.mktemp("oasis_pkl"), layout="pkl", shape=SHAPE, n_train=5, n_val=2
    )


def test_fixture_json_has_learn2reg_schema(nifti_root):
    content = json.loads((nifti_root / "OASIS_dataset.json").read_text())
    for key in ("training", "registration_val", "registration_test", "numTraining", "tensorImageShape"):
        assert key in content
    assert content["training"][0] == {
        "image": "./imagesTr/OASIS_0001_0000.nii.gz",
        "label": "./labelsTr/OASIS_0001_0000.nii.gz",
        "mask": "./masksTr/OASIS_0001_0000.nii.gz",
    }
    assert content["registration_val"][0] == {
        "fixed": "./imagesTr/OASIS_0005_0000.nii.gz",
        "moving": "./imagesTr/OASIS_0006_0000.nii.gz",
    }


def test_nifti_layout_semantics(nifti_root):
    ds = open_oasis(nifti_root, image_size=None)
    assert ds.layout == "learn2reg-nifti" and ds.image_size == SHAPE
    assert ds.labels == list(range(1, 36)) and ds.bidirectional and not ds.augment_flips
    val = ds.pairs("val")
    assert val.keys == (("OASIS_0006", "OASIS_0005"), ("OASIS_0007", "OASIS_0006"))  # (moving, fixed)
    pair = val[0]
    np.testing.assert_array_equal(pair.moving, nii(nifti_root / "imagesTr/OASIS_0006_0000.nii.gz"))
    np.testing.assert_array_equal(pair.fixed, nii(nifti_root / "imagesTr/OASIS_0005_0000.nii.gz"))
    np.testing.assert_array_equal(pair.moving_label, nii(nifti_root / "labelsTr/OASIS_0006_0000.nii.gz"))
    np.testing.assert_array_equal(pair.fixed_label, nii(nifti_root / "labelsTr/OASIS_0005_0000.nii.gz"))
    assert pair.moving.dtype == np.float32 and np.issubdtype(pair.moving_label.dtype, np.integer)
    assert set(np.unique(pair.moving_label)) <= set(range(36))
    # Train: all unordered pairs of the subjects that are in no val pair.
    train = ds.pairs("train")
    subjects = [f"OASIS_{k:04d}" for k in range(1, 5)]
    assert train.keys == tuple((a, b) for i, a in enumerate(subjects) for b in subjects[i + 1 :])
    # The public test labels are withheld: test falls back to the val pairs, and says so.
    assert ds.pairs("test").keys == val.keys and "registration_val" in ds.notes["test"]


def test_nifti_labelled_test_pairs_are_used(tmp_path):
    root = make_oasis_fixture(tmp_path / "o", shape=(6, 6, 6), n_train=3, n_val=1, n_test=1)
    for image in (root / "imagesTs").glob("*.nii.gz"):
        save_nifti(root / "labelsTs" / image.name, np.ones((6, 6, 6), np.int16))
    ds = open_oasis(root, image_size=None)
    assert ds.pairs("test").keys == (("OASIS_0007", "OASIS_0006"),)
    assert ds.pairs("test")[0].fixed_label.sum() == 216


def test_nifti_axes_option(nifti_root):
    ds = open_oasis(nifti_root, image_size=None, axes=(0, 2, 1))
    assert ds.image_size == (SHAPE[0], SHAPE[2], SHAPE[1])
    pair = ds.pairs("train")[0]
    np.testing.assert_array_equal(
        pair.moving, nii(nifti_root / "imagesTr/OASIS_0001_0000.nii.gz").transpose(0, 2, 1)
    )
    # The paper size is the release's (160, 224, 192), permuted by axes.
    assert open_oasis(nifti_root).image_size == (160, 224, 192)
    assert open_oasis(nifti_root, axes=(0, 2, 1)).image_size == (160, 192, 224)
    with pytest.raises(
        DataError,
        match=r"OASIS_0001_0000.nii.gz: wrong image size.*expected \(160, 224, 192\), found \(10, 12, 8\)",
    ):
        open_oasis(nifti_root).pairs("train")[0]
    with pytest.raises(ValueError, match="permutation"):
        open_oasis(nifti_root, axes=(0, 0, 1))


def test_pkl_layout_semantics(pkl_root):
    ds = open_oasis(pkl_root, image_size=None)
    assert ds.layout == "transmorph-pkl" and ds.image_size == SHAPE and ds.bidirectional
    assert len(ds.pairs("train")) == 10  # C(5, 2)
    val_file = sorted((pkl_root / "Val").glob("*.pkl"))[0]
    with open(val_file, "rb") as fh:
        x, y, x_seg, y_seg = pickle.load(fh)
    pair = ds.pairs("val")[0]
    assert ds.pairs("val").keys[0] == (f"{val_file.stem}/x", f"{val_file.stem}/y")
    for got, want in zip(pair, (x, y, x_seg, y_seg)):
        np.testing.assert_array_equal(got, want)
    assert ds.pairs("test").keys == ds.pairs("val").keys and "test = the Val/ pairs" in ds.notes["test"]
    with open(pkl_root / "Train" / "subject_0.pkl", "rb") as fh:
        image, _ = pickle.load(fh)
    np.testing.assert_array_equal(ds.pairs("train")[0].moving, image)


def test_pkl_reference_sampling(pkl_root):
    ds = open_oasis(pkl_root, image_size=None, max_train=3, seed=42)
    paths = sorted(str(p) for p in (pkl_root / "Train").glob("*.pkl"))
    random.seed(42)
    chosen = sorted(Path(p).stem for p in random.sample(paths, 3))
    assert ds.pairs("train").keys == ((chosen[0], chosen[1]), (chosen[0], chosen[2]), (chosen[1], chosen[2]))


def test_nifti_max_train_samples_the_training_subjects(nifti_root):
    ds = open_oasis(nifti_root, image_size=None, max_train=3, seed=7)
    keys = [f"OASIS_{k:04d}" for k in range(1, 5)]
    chosen = sorted(random.Random(7).sample(keys, 3))
    assert ds.pairs("train").keys == ((chosen[0], chosen[1]), (chosen[0], chosen[2]), (chosen[1], chosen[2]))


# ---- the reference pairing: new partners every epoch ------------------------------------------


def test_pkl_reference_epochs(pkl_root):
    ds = open_oasis(pkl_root, image_size=None, train_pairs="reference")
    stems = [f"subject_{k}" for k in range(5)]  # fewer than 200 subjects: all of them
    assert ds.train_pairing == "reference" and "reference epochs: 5 of 5" in ds.notes["train"]
    assert "10 steps per epoch" in ds.notes["train"]
    for epoch in range(3):
        pairs = ds.epoch_pairs("train", epoch)
        assert pairs.keys == tuple(reference_epoch_pairs(stems, epoch, seed=42))
        assert [m for m, _ in pairs.keys] == stems and all(m != f for m, f in pairs.keys)
    assert ds.pairs("train").keys == ds.epoch_pairs("train", 0).keys
    assert len({ds.epoch_pairs("train", e).keys for e in range(10)}) > 1  # partners change
    assert ds.epoch_pairs("val", 3).keys == ds.pairs("val").keys  # other splits stay fixed
    moving, fixed = ds.epoch_pairs("train", 1).keys[2]
    pair = ds.epoch_pairs("train", 1)[2]
    for name, image, label in ((moving, pair.moving, pair.moving_label), (fixed, pair.fixed, pair.fixed_label)):
        with open(pkl_root / "Train" / f"{name}.pkl", "rb") as fh:
            want_image, want_label = pickle.load(fh)
        np.testing.assert_array_equal(image, want_image)
        np.testing.assert_array_equal(label, want_label)


def test_pkl_reference_epochs_sample_200_subjects_as_the_reference(tmp_path):
    # 203 Train subjects: the reference samples 200 with random.seed(42) from the sorted paths, and
    # an epoch is 200 pairs, trained both ways: 400 steps.
    root = make_oasis_fixture(tmp_path / "o", layout="pkl", shape=(2, 2, 2), n_train=203, n_val=1)
    ds = open_oasis(root, image_size=None, train_pairs="reference")
    paths = sorted(glob.glob(str(root / "Train") + "/*.pkl"))
    random.seed(42)
    chosen = sorted(random.sample(paths, 200))
    pairs = ds.epoch_pairs("train", 4)
    assert [m for m, _ in pairs.keys] == [Path(p).stem for p in chosen]
    assert len(pairs) * (2 if ds.bidirectional else 1) == 400
    assert "400 steps per epoch" in ds.notes["train"]


def test_nifti_reference_epochs(nifti_root):
    ds = open_oasis(nifti_root, image_size=None, train_pairs="reference")
    keys = [f"OASIS_{k:04d}" for k in range(1, 5)]
    assert ds.epoch_pairs("train", 2).keys == tuple(reference_epoch_pairs(keys, 2, seed=42))
    moving, fixed = ds.epoch_pairs("train", 2).keys[0]
    pair = ds.epoch_pairs("train", 2)[0]
    np.testing.assert_array_equal(pair.moving, nii(nifti_root / f"imagesTr/{moving}_0000.nii.gz"))
    np.testing.assert_array_equal(pair.fixed_label, nii(nifti_root / f"labelsTr/{fixed}_0000.nii.gz"))
    default = open_oasis(nifti_root, image_size=None)
    assert default.train_pairing == "all" and default.epoch_pairs("train", 5).keys == default.pairs("train").keys
    with pytest.raises(ValueError, match="train_pairs must be one of"):
        open_oasis(nifti_root, image_size=None, train_pairs="random")


def test_layout_detection_and_missing(tmp_path, nifti_root, pkl_root):
    assert open_oasis(nifti_root, image_size=None).layout == "learn2reg-nifti"
    assert open_oasis(pkl_root, layout="pkl", image_size=None).layout == "transmorph-pkl"
    with pytest.raises(DataError, match="OASIS data root not found"):
        open_oasis(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="neither OASIS_dataset.json"):
        open_oasis(tmp_path / "empty")
    with pytest.raises(ValueError, match="unknown OASIS layout"):
        open_oasis(nifti_root, layout="zip")


def test_json_entry_pointing_to_missing_file(tmp_path):
    root = make_oasis_fixture(tmp_path / "o", shape=(6, 6, 6), n_train=3, n_val=1, n_test=0)
    (root / "labelsTr" / "OASIS_0002_0000.nii.gz").unlink()
    with pytest.raises(
        DataError,
        match=r"OASIS_dataset.json: entry training\[1\] points to a missing label file: .*OASIS_0002_0000",
    ):
        open_oasis(root, image_size=None)


def test_malformed_json(tmp_path):
    root = make_oasis_fixture(tmp_path / "o", shape=(6, 6, 6), n_train=3, n_val=1, n_test=0)
    (root / "OASIS_dataset.json").write_text("{not json")
    with pytest.raises(DataError, match="OASIS_dataset.json: cannot parse as JSON"):
        open_oasis(root, image_size=None)
    (root / "OASIS_dataset.json").write_text('{"training": []}')
    with pytest.raises(DataError, match="registration_val"):
        open_oasis(root, image_size=None)


def test_corrupt_nifti_and_bad_volumes(tmp_path):
    root = make_oasis_fixture(tmp_path / "o", shape=(6, 6, 6), n_train=3, n_val=1, n_test=0)
    ds = open_oasis(root, image_size=None)
    image = root / "imagesTr" / "OASIS_0001_0000.nii.gz"
    image.write_bytes(b"garbage")
    with pytest.raises(DataError, match="OASIS_0001_0000.nii.gz: cannot read"):
        ds.pairs("train")[0]
    save_nifti(image, np.full((6, 6, 6), np.inf, np.float32))
    with pytest.raises(DataError, match="OASIS_0001_0000.nii.gz: image holds 216 NaN/Inf"):
        ds.pairs("train")[0]
    save_nifti(image, np.zeros((6, 6, 6), np.float32))
    save_nifti(root / "labelsTr" / "OASIS_0001_0000.nii.gz", np.zeros((6, 6, 7), np.int16))
    with pytest.raises(DataError, match=r"labelsTr/OASIS_0001_0000.nii.gz: label grid \(6, 6, 7\) differs"):
        ds.pairs("train")[0]


def test_bad_pkl_files(tmp_path):
    root = make_oasis_fixture(tmp_path / "o", layout="pkl", shape=(5, 5, 5), n_train=2, n_val=1)
    val = next((root / "Val").glob("*.pkl"))
    val.write_bytes(pickle.dumps((np.zeros((5, 5, 5)), np.zeros((5, 5, 5)))))
    ds = open_oasis(root, image_size=None)
    with pytest.raises(DataError, match=r"p_0438_0439.pkl: expected a pickled \(x, y, x_seg, y_seg\)"):
        ds.pairs("val")[0]
    for p in (root / "Val").glob("*"):
        p.unlink()
    with pytest.raises(DataError, match="OASIS val folder holds no .pkl files"):
        open_oasis(root, image_size=None)


def test_nothing_written_under_root(nifti_root, pkl_root):
    for root in (nifti_root, pkl_root):
        before = tree_state(root)
        ds = open_oasis(root, image_size=None)
        for split in ("train", "val", "test"):
            list(ds.pairs(split))
        assert tree_state(root) == before
