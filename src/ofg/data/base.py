"""The one dataset interface every loader implements.

A dataset exposes its Dice label list, its image size, and per split a lazy, sized, indexable
sequence of registration pairs. Item ``i`` of ``dataset.pairs(split)`` is a :class:`Pair` of numpy
arrays, (D,H,W) each: float32 images and integer labels. Nothing is loaded before it is indexed.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Callable, Iterator, NamedTuple, Sequence

import numpy as np

SPLITS = ("train", "val", "test")


class Pair(NamedTuple):
    """One registration pair: float32 images and integer label maps, each (D,H,W)."""

    moving: np.ndarray
    fixed: np.ndarray
    moving_label: np.ndarray
    fixed_label: np.ndarray


@dataclass(frozen=True)
class PairList(Sequence[Pair]):
    """A lazy sequence of pairs: ``load(i)`` is called only when item ``i`` is indexed.

    ``keys`` names each pair (for example ``("atlas", "subject_012")``) for logs and metrics files.
    """

    keys: tuple[tuple[str, str], ...]
    load: Callable[[int], Pair]

    def __len__(self) -> int:
        return len(self.keys)

    def __getitem__(self, index: int) -> Pair:  # type: ignore[override]
        if not isinstance(index, (int, np.integer)):
            raise TypeError(f"pair index must be an integer, got {type(index).__name__}")
        if index < -len(self) or index >= len(self):
            raise IndexError(f"pair index {index} out of range for {len(self)} pairs")
        return self.load(int(index) % len(self))

    def __iter__(self) -> Iterator[Pair]:
        return (self[i] for i in range(len(self)))


class RegistrationDataset(ABC):
    """Base class of every dataset returned by :func:`ofg.data.open_dataset`.

    Attributes:
        name: registry name (``"ixi"``, ``"embedded-brain"``, ...).
        labels: the label values Dice is computed over, in the label space the pairs use.
        image_size: (D,H,W) of every image.
        spacing: voxel size in mm, (3,) floats.
        bidirectional: whether the reference protocol trains both directions (inter-subject data).
        augment_flips: whether the reference protocol uses random flips on the train split.
        train_pairing: "all" (the same train pairs every epoch) or "reference" (new train pairs
            every epoch, :mod:`ofg.data.pairing`); a trainer takes epoch e's pairs from
            :meth:`epoch_pairs`.
    """

    name: str
    labels: list[int]
    image_size: tuple[int, int, int]
    spacing: tuple[float, float, float] = (1.0, 1.0, 1.0)
    bidirectional: bool = False
    augment_flips: bool = False
    train_pairing: str = "all"

    @abstractmethod
    def pairs(self, split: str) -> PairList:
        """The pairs of ``split`` (one of ``SPLITS``)."""

    def epoch_pairs(self, split: str, epoch: int) -> PairList:
        """The pairs of ``split`` that training epoch ``epoch`` (0-based) visits; by default the
        same every epoch, :meth:`pairs`."""
        return self.pairs(split)

    def ground_truth(self, split: str, index: int) -> np.ndarray | None:
        """True displacement (3,D,H,W) in voxels for pair ``index`` of ``split``, or None if unknown."""
        return None


def check_split(split: str) -> str:
    """Return ``split`` if valid, else raise a ValueError listing the valid splits."""
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; expected one of {SPLITS}")
    return split
