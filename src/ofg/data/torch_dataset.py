"""torch adapter: a :class:`~ofg.data.base.PairList` as a ``torch.utils.data.Dataset``.

Item ``i`` is a dict of tensors::

    moving, fixed              (1, D, H, W) float32
    moving_label, fixed_label  (1, D, H, W) int64
    index                      () int64, the pair index

With ``flips=True`` the reference augmentation is applied: each of the three spatial axes is
flipped with probability 1/2, and the same flips go to all four arrays of the pair. The flips are
drawn from ``numpy.random.default_rng((seed, epoch, index))``, so they depend only on the seed, the
epoch and the pair, never on worker scheduling or on what was drawn before: an interrupted run
that resumes at epoch e sees exactly the flips it would have seen. Call :meth:`PairDataset.set_epoch`
at the start of every epoch, before the DataLoader iterator is created (workers receive a copy of
the dataset when the iterator starts; with ``persistent_workers=True`` they would keep the old epoch).
"""

from __future__ import annotations

import numpy as np
import torch
from torch.utils.data import Dataset

from ofg.data.base import PairList


class PairDataset(Dataset):
    """Registration pairs as tensors, with optional reproducible random flips (see module docstring)."""

    def __init__(self, pairs: PairList, flips: bool = False, seed: int = 0) -> None:
        if not isinstance(seed, (int, np.integer)) or seed < 0:
            raise ValueError(f"seed must be a non-negative integer; got {seed!r}")
        self.pairs = pairs
        self.flips = bool(flips)
        self.seed = int(seed)
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch whose flips are drawn (non-negative integer)."""
        if not isinstance(epoch, (int, np.integer)) or epoch < 0:
            raise ValueError(f"epoch must be a non-negative integer; got {epoch!r}")
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return len(self.pairs)

    def flip_axes(self, index: int) -> tuple[int, ...]:
        """The spatial axes (0, 1, 2 of a (D,H,W) array) flipped for pair ``index`` this epoch."""
        if not self.flips:
            return ()
        draw = np.random.default_rng((self.seed, self.epoch, int(index))).random(3) < 0.5
        return tuple(int(a) for a in np.flatnonzero(draw))

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        if not isinstance(index, (int, np.integer)):
            raise TypeError(f"pair index must be an integer, got {type(index).__name__}")
        if index < 0:
            index += len(self)
        pair = self.pairs[index]
        axes = self.flip_axes(index)
        out: dict[str, torch.Tensor] = {}
        for name, dtype in (
            ("moving", np.float32),
            ("fixed", np.float32),
            ("moving_label", np.int64),
            ("fixed_label", np.int64),
        ):
            array = np.asarray(getattr(pair, name))
            if array.ndim != 3:
                raise ValueError(f"pair {index}: {name} must be (D,H,W), got shape {array.shape}")
            if axes:
                array = np.flip(array, axis=axes)
            # A copy: the tensor must own writable, contiguous memory (loaders may hand out views).
            out[name] = torch.from_numpy(np.array(array, dtype=dtype, order="C", copy=True))[None]
        out["index"] = torch.tensor(int(index), dtype=torch.int64)
        return out
