"""Train pairings: the reference code's epochs (ofg.data.pairing), pure functions on small lists."""

from __future__ import annotations

import collections
import random

import numpy as np
import pytest

from ofg.data.base import Pair, PairList
from ofg.data.pairing import (TRAIN_PAIRINGS, ReferenceEpochs, check_pairing, epoch_rng, reference_epoch_pairs,
                              reference_note)


def test_every_subject_once_with_another_partner():
    subjects = [f"s{k}" for k in range(7)]
    for epoch in range(20):
        pairs = reference_epoch_pairs(subjects, epoch, seed=42)
        assert [m for m, _ in pairs] == subjects
        assert all(f in subjects and f != m for m, f in pairs)


def test_pure_function_of_subjects_epoch_and_seed():
    subjects = list(range(30))
    assert reference_epoch_pairs(subjects, 3, 42) == reference_epoch_pairs(tuple(subjects), 3, 42)
    assert reference_epoch_pairs(subjects, 3, 42) != reference_epoch_pairs(subjects, 4, 42)
    assert reference_epoch_pairs(subjects, 3, 42) != reference_epoch_pairs(subjects, 3, 0)


def test_partner_drawn_as_the_reference_draws_it():
    # The reference: others = the sample without the item; random.shuffle(others); others[0].
    subjects = ["a", "b", "c", "d", "e"]
    rng = random.Random("ofg-reference-epoch:42:9")
    expected = []
    for item in subjects:
        others = [s for s in subjects if s != item]
        rng.shuffle(others)
        expected.append((item, others[0]))
    assert reference_epoch_pairs(subjects, 9, seed=42) == expected
    assert epoch_rng(42, 9).random() == random.Random("ofg-reference-epoch:42:9").random()


def test_partners_are_uniform_over_the_others():
    n, epochs = 4, 3000
    counts = collections.Counter(pair for e in range(epochs) for pair in reference_epoch_pairs(range(n), e, 1))
    expected = epochs / (n - 1)
    assert set(counts) == {(i, j) for i in range(n) for j in range(n) if i != j}
    assert all(abs(c - expected) < 0.1 * expected for c in counts.values())


def test_bad_arguments():
    with pytest.raises(ValueError, match="at least two subjects"):
        reference_epoch_pairs(["only"], 0)
    with pytest.raises(ValueError, match="epoch must be"):
        reference_epoch_pairs(["a", "b"], -1)
    assert check_pairing("reference") == "reference" and TRAIN_PAIRINGS == ("all", "reference")
    with pytest.raises(ValueError, match="train_pairs must be one of"):
        check_pairing("every")


def _index_pair_list(index_pairs: tuple[tuple[int, int], ...]) -> PairList:
    def load(i: int) -> Pair:
        a, b = index_pairs[i]
        volume = lambda k: np.full((2, 2, 2), float(k), np.float32)  # noqa: E731
        return Pair(volume(a), volume(b), volume(a).astype(np.int16), volume(b).astype(np.int16))
    return PairList(keys=tuple((str(a), str(b)) for a, b in index_pairs), load=load)


def test_reference_epochs_build_one_list_per_epoch():
    epochs = ReferenceEpochs(n_subjects=5, seed=3, pair_list=_index_pair_list)
    for epoch in (0, 7):
        pairs = epochs(epoch)
        expected = reference_epoch_pairs(range(5), epoch, 3)
        assert pairs.keys == tuple((str(a), str(b)) for a, b in expected)
        assert pairs[4].fixed[0, 0, 0] == expected[4][1]
    assert "5 of 9 Train/ subjects (sampled with seed 3)" in reference_note(5, 9, 3, "Train/")
    assert reference_note(200, 394, 42, "Train/").endswith("both ways: 400 steps per epoch")
    assert reference_note(20, 20, 42, "x", bidirectional=False).endswith("one: 20 steps per epoch")
