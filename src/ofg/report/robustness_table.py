"""The robustness table (``tables/robustness.{csv,md,tex}``): the Dice-gain verdict under each setting.

One row per setting of :mod:`ofg.robustness` (the baseline, then each variant) × dataset: the claims
table's Dice row (claim ``dice_gain``, :func:`ofg.report.claims_table.main_row`: seed-matched pairs,
units from the design, delete-one-unit jackknife plus the between-seed variance, Cochran–Cox t, 95 %
interval) on that setting's own runs and test evaluation, and each side's mean Dice (over seeds and
pairs). The rows are a sensitivity analysis, outside the paper-claim families (:data:`ofg.claims.FAMILIES`):
their p is not adjusted, and the verdict is :func:`ofg.claims.directional_verdict` of that p. Nothing here
computes a statistic of its own. :func:`write_robustness` also draws each setting's guidance-gap figure.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Mapping

import pandas as pd

from ofg.claims import ALPHA, CLAIM_BY_NAME, directional_verdict
from ofg.inference_stats import min_units
from ofg.report.claims_table import compare_frames, display_claims, main_frames
from ofg.report.figures import figure_guidance_gap
from ofg.report.load import load_arithmetic
from ofg.report.render import arithmetic_caption, table_caption, write_table

CLAIM = CLAIM_BY_NAME["dice_gain"]
COLUMNS = ["setting", "reverts", "dataset", "model", "training", "Dice unsup.", "Dice OFG", "effect", "95% CI",
           "per seed", "p", "n", "verdict", "note"]


def _mean_dice(metrics: pd.DataFrame) -> float:
    """Mean test Dice of per-pair ``metrics`` (over seeds and pairs); NaN without any."""
    return float(metrics["dice_mean"].mean()) if len(metrics) else math.nan


def setting_rows(setting: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The Dice rows of one setting of :func:`ofg.robustness.report_plan`, one per dataset, unadjusted."""
    plan, rows = setting["plan"], []
    for dataset, model in plan["main"]:
        ofg, unsupervised = main_frames(plan, CLAIM, dataset, model)
        row = compare_frames(CLAIM, dataset, model, ofg, unsupervised)
        if row["verdict"] is None:  # a row with data: its verdict from the unadjusted p
            row["verdict"] = str(directional_verdict(row["p"], row["effect"], CLAIM.null, CLAIM.direction))
        rows.append({"setting": setting["name"], "reverts": setting["reverts"], "reused": setting["reused"],
                     **{f"training_{k}": v for k, v in setting["training"][dataset].items()},
                     "dice_unsupervised": _mean_dice(unsupervised), "dice_ofg": _mean_dice(ofg), **row})
    return rows


def robustness_table(robustness_plan: Mapping[str, Any]) -> pd.DataFrame:
    """The numeric table: :func:`setting_rows` of every setting, in the plan's order."""
    return pd.DataFrame([row for s in robustness_plan["settings"] for row in setting_rows(s)])


def _training_text(row: Mapping[str, Any]) -> str:
    seed = row["training_cohort_seed"]
    cohort = f", cohort seed {int(seed)}" if isinstance(seed, (int, float)) and math.isfinite(seed) else ""
    return f"lr {row['training_lr']:g}, {row['training_model_size']}, {int(row['training_epochs'])} epochs{cohort}"


def display_robustness(table: pd.DataFrame) -> pd.DataFrame:
    """Human-readable columns of :func:`robustness_table` (numbers as the claims table shows them)."""
    if table.empty:
        return pd.DataFrame(columns=COLUMNS)
    shown = display_claims(table.assign(p_holm=math.nan))
    reused = [" (reused)" if r else "" for r in table["reused"]]
    return pd.DataFrame({
        "setting": [f"{name}{mark}" for name, mark in zip(table["setting"], reused)], "reverts": table["reverts"],
        "dataset": table["dataset"], "model": table["model"],
        "training": [_training_text(row) for _, row in table.iterrows()],
        "Dice unsup.": [f"{v:.3f}" for v in table["dice_unsupervised"]],
        "Dice OFG": [f"{v:.3f}" for v in table["dice_ofg"]],
        **{column: shown[column] for column in ("effect", "95% CI", "per seed", "p", "n", "verdict", "note")}},
        columns=COLUMNS)


def robustness_caption(robustness_plan: Mapping[str, Any]) -> str:
    """The caption: what the settings are, the statistics (the claims table's), the family and the verdicts."""
    settings = robustness_plan["settings"]
    baseline = settings[0]["plan"]
    arithmetic = arithmetic_caption([a for s in settings for a in load_arithmetic(s["plan"]["results"],
                                                                                    s["plan"]["runs"])])
    return table_caption({key: value for key, value in baseline.items() if key != "runs"}, (
        f"Dice-gain verdict under each setting: does OFG (k={baseline['main_steps']}) raise test Dice over the "
        "unsupervised baseline once one departure of the default from the paper is reverted? The baseline is the "
        "default run's own main comparison; each variant reverts what its row says and re-runs that comparison "
        "('reused': its runs are the default's, nothing was trained again); training = network learning rate, "
        "network size, epochs and cohort seed of its runs. Every row is the claims table's Dice row on the "
        "setting's own test evaluation (seed s of OFG against seed s of unsupervised; units from the design; "
        "delete-one-unit jackknife plus between-seed variance; two-sided t with Cochran–Cox critical value and "
        "the matching 95% CI); effect = mean over seeds and pairs of OFG minus unsupervised Dice; Dice unsup. / "
        "OFG = each side's mean over seeds and pairs. A sensitivity analysis, outside the paper-claim families: "
        "p is not adjusted (no Holm), since each row asks whether one setting alone changes the sign and is not "
        "a further claim; the claims table's primary rows are Holm-adjusted within their family, so there a "
        f"borderline verdict can be stricter. Supported: p < {ALPHA} with OFG higher; contradicted: p < {ALPHA} "
        f"with OFG lower; else inconclusive; insufficient data: fewer than {min_units(ALPHA)} independent units. "
        "Settings on the same cohorts share their test pairs; a cohort-seed setting has another synthetic "
        f"population (other subjects, the same design).{arithmetic}"), metric_columns=False)


def write_robustness(robustness_plan: Mapping[str, Any], progress: bool = False) -> pd.DataFrame:
    """Write the table and every setting's guidance-gap figure of ``robustness_plan``
    (:func:`ofg.robustness.report_plan`); return the numeric table."""
    table = robustness_table(robustness_plan)
    write_table(table, display_robustness(table), [Path(p) for p in robustness_plan["table"]],
                robustness_caption(robustness_plan))
    for setting in robustness_plan["settings"]:
        for figure in setting["figures"]:
            figure_guidance_gap(setting["plan"], figure["dataset"], figure["model"],
                                [Path(p) for p in figure["paths"]], note=f"setting {setting['name']}: "
                                f"{setting['reverts']}")
        if progress:
            print(f"robustness: {setting['name']} done", flush=True)
    return table
