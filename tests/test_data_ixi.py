"""IXI loader (TransMorph pkl release) on a fixture in the real layout."""

from __future__ import annotations

import pickle
import random
from pathlib import Path

import numpy as np
import pytest

from ofg.data import open_dataset
from ofg.data.fixtures import make_ixi_fixture
from ofg.data.ixi import open_ixi
from ofg.data.labels import (
    IXI_FREESURFER_TABLE,
    IXI_VOI_FREESURFER_IDS,
    IXI_VOI_INDICES,
    map_freesurfer_to_ixi,
)
from ofg.io import DataError
from filetree import tree_state

SHAPE = (12, 14, 10)

# The 30 VOIs in FreeSurfer IDs, as PAPER.md states them (an independent statement of the same set).
PAPER_VOI_FS_IDS = {
    2,
    3,
    4,
    7,
    8,
    10,
    11,
    12,
    13,
    14,
    15,
    16,
    17,
    18,
    24,
    28,
    31,
    41,
    42,
    43,
    46,
    47,
    49,
    50,
    51,
    52,
    53,
    54,
    60,
    63,
}


def read_pkl(path: Path):
    with open(path, "rb") as fh:
        return pickle.load(fh)


@pytest.fixture(scope="module")
def root(tmp_path_factory) -> Path:
    return make_ixi_fixture(tmp_path_factory.mktemp("ixi"), shape=SHAPE, n_train=3, n_val=2, n_test=2, seed=1)


def test_label_table_matches_paper():
    assert len(IXI_FREESURFER_TABLE) == 46 and len(IXI_VOI_INDICES) == 30
    assert set(IXI_VOI_FREESURFER_IDS) == PAPER_VOI_FS_IDS
    assert list(IXI_FREESURFER_TABLE) == sorted(IXI_FREESURFER_TABLE)


def test_known_freesurfer_ids_map_to_table_indices():
    ids = np.array([0, 2, 3, 41, 63, 255, 251, 24, 1, 6, 1000, -3, 99])
    expected = np.array([0, 1, 2, 21, 36, 45, 41, 16, 0, 0, 0, 0, 0])
    assert np.array_equal(map_freesurfer_to_ixi(ids), expected)
    assert map_freesurfer_to_ixi(ids).dtype == np.int16


def test_pairs_semantics_and_sizes(root):
    ds = open_ixi(root, image_size=None)
    assert ds.image_size == SHAPE and ds.spacing == (1.0, 1.0, 1.0)
    assert ds.augment_flips and not ds.bidirectional
    assert ds.labels == list(IXI_VOI_INDICES)
    assert {s: len(ds.pairs(s)) for s in ("train", "val", "test")} == {"train": 3, "val": 2, "test": 2}
    atlas_image, atlas_label = read_pkl(root / "atlas.pkl")
    for split, folder in (("train", "Train"), ("val", "Val"), ("test", "Test")):
        pairs = ds.pairs(split)
        names = sorted(p.stem for p in (root / folder).glob("*.pkl"))
        assert [k for k, _ in pairs.keys] == ["atlas"] * len(names)
        assert [k for _, k in pairs.keys] == names
        for (_, subject), pair in zip(pairs.keys, pairs):
            image, label = read_pkl(root / folder / f"{subject}.pkl")
            assert pair.moving.dtype == np.float32 and pair.moving.shape == SHAPE
            assert np.issubdtype(pair.fixed_label.dtype, np.integer)
            np.testing.assert_array_equal(pair.moving, atlas_image)  # moving is the atlas
            np.testing.assert_array_equal(pair.fixed, image)
            # Label mapping checked against the table with a plain dictionary lookup.
            lookup = {fs: i for i, fs in enumerate(IXI_FREESURFER_TABLE)}
            expected = np.vectorize(lambda v: lookup.get(int(v), 0))(label)
            np.testing.assert_array_equal(pair.fixed_label, expected)
            expected_atlas = np.vectorize(lambda v: lookup.get(int(v), 0))(atlas_label)
            np.testing.assert_array_equal(pair.moving_label, expected_atlas)
            assert pair.fixed_label.max() <= 45


def test_reference_sampling(tmp_path):
    root = make_ixi_fixture(tmp_path / "ixi", shape=(6, 6, 6), n_train=7, n_val=5, n_test=1)
    ds = open_ixi(root, image_size=None, max_train=3, max_val=2, seed=42)
    # The reference draw: glob, sort the full paths, random.seed(42), random.sample(k), sort.
    expected = {}
    for folder, k in (("Train", 3), ("Val", 2)):
        paths = sorted(str(p) for p in (root / folder).glob("*.pkl"))
        random.seed(42)
        expected[folder] = sorted(Path(p).stem for p in random.sample(paths, k))
    assert [s for _, s in ds.pairs("train").keys] == expected["Train"]
    assert [s for _, s in ds.pairs("val").keys] == expected["Val"]
    assert len(ds.pairs("test")) == 1
    assert len(open_ixi(root, image_size=None, max_train=100).pairs("train")) == 7


def test_test_subsets(tmp_path):
    root = make_ixi_fixture(tmp_path / "ixi", shape=(4, 4, 4), n_train=1, n_val=1, n_test=23)
    everything = open_ixi(root, image_size=None)
    names = sorted(p.stem for p in (root / "Test").glob("*.pkl"))
    assert [s for _, s in everything.pairs("test").keys] == names
    assert "23 of 23" in everything.notes["test"] and "test_subset 'all'" in everything.notes["test"]
    # The reference infer.py: glob the folder, sort, random.seed(42), random.sample(20), sort.
    reference = open_ixi(root, image_size=None, test_subset="reference20")
    paths = sorted(str(p) for p in (root / "Test").glob("*.pkl"))
    random.seed(42)
    expected = sorted(Path(p).stem for p in random.sample(paths, 20))
    assert [s for _, s in reference.pairs("test").keys] == expected
    assert "20 of 23 subjects in Test/ (sampled with seed 42); test_subset 'reference20'" in reference.notes["test"]
    assert reference.pairs("val").keys == everything.pairs("val").keys
    with pytest.raises(ValueError, match="test_subset must be one of"):
        open_ixi(root, image_size=None, test_subset="20")


def test_paper_size_default_rejects_small_volume(root):
    ds = open_ixi(root)
    assert ds.image_size == (160, 192, 224)
    with pytest.raises(DataError, match=r"expected \(160, 192, 224\), found \(12, 14, 10\)"):
        ds.pairs("train")[0]
    assert open_ixi(root, image_size=SHAPE).image_size == SHAPE
    with pytest.raises(DataError, match=r"\.pkl: wrong image size for this dataset: expected \(12, 14, 11\)"):
        open_ixi(root, image_size=(12, 14, 11)).pairs("val")[0]


def test_dataset_registry_opens_ixi(root):
    ds = open_dataset("ixi", root, image_size=None)
    assert ds.name == "ixi" and len(ds.pairs("test")) == 2


def test_missing_root_and_split(tmp_path, root):
    with pytest.raises(DataError, match="IXI data root not found"):
        open_ixi(tmp_path / "nope")
    broken = make_ixi_fixture(tmp_path / "b", shape=(4, 4, 4), n_train=1, n_val=1, n_test=1)
    for p in (broken / "Val").glob("*"):
        p.unlink()
    (broken / "Val").rmdir()
    with pytest.raises(DataError, match=r"IXI val folder not found: .*Val"):
        open_ixi(broken, image_size=None)
    (broken / "atlas.pkl").unlink()
    with pytest.raises(DataError, match="IXI atlas not found"):
        open_ixi(broken, image_size=None)


def _write(path: Path, obj) -> None:
    path.write_bytes(pickle.dumps(obj))


@pytest.mark.parametrize(
    "content, message",
    [
        (b"not a pickle", "cannot unpickle"),
        ("pickle:(np.zeros((4,4,4)),)", "expected a pickled \\(image, label\\) pair"),
        ("pickle:(np.zeros((4,4,4),np.float32), np.zeros((4,4,5)))", "label grid \\(4, 4, 5\\) differs"),
        ("pickle:(np.full((4,4,4), np.nan, np.float32), np.zeros((4,4,4)))", "NaN/Inf"),
        ("pickle:(np.zeros((4,4,4),np.float32), np.full((4,4,4), 0.5))", "non-integer"),
        ("pickle:(np.zeros((4,4),np.float32), np.zeros((4,4)))", "3-D"),
    ],
)
def test_bad_subject_file(tmp_path, content, message):
    root = make_ixi_fixture(tmp_path / "ixi", shape=(4, 4, 4), n_train=1, n_val=1, n_test=1)
    target = next((root / "Train").glob("*.pkl"))
    if isinstance(content, bytes):
        target.write_bytes(content)
    else:
        _write(target, eval(content.removeprefix("pickle:")))
    ds = open_ixi(root, image_size=(4, 4, 4))
    with pytest.raises(DataError, match=message) as info:
        ds.pairs("train")[0]
    assert target.name in str(info.value)
    ds.pairs("val")[0]  # the other splits are unaffected


def test_nothing_written_under_root(root):
    before = tree_state(root)
    ds = open_ixi(root, image_size=None)
    for split in ("train", "val", "test"):
        for pair in ds.pairs(split):
            pair.moving[...] = 0  # mutating a returned array must not reach the files or the cache
    after_pairs = open_ixi(root, image_size=None).pairs("train")[0]
    assert after_pairs.moving.max() > 0
    assert tree_state(root) == before
