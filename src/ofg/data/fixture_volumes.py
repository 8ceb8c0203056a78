"""Random smooth images and label maps for the real-layout fixtures (:mod:`ofg.data.fixtures`).

Images and label maps are (D,H,W) arrays; the same generator state gives the same arrays. Part of
the package for ``python -m ofg.data fixtures OUT``, the user's way to try ``config/paper.yaml`` before
having the data (see :mod:`ofg.data.fixtures`).
"""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Sequence

import numpy as np
from scipy.ndimage import gaussian_filter

from ofg.io import atomic_path

Shape = tuple[int, int, int]


def random_label_map(
    rng: np.random.Generator, shape: Shape, ids: Sequence[int], smoothness: float = 2.0
) -> np.ndarray:
    """A smooth random parcellation of an ellipsoidal "body" into ``ids``; 0 outside (int16)."""
    fields = np.stack([gaussian_filter(rng.standard_normal(shape), smoothness) for _ in ids])
    parcel = np.asarray(ids, dtype=np.int16)[np.argmax(fields, axis=0)]
    grid = np.meshgrid(*[np.linspace(-1, 1, n) for n in shape], indexing="ij")
    inside = sum(g**2 for g in grid) <= 0.9
    return np.where(inside, parcel, 0).astype(np.int16)


def random_image(
    rng: np.random.Generator, label: np.ndarray, low: float = 0.0, high: float = 1.0
) -> np.ndarray:
    """A smooth image that follows ``label`` (one random intensity per label), in [low, high] (float32)."""
    ids = np.unique(label)
    levels = dict(zip(ids.tolist(), rng.uniform(0.2, 1.0, len(ids)).tolist()))
    levels[0] = 0.0
    image = np.vectorize(levels.__getitem__, otypes=[np.float64])(label)
    image = gaussian_filter(image, 0.7) + 0.05 * gaussian_filter(rng.standard_normal(label.shape), 1.0)
    image = (image - image.min()) / max(image.max() - image.min(), 1e-12)
    return (low + (high - low) * image).astype(np.float32)


def write_pickle(path: Path, obj: object) -> Path:
    with atomic_path(path) as tmp:
        tmp.write_bytes(pickle.dumps(obj, protocol=4))
    return path


def affine(spacing: Sequence[float]) -> np.ndarray:
    return np.diag([*map(float, spacing), 1.0])


# --- IXI ---------------------------------------------------------------------------------------
