"""The claims table (``tables/claims.{csv,md,tex}``): one row per claim × dataset × model, with a verdict.

The statistics and verdict rules are :mod:`ofg.claims`'. This module finds each claim's runs in the
plan (:func:`ofg.plan.report_plan`), reads their result files (a missing one raises
:class:`ofg.io.DataError` naming it) and renders the table with a caption stating its conventions.

Runs are found by their record's fields, not their ids: the comparator ``unsupervised`` is
method "unsupervised", the main OFG run method "ofg" with ``plan["main_steps"]`` steps, the step
ablation's k the OFG run with k steps (k = 0: unsupervised). A run record's ``seed`` (default 0)
tells its seed; records that differ only by seed are the seeds of one run.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import pandas as pd

from ofg import claims
from ofg.claims import CLAIMS, Claim
from ofg.layout import Layout
from ofg.report.load import load_history, load_metrics, load_refinement, pair_key_columns
from ofg.report.render import table_caption, write_table

NAME = "claims"


def _seed(run: Mapping[str, Any]) -> int:
    return int(run.get("seed", 0) or 0)


def _runs(plan: Mapping[str, Any], dataset: str, model: str, method: str,
          steps: int | None = None) -> list[Mapping[str, Any]]:
    """Every seed's run record of ``method`` (with ``steps`` for OFG) on (dataset, model)."""
    if method == "ofg" and steps == 0:
        method, steps = "unsupervised", None
    return [r for r in plan["runs"] if (r["dataset"], r["model"], r["method"]) == (dataset, model, method)
            and (method != "ofg" or int(r["steps"]) == int(steps))]


def _metrics(plan: Mapping[str, Any], runs: Sequence[Mapping[str, Any]]) -> pd.DataFrame:
    """Per-pair metrics of ``runs`` with a ``seed`` column; DataError naming a missing file."""
    if not runs:
        return pd.DataFrame(columns=["seed"])
    return pd.concat([load_metrics(plan["results"], [run]).assign(seed=_seed(run)) for run in runs],
                     ignore_index=True)


def _seconds_per_iteration(plan: Mapping[str, Any], runs: Sequence[Mapping[str, Any]]) -> dict[int, float]:
    """seed → mean seconds per iteration over the epochs of history.csv."""
    out = {}
    for run in runs:
        history = load_history(plan["results"], run)
        values = history["seconds_per_iteration"] if "seconds_per_iteration" in history else []
        out[_seed(run)] = float(np.nanmean(values)) if len(values) else math.nan
    return out


def _keys(frame: pd.DataFrame) -> list[str]:
    return [k for k in pair_key_columns(frame) if k != "seed"]


def _main_rows(plan: Mapping[str, Any], claim: Claim, dataset: str, model: str) -> dict[str, Any]:
    ofg_runs = _runs(plan, dataset, model, "ofg", plan["main_steps"])
    other = _runs(plan, dataset, model, claim.comparator)
    context = {"dataset": dataset, "model": model}
    if claim.rule == "ratio":
        return claims.cost_ratio(claim, _seconds_per_iteration(plan, ofg_runs),
                                 _seconds_per_iteration(plan, other), **context)
    # a metric a file lacks counts as NaN for every pair (insufficient data)
    ofg, comparator = (frame.assign(**{claim.metric: frame.get(claim.metric, math.nan)})
                       for frame in (_metrics(plan, ofg_runs), _metrics(plan, other)))
    return claims.compare(claim, ofg, comparator, keys=_keys(ofg), **context)


def claim_rows(plan: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The rows of every claim the plan's experiments can test (before Holm; see :func:`claims_table`)."""
    rows: list[dict[str, Any]] = []
    for claim in CLAIMS:
        if claim.experiment == "main":
            rows += [_main_rows(plan, claim, d, m) for d, m in plan["main"]]
        elif claim.experiment == "self_training":
            rows += [_main_rows(plan, claim, d, m) for d, m in plan["self_training"]]
        elif claim.experiment == "ablation":
            for dataset, model in plan["ablation"]["pairs"]:
                by_k = {int(k): _metrics(plan, _runs(plan, dataset, model, "ofg", int(k)))
                        for k in plan["ablation"]["steps"]}
                keys = _keys(next(iter(by_k.values())))
                rows.append(claims.step_ablation(claim, by_k, keys=keys, dataset=dataset, model=model))
        elif claim.experiment == "refinement":
            for dataset in plan["refinement"]:
                curve = load_refinement(plan["results"], dataset)
                rows += [{**claims.refinement_gain(claim, curve[curve.start == start], dataset=dataset,
                                                   model=math.nan), "start": start}
                         for start in dict.fromkeys(curve.start)]
    return rows


def claims_table(plan: Mapping[str, Any]) -> pd.DataFrame:
    """The numeric claims table of ``plan``: :func:`claim_rows` with Holm's adjustment and every verdict."""
    return claims.finalize(claim_rows(plan))


def _number(value: Any, digits: int = 3) -> str:
    if value is None or not np.isfinite(value):
        return "n/a"
    return f"{value:.{digits}g}" if value != 0 and abs(value) < 1e-3 else f"{value:.{digits}f}"


def _detail(row: Mapping[str, Any]) -> str:
    if row["rule"] == "ablation":
        if np.isfinite(row.get("best_k", math.nan)):
            return f"best k = {int(row['best_k'])}; k = {int(row['chosen_k'])} vs best"
        return "needs k = 5 or 10 in the ablation" if row["n_pairs"] >= claims.min_pairs() else ""
    if row["rule"] == "ratio":
        return "OFG ÷ unsupervised s/iter; interval = range over seeds"
    if row["claim"] == "optimiser_alone" and isinstance(row.get("start"), str):
        return f"start {row['start']}; step {int(row['step'])} vs 0"
    return ""


def _n(row: Mapping[str, Any]) -> str:
    pairs = "–" if not np.isfinite(row["n_pairs"]) else f"{int(row['n_pairs'])} pairs"
    seeds = int(row["n_seeds"])
    return f"{pairs} × {seeds} seed{'s' if seeds != 1 else ''}"


def display_claims(table: pd.DataFrame) -> pd.DataFrame:
    """Human-readable columns of :func:`claims_table`."""
    rows = []
    for _, row in table.iterrows():
        model = row["model"] if isinstance(row["model"], str) else "–"
        spread = [_number(row[c]) for c in ("seed_spread_ofg", "seed_spread_comparator") if np.isfinite(row[c])]
        rows.append({"dataset": row["dataset"], "model": model, "claim": row["statement"],
                     "comparator": row["comparator"], "metric": row["metric"], "effect": _number(row["effect"]),
                     "95% CI": f"[{_number(row['ci_low'])}, {_number(row['ci_high'])}]", "p": _number(row["p"]),
                     "p (Holm)": _number(row["p_holm"]), "n": _n(row), "spread over seeds": " / ".join(spread) or "n/a",
                     "note": _detail(row), "verdict": row["verdict"]})
    columns = ["dataset", "model", "claim", "comparator", "metric", "effect", "95% CI", "p", "p (Holm)", "n",
               "spread over seeds", "note", "verdict"]
    return pd.DataFrame(rows, columns=columns)


def claims_caption(plan: Mapping[str, Any]) -> str:
    """The caption: how effects, intervals, tests and verdicts are defined."""
    return table_caption(plan, (
        "Claims of the paper and what this run says. Effect = OFG minus comparator in the metric's units, "
        "per-pair values averaged over seeds first (Dice: higher is better; %|J|≤0, SDlogJ, EPE and seconds: "
        f"lower is better). 95% CI: percentile bootstrap of the mean over test pairs ({claims.RESAMPLES:,} "
        f"resamples, RNG seed {claims.BOOTSTRAP_SEED}). p: two-sided paired Wilcoxon signed-rank test; p (Holm): "
        f"Holm's adjustment across the table's Wilcoxon rows. Supported: Holm p < {claims.ALPHA} in the paper's "
        "direction; contradicted: Holm p < α the other way; else inconclusive; insufficient data: fewer than "
        f"{claims.min_pairs()} pairs, where the exact test cannot reach p < {claims.ALPHA} (2/2^n). No inference "
        f"cost: supported when the CI's upper end is below {claims.MARGIN:.0%} of the unsupervised time, "
        "contradicted when its lower end is above it. Training overhead: per-seed ratios of s/iter, supported when "
        f"all ≤ {claims.OVERHEAD_LIMIT}, contradicted when all are above. 5–10 steps: supported when k = 5 or 10 "
        "is tied with the best k (CI of the paired difference reaches 0) and some other k is not; contradicted "
        "when neither is tied. Spread over seeds: std of each side's mean over pairs (OFG / comparator)."))


def write_claims(plan: Mapping[str, Any], paths: Sequence[Path] | None = None) -> pd.DataFrame:
    """Write the claims table of ``plan`` (default paths: the layout's ``claims`` table); return it."""
    table = claims_table(plan)
    if table.empty:
        table = pd.DataFrame(columns=["dataset", "model", "claim", "statement", "comparator", "metric", "effect",
                                      "ci_low", "ci_high", "p", "p_holm", "n_pairs", "n_seeds",
                                      "seed_spread_ofg", "seed_spread_comparator", "rule", "verdict"])
    paths = list(paths) if paths is not None else Layout(plan["results"]).table(NAME)
    write_table(table, display_claims(table), paths, claims_caption(plan))
    return table
