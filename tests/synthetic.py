"""A tiny in-memory registration dataset for tests: smooth labelled blobs and known warps.

Each pair is made from its own random "subject": a few ellipsoid blobs (labels 1..n_labels) on a
smooth textured background. The fixed image is the moving image warped by a random smooth
displacement ``u`` (Gaussian-filtered noise, ``amplitude`` voxels at most), with
``scipy.ndimage.map_coordinates`` as an independent float64 warp:
``fixed(x) = moving(x + u(x))`` (trilinear for images, nearest for labels). ``ground_truth``
returns ``u``, so ``ofg.spatial.warp(moving, u)`` reproduces ``fixed``.

Use it through the dataset registry: ``register(monkeypatch)`` adds the name ``"synthetic"`` to
``ofg.data.DATASETS`` (``tests/`` must be importable, as it is under pytest).
"""

from __future__ import annotations

import functools
from pathlib import Path

import numpy as np
import torch
from scipy import ndimage

from ofg.data.base import Pair, PairList, RegistrationDataset, check_split
from ofg.spatial import warp

_SPLIT_ID = {"train": 0, "val": 1, "test": 2}


def smooth_field(rng: np.random.Generator, size: tuple[int, ...], amplitude: float, sigma: float) -> np.ndarray:
    """Random smooth displacement (3,*size) in voxels with max |component| == amplitude."""
    field = np.stack([ndimage.gaussian_filter(rng.standard_normal(size), sigma, mode="reflect")
                      for _ in range(3)])
    peak = np.abs(field).max()
    return (field * (amplitude / peak if peak > 0 else 0.0)).astype(np.float32)


def warp_numpy(volume: np.ndarray, disp: np.ndarray, order: int) -> np.ndarray:
    """out(x) = volume(x + disp(x)) with zero outside, by scipy (order 1 trilinear, 0 nearest)."""
    grid = np.indices(volume.shape, dtype=np.float64) + disp.astype(np.float64)
    return ndimage.map_coordinates(volume, grid, order=order, mode="grid-constant", cval=0.0)


def make_subject(rng: np.random.Generator, size: tuple[int, int, int], n_labels: int) -> tuple[np.ndarray, np.ndarray]:
    """A float32 image in [0,1] and an int64 label map of n_labels ellipsoid blobs."""
    coords = np.indices(size, dtype=np.float64)
    label = np.zeros(size, dtype=np.int64)
    shape = np.asarray(size, dtype=np.float64)
    for value in range(1, n_labels + 1):
        centre = rng.uniform(0.3, 0.7, 3) * (shape - 1)
        radii = rng.uniform(0.15, 0.25, 3) * shape
        inside = sum(((coords[a] - centre[a]) / radii[a]) ** 2 for a in range(3)) <= 1.0
        label[inside] = value
    brain = sum(((coords[a] - (shape[a] - 1) / 2) / (0.45 * shape[a])) ** 2 for a in range(3)) <= 1.0
    intensity = np.where(label > 0, 0.3 + 0.6 * label / n_labels, 0.15 * brain)
    texture = ndimage.gaussian_filter(rng.standard_normal(size), 1.0)
    image = ndimage.gaussian_filter(intensity, 0.7) + 0.05 * texture * brain
    image = np.clip(image, 0.0, 1.0).astype(np.float32)
    return image, label


class SyntheticDataset(RegistrationDataset):
    """Pairs (moving, fixed = moving warped by a known smooth field); see the module docstring.

    ``nan_pair`` puts NaN into the moving image of that train pair (to test NaN handling).
    """

    name = "synthetic"

    def __init__(self, size: tuple[int, int, int] = (16, 16, 16), n_train: int = 4, n_val: int = 2,
                 n_test: int = 2, n_labels: int = 3, amplitude: float = 2.0, sigma: float = 3.0,
                 seed: int = 0, bidirectional: bool = False, augment_flips: bool = False,
                 nan_pair: int | None = None) -> None:
        self.image_size = tuple(int(s) for s in size)
        self.labels = list(range(1, n_labels + 1))
        self.counts = {"train": n_train, "val": n_val, "test": n_test}
        self.n_labels, self.amplitude, self.sigma, self.seed = n_labels, amplitude, sigma, seed
        self.bidirectional, self.augment_flips = bidirectional, augment_flips
        self.nan_pair = nan_pair

    @functools.lru_cache(maxsize=64)
    def _make(self, split: str, index: int) -> tuple[Pair, np.ndarray]:
        rng = np.random.default_rng((self.seed, _SPLIT_ID[split], index))
        moving, moving_label = make_subject(rng, self.image_size, self.n_labels)
        disp = smooth_field(rng, self.image_size, self.amplitude, self.sigma)
        fixed = warp_numpy(moving, disp, order=1).astype(np.float32)
        fixed_label = warp_numpy(moving_label, disp, order=0).astype(np.int64)
        if split == "train" and index == self.nan_pair:
            moving = moving.copy()
            moving[0, 0, 0] = np.nan
        return Pair(moving, fixed, moving_label, fixed_label), disp

    def pairs(self, split: str) -> PairList:
        check_split(split)
        n = self.counts[split]
        keys = tuple((f"{split}{i:02d}_moving", f"{split}{i:02d}_fixed") for i in range(n))
        return PairList(keys=keys, load=lambda i: self._make(split, i)[0])

    def ground_truth(self, split: str, index: int) -> np.ndarray:
        check_split(split)
        return self._make(split, index)[1]


def open_synthetic(root: Path, **options) -> SyntheticDataset:
    """Registry opener: ``root`` is ignored (the data lives in memory); ``size`` may be a list."""
    if "size" in options:
        options["size"] = tuple(options["size"])
    return SyntheticDataset(**options)


def register(monkeypatch) -> None:
    """Make ``open_dataset("synthetic", ...)`` work for the duration of one test."""
    from ofg.data import DATASETS

    monkeypatch.setitem(DATASETS, "synthetic", "synthetic:open_synthetic")


class Oracle(torch.nn.Module):
    """Returns the dataset's ground-truth field of whichever pair it is given (or ``scale`` times it)."""

    def __init__(self, dataset, split: str, scale: float = 1.0) -> None:
        super().__init__()
        pairs = dataset.pairs(split)
        self.movings = [torch.from_numpy(pairs[i].moving) for i in range(len(pairs))]
        self.fields = [scale * torch.from_numpy(dataset.ground_truth(split, i)) for i in range(len(pairs))]
        self.dummy = torch.nn.Parameter(torch.zeros(1))

    def forward(self, x):
        index = next(i for i, m in enumerate(self.movings) if torch.equal(m, x[0, 0]))
        disp = self.fields[index][None].to(x.device)
        return warp(x[:, :1], disp), disp
