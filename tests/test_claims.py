"""ofg.claims: verdicts on synthetic per-pair data with known effects, Holm against statsmodels and by hand."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from scipy.stats import wilcoxon

from ofg import claims
from ofg.claims import CLAIM_BY_NAME

DICE = CLAIM_BY_NAME["dice_gain"]


def per_pair(values: np.ndarray, seeds: int = 3, seed_noise: float = 0.0, rng: np.random.Generator | None = None,
             metric: str = "dice_mean") -> pd.DataFrame:
    """Rows (pair, seed) with ``values`` per pair plus optional per-seed noise, rows shuffled."""
    rng = rng if rng is not None else np.random.default_rng(0)
    rows = [{"split": "test", "pair_index": i, "moving": "atlas", "fixed": f"s{i}", "seed": s,
             metric: v + seed_noise * rng.standard_normal()} for s in range(seeds) for i, v in enumerate(values)]
    return pd.DataFrame(rows).sample(frac=1.0, random_state=1).reset_index(drop=True)


def verdict_of(claim, ofg, comparator, **kwargs) -> pd.Series:
    return claims.finalize([claims.compare(claim, ofg, comparator, **kwargs)]).iloc[0]


@pytest.fixture
def baseline() -> np.ndarray:
    return np.random.default_rng(3).uniform(0.5, 0.7, 40)


def test_clear_gain_is_supported(baseline):
    rng = np.random.default_rng(4)
    ofg = baseline + 0.03 + 0.01 * rng.standard_normal(40)
    row = verdict_of(DICE, per_pair(ofg, seed_noise=0.01, rng=rng), per_pair(baseline, seed_noise=0.01, rng=rng))
    assert row.verdict == "supported"
    assert row.n_pairs == 40 and row.n_seeds == 3 and row.n_seeds_comparator == 3
    assert row.ci_low < row.effect < row.ci_high and row.ci_low > 0
    assert row.effect == pytest.approx(0.03, abs=0.006)
    assert row.p < 1e-6 and row.p_holm == row.p  # a family of one
    assert row.seed_spread_ofg > 0


def test_clear_loss_is_contradicted(baseline):
    rng = np.random.default_rng(5)
    row = verdict_of(DICE, per_pair(baseline - 0.02 + 0.005 * rng.standard_normal(40)), per_pair(baseline))
    assert row.verdict == "contradicted" and row.effect < 0 and row.ci_high < 0


def test_lower_is_better_metrics_follow_their_direction(baseline):
    claim = CLAIM_BY_NAME["fewer_folds"]
    fewer = verdict_of(claim, per_pair(baseline * 0.5, metric=claim.metric), per_pair(baseline, metric=claim.metric))
    more = verdict_of(claim, per_pair(baseline * 2, metric=claim.metric), per_pair(baseline, metric=claim.metric))
    assert (fewer.verdict, more.verdict) == ("supported", "contradicted")


def test_no_difference_is_inconclusive(baseline):
    steps = np.random.default_rng(6).uniform(0.001, 0.02, 20)
    diff = np.concatenate([steps, -steps])  # symmetric: mean 0, signed-rank statistic at its centre
    row = verdict_of(DICE, per_pair(baseline + diff), per_pair(baseline))
    assert row.verdict == "inconclusive"
    assert row.effect == pytest.approx(0.0, abs=1e-12) and row.p > 0.9
    assert row.ci_low < 0 < row.ci_high


@pytest.mark.parametrize("n", [3, 5])
def test_too_few_pairs_is_insufficient_data_even_for_a_huge_effect(n):
    base = np.linspace(0.5, 0.6, n)
    row = verdict_of(DICE, per_pair(base + 0.2), per_pair(base))
    assert row.verdict == "insufficient data" and math.isnan(row.p_holm)


def test_min_pairs_is_where_the_exact_wilcoxon_can_first_reach_alpha():
    assert claims.min_pairs(0.05) == 6
    assert wilcoxon(np.arange(1, 6)).pvalue == pytest.approx(2 / 2 ** 5) and 2 / 2 ** 5 >= 0.05
    assert wilcoxon(np.arange(1, 7)).pvalue == pytest.approx(2 / 2 ** 6) and 2 / 2 ** 6 < 0.05


def test_seeds_are_averaged_per_pair_and_pairs_matched_on_keys():
    frame = pd.DataFrame({"pair_index": [0, 1, 0, 1], "seed": [0, 0, 1, 1], "dice_mean": [0.5, 0.7, 0.6, 0.9]})
    assert claims.seed_average(frame, "dice_mean").tolist() == pytest.approx([0.55, 0.8])
    assert claims.seed_spread(frame, "dice_mean") == pytest.approx(np.std([0.6, 0.75], ddof=1))
    assert math.isnan(claims.seed_spread(frame[frame.seed == 0], "dice_mean"))
    other = pd.DataFrame({"pair_index": [2, 1, 0], "dice_mean": [0.1, 0.5, 0.5]})  # no seed column: one seed
    diff = claims.paired_differences(frame, other, "dice_mean")
    assert diff.to_dict() == pytest.approx({0: 0.05, 1: 0.3})  # pair 2 is not in both


def test_holm_matches_a_hand_computed_example_and_skips_nan():
    # sorted 0.005, 0.01, 0.03, 0.04 -> 4*0.005, 3*0.01, max(.., 2*0.03), max(.., 1*0.04)
    out = claims.holm([0.01, 0.04, np.nan, 0.03, 0.005])
    assert out[[0, 1, 3, 4]] == pytest.approx([0.03, 0.06, 0.06, 0.02])
    assert math.isnan(out[2])
    assert claims.holm([0.5, 0.9]).tolist() == [1.0, 1.0]


def test_holm_matches_statsmodels():
    multipletests = pytest.importorskip("statsmodels.stats.multitest").multipletests
    rng = np.random.default_rng(7)
    for size in (1, 2, 7, 30):
        p = rng.uniform(0, 0.1, size) ** 2
        assert claims.holm(p) == pytest.approx(multipletests(p, method="holm")[1], rel=1e-12)


def test_finalize_adjusts_the_wilcoxon_rows_only(baseline):
    rng = np.random.default_rng(8)
    rows = [claims.compare(DICE, per_pair(baseline + 0.002 + 0.01 * rng.standard_normal(40)), per_pair(baseline),
                           dataset="d", model=f"m{i}") for i in range(3)]
    rows.append(claims.cost_ratio(CLAIM_BY_NAME["modest_overhead"], {0: 1.2}, {0: 1.0}))
    table = claims.finalize(rows)
    assert table.p_holm[:3].tolist() == pytest.approx(claims.holm(table.p[:3]))
    assert math.isnan(table.p_holm[3]) and table.verdict[3] == "supported"
    assert set(table.verdict) <= set(claims.VERDICTS)
    assert table.model[:3].tolist() == ["m0", "m1", "m2"]


def test_bootstrap_ci_is_reproducible_and_near_the_normal_interval():
    values = np.random.default_rng(9).normal(1.0, 0.5, 200)
    low, high = claims.bootstrap_ci(values)
    assert (low, high) == claims.bootstrap_ci(values)
    half = 1.96 * values.std(ddof=1) / np.sqrt(values.size)
    assert low == pytest.approx(values.mean() - half, abs=0.15 * half)
    assert high == pytest.approx(values.mean() + half, abs=0.15 * half)
    assert claims.bootstrap_ci([2.0, 2.0, 2.0]) == (2.0, 2.0)


def test_no_inference_cost_is_a_margin_rule(baseline):
    claim = CLAIM_BY_NAME["no_inference_cost"]
    rng = np.random.default_rng(10)
    seconds = 0.1 + 0.01 * rng.standard_normal(40)
    same = verdict_of(claim, per_pair(seconds + 0.001 * rng.standard_normal(40), metric=claim.metric),
                      per_pair(seconds, metric=claim.metric))
    slower = verdict_of(claim, per_pair(seconds * 1.5, metric=claim.metric), per_pair(seconds, metric=claim.metric))
    noisy = verdict_of(claim, per_pair(seconds + 0.1 * rng.standard_normal(40), metric=claim.metric),
                       per_pair(seconds, metric=claim.metric))
    assert (same.verdict, slower.verdict, noisy.verdict) == ("supported", "contradicted", "inconclusive")
    assert same.rule == "margin" and math.isnan(same.p_holm)


def test_training_overhead_ratio_rule():
    claim = CLAIM_BY_NAME["modest_overhead"]
    base = {0: 1.0, 1: 1.1, 2: 0.9}
    row = claims.cost_ratio(claim, {0: 1.2, 1: 1.43, 2: 1.08}, base)
    assert row["verdict"] == "supported"
    assert row["effect"] == pytest.approx(3.71 / 3.0)
    assert (row["ci_low"], row["ci_high"]) == pytest.approx((1.2, 1.3))
    assert row["seed_spread_ofg"] == pytest.approx(np.std([1.2, 1.3, 1.2], ddof=1))
    assert claims.cost_ratio(claim, {0: 2.0, 1: 2.2}, base)["verdict"] == "contradicted"
    assert claims.cost_ratio(claim, {0: 1.4, 1: 1.8}, base)["verdict"] == "inconclusive"
    assert claims.cost_ratio(claim, {5: 1.0}, base)["verdict"] == "insufficient data"


def ablation(peaks: dict[int, float], n: int = 30, noise: float = 0.003) -> dict[int, pd.DataFrame]:
    rng = np.random.default_rng(11)
    base = rng.uniform(0.5, 0.7, n)
    return {k: per_pair(base + gain + noise * rng.standard_normal(n), seeds=1) for k, gain in peaks.items()}


@pytest.mark.parametrize("peaks, verdict, best", [
    ({0: 0.0, 1: 0.01, 5: 0.03, 10: 0.031, 20: 0.02}, "supported", 10),
    ({0: 0.0, 1: 0.01, 5: 0.03, 10: 0.0305, 20: 0.0308}, "supported", 20),  # 10 within the CI of 20
    ({0: 0.0, 1: 0.05, 5: 0.02, 10: 0.01, 20: 0.0}, "contradicted", 1),
])
def test_step_ablation_rule(peaks, verdict, best):
    row = claims.step_ablation(CLAIM_BY_NAME["best_steps"], ablation(peaks))
    assert (row["verdict"], row["best_k"]) == (verdict, best)
    assert row["effect"] <= 0 and row["n_pairs"] == 30


def test_step_ablation_without_a_difference_or_without_5_and_10():
    claim = CLAIM_BY_NAME["best_steps"]
    flat = {k: per_pair(np.linspace(0.5, 0.6, 20), seeds=1) for k in (0, 5, 10)}
    assert claims.step_ablation(claim, flat)["verdict"] == "inconclusive"
    assert claims.step_ablation(claim, ablation({0: 0.0, 2: 0.01}))["verdict"] == "insufficient data"
    assert claims.step_ablation(claim, ablation({0: 0.0, 10: 0.03}, n=5))["verdict"] == "insufficient data"


def curve(n_pairs: int, gain: float, steps: int = 12) -> pd.DataFrame:
    rng = np.random.default_rng(12)
    start = rng.uniform(0.4, 0.5, n_pairs)
    return pd.DataFrame([{"start": "untrained", "pair": p, "step": k, "dice": start[p] + gain * k / steps
                          + 0.001 * rng.standard_normal(), "energy": 0.0}
                         for p in range(n_pairs) for k in range(steps + 1)])


def test_optimiser_alone_compares_step_10_with_step_0():
    claim = CLAIM_BY_NAME["optimiser_alone"]
    table = claims.finalize([claims.refinement_gain(claim, curve(8, 0.12), dataset="d"),
                             claims.refinement_gain(claim, curve(5, 0.12), dataset="d"),
                             claims.refinement_gain(claim, curve(8, 0.12, steps=3), dataset="d")])
    assert table.verdict.tolist() == ["supported", "insufficient data", "supported"]
    assert table.step.tolist() == [10, 10, 3]
    assert table.effect[0] == pytest.approx(0.1, abs=0.005)


def test_claims_are_well_formed_data():
    assert len({c.name for c in claims.CLAIMS}) == len(claims.CLAIMS)
    for claim in claims.CLAIMS:
        assert claim.direction in claims.DIRECTIONS and claim.rule in ("wilcoxon", "margin", "ratio", "ablation")
        assert claim.experiment in ("main", "self_training", "ablation", "refinement")
