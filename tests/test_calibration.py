"""ofg.calibration: the claims engine's false-positive rate, coverage and power on simulated null tables,
the simulator itself, and the replaced engine failing where pairs share subjects.

Tolerances are binomial: with N tables a rate is accepted against a bound b when the count is within
the 99.9 % quantile of Binomial(N, b), so a test fails on evidence, not on a draw's noise.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from ofg import calibration
from ofg.claim_rows import compare, difference_row
from ofg.claims import CLAIM_BY_NAME
from ofg.units import find_design

FPR_BOUND, COVERAGE_BOUND = 0.06, 0.93


def within(rate: float, tables: int, bound: float) -> bool:
    """A rate of ``tables`` draws consistent with a true rate ≤ ``bound`` (99.9 % binomial quantile)."""
    return round(rate * tables) <= stats.binom.ppf(0.999, tables, bound)


def beyond(rate: float, tables: int, bound: float) -> bool:
    """A rate of ``tables`` draws inconsistent with a true rate ≤ ``bound`` (one-sided binomial p < 0.001)."""
    return stats.binom.sf(round(rate * tables) - 1, tables, bound) < 0.001


def test_the_simulator_draws_the_stated_variance_components():
    # subject share 0.3: moving, fixed and dyad effects 0.1 each; seed 0.1; residual 0.6
    moving, fixed = calibration.design_of("crossed")
    d = calibration.simulate(moving, fixed, 20000, 0.3, 0.1, 0.0, np.random.default_rng(3), seeds=2)
    pairs = list(zip(moving, fixed))
    first = d[:, pairs.index(("s0", "s1")), 0]
    expected = {("s0", "s1"): 1.0,                   # itself
                ("s0", "s2"): 0.2, ("s2", "s1"): 0.2,  # the same moving / the same fixed subject, plus the seed
                ("s1", "s0"): 0.2,                   # the same unordered pair, plus the seed
                ("s3", "s4"): 0.1}                   # the seed effect alone
    for pair, covariance in expected.items():
        assert np.cov(first, d[:, pairs.index(pair), 0])[0, 1] == pytest.approx(covariance, abs=0.03), pair
    assert np.cov(first, d[:, pairs.index(("s0", "s1")), 1])[0, 1] == pytest.approx(0.3, abs=0.03)  # seed 1
    atlas = calibration.simulate(*calibration.design_of("atlas"), 20000, 0.3, 0.0, 0.0, np.random.default_rng(4))
    # the atlas, a design constant, has no effect of its own: 1 − 0.1
    assert np.var(atlas[:, 0, 0]) == pytest.approx(0.9, abs=0.03)


@pytest.mark.parametrize("name, size", [("atlas", 12), ("disjoint", 12), ("crossed", 6)])
def test_the_engine_holds_its_level_on_small_designs(name, size):
    tables = 300
    for subject_share, seed_share in ((0.4, 0.0), (0.2, 0.2)):
        result = calibration.calibrate(name, subject_share, seed_share, tables, seed=11, subjects=size, old=False)
        assert within(result["FPR"], tables, FPR_BOUND), result
        assert within(1 - result["coverage"], tables, 1 - COVERAGE_BOUND), result


def test_the_old_engine_fails_on_the_crossed_design_where_the_new_one_holds():
    tables = 400
    result = calibration.calibrate("crossed", 0.4, 0.0, tables, seed=12)
    assert beyond(result["old FPR"], tables, FPR_BOUND), result
    assert beyond(1 - result["old coverage"], tables, 1 - COVERAGE_BOUND), result
    assert within(result["FPR"], tables, FPR_BOUND) and within(1 - result["coverage"], tables, 1 - COVERAGE_BOUND)


def test_the_engine_finds_a_known_effect():
    result = calibration.calibrate("atlas", 0.4, 0.0, 300, seed=13, old=False)
    assert result["power"] > 0.5, result


def test_the_calibration_runs_the_engines_own_row():
    """The array path of the calibration and the claims table's frame path give the same numbers."""
    moving, fixed = calibration.design_of("crossed")
    d = calibration.simulate(moving, fixed, 1, 0.4, 0.05, 0.1, np.random.default_rng(14))[0]
    frame = pd.DataFrame([{"split": "test", "pair_index": p, "moving": moving[p], "fixed": fixed[p], "seed": s,
                           "dice_mean": d[p, s]} for p in range(len(moving)) for s in range(d.shape[1])])
    row = compare(CLAIM_BY_NAME["dice_gain"], frame, frame.assign(dice_mean=0.0))
    arrays = difference_row(d, find_design(moving, fixed).incidence)
    for key in ("effect", "ci_low", "ci_high", "p"):
        assert row[key] == pytest.approx(float(arrays[key]), rel=1e-12), key


def test_the_command_line_prints_the_tables(capsys):
    calibration.main(["--tables", "20"])
    out = capsys.readouterr().out
    assert "| design" in out and "FPR" in out and "old FPR" in out and "jackknife (engine)" in out
    assert "Cochran–Cox (engine)" in out and "7 subjects (42 pairs)" in out


@pytest.mark.slow
def test_calibration_over_1000_tables_per_design():
    table = calibration.calibration_table(tables=1000)
    assert set(table.design) == set(calibration.DESIGNS) and (table.tables >= 1000).all()
    assert (table.FPR <= FPR_BOUND).all() and (table.coverage >= COVERAGE_BOUND).all(), table.to_string()
    crossed = table[table.design == "crossed"]
    assert (crossed["old FPR"] > FPR_BOUND).all() and (crossed["old coverage"] < COVERAGE_BOUND).all()
    methods = calibration.methods_table(tables=1000)
    engine = methods[methods.method == "jackknife (engine)"]
    assert (engine.FPR <= FPR_BOUND).all() and (engine.coverage >= COVERAGE_BOUND).all()
