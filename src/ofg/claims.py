"""The paper's claims as data, and the statistics that give each one a verdict (pure: no I/O).

Inputs are per-pair frames with one row per (test pair, seed): pair-key columns (``keys``; default
the :data:`PAIR_KEYS` a frame has), a ``seed`` column (absent: one seed) and metric columns, as
:mod:`ofg.evaluate` writes them. Conventions of every row of a claims table:

- seeds are averaged per pair first; ``n_pairs`` counts the pairs finite on both sides;
- ``effect`` = mean over pairs of (OFG − comparator) in the metric's units (the cost claim: a ratio);
- ``ci_low``/``ci_high``: 95 % percentile bootstrap of that mean over test pairs
  (:data:`RESAMPLES` resamples, RNG seed :data:`BOOTSTRAP_SEED`);
- ``p``: two-sided paired Wilcoxon signed-rank test of the per-pair differences (scipy, zero
  differences dropped); ``p_holm``: Holm's step-down adjustment over the table's "wilcoxon" rows;
- ``seed_spread_ofg``/``seed_spread_comparator``: sample std over seeds of each side's mean over pairs.

Verdicts (:data:`VERDICTS`), by the row's ``rule``:

- any rule, first: *insufficient data* with fewer than :func:`min_pairs` pairs: an exact two-sided
  Wilcoxon test on n pairs cannot go below p = 2/2^n, which is ≥ α = 0.05 for n ≤ 5;
- "wilcoxon" (direction "higher"/"lower"): *supported* when p_holm < α and the effect points the
  paper's way, *contradicted* when p_holm < α and it points the other way, else *inconclusive*;
- "margin" (direction "not_higher", no inference cost): a non-inferiority check, since "not
  significantly higher" alone is no evidence: *supported* when ci_high < :data:`MARGIN` × the
  comparator's mean (OFG at most 10 % slower with 95 % confidence), *contradicted* when ci_low is
  above that margin, else *inconclusive*;
- "ratio" (modest training overhead): per-seed ratios OFG s/iter ÷ comparator s/iter, effect the
  ratio of the means, ci_low/ci_high the range over seeds, spread their std: *supported* when every
  ratio ≤ :data:`OVERHEAD_LIMIT` (the paper gives no number; 1.5× is ours), *contradicted* when
  every ratio is above it, else *inconclusive*; no seed → insufficient data;
- "ablation" (5–10 steps best): best k = highest mean Dice; k is *tied* with it when the CI of the
  paired difference Dice_k − Dice_best reaches 0. *Supported* when k = 5 or 10 is tied and some
  other k is not (the steps matter and 5–10 are among the best), *contradicted* when neither 5 nor
  10 is tied, *inconclusive* when every k is tied; the effect and CI are those of the better of 5, 10.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Iterable, Mapping, Sequence

import numpy as np
import pandas as pd
from scipy.stats import wilcoxon

PAIR_KEYS = ("split", "pair_index", "moving", "fixed")
ALPHA = 0.05
RESAMPLES = 10_000
BOOTSTRAP_SEED = 0
MARGIN = 0.10
OVERHEAD_LIMIT = 1.5
BEST_STEPS = (5, 10)
VERDICTS = ("supported", "contradicted", "inconclusive", "insufficient data")
DIRECTIONS = ("higher", "lower", "not_higher")
SIGN = {"higher": 1.0, "lower": -1.0, "not_higher": -1.0}


@dataclass(frozen=True)
class Claim:
    """One claim: OFG's ``metric`` moves in ``direction`` against ``comparator``.

    ``experiment`` says which runs it compares: "main" (main OFG run vs unsupervised), "self_training",
    "ablation" (every k) or "refinement" (the optimiser alone: step ``refine_at`` vs step 0).
    """

    name: str
    statement: str
    metric: str
    direction: str
    comparator: str
    experiment: str = "main"
    rule: str = "wilcoxon"


CLAIMS = (
    Claim("dice_gain", "OFG raises Dice over the unsupervised baseline", "dice_mean", "higher", "unsupervised"),
    Claim("fewer_folds", "OFG has fewer non-diffeomorphic voxels (%|J|≤0)", "folding_percent", "lower",
          "unsupervised"),
    Claim("smoother", "OFG fields are smoother (SDlogJ)", "sdlogj_l2r", "lower", "unsupervised"),
    Claim("closer_to_truth", "OFG fields are closer to the true deformation (EPE)", "endpoint_error", "lower",
          "unsupervised"),
    Claim("no_inference_cost", "OFG costs nothing at inference (s per pair)", "inference_seconds", "not_higher",
          "unsupervised", rule="margin"),
    Claim("modest_overhead", f"OFG's training overhead is modest (s/iter ratio ≤ {OVERHEAD_LIMIT})",
          "seconds_per_iteration", "not_higher", "unsupervised", rule="ratio"),
    Claim("best_steps", "5–10 optimiser steps are best (step ablation)", "dice_mean", "higher", "best k",
          experiment="ablation", rule="ablation"),
    Claim("beats_self_training", "OFG beats self-training (Fig. 3)", "dice_mean", "higher", "self_training",
          experiment="self_training"),
    Claim("beats_opt_self_training", "OFG beats optimised self-training (Fig. 3)", "dice_mean", "higher",
          "opt_self_training", experiment="self_training"),
    Claim("optimiser_alone", "The optimiser alone raises Dice within 10 steps (Fig. 2)", "dice", "higher",
          "step 0", experiment="refinement"),
)
CLAIM_BY_NAME = {claim.name: claim for claim in CLAIMS}


def min_pairs(alpha: float = ALPHA) -> int:
    """Fewest pairs whose exact two-sided Wilcoxon test can reach p < ``alpha`` (2/2^n < alpha): 6 at 0.05."""
    return next(n for n in range(1, 64) if 2.0 / 2 ** n < alpha)


def holm(pvalues: Iterable[float]) -> np.ndarray:
    """Holm-adjusted p-values (step-down, capped at 1); NaN entries stay NaN and do not count in m."""
    p = np.asarray(list(pvalues), dtype=float)
    out = np.full(p.shape, np.nan)
    finite = np.flatnonzero(np.isfinite(p))
    order = finite[np.argsort(p[finite], kind="stable")]
    m, running = len(order), 0.0
    for rank, index in enumerate(order):
        running = max(running, min(1.0, (m - rank) * p[index]))
        out[index] = running
    return out


def wilcoxon_p(diff: Sequence[float]) -> float:
    """Two-sided Wilcoxon signed-rank p of paired differences; NaN with < 2 or only zero differences."""
    d = np.asarray(diff, dtype=float)
    d = d[np.isfinite(d)]
    if d.size < 2 or not np.any(d != 0):
        return math.nan
    return float(wilcoxon(d).pvalue)


def bootstrap_ci(values: Sequence[float], level: float = 0.95, resamples: int = RESAMPLES,
                 seed: int = BOOTSTRAP_SEED) -> tuple[float, float]:
    """Percentile bootstrap CI of the mean of ``values`` (resampled with replacement); NaNs if empty."""
    v = np.asarray(values, dtype=float)
    v = v[np.isfinite(v)]
    if v.size == 0:
        return math.nan, math.nan
    means = v[np.random.default_rng(seed).integers(0, v.size, (resamples, v.size))].mean(axis=1)
    tail = 100 * (1 - level) / 2
    return float(np.percentile(means, tail)), float(np.percentile(means, 100 - tail))


def _keys(frame: pd.DataFrame, keys: Sequence[str] | None) -> list[str]:
    found = [k for k in (PAIR_KEYS if keys is None else keys) if k in frame.columns]
    if not found:
        raise ValueError(f"no pair-key column among {list(PAIR_KEYS if keys is None else keys)} in "
                         f"{list(frame.columns)}")
    return found


def _seeds(frame: pd.DataFrame) -> pd.Series:
    return frame["seed"] if "seed" in frame.columns else pd.Series(0, index=frame.index)


def seed_average(frame: pd.DataFrame, metric: str, keys: Sequence[str] | None = None) -> pd.Series:
    """Per-pair mean of ``metric`` over seeds (NaNs skipped), indexed by the pair keys."""
    return frame.groupby(_keys(frame, keys), sort=True)[metric].mean()


def seed_spread(frame: pd.DataFrame, metric: str) -> float:
    """Sample std over seeds of the per-seed mean of ``metric`` over pairs; NaN with one seed."""
    means = frame.assign(_seed=_seeds(frame)).groupby("_seed")[metric].mean().dropna()
    return float(means.std(ddof=1)) if len(means) > 1 else math.nan


def n_seeds(frame: pd.DataFrame) -> int:
    return int(_seeds(frame).nunique())


def paired_differences(ofg: pd.DataFrame, comparator: pd.DataFrame, metric: str,
                       keys: Sequence[str] | None = None) -> pd.Series:
    """Per-pair OFG − comparator of ``metric`` (seeds averaged per pair), pairs finite on both sides;
    empty when either frame is."""
    if ofg.empty or comparator.empty:
        return pd.Series(dtype=float)
    names = [k for k in _keys(ofg, keys) if k in comparator.columns]
    a, b = seed_average(ofg, metric, names), seed_average(comparator, metric, names)
    joined = pd.concat([a.rename("a"), b.rename("b")], axis=1, join="inner").dropna()
    return joined["a"] - joined["b"]


def _base(claim: Claim, **context: Any) -> dict[str, Any]:
    return {**context, "claim": claim.name, "statement": claim.statement, "metric": claim.metric,
            "direction": claim.direction, "comparator": claim.comparator, "rule": claim.rule}


def compare(claim: Claim, ofg: pd.DataFrame, comparator: pd.DataFrame, keys: Sequence[str] | None = None,
            alpha: float = ALPHA, **context: Any) -> dict[str, Any]:
    """One row of a paired claim ("wilcoxon" or "margin" rule); "wilcoxon" verdicts wait for :func:`finalize`.

    ``context`` (dataset, model, ...) is copied into the row.
    """
    diff = paired_differences(ofg, comparator, claim.metric, keys)
    low, high = bootstrap_ci(diff)
    row = {**_base(claim, **context), "effect": float(diff.mean()) if len(diff) else math.nan,
           "ci_low": low, "ci_high": high, "p": wilcoxon_p(diff), "p_holm": math.nan, "n_pairs": len(diff),
           "n_seeds": n_seeds(ofg), "n_seeds_comparator": n_seeds(comparator),
           "seed_spread_ofg": seed_spread(ofg, claim.metric),
           "seed_spread_comparator": seed_spread(comparator, claim.metric), "verdict": None}
    if len(diff) < min_pairs(alpha):
        row["verdict"] = "insufficient data"
    elif claim.rule == "margin":
        margin = MARGIN * float(seed_average(comparator, claim.metric, keys).mean())
        row["verdict"] = ("supported" if high < margin else "contradicted" if low > margin else "inconclusive")
    return row


def cost_ratio(claim: Claim, ofg: Mapping[Any, float], comparator: Mapping[Any, float],
               limit: float = OVERHEAD_LIMIT, **context: Any) -> dict[str, Any]:
    """The "ratio" row: ``ofg`` and ``comparator`` map seed → mean s/iter of that run (seeds matched)."""
    seeds = [s for s in ofg if s in comparator and np.isfinite(ofg[s]) and np.isfinite(comparator[s])]
    ratios = np.array([ofg[s] / comparator[s] for s in seeds], dtype=float)
    row = {**_base(claim, **context), "p": math.nan, "p_holm": math.nan, "n_pairs": math.nan,
           "n_seeds": len(seeds), "n_seeds_comparator": len(seeds)}
    if not seeds:
        return {**row, "effect": math.nan, "ci_low": math.nan, "ci_high": math.nan, "seed_spread_ofg": math.nan,
                "seed_spread_comparator": math.nan, "verdict": "insufficient data"}
    verdict = ("supported" if np.all(ratios <= limit) else "contradicted" if np.all(ratios > limit)
               else "inconclusive")
    spread = float(ratios.std(ddof=1)) if len(ratios) > 1 else math.nan
    effect = float(np.mean([ofg[s] for s in seeds]) / np.mean([comparator[s] for s in seeds]))
    return {**row, "effect": effect, "ci_low": float(ratios.min()), "ci_high": float(ratios.max()),
            "seed_spread_ofg": spread, "seed_spread_comparator": math.nan, "verdict": verdict}


def step_ablation(claim: Claim, by_k: Mapping[int, pd.DataFrame], keys: Sequence[str] | None = None,
                  best_steps: Sequence[int] = BEST_STEPS, alpha: float = ALPHA, **context: Any) -> dict[str, Any]:
    """The "ablation" row: ``by_k`` maps k (0 = unsupervised) → per-pair frame; pairs common to every k."""
    means = {k: seed_average(frame, claim.metric, keys) for k, frame in by_k.items()}
    table = (pd.concat([m.rename(k) for k, m in means.items()], axis=1, join="inner").dropna() if means
             else pd.DataFrame())
    row = {**_base(claim, **context), "p_holm": math.nan, "n_pairs": len(table),
           "n_seeds": min((n_seeds(f) for f in by_k.values()), default=0), "n_seeds_comparator": math.nan,
           "seed_spread_ofg": math.nan, "seed_spread_comparator": math.nan}
    candidates = [k for k in best_steps if k in table.columns]
    empty = {"effect": math.nan, "ci_low": math.nan, "ci_high": math.nan, "p": math.nan, "best_k": math.nan,
             "chosen_k": math.nan}
    if not candidates or len(table) < min_pairs(alpha):
        return {**row, **empty, "verdict": "insufficient data"}
    best = int(table.mean().idxmax())
    ci = {k: bootstrap_ci(table[k] - table[best]) for k in table.columns}
    tied = {k for k in table.columns if ci[k][1] >= 0}
    chosen = max(candidates, key=lambda k: table[k].mean())
    others = set(table.columns) - set(candidates)
    verdict = ("contradicted" if not tied & set(candidates) else "supported" if others - tied else "inconclusive")
    diff = table[chosen] - table[best]
    return {**row, "effect": float(diff.mean()), "ci_low": ci[chosen][0], "ci_high": ci[chosen][1],
            "p": wilcoxon_p(diff), "best_k": best, "chosen_k": chosen, "verdict": verdict}


def refinement_gain(claim: Claim, curve: pd.DataFrame, at: int = 10, **context: Any) -> dict[str, Any]:
    """The optimiser-alone row from a refinement curve (columns pair, step, dice; ``seed`` optional):
    per-pair Dice at step min(``at``, last step) minus step 0, with the Wilcoxon rule."""
    step = int(min(at, curve["step"].max())) if len(curve) else 0
    ofg, start = curve[curve["step"] == step], curve[curve["step"] == 0]
    return {**compare(claim, ofg, start, keys=("pair",), **context), "step": step}


def finalize(rows: Iterable[Mapping[str, Any]], alpha: float = ALPHA) -> pd.DataFrame:
    """The claims table: Holm over the "wilcoxon" rows with enough pairs, then their verdicts."""
    table = pd.DataFrame(list(rows))
    if table.empty:
        return table
    family = (table["rule"] == "wilcoxon") & (table["verdict"] != "insufficient data")
    table.loc[family, "p_holm"] = holm(table.loc[family, "p"])
    for index in table.index[family]:
        p, effect, direction = table.at[index, "p_holm"], table.at[index, "effect"], table.at[index, "direction"]
        if not (np.isfinite(p) and p < alpha):
            table.at[index, "verdict"] = "inconclusive"
        else:
            table.at[index, "verdict"] = "supported" if SIGN[direction] * effect > 0 else "contradicted"
    return table
