"""ofg.claims and ofg.claim_rows: rows on synthetic frames with known effects, against independent references;
the families, the intersection-union row, the size, ablation and timing rules."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from ofg import claim_rows, claims
from ofg.claims import CLAIM_BY_NAME

DICE = CLAIM_BY_NAME["dice_gain"]
SEEDS = (0, 1, 2)


def pairs_frame(values: np.ndarray, moving: list[str], fixed: list[str], seeds=SEEDS, metric: str = "dice_mean",
                shuffle: int = 1) -> pd.DataFrame:
    """Rows (pair, seed) of ``values[pair, seed]``, shuffled."""
    rows = [{"split": "test", "pair_index": p, "moving": moving[p], "fixed": fixed[p], "seed": s,
             metric: values[p, i]} for i, s in enumerate(seeds) for p in range(len(moving))]
    return pd.DataFrame(rows).sample(frac=1.0, random_state=shuffle).reset_index(drop=True)


def atlas(n: int) -> tuple[list[str], list[str]]:
    return ["atlas"] * n, [f"s{i}" for i in range(n)]


def crossed(subjects: int) -> tuple[list[str], list[str]]:
    pairs = [(f"s{i}", f"s{j}") for i in range(subjects) for j in range(subjects) if i != j]
    return [m for m, _ in pairs], [f for _, f in pairs]


def row_of(claim, a: np.ndarray, b: np.ndarray, design=None, **context) -> dict:
    moving, fixed = design if design is not None else atlas(a.shape[0])
    return claim_rows.compare(claim, pairs_frame(a, moving, fixed, metric=claim.metric),
                              pairs_frame(b, moving, fixed, metric=claim.metric, shuffle=2), **context)


def final(*rows) -> pd.DataFrame:
    return claims.finalize(rows)


def noisy(rng, n: int, effect: float, sd: float = 0.01, seeds: int = 3) -> tuple[np.ndarray, np.ndarray]:
    base = rng.uniform(0.5, 0.7, (n, 1)) + 0.002 * rng.standard_normal((n, seeds))
    return base + effect + sd * rng.standard_normal((n, seeds)), base


def test_a_clear_gain_is_supported_and_a_clear_loss_contradicted(rng):
    gain = final(row_of(DICE, *noisy(rng, 40, 0.03))).iloc[0]
    assert gain.verdict == "supported" and gain.ci_low > 0 and gain.effect == pytest.approx(0.03, abs=0.006)
    assert gain.n == "40 pairs × 3 / 3 seeds" and gain.n_units == 40 and gain.p_holm == gain.p
    assert len(gain.per_seed.split(";")) == 3
    loss = final(row_of(DICE, *noisy(rng, 40, -0.02))).iloc[0]
    assert loss.verdict == "contradicted" and loss.ci_high < 0


def test_no_difference_is_inconclusive(rng):
    a, b = noisy(rng, 40, 0.0)
    row = final(row_of(DICE, b + (a - b - (a - b).mean()), b)).iloc[0]  # differences of mean exactly 0
    assert row.verdict == "inconclusive" and row.ci_low < 0 < row.ci_high and row.p > 0.99


def test_the_crossed_design_row_uses_subject_units_against_a_brute_force_reference(rng):
    moving, fixed = crossed(7)
    subject = dict(zip([f"s{i}" for i in range(7)], 0.01 * rng.standard_normal(7)))
    d = (0.01 + np.array([subject[m] + subject[f] for m, f in zip(moving, fixed)])[:, None]
         + 0.004 * rng.standard_normal((1, 3)) + 0.005 * rng.standard_normal((42, 3)))
    base = rng.uniform(0.5, 0.7, (42, 3))
    row = row_of(DICE, base + d, base, design=(moving, fixed))
    assert row["n"] == "7 subjects (42 pairs) × 3 / 3 seeds" and (row["n_units"], row["n_pairs"]) == (7, 42)
    # reference: loops over subjects, the pair × seed ANOVA by hand, Cochran–Cox from scipy's quantiles
    long = pd.DataFrame({"m": np.repeat(moving, 3), "f": np.repeat(fixed, 3), "d": d.ravel()})
    pair_mean = d.mean(axis=1)
    left_out = np.array([pair_mean[[(s not in (m, f)) for m, f in zip(moving, fixed)]].mean() for s in subject])
    jackknife = 6 / 7 * ((left_out - left_out.mean()) ** 2).sum()
    resid = d - d.mean(axis=1, keepdims=True) - d.mean(axis=0, keepdims=True) + d.mean()
    ms_res = (resid ** 2).sum() / (41 * 2)
    var_units, var_seeds = max(jackknife - ms_res / (42 * 3), 0.0), d.mean(axis=0).var(ddof=1) / 3
    critical = (var_units * stats.t.ppf(0.975, 6) + var_seeds * stats.t.ppf(0.975, 2)) / (var_units + var_seeds)
    half = critical * math.sqrt(var_units + var_seeds)
    assert row["effect"] == pytest.approx(long.d.mean(), rel=1e-12)
    assert (row["ci_low"], row["ci_high"]) == pytest.approx((long.d.mean() - half, long.d.mean() + half), rel=1e-9)
    # the same numbers taken as 42 independent pairs give a narrower interval
    independent = row_of(DICE, base + d, base, design=([f"a{i}" for i in range(42)], [f"b{i}" for i in range(42)]))
    assert independent["ci_high"] - independent["ci_low"] < row["ci_high"] - row["ci_low"]


def test_too_few_independent_units_is_insufficient_data_even_with_many_pairs(rng):
    a, b = noisy(rng, 12, 0.2, seeds=3)  # every ordered pair of 4 subjects: 12 pairs, 4 units
    row = final(row_of(DICE, a, b, design=crossed(4))).iloc[0]
    assert row.verdict == "insufficient data" and math.isnan(row.p_holm) and row.n_units == 4
    assert "fewer than 6 independent units" in row.note
    assert final(row_of(DICE, *noisy(rng, 5, 0.2))).verdict[0] == "insufficient data"
    assert final(row_of(DICE, *noisy(rng, 6, 0.2))).verdict[0] == "supported"


def test_seeds_are_matched_seed_by_seed_and_the_per_seed_effects_shown(rng):
    # each seed shifts both methods alike: matched, the shifts cancel; per-seed effects 0.01, 0.02, 0.03
    base = rng.uniform(0.5, 0.7, (30, 1)) + np.array([[-0.05, 0.0, 0.05]]) + 0.001 * rng.standard_normal((30, 3))
    row = row_of(DICE, base + np.array([[0.01, 0.02, 0.03]]), base)
    assert [float(v) for v in row["per_seed"].split(";")] == pytest.approx([0.01, 0.02, 0.03], abs=1e-9)
    assert row["effect"] == pytest.approx(0.02, abs=1e-9)


def test_different_seed_sets_use_the_common_seeds_and_say_so(rng):
    a, b = noisy(rng, 30, 0.03, seeds=3)
    moving, fixed = atlas(30)
    row = claim_rows.compare(DICE, pairs_frame(a, moving, fixed, seeds=(0, 1, 2)),
                             pairs_frame(b, moving, fixed, seeds=(1, 2, 7)))
    assert row["n"] == "30 pairs × 3 / 3 seeds" and "common seeds [1, 2]" in row["note"]
    assert len(row["per_seed"].split(";")) == 2
    one = claim_rows.compare(DICE, pairs_frame(a[:, :1], moving, fixed, seeds=(0,)),
                             pairs_frame(b[:, :1], moving, fixed, seeds=(0,)))
    assert "seed variance is not estimable" in one["note"] and one["n"] == "30 pairs × 1 / 1 seed"


def family_rows(rng, dataset: str) -> list[dict]:
    context = {"dataset": dataset, "model": "m"}
    folds = CLAIM_BY_NAME["fewer_folds"]
    a, b = noisy(rng, 30, 0.0)
    rows = [row_of(DICE, *noisy(rng, 30, 0.004), **context),
            row_of(folds, 0.4 * b, b, **context), row_of(CLAIM_BY_NAME["smoother"], *noisy(rng, 30, -0.003), **context),
            row_of(CLAIM_BY_NAME["beats_self_training"], *noisy(rng, 30, 0.005), **context),
            row_of(CLAIM_BY_NAME["beats_opt_self_training"], *noisy(rng, 30, 0.001), **context)]
    rows += [row_of(CLAIM_BY_NAME[name], *noisy(rng, 30, gain), **context)
             for name, gain in (("steps_5_beat_1", 0.004), ("steps_10_beat_1", 0.005), ("steps_20_no_better", 0.0))]
    return rows + [row_of(CLAIM_BY_NAME["closer_to_truth"], *noisy(rng, 30, -0.01), **context)]


def test_holm_runs_within_each_family_only(rng):
    table = final(*family_rows(rng, "d1"), *family_rows(rng, "d2"))
    for names in claims.FAMILIES.values():
        members = table[table.claim.isin(names)]
        assert members.p_holm.tolist() == pytest.approx(list(claims.holm(members.p)))
    descriptive = table[table.family == "descriptive"]
    assert descriptive.p_holm.isna().all() and descriptive.p.notna().all()


@pytest.mark.parametrize("context", [{"dataset": "d3", "model": "m"}, {"dataset": "d1", "model": "other"}])
def test_a_new_dataset_or_model_changes_no_other_familys_adjusted_p(rng, context):
    first = family_rows(rng, "d1")
    alone = final(*first)
    more = final(*first, row_of(DICE, *noisy(rng, 30, 0.001), **context))  # one more primary row
    for family in ("secondary", "fig3", "ablation"):
        names = claims.FAMILIES[family]
        np.testing.assert_array_equal(more[more.claim.isin(names)].p_holm.to_numpy(),
                                      alone[alone.claim.isin(names)].p_holm.to_numpy())
    primary = more[more.claim == "dice_gain"]
    assert len(primary) == 2 and primary.p_holm.tolist() == pytest.approx(list(claims.holm(primary.p)))


def test_families_cover_every_claim_once():
    named = [name for names in claims.FAMILIES.values() for name in names] + list(claims.DESCRIPTIVE)
    assert sorted(named + ["dice_consistent"]) == sorted(claims.CLAIM_BY_NAME)
    assert set(claims.FAMILY_OF) == set(claims.CLAIM_BY_NAME)


def primary(verdict: str, effect: float, p: float, dataset: str) -> dict:
    return {**claim_rows.base_row(DICE, dataset=dataset, model="m"), "verdict": verdict, "effect": effect, "p": p}


@pytest.mark.parametrize("verdicts, expected", [
    (("supported", "supported"), "supported"),
    (("supported", "inconclusive"), "inconclusive"),
    (("supported", "contradicted"), "contradicted"),
    (("supported", "insufficient data"), "insufficient data"),
    (("insufficient data", "contradicted"), "contradicted"),
])
def test_the_intersection_union_row(verdicts, expected):
    rows = pd.DataFrame([primary(v, 0.01 * (i + 1), 0.001 * (i + 1), f"d{i}") for i, v in enumerate(verdicts)])
    row = claims.consistency_row(rows)
    assert row["verdict"] == expected and row["p"] == pytest.approx(0.002) and row["effect"] == pytest.approx(0.01)
    assert row["family"] == "primary (IUT)"


def test_finalize_adds_the_intersection_union_row_with_two_primary_rows_only(rng):
    one = final(row_of(DICE, *noisy(rng, 30, 0.03), dataset="a", model="m"))
    assert "dice_consistent" not in set(one.claim)
    two = final(row_of(DICE, *noisy(rng, 30, 0.03), dataset="a", model="m"),
                row_of(DICE, *noisy(rng, 30, 0.03), dataset="b", model="m"))
    assert two.set_index("claim").loc["dice_consistent", "verdict"] == "supported"


def test_far_fewer_folds_is_a_size_rule(rng):
    claim = CLAIM_BY_NAME["fewer_folds"]
    b = rng.uniform(0.2, 0.6, (40, 3))
    scaled = lambda factor, sd: np.clip(factor * b + sd * rng.standard_normal(b.shape), 0, None)  # noqa: E731
    assert final(row_of(claim, scaled(0.3, 0.01), b)).verdict[0] == "supported"     # reduced by 70 %
    assert final(row_of(claim, scaled(0.7, 0.01), b)).verdict[0] == "contradicted"  # only 30 %: fewer, not far fewer
    halved = 0.5 * b + (e := rng.uniform(-0.09, 0.09, b.shape)) - e.mean()  # exactly halved on average
    assert final(row_of(claim, halved, b)).verdict[0] == "inconclusive"
    assert final(row_of(claim, scaled(0.3, 0.0), 0 * b)).verdict[0] == "insufficient data"
    # one seed, independent pairs: the interval is the textbook delta method of the ratio of means
    a1, b1 = scaled(0.4, 0.05)[:, :1], b[:, :1]
    row = claim_rows.compare(claim, pairs_frame(a1, *atlas(40), seeds=(0,), metric=claim.metric),
                             pairs_frame(b1, *atlas(40), seeds=(0,), metric=claim.metric))
    ratio = a1.mean() / b1.mean()
    se = math.sqrt(np.var(a1 - ratio * b1, ddof=1) / (40 * b1.mean() ** 2))
    half = stats.t.ppf(0.975, 39) * se
    assert row["effect"] == pytest.approx(1 - ratio)
    assert (row["ci_low"], row["ci_high"]) == pytest.approx((1 - ratio - half, 1 - ratio + half), rel=1e-9)
    assert row["p"] == pytest.approx(2 * stats.t.sf(abs(ratio - 0.5) / se, 39), rel=1e-5)


@pytest.mark.parametrize("name, gain, verdict", [
    ("steps_5_beat_1", 0.01, "supported"), ("steps_10_beat_1", -0.01, "contradicted"),
    ("steps_10_beat_1", 0.0, "inconclusive"),
    ("steps_20_no_better", 0.0, "supported"),        # CI of Dice(20) − Dice(10) below the 0.01 margin
    ("steps_20_no_better", 0.03, "contradicted"),    # 20 steps better by more than the margin
    ("steps_20_no_better", 0.01, "inconclusive"),
])
def test_the_step_ablation_rows(rng, name, gain, verdict):
    a, b = noisy(rng, 40, gain, sd=0.004)
    if verdict == "inconclusive":
        a = b + gain + (a - b - (a - b).mean())  # the effect exactly at the null
    row = final(row_of(CLAIM_BY_NAME[name], a, b)).iloc[0]
    assert row.verdict == verdict and row.family == "ablation"


def timing(kind: str, ratio: np.ndarray, seeds=SEEDS, repeats: int = 4) -> pd.DataFrame:
    rows = []
    for s in seeds:
        for r in range(repeats):
            unsupervised = 0.05 + 0.001 * r
            rows += [{"kind": kind, "method": "unsupervised", "run": "unsupervised", "seed": s, "repeat": r,
                      "seconds": unsupervised},
                     {"kind": kind, "method": "ofg", "run": "ofg-k10", "seed": s, "repeat": r,
                      "seconds": unsupervised * ratio[(s * repeats + r) % len(ratio)]}]
    return pd.DataFrame(rows)


@pytest.mark.parametrize("ratios, verdict", [
    ([1.0, 1.01, 0.99, 1.02, 0.98, 1.0], "supported"), ([1.3, 1.32, 1.28, 1.31], "contradicted"),
    ([0.7, 1.4, 1.0, 0.9, 1.1, 1.3], "inconclusive")])
def test_no_inference_cost_is_an_equivalence_rule(ratios, verdict):
    row = claim_rows.timing_row(CLAIM_BY_NAME["no_inference_cost"], timing("inference", np.array(ratios)))
    assert row["verdict"] == verdict and row["n"] == "12 repeats (3 seeds pooled)"
    assert (row["p"] < 0.05) == (verdict == "supported")  # the TOST p agrees with the interval
    reference = stats.ttest_1samp(np.resize(ratios, 12), 1.0).confidence_interval(0.95)
    assert (row["ci_low"], row["ci_high"]) == pytest.approx(tuple(reference), rel=1e-9)


@pytest.mark.parametrize("ratios, verdict", [
    ([1.2, 1.22, 1.18], "supported"), ([1.8, 1.85, 1.75], "contradicted"), ([1.2, 1.8, 1.5, 1.3, 1.7], "inconclusive")])
def test_modest_overhead_is_a_limit_rule(ratios, verdict):
    row = claim_rows.timing_row(CLAIM_BY_NAME["modest_overhead"], timing("iteration", np.array(ratios)))
    assert row["verdict"] == verdict and math.isnan(row.get("p_holm", math.nan))


def test_timing_without_its_file_or_with_too_few_repeats_is_insufficient_data():
    claim = CLAIM_BY_NAME["modest_overhead"]
    absent = claim_rows.timing_row(claim, None)
    assert absent["verdict"] == "insufficient data" and "timing file absent" in absent["note"]
    few = claim_rows.timing_row(claim, timing("iteration", np.array([1.2]), seeds=(0,), repeats=5))
    assert few["verdict"] == "insufficient data"
    other_kind = claim_rows.timing_row(claim, timing("inference", np.array([1.2])))
    assert other_kind["verdict"] == "insufficient data"


def refinement_curve(rng: np.random.Generator, n: int, steps: int = 12) -> pd.DataFrame:
    """Dice rising by 0.01 a step from a per-pair start, one seed, no subject columns."""
    start = rng.uniform(0.4, 0.5, n)
    return pd.DataFrame([{"start": "untrained", "pair": p, "step": k, "dice": start[p] + 0.01 * k
                          + 0.001 * rng.standard_normal(), "energy": 0.0} for p in range(n) for k in range(steps + 1)])


def test_optimiser_alone_compares_step_10_with_step_0(rng):
    claim = CLAIM_BY_NAME["optimiser_alone"]
    rows = [claim_rows.refinement_gain(claim, refinement_curve(rng, 8)),
            claim_rows.refinement_gain(claim, refinement_curve(rng, 5)),
            claim_rows.refinement_gain(claim, refinement_curve(rng, 8, steps=3))]
    assert [r["verdict"] for r in rows] == ["supported", "insufficient data", "supported"]
    assert [r["step"] for r in rows] == [10, 10, 3] and rows[0]["effect"] == pytest.approx(0.1, abs=0.003)
    assert "no subject columns" in rows[0]["note"]


def test_a_metric_the_files_lack_is_insufficient_data_and_named(rng):
    a, b = noisy(rng, 30, 0.01)
    moving, fixed = atlas(30)
    claim = CLAIM_BY_NAME["closer_to_truth"]
    row = claim_rows.compare(claim, pairs_frame(a, moving, fixed), pairs_frame(b, moving, fixed))
    assert row["verdict"] == "insufficient data" and row["note"] == "no endpoint_error values in the metrics"
    assert row["n"] == "0 pairs × 3 / 3 seeds"


def test_claims_are_well_formed_data():
    for claim in claims.CLAIMS:
        assert claim.direction in claims.DIRECTIONS and claim.rule in claims.RULES
        assert claim.experiment in claims.EXPERIMENTS
        assert (claim.steps is not None) == (claim.experiment == "ablation")
        assert all(k >= 1 for k in claim.steps or (1,))  # k = 0 is the Dice claim's, not the ablation's
