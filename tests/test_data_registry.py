"""The dataset registry, the four real-data fixture roots (and `python -m ofg.data fixtures`), and check_image_size."""

from __future__ import annotations

import importlib
from pathlib import Path

import pytest

from ofg.data import DATASETS, open_dataset
from ofg.data.base import RegistrationDataset
from ofg.data.fixtures import make_paper_roots
from ofg.data.realdata import check_image_size
from filetree import tree_state

REAL = ("ixi", "oasis", "lpba", "abdomen")


@pytest.fixture(scope="module")
def roots(tmp_path_factory) -> dict[str, Path]:
    return make_paper_roots(tmp_path_factory.mktemp("paper_roots"))


def test_unknown_name_lists_valid_names(tmp_path):
    with pytest.raises(ValueError, match="unknown dataset 'ixii'") as info:
        open_dataset("ixii", tmp_path)
    for name in DATASETS:
        assert name in str(info.value)


def test_real_entries_resolve_to_openers():
    for name in REAL:
        module, function = DATASETS[name].split(":")
        assert callable(getattr(importlib.import_module(module), function))


def test_every_paper_root_opens(roots):
    assert set(roots) == set(REAL)
    expected_labels = {"ixi": 30, "oasis": 35, "lpba": 54, "abdomen": 13}
    for name, root in roots.items():
        before = tree_state(root)
        ds = open_dataset(name, root, image_size=None)
        assert isinstance(ds, RegistrationDataset) and ds.name == name
        assert len(ds.labels) == expected_labels[name]
        assert ds.image_size == (16, 16, 16)
        assert ds.bidirectional == (name in ("oasis", "abdomen"))
        assert ds.augment_flips == (name == "ixi")  # the reference flips IXI only
        assert ds.train_pairing == "all" and ds.epoch_pairs("train", 3).keys == ds.pairs("train").keys
        for split in ("train", "val", "test"):
            pairs = ds.pairs(split)
            assert len(pairs) > 0 and len(pairs.keys) == len(pairs)
            pair = pairs[len(pairs) - 1]
            assert pair.moving.shape == pair.fixed_label.shape == (16, 16, 16)
        with pytest.raises(ValueError, match="unknown split"):
            ds.pairs("training")
        assert tree_state(root) == before


def test_check_image_size(roots):
    ds = open_dataset("lpba", roots["lpba"], image_size=None)
    check_image_size(ds, (16, 16, 16))
    check_image_size((160, 192, 224), [160, 192, 224])
    with pytest.raises(
        ValueError, match=r"lpba images are \(16, 16, 16\) but the model expects img_size=\(160, 192, 160\)"
    ):
        check_image_size(ds, (160, 192, 160))
    with pytest.raises(ValueError, match="img_size must be"):
        check_image_size(ds, (16, 16))


def test_datasets_pickle_for_worker_processes(roots):
    # DataLoader workers started with "spawn" receive the dataset by pickling it.
    import pickle

    for name, root in roots.items():
        ds = open_dataset(name, root, image_size=None)
        clone = pickle.loads(pickle.dumps(ds))
        a, b = ds.pairs("val")[0], clone.pairs("val")[0]
        assert clone.pairs("val").keys == ds.pairs("val").keys
        for x, y in zip(a, b):
            assert (x == y).all()


def test_fixtures_command_writes_the_four_layouts_that_open_at_their_own_size(tmp_path, capsys):
    from ofg.data.__main__ import main

    assert main(["fixtures", str(tmp_path / "fixtures")]) == 0
    printed = capsys.readouterr().out
    for name in REAL:
        root = tmp_path / "fixtures" / name
        assert str(root) in printed
        assert open_dataset(name, root, image_size=None).pairs("test")[0].moving.shape == (16, 16, 16)
