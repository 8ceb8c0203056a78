"""LPBA40 loader: preprocessed NIfTI layout and the LONI Analyze layout, on fixtures."""

from __future__ import annotations

import gzip
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from scipy.ndimage import zoom

from ofg.data.fixtures import make_lpba_fixture
from ofg.data.labels import LPBA_LABEL_NAMES, LPBA_LABELS
from ofg.data.lpba import crop_or_pad, open_lpba, read_analyze
from ofg.io import DataError, save_nifti
from filetree import nii, tree_state

SHAPE = (10, 12, 8)
PAPER_LPBA_LABELS = [
    *range(21, 35),
    *range(41, 51),
    *range(61, 69),
    *range(81, 93),
    101,
    102,
    121,
    122,
    *range(161, 167),
]


def minmax(a: np.ndarray) -> np.ndarray:
    a = a.astype(np.float64)
    return (a - a.min()) / (a.max() - a.min())


@pytest.fixture(scope="module")
def pre_root(tmp_path_factory) -> Path:
    return make_lpba_fixture(
        tmp_path_factory.mktemp("lpba"), layout="preprocessed", shape=SHAPE, n_train=3, n_test=2
    )


@pytest.fixture(scope="module")
def loni_root(tmp_path_factory) -> Path:
    return make_lpba_fixture(tmp_path_factory.mktemp("loni"), layout="loni", shape=SHAPE, n_train=2, n_test=1)


def test_label_list():
    assert list(LPBA_LABELS) == PAPER_LPBA_LABELS and len(LPBA_LABELS) == 54
    assert set(LPBA_LABELS) | {181, 182} == set(LPBA_LABEL_NAMES)


def test_preprocessed_semantics(pre_root):
    ds = open_lpba(pre_root, image_size=None, normalize=True)
    assert ds.layout == "preprocessed" and ds.image_size == SHAPE
    # the reference protocol: no flips (its LPBA dataset ignores transforms), one direction
    assert not ds.augment_flips and not ds.bidirectional and ds.labels == PAPER_LPBA_LABELS
    assert ds.pairs("train").keys == (("S11", "S01"), ("S12", "S01"), ("S13", "S01"))
    assert ds.pairs("test").keys == (("S02", "S01"), ("S03", "S01"))
    assert ds.pairs("val").keys == ds.pairs("test").keys and "val = the test pairs" in ds.notes["val"]
    fixed = nii(pre_root / "fixed.nii.gz")
    fixed_label = nii(pre_root / "label/S01.delineation.structure.label.nii.gz")
    for (subject, _), pair in zip(ds.pairs("train").keys, ds.pairs("train")):
        np.testing.assert_allclose(pair.fixed, minmax(fixed), atol=1e-6)  # fixed is the atlas S01
        np.testing.assert_array_equal(pair.fixed_label, fixed_label)
        moving = nii(pre_root / f"train/{subject}.delineation.skullstripped.nii.gz")
        np.testing.assert_allclose(pair.moving, minmax(moving), atol=1e-6)
        np.testing.assert_array_equal(
            pair.moving_label, nii(pre_root / f"label/{subject}.delineation.structure.label.nii.gz")
        )
        assert pair.moving.dtype == np.float32 and np.issubdtype(pair.moving_label.dtype, np.integer)
        assert set(np.unique(pair.moving_label)) <= set(LPBA_LABEL_NAMES) | {0}


def test_preprocessed_reads_raw_intensities_by_default(pre_root):
    # The reference reads the preprocessed files as raw arrays; the fixture's images span [0, 200].
    fixed = nii(pre_root / "fixed.nii.gz")
    moving = nii(pre_root / "test/S02.delineation.skullstripped.nii.gz")
    for ds in (open_lpba(pre_root, image_size=None), open_lpba(pre_root, image_size=None, normalize=False)):
        pair = ds.pairs("test")[0]
        np.testing.assert_array_equal(pair.fixed, fixed)
        np.testing.assert_array_equal(pair.moving, moving)
        assert pair.moving.dtype == np.float32 and pair.moving.max() > 1.0


def test_preprocessed_paper_size_and_val_folder(pre_root, tmp_path):
    assert open_lpba(pre_root).image_size == (160, 192, 160)
    with pytest.raises(DataError, match=r"wrong image size.*expected \(160, 192, 160\), found \(10, 12, 8\)"):
        open_lpba(pre_root).pairs("test")[0]
    root = shutil.copytree(pre_root, tmp_path / "copy")
    (root / "val").mkdir()
    shutil.move(root / "train" / "S13.delineation.skullstripped.nii.gz", root / "val")
    ds = open_lpba(root, image_size=None)
    assert ds.pairs("val").keys == (("S13", "S01"),) and len(ds.pairs("train")) == 2


def test_preprocessed_bad_inputs(pre_root, tmp_path):
    with pytest.raises(DataError, match="LPBA40 data root not found"):
        open_lpba(tmp_path / "none")
    root = shutil.copytree(pre_root, tmp_path / "copy")
    (root / "label" / "S12.delineation.structure.label.nii.gz").unlink()
    with pytest.raises(
        DataError, match="label file of S12 not found: .*S12.delineation.structure.label.nii.gz"
    ):
        open_lpba(root, image_size=None)
    shutil.copy(pre_root / "label" / "S12.delineation.structure.label.nii.gz", root / "label")
    shutil.rmtree(root / "test")
    with pytest.raises(DataError, match="LPBA test folder not found"):
        open_lpba(root, image_size=None)
    root = shutil.copytree(pre_root, tmp_path / "copy2")
    save_nifti(root / "train" / "S11.delineation.skullstripped.nii.gz", np.full(SHAPE, np.nan, np.float32))
    with pytest.raises(DataError, match="S11.delineation.skullstripped.nii.gz: image holds"):
        open_lpba(root, image_size=None).pairs("train")[0]
    (root / "fixed.nii.gz").unlink()
    with pytest.raises(DataError, match="neither fixed.nii.gz"):
        open_lpba(root, image_size=None)


def test_crop_or_pad_closed_form():
    a = np.arange(5 * 4 * 3).reshape(5, 4, 3)
    out = crop_or_pad(a, (3, 6, 2))
    # axis 0: crop 2 -> drop one at each end; axis 1: pad 2 -> one zero each side;
    # axis 2: crop 1 -> the odd voxel is dropped at the end.
    np.testing.assert_array_equal(out[:, 1:5, :], a[1:4, :, 0:2])
    assert out.shape == (3, 6, 2) and not out[:, 0].any() and not out[:, 5].any()
    odd = crop_or_pad(np.ones((1, 1, 2)), (1, 1, 5))
    np.testing.assert_array_equal(odd[0, 0], [0, 1, 1, 0, 0])  # odd excess goes to the end


def test_read_analyze_matches_nibabel(loni_root, tmp_path):
    folder = loni_root / "LPBA40" / "delineation_space" / "S01"
    gz = folder / "S01.delineation.skullstripped.img.gz"
    data, zooms = read_analyze(gz)
    # Oracle: nibabel's own Analyze reader on an uncompressed copy of the same pair.
    plain = tmp_path / "S01.delineation.skullstripped.img"
    plain.write_bytes(gzip.decompress(gz.read_bytes()))
    shutil.copy(folder / "S01.delineation.skullstripped.hdr", tmp_path)
    reference = nib.load(str(plain))
    np.testing.assert_array_equal(data, np.asarray(reference.dataobj))
    assert zooms == tuple(float(z) for z in reference.header.get_zooms()[:3]) == (0.9375, 1.5, 0.9375)


def test_loni_semantics(loni_root):
    ds = open_lpba(loni_root, image_size=SHAPE)  # min-max rescaled by default (scanner units)
    assert ds.layout == "loni" and ds.image_size == SHAPE and ds.spacing == (1.0, 1.0, 1.0)
    assert not ds.augment_flips and not ds.bidirectional
    assert ds.pairs("train").keys == (("S11", "S01"), ("S12", "S01"))
    assert ds.pairs("test").keys == ds.pairs("val").keys == (("S02", "S01"),)
    pair = ds.pairs("train")[1]
    folder = loni_root / "LPBA40" / "delineation_space"
    for array, subject, kind, order in (
        (pair.moving_label, "S12", "structure.label", 0),
        (pair.fixed_label, "S01", "structure.label", 0),
        (pair.moving, "S12", "skullstripped", 1),
    ):
        raw, zooms = read_analyze(folder / subject / f"{subject}.delineation.{kind}.img.gz")
        size = [round(n * z) for n, z in zip(raw.shape, zooms)]
        resampled = zoom(
            raw.astype(np.float32 if order else raw.dtype),
            [s / n for s, n in zip(size, raw.shape)],
            order=order,
            mode="nearest",
            grid_mode=True,
        )
        expected = crop_or_pad(resampled, SHAPE)
        if order:
            expected = minmax(expected)
        np.testing.assert_allclose(array, expected, atol=1e-5)
    assert set(np.unique(pair.moving_label)) - {0} <= set(LPBA_LABEL_NAMES)
    assert pair.moving.min() == 0.0 and pair.moving.max() == 1.0
    # image_size=None keeps the resampled size of S01; the paper size pads the small fixture.
    raw, zooms = read_analyze(folder / "S01" / "S01.delineation.skullstripped.img.gz")
    assert open_lpba(loni_root, image_size=None).image_size == tuple(
        round(n * z) for n, z in zip(raw.shape, zooms)
    )
    assert open_lpba(loni_root).pairs("test")[0].moving.shape == (160, 192, 160)


def test_loni_plain_img_and_root_variants(tmp_path):
    root = make_lpba_fixture(
        tmp_path / "l", layout="loni", shape=(6, 6, 6), n_train=1, n_test=1, loni_gzip=False
    )
    folder = root / "LPBA40" / "delineation_space"
    assert (folder / "S01" / "S01.delineation.skullstripped.img").is_file()
    a = open_lpba(root, image_size=(6, 6, 6)).pairs("train")[0]
    b = open_lpba(folder, image_size=(6, 6, 6)).pairs("train")[0]
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x, y)
    (folder / "S11" / "S11.delineation.structure.label.img").unlink()
    with pytest.raises(DataError, match="LPBA LONI file not found: .*S11.delineation.structure.label"):
        open_lpba(root)


def test_nothing_written_under_root(pre_root, loni_root):
    for root, size in ((pre_root, None), (loni_root, SHAPE)):
        before = tree_state(root)
        ds = open_lpba(root, image_size=size)
        for split in ("train", "val", "test"):
            list(ds.pairs(split))
        assert tree_state(root) == before
