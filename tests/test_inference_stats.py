"""ofg.inference_stats against independent references: brute-force jackknife, scipy's t-tests, statsmodels'
two-way ANOVA and Holm, the textbook delta method."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from ofg import inference_stats as inf
from ofg.units import find_design


def crossed(subjects: int) -> tuple[list[str], list[str]]:
    pairs = [(f"s{i}", f"s{j}") for i in range(subjects) for j in range(subjects) if i != j]
    return [m for m, _ in pairs], [f for _, f in pairs]


def brute_force_jackknife(values: np.ndarray, moving: list[str], fixed: list[str]) -> float:
    """Delete each subject's pairs in turn with pandas, recompute the mean, apply the jackknife formula."""
    frame = pd.DataFrame({"moving": moving, "fixed": fixed, "value": values})
    subjects = sorted(set(moving) | set(fixed))
    left_out = np.array([frame[(frame.moving != s) & (frame.fixed != s)].value.mean() for s in subjects])
    g = len(subjects)
    return (g - 1) / g * float(((left_out - left_out.mean()) ** 2).sum())


def test_jackknife_over_subjects_matches_a_brute_force_loop_on_a_crossed_design(rng):
    moving, fixed = crossed(5)
    values = rng.normal(size=len(moving))
    design = find_design(moving, fixed)
    assert inf.jackknife_variance(values, design.incidence) == pytest.approx(
        brute_force_jackknife(values, moving, fixed), rel=1e-12)


def test_jackknife_over_independent_pairs_is_the_textbook_variance_of_the_mean(rng):
    values = rng.normal(size=(4, 30))  # four tables at once
    expected = values.var(axis=1, ddof=1) / 30
    np.testing.assert_allclose(inf.jackknife_variance(values, np.eye(30, dtype=bool)), expected, rtol=1e-12)


def test_jackknife_is_exact_for_subject_main_effects():
    # values = moving-subject effect only: the mean is the mean of the 7 effects, variance var(a)/7
    moving, fixed = crossed(7)
    effects = dict(zip([f"s{i}" for i in range(7)], np.linspace(-1, 2, 7) ** 2))
    values = np.array([effects[m] for m in moving])
    a = np.array(list(effects.values()))
    assert inf.jackknife_variance(values, find_design(moving, fixed).incidence) == pytest.approx(
        a.var(ddof=1) / 7, rel=1e-12)


def test_one_seed_and_independent_pairs_is_the_paired_t_test(rng):
    a, b = rng.normal(0.6, 0.05, 25), rng.normal(0.58, 0.05, 25)
    estimate = inf.mean_estimate((a - b)[:, None], np.eye(25, dtype=bool))
    reference = stats.ttest_rel(a, b)
    low, high = inf.interval(estimate)
    assert float(inf.p_value(estimate)) == pytest.approx(reference.pvalue, rel=1e-6)
    assert (float(low), float(high)) == pytest.approx(tuple(reference.confidence_interval(0.95)), rel=1e-9)
    assert float(inf.critical_value(estimate)) == pytest.approx(stats.t.ppf(0.975, 24), rel=1e-12)


def test_without_pair_level_variance_it_is_the_t_test_over_the_per_seed_effects():
    # every pair has the same seed-averaged value: only the per-seed effects vary
    seed_effects = np.array([0.02, 0.035, 0.04, 0.028])
    noise = np.tile(np.array([[0.003, -0.003, 0.001, -0.001]]), (10, 1)) * np.where(np.arange(10) % 2, 1, -1)[:, None]
    d = seed_effects[None, :] + noise
    estimate = inf.mean_estimate(d, np.eye(10, dtype=bool))
    assert float(estimate.var_units) == 0.0
    per_seed = d.mean(axis=0)
    reference = stats.ttest_1samp(per_seed, 0.0)
    assert float(inf.p_value(estimate)) == pytest.approx(reference.pvalue, rel=1e-6)
    low, high = inf.interval(estimate)
    assert (float(low), float(high)) == pytest.approx(tuple(reference.confidence_interval(0.95)), rel=1e-9)


def test_seed_parts_match_a_two_way_anova_from_statsmodels(rng):
    smf = pytest.importorskip("statsmodels.formula.api")
    n, seeds = 12, 3
    d = rng.normal(size=(n, 1)) + rng.normal(size=(1, seeds)) + 0.3 * rng.normal(size=(n, seeds))
    long = pd.DataFrame({"d": d.ravel(), "pair": np.repeat(np.arange(n), seeds), "seed": np.tile(np.arange(seeds), n)})
    fit = smf.ols("d ~ C(pair) + C(seed)", long).fit()
    between, residual = inf.seed_parts(d)
    assert float(residual) == pytest.approx(fit.mse_resid / n, rel=1e-10)
    assert float(between) == pytest.approx(d.mean(axis=0).var(ddof=1), rel=1e-12)
    estimate = inf.mean_estimate(d, np.eye(n, dtype=bool))
    jackknife = d.mean(axis=1).var(ddof=1) / n
    assert float(estimate.var_units) == pytest.approx(max(jackknife - fit.mse_resid / (n * seeds), 0.0), rel=1e-10)
    assert float(estimate.var_seeds) == pytest.approx(float(between) / seeds, rel=1e-12)


def test_cochran_cox_critical_value_weights_the_two_t_quantiles():
    estimate = inf.Estimate(np.array(0.1), np.array(0.003), np.array(0.001), 39, 2, np.zeros(3))
    expected = (0.003 * stats.t.ppf(0.975, 39) + 0.001 * stats.t.ppf(0.975, 2)) / 0.004
    assert float(inf.critical_value(estimate)) == pytest.approx(expected, rel=1e-12)


def test_p_value_inverts_the_critical_value_and_agrees_with_the_interval(rng):
    for _ in range(20):
        var_units, var_seeds = rng.uniform(0, 1e-4, 2)
        base = inf.Estimate(np.array(0.0), np.array(var_units), np.array(var_seeds), int(rng.integers(5, 40)), 2,
                            np.zeros(3))
        level = float(rng.uniform(0.001, 0.2))
        at = float(inf.critical_value(base, level) * base.se)
        estimate = inf.Estimate(np.array(at), base.var_units, base.var_seeds, base.df_units, 2, base.per_seed)
        assert float(inf.p_value(estimate)) == pytest.approx(level, rel=1e-6)
        low, high = inf.interval(estimate)
        assert (float(inf.p_value(estimate, null=0.0)) < 0.05) == (not low <= 0.0 <= high)


def test_a_zero_standard_error_gives_p_0_or_1():
    estimate = inf.mean_estimate(np.full((8, 3), 0.03), np.eye(8, dtype=bool))
    assert float(inf.p_value(estimate)) == 0.0 and float(inf.p_value(estimate, null=0.03)) == 1.0


def test_ratio_estimate_is_the_textbook_delta_method(rng):
    a, b = rng.uniform(0.1, 0.3, 30), rng.uniform(0.4, 0.8, 30)
    estimate = inf.ratio_estimate(a[:, None], b[:, None], np.eye(30, dtype=bool))
    ratio = a.mean() / b.mean()
    assert float(estimate.effect) == pytest.approx(ratio)
    textbook = np.var(a - ratio * b, ddof=1) / (30 * b.mean() ** 2)
    assert float(estimate.se) ** 2 == pytest.approx(textbook, rel=1e-10)


def test_min_units_is_where_an_exact_sign_flip_test_can_first_reach_alpha():
    assert inf.min_units(0.05) == 6
    assert 2 / 2 ** 5 >= 0.05 > 2 / 2 ** 6


def test_holm_matches_a_hand_computed_example_and_skips_nan():
    out = inf.holm([0.01, 0.04, np.nan, 0.03, 0.005])
    assert out[[0, 1, 3, 4]] == pytest.approx([0.03, 0.06, 0.06, 0.02])
    assert math.isnan(out[2])


def test_holm_matches_statsmodels(rng):
    multipletests = pytest.importorskip("statsmodels.stats.multitest").multipletests
    for size in (1, 2, 7, 30):
        p = rng.uniform(0, 0.1, size) ** 2
        assert inf.holm(p) == pytest.approx(multipletests(p, method="holm")[1], rel=1e-12)
