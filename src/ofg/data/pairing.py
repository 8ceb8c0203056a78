"""How inter-subject training pairs are drawn: all pairs, or the reference code's epochs.

- ``"all"``: every unordered pair (i < j) of the training subjects, the same list every epoch.
- ``"reference"``: the reference code's OASIS epochs. A fixed sample of the training subjects (the
  reference: 200, drawn by :func:`ofg.data.realdata.sample_subjects` with seed 42); every epoch
  visits each of them once, paired with a uniformly random *other* subject of the sample, and a
  bidirectional dataset trains both directions of each pair: 2 x 200 = 400 optimiser steps per
  epoch. The partners change from epoch to epoch (:func:`reference_epoch_pairs`).

The reference draws the partners from Python's global ``random`` stream, which is seeded once
(``random.seed(42)``, before the subject sample) and then consumed across all epochs, and it visits
the items in the order of an unseeded torch shuffle: its exact sequence cannot be reproduced. Here
each epoch has its own ``random.Random`` seeded from (seed, epoch), which keeps the reference's
distribution (each subject once per epoch, partner uniform among the others, drawn as the
reference does by shuffling the others and taking the first) and makes epoch e a pure function of
(subjects, e, seed), so a resumed run sees the same pairs. The visiting order is left to the
trainer (it permutes every epoch's list).
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Callable, Sequence, TypeVar

from ofg.data.base import PairList

T = TypeVar("T")

TRAIN_PAIRINGS = ("all", "reference")
#: subjects the reference samples for its OASIS epochs
REFERENCE_TRAIN_SUBJECTS = 200


def check_pairing(pairing: str) -> str:
    """Return ``pairing`` if it is one of :data:`TRAIN_PAIRINGS`, else raise a ValueError."""
    if pairing not in TRAIN_PAIRINGS:
        raise ValueError(f"train_pairs must be one of {TRAIN_PAIRINGS}, got {pairing!r}")
    return pairing


def epoch_rng(seed: int, epoch: int) -> random.Random:
    """The generator of one epoch's partners: ``random.Random`` seeded by a string of (seed, epoch)
    (string seeds hash with SHA-512, so the stream is the same on every platform and run)."""
    return random.Random(f"ofg-reference-epoch:{int(seed)}:{int(epoch)}")


def reference_epoch_pairs(subjects: Sequence[T], epoch: int, seed: int = 42) -> list[tuple[T, T]]:
    """The (moving, fixed) train pairs of ``epoch`` (0-based) under the reference pairing.

    Item i is (subjects[i], partner): the partner is the first of the other subjects after a
    shuffle (the reference's ``random.shuffle(others); others[0]``), drawn from
    :func:`epoch_rng` ``(seed, epoch)``. len = len(subjects); needs at least two subjects.
    """
    items = list(subjects)
    if len(items) < 2:
        raise ValueError(f"the reference pairing needs at least two subjects, got {len(items)}")
    if int(epoch) < 0:
        raise ValueError(f"epoch must be a non-negative integer, got {epoch!r}")
    rng = epoch_rng(seed, epoch)
    pairs = []
    for i, item in enumerate(items):
        others = items[:i] + items[i + 1:]
        rng.shuffle(others)
        pairs.append((item, others[0]))
    return pairs


@dataclass(frozen=True)
class ReferenceEpochs:
    """Epoch -> train PairList under the reference pairing of ``n_subjects`` subjects.

    ``pair_list`` turns index pairs (moving, fixed) into a PairList (the loader's own reader).
    """

    n_subjects: int
    seed: int
    pair_list: Callable[[tuple[tuple[int, int], ...]], PairList]

    def __call__(self, epoch: int) -> PairList:
        return self.pair_list(tuple(reference_epoch_pairs(range(self.n_subjects), epoch, self.seed)))


def reference_note(n_sampled: int, n_found: int, seed: int, where: str, bidirectional: bool = True) -> str:
    """The ``notes["train"]`` line of a dataset opened with the reference pairing."""
    steps = n_sampled * (2 if bidirectional else 1)
    return (f"reference epochs: {n_sampled} of {n_found} {where} subjects (sampled with seed {seed}), each "
            f"paired every epoch with a random other one{', both ways' if bidirectional else ''}: "
            f"{steps} steps per epoch")
