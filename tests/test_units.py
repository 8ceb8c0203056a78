"""ofg.units: the independent units of a pair design, and seed-matched tables."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from ofg.units import NO_SUBJECTS, find_design, match


def crossed(subjects: int) -> tuple[list[str], list[str]]:
    pairs = [(f"s{i}", f"s{j}") for i in range(subjects) for j in range(subjects) if i != j]
    return [m for m, _ in pairs], [f for _, f in pairs]


def test_atlas_is_a_design_constant_and_the_pairs_are_the_units():
    design = find_design(["atlas"] * 40, [f"s{i}" for i in range(40)])
    assert design.kind == "pairs" and design.n_units == 40 and design.constants == ("atlas",)
    assert np.array_equal(design.incidence, np.eye(40, dtype=bool))
    assert design.describe() == "40 pairs" and "atlas" in design.note


def test_disjoint_pairs_are_independent_units():
    design = find_design([f"m{i}" for i in range(40)], [f"f{i}" for i in range(40)])
    assert design.kind == "pairs" and design.n_units == 40 and design.constants == ()
    assert design.describe() == "40 pairs" and design.units[3] == "f3+m3"


def test_every_ordered_pair_of_seven_subjects_is_crossed_with_subject_units():
    design = find_design(*crossed(7))
    assert design.kind == "subjects" and (design.n_units, design.n_pairs) == (7, 42)
    assert design.describe() == "7 subjects (42 pairs)"
    assert (design.incidence.sum(axis=1) == 2).all() and (design.incidence.sum(axis=0) == 12).all()
    moving, fixed = crossed(7)
    for p, (m, f) in enumerate(zip(moving, fixed)):  # each pair involves exactly its two subjects
        assert {design.units[g] for g in np.flatnonzero(design.incidence[p])} == {m, f}


def test_subjects_that_only_appear_together_are_one_unit():
    # both directions of 5 disjoint dyads: 10 pairs, but only 5 independent units
    moving = [f"a{i}" for i in range(5)] + [f"b{i}" for i in range(5)]
    fixed = [f"b{i}" for i in range(5)] + [f"a{i}" for i in range(5)]
    design = find_design(moving, fixed)
    assert design.kind == "subjects" and design.n_units == 5 and design.describe() == "5 subject groups (10 pairs)"


def test_a_chain_of_consecutive_pairs_shares_subjects():
    subjects = [f"s{i}" for i in range(8)]
    design = find_design(subjects[:-1], subjects[1:])  # OASIS-style i -> i+1
    assert design.kind == "subjects" and design.n_units == 8 and design.n_pairs == 7


def test_subjects_in_several_atlas_pairs_make_a_crossed_design():
    design = find_design(["atlas"] * 6 + [f"s{i}" for i in range(6)], [f"s{i}" for i in range(6)] + ["atlas"] * 6)
    assert design.kind == "subjects" and design.n_units == 6 and design.constants == ("atlas",)


def test_without_subject_columns_every_pair_is_a_unit():
    design = find_design(None, None)
    assert design.n_units == 0
    frame = pd.DataFrame({"pair": [0, 1, 2], "seed": 0, "dice": [0.1, 0.2, 0.3]})
    matched = match(frame, frame.assign(dice=0.0), "dice", ["pair"])
    assert matched.design().kind == "pairs" and matched.design().note == NO_SUBJECTS


def frame(values: np.ndarray, seeds: list[int]) -> pd.DataFrame:
    rows = [{"split": "test", "pair_index": p, "moving": "atlas", "fixed": f"s{p}", "seed": s, "dice": values[p, i]}
            for i, s in enumerate(seeds) for p in range(values.shape[0])]
    return pd.DataFrame(rows).sample(frac=1.0, random_state=2).reset_index(drop=True)


KEYS = ["split", "pair_index", "moving", "fixed"]


def test_match_pairs_seed_s_with_seed_s_on_the_common_seeds():
    rng = np.random.default_rng(0)
    a, b = rng.uniform(size=(6, 3)), rng.uniform(size=(6, 3))
    matched = match(frame(a, [0, 1, 2]), frame(b[:, [0, 1, 2]], [0, 1, 5]), "dice", KEYS)
    assert matched.seeds == (0, 1) and matched.seeds_a == (0, 1, 2) and matched.seeds_b == (0, 1, 5)
    np.testing.assert_array_equal(matched.a, a[:, :2])
    np.testing.assert_array_equal(matched.b, b[:, :2])
    assert "common seeds [0, 1]" in matched.seed_note
    assert match(frame(a, [0, 1, 2]), frame(b, [0, 1, 2]), "dice", KEYS).seed_note == ""


def test_match_keeps_the_pairs_finite_on_both_sides_at_every_seed():
    a, b = np.ones((6, 2)), np.zeros((6, 2))
    a[1, 0], b[4, 1] = np.nan, np.inf
    matched = match(frame(a, [0, 1]), frame(b[:5], [0, 1]), "dice", KEYS)  # pair 5 only on one side
    assert matched.pairs["pair_index"].tolist() == [0, 2, 3]
    assert matched.a.shape == (3, 2)


def test_match_of_a_missing_metric_or_side_is_empty():
    a = frame(np.ones((6, 2)), [0, 1])
    assert match(a, a.drop(columns="dice"), "dice", KEYS).a.shape == (0, 2)
    empty = match(a, pd.DataFrame(columns=["seed"]), "dice", KEYS)
    assert empty.a.shape[0] == 0 and empty.seed_note == ""


@pytest.mark.parametrize("subjects", [3, 4])
def test_small_crossed_designs_have_few_units(subjects):
    assert find_design(*crossed(subjects)).n_units == subjects
