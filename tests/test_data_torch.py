"""PairDataset: tensor layout, and flips that are consistent, reproducible and resumable."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from ofg.data.base import Pair, PairList
from ofg.data.fixtures import make_ixi_fixture
from ofg.data.ixi import open_ixi
from ofg.data.torch_dataset import PairDataset

SHAPE = (3, 4, 5)
AXIS_SETS = [s for r in range(4) for s in itertools.combinations(range(3), r)]


def toy_pairs(n: int = 16) -> PairList:
    """Pairs of distinct, asymmetric arrays, so that every flip is detectable."""

    def load(i: int) -> Pair:
        base = np.arange(np.prod(SHAPE)).reshape(SHAPE) + 1000 * i
        return Pair(
            base.astype(np.float32),
            (base + 1).astype(np.float32),
            base.astype(np.int16),
            (base + 2).astype(np.int32),
        )

    return PairList(keys=tuple((f"m{i}", f"f{i}") for i in range(n)), load=load)


def detect_flip(original: np.ndarray, flipped: np.ndarray) -> tuple[int, ...]:
    matches = [
        axes for axes in AXIS_SETS if np.array_equal(np.flip(original, axes) if axes else original, flipped)
    ]
    assert len(matches) == 1
    return matches[0]


def test_tensor_layout():
    item = PairDataset(toy_pairs())[3]
    assert set(item) == {"moving", "fixed", "moving_label", "fixed_label", "index"}
    for name in ("moving", "fixed"):
        assert item[name].shape == (1, *SHAPE) and item[name].dtype == torch.float32
    for name in ("moving_label", "fixed_label"):
        assert item[name].shape == (1, *SHAPE) and item[name].dtype == torch.int64
    assert item["index"].dtype == torch.int64 and int(item["index"]) == 3
    pair = toy_pairs()[3]
    np.testing.assert_array_equal(item["moving"][0].numpy(), pair.moving)  # flips off by default
    np.testing.assert_array_equal(item["fixed_label"][0].numpy(), pair.fixed_label)


def test_same_flip_on_all_four_arrays():
    pairs = toy_pairs()
    ds = PairDataset(pairs, flips=True, seed=7)
    seen = set()
    for epoch in range(3):
        ds.set_epoch(epoch)
        for i in range(len(ds)):
            item, pair = ds[i], pairs[i]
            axes = detect_flip(pair.moving, item["moving"][0].numpy())
            assert axes == ds.flip_axes(i)
            for name in ("fixed", "moving_label", "fixed_label"):
                assert detect_flip(getattr(pair, name), item[name][0].numpy()) == axes
            seen.add(axes)
    assert len(seen) > 4  # several different flip patterns occur


def test_flips_reproducible_and_resumable():
    pairs = toy_pairs()
    full = PairDataset(pairs, flips=True, seed=3)
    history = {}
    for epoch in range(4):
        full.set_epoch(epoch)
        history[epoch] = [full.flip_axes(i) for i in range(len(full))]
    assert history[0] != history[1]  # a new epoch draws new flips
    resumed = PairDataset(pairs, flips=True, seed=3)
    resumed.set_epoch(2)  # an interrupted run resuming at epoch 2
    assert [resumed.flip_axes(i) for i in range(len(resumed))] == history[2]
    # The draw is the documented one: default_rng((seed, epoch, index)).random(3) < 0.5.
    draw = np.random.default_rng((3, 2, 5)).random(3) < 0.5
    assert resumed.flip_axes(5) == tuple(int(a) for a in np.flatnonzero(draw))
    # Order of access and DataLoader shuffling do not change what an index gets.
    loader = DataLoader(resumed, batch_size=1, shuffle=True, generator=torch.Generator().manual_seed(0))
    for batch in loader:
        i = int(batch["index"][0])
        axes = history[2][i]
        expected = np.flip(pairs[i].moving, axes) if axes else pairs[i].moving
        np.testing.assert_array_equal(batch["moving"][0, 0].numpy(), expected)
    other_seed = PairDataset(pairs, flips=True, seed=4)
    other_seed.set_epoch(2)
    assert [other_seed.flip_axes(i) for i in range(len(pairs))] != history[2]


def test_flip_rate_is_one_half_per_axis():
    ds = PairDataset(toy_pairs(1), flips=True, seed=0)
    counts = np.zeros(3)
    n = 2000
    for epoch in range(n):
        ds.set_epoch(epoch)
        for axis in ds.flip_axes(0):
            counts[axis] += 1
    # Binomial(2000, 0.5): standard deviation 22.4; 5 sigma is 112.
    assert np.all(np.abs(counts - n / 2) < 112)


def test_no_flips_when_disabled():
    ds = PairDataset(toy_pairs(), flips=False, seed=1)
    for epoch in range(3):
        ds.set_epoch(epoch)
        assert all(ds.flip_axes(i) == () for i in range(len(ds)))


def test_bad_arguments():
    with pytest.raises(ValueError, match="seed"):
        PairDataset(toy_pairs(), seed=-1)
    ds = PairDataset(toy_pairs())
    with pytest.raises(ValueError, match="epoch"):
        ds.set_epoch(-2)
    with pytest.raises(TypeError):
        ds["0"]
    assert int(ds[-1]["index"]) == len(ds) - 1


def test_real_loader_through_adapter(tmp_path):
    root = make_ixi_fixture(tmp_path / "ixi", shape=(6, 8, 10), n_train=2, n_val=1, n_test=1)
    ds = open_ixi(root, image_size=None)
    torch_ds = PairDataset(ds.pairs("train"), flips=ds.augment_flips, seed=0)
    batch = next(iter(DataLoader(torch_ds, batch_size=2)))
    assert batch["moving"].shape == (2, 1, 6, 8, 10) and batch["moving_label"].dtype == torch.int64
    assert int(batch["moving_label"].max()) <= 45
