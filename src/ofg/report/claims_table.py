"""The claims table (``tables/claims.{csv,md,tex}``): one row per claim × dataset × model, with a verdict.

The statistics and verdict rules are :mod:`ofg.claims`' (rows: :mod:`ofg.claim_rows`). This module
finds each claim's runs in the plan (:func:`ofg.stages.report_plan`), reads their result files (a missing
metrics file raises :class:`ofg.io.DataError` naming it; a missing timing file makes the timing rows
*insufficient data*) and renders the table with a caption stating its conventions.

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

from ofg import claim_rows, claims
from ofg.claims import CLAIMS, Claim
from ofg.inference_stats import min_units
from ofg.layout import Layout
from ofg.report.load import load_metrics, load_refinement, load_timing, pair_key_columns
from ofg.report.render import table_caption, write_table

NAME = "claims"
COLUMNS = ["dataset", "model", "family", "claim", "comparator", "metric", "effect", "95% CI", "per seed", "p",
           "p (Holm)", "n", "note", "verdict"]


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


def _keys(frame: pd.DataFrame) -> list[str]:
    return [k for k in pair_key_columns(frame) if k != "seed"]


def compare_frames(claim: Claim, dataset: str, model: str, ofg: pd.DataFrame, comparator: pd.DataFrame,
                   note: str = "") -> dict[str, Any]:
    """The row of ``claim`` from the per-pair metrics (with ``seed``) of the OFG runs and of the comparator's."""
    row = claim_rows.compare(claim, ofg, comparator, keys=_keys(ofg) if len(ofg) else None, dataset=dataset,
                             model=model)
    return {**row, "note": "; ".join(p for p in (note, row["note"]) if p)}


def _compare(plan: Mapping[str, Any], claim: Claim, dataset: str, model: str, ofg_runs: Sequence[Mapping[str, Any]],
             other_runs: Sequence[Mapping[str, Any]], note: str = "") -> dict[str, Any]:
    return compare_frames(claim, dataset, model, _metrics(plan, ofg_runs), _metrics(plan, other_runs), note)


def main_frames(plan: Mapping[str, Any], claim: Claim, dataset: str,
                model: str) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Per-pair metrics (with ``seed``) of every seed of the main OFG run and of ``claim``'s comparator."""
    ofg_runs = _runs(plan, dataset, model, "ofg", plan["main_steps"])
    return _metrics(plan, ofg_runs), _metrics(plan, _runs(plan, dataset, model, claim.comparator))


def main_row(plan: Mapping[str, Any], claim: Claim, dataset: str, model: str) -> dict[str, Any]:
    """The row of a "main" or "self_training" ``claim`` on (dataset, model): every seed of the main OFG run
    against every seed of the comparator, before Holm (:func:`ofg.claims.finalize` gives a family's verdict)."""
    return compare_frames(claim, dataset, model, *main_frames(plan, claim, dataset, model))


def _ablation_row(plan: Mapping[str, Any], claim: Claim, dataset: str, model: str) -> dict[str, Any]:
    k, reference = claim.steps
    missing = [s for s in (k, reference) if s not in plan["ablation"]["steps"]]
    note = f"k = {', '.join(map(str, missing))} not in the ablation" if missing else ""
    runs = [_runs(plan, dataset, model, "ofg", s) if s in plan["ablation"]["steps"] else [] for s in (k, reference)]
    return _compare(plan, claim, dataset, model, *runs, note=note)


def _timing_row(plan: Mapping[str, Any], claim: Claim, dataset: str, model: str) -> dict[str, Any]:
    """The timing row of the main OFG run against unsupervised (other OFG runs of the file are left out)."""
    frame = load_timing(plan["results"], dataset, model)
    if frame is not None:
        frame = frame[(frame["method"] != "ofg") | (frame["run"] == plan["main_run"])]
    return claim_rows.timing_row(claim, frame, dataset=dataset, model=model)


def _refinement_rows(plan: Mapping[str, Any], claim: Claim) -> list[dict[str, Any]]:
    rows = []
    for dataset in plan["refinement"]:
        curve = load_refinement(plan["results"], dataset)
        for start in dict.fromkeys(curve.start):
            row = claim_rows.refinement_gain(claim, curve[curve.start == start], dataset=dataset, model=math.nan)
            note = f"start {start}; step {row['step']} vs 0"
            rows.append({**row, "start": start, "note": "; ".join(p for p in (note, row["note"]) if p)})
    return rows


def claim_rows_of(plan: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The rows of every claim the plan's experiments can test (before Holm; see :func:`claims_table`)."""
    rows: list[dict[str, Any]] = []
    for claim in CLAIMS:
        if claim.experiment == "main":
            rows += [main_row(plan, claim, d, m) for d, m in plan["main"]]
        elif claim.experiment == "timing":
            rows += [_timing_row(plan, claim, d, m) for d, m in plan["main"]]
        elif claim.experiment == "self_training":
            rows += [main_row(plan, claim, d, m) for d, m in plan["self_training"]]
        elif claim.experiment == "ablation":
            rows += [_ablation_row(plan, claim, d, m) for d, m in plan["ablation"]["pairs"]]
        elif claim.experiment == "refinement":
            rows += _refinement_rows(plan, claim)
    return rows


def claims_table(plan: Mapping[str, Any]) -> pd.DataFrame:
    """The numeric claims table of ``plan``: :func:`claim_rows_of`, Holm within each family, every verdict and
    the intersection-union row."""
    return claims.finalize(claim_rows_of(plan))


def _number(value: Any, digits: int = 3) -> str:
    if value is None or not isinstance(value, (int, float, np.floating)) or not np.isfinite(value):
        return "n/a"
    return f"{value:.{digits}g}" if value != 0 and abs(value) < 1e-3 else f"{value:.{digits}f}"


def _per_seed(text: Any) -> str:
    if not isinstance(text, str) or not text:
        return "–"
    return ", ".join(_number(float(v)) for v in text.split(";"))


def display_claims(table: pd.DataFrame) -> pd.DataFrame:
    """Human-readable columns of :func:`claims_table`."""
    rows = []
    for _, row in table.iterrows():
        model = row["model"] if isinstance(row["model"], str) else "–"
        ci = (f"[{_number(row['ci_low'])}, {_number(row['ci_high'])}]" if np.isfinite(row.get("ci_low", math.nan))
              else "n/a")
        rows.append({"dataset": row["dataset"], "model": model, "family": row["family"], "claim": row["statement"],
                     "comparator": row["comparator"], "metric": row["metric"], "effect": _number(row["effect"]),
                     "95% CI": ci, "per seed": _per_seed(row.get("per_seed")), "p": _number(row["p"]),
                     "p (Holm)": _number(row["p_holm"]), "n": row["n"] or "–",
                     "note": row["note"] if isinstance(row["note"], str) else "", "verdict": row["verdict"]})
    return pd.DataFrame(rows, columns=COLUMNS)


def _families() -> str:
    names = {"primary": "primary (Dice gain per dataset × model)", "secondary": "secondary (folding, SDlogJ)",
             "fig3": "Fig. 3 (self-training, optimised self-training)",
             "ablation": "step ablation (5 vs 1, 10 vs 1, 20 vs 10)"}
    return "; ".join(names[f] for f in claims.FAMILIES)


def claims_caption(plan: Mapping[str, Any]) -> str:
    """The caption: units, effects, intervals, tests, families, thresholds and verdicts."""
    alpha = claims.ALPHA
    return table_caption(plan, (
        "Claims of the paper and what this run says (every rule fixed before the data). Seed s of OFG is compared "
        "with seed s of the comparator (matched on the common seeds, not averaged per pair first as in the other "
        "tables). Unit of inference: a subject in every pair "
        "(the atlas) is a design constant; if every other subject is in one pair, units = pairs, else units = "
        "subjects (pairs sharing a subject are correlated); n = units (pairs) × OFG / comparator seeds. Effect = "
        "mean over seeds and pairs of OFG minus comparator (Dice: higher is better; %|J|≤0, SDlogJ, EPE: lower); "
        "per seed = the matched effect of each seed. Every inferential row: variance = delete-one-unit jackknife "
        "of the seed-averaged differences (less the pair × seed residual) + between-seed variance / S; two-sided "
        f"t-test with Cochran–Cox critical value (t on units − 1 and seeds − 1 df) and the matching 95% CI "
        f"(unadjusted); p < {alpha} exactly when the CI excludes the null. Supported: (Holm) p < {alpha} with the "
        "effect on the claim's side of the null; contradicted: on the other side; else inconclusive; insufficient "
        f"data: fewer than {min_units(alpha)} independent units. Holm families (adding a dataset changes no other "
        f"family): {_families()}; 'consistently' is an intersection-union row over the primary rows (supported only "
        "when all are, contradicted when any is; p = the largest p). Descriptive, unadjusted: Fig. 2 (optimiser "
        "alone), EPE (ours, exploratory), timing. Far fewer non-diffeomorphic voxels: effect = relative reduction "
        f"1 − mean(OFG)/mean(unsupervised) (delta method), null {claims.SIZE_THRESHOLD:.0%} (at least halved). "
        f"Step ablation: 5 and 10 steps each against 1; 20 against 10 (the main run) with null = margin "
        f"{claims.NONINFERIORITY_MARGIN} Dice, supported when the CI lies below it. Timing from the controlled "
        "measurement (all cores, warm-up, interleaved repeats, every seed), ratio OFG ÷ unsupervised per repeat, "
        "t-CI over repeats (seeds pooled); absent → insufficient data. Inference cost is equal by construction "
        f"(the same network); the row checks it: supported when the CI lies within 1 ± {claims.INFERENCE_MARGIN}. "
        f"Training overhead: supported when the CI's upper end is below {claims.OVERHEAD_LIMIT}× (ours; the paper "
        "gives none), contradicted when its lower end is above."))


def write_claims(plan: Mapping[str, Any], paths: Sequence[Path] | None = None) -> pd.DataFrame:
    """Write the claims table of ``plan`` (default paths: the layout's ``claims`` table); return it."""
    table = claims_table(plan)
    if table.empty:
        table = pd.DataFrame(columns=list(claim_rows.base_row(CLAIMS[0])) + ["dataset", "model", "p_holm"])
    paths = list(paths) if paths is not None else Layout(plan["results"]).table(NAME)
    write_table(table, display_claims(table), paths, claims_caption(plan))
    return table
