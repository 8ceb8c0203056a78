"""Rendering tables: human-readable columns, Markdown and LaTeX, captions stating the conventions.

Conventions stated in every caption: how a pair's mean Dice averages its labels (the rule of each
dataset, :data:`DICE_RULE_TEXT`); Dice "± over pairs" is the std of the per-pair mean Dice;
"± over structures × pairs" is the std over every (structure, pair) Dice (TransMorph's convention).
%|J|≤0 uses ``np.gradient`` of identity + displacement over the whole volume; SDlogJ is the
Learn2Reg formula; HD95 is in voxels (and mm where the spacing is known).
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import pandas as pd

from ofg.io import atomic_path, write_text_atomic
from ofg.report.load import load_arithmetic

EMBEDDED_CAVEAT = ("Embedded data: one real anatomy per modality with known synthetic deformations, "
                   "a proxy for inter-subject variability; not comparable with published numbers.")


def _pm(mean: float, std: float, digits: int = 3) -> str:
    if not np.isfinite(mean):
        return "n/a"
    return f"{mean:.{digits}f}" if not np.isfinite(std) else f"{mean:.{digits}f} ± {std:.{digits}f}"


def _num(value: float, digits: int = 3) -> str:
    if isinstance(value, str):
        return value
    if value is None or not np.isfinite(value):
        return "n/a"
    return f"{value:.{digits}g}" if abs(value) < 1e-3 and value != 0 else f"{value:.{digits}f}"


def display_metrics(table: pd.DataFrame) -> pd.DataFrame:
    """Human-readable columns (mean ± std) of a table built from :func:`summarize_run` rows."""
    out = pd.DataFrame()
    for column in ("dataset", "model", "method", "k"):
        if column in table:
            out[column] = table[column]
    out["pairs"] = table["n_pairs"]
    if "n_seeds" in table:
        out["seeds"] = table["n_seeds"]
    out["Dice (± pairs)"] = [_pm(m, s) for m, s in zip(table.dice_mean, table.dice_std_pairs)]
    if "dice_std_seeds" in table and table["dice_std_seeds"].notna().any():
        out["Dice (± seeds)"] = [_pm(m, s) for m, s in zip(table.dice_mean, table.dice_std_seeds)]
    out["Dice (± structures×pairs)"] = [_pm(m, s) for m, s in zip(table.dice_mean, table.dice_std_structures_pairs)]
    for mode, title in (("nearest", "Dice nearest (± pairs)"), ("onehot", "Dice one-hot (± pairs)")):
        column = f"dice_mean_{mode}"
        if column in table and table[column].notna().any():
            out[title] = [_pm(m, s) for m, s in zip(table[column], table[f"{column}_std"])]
    out["%|J|≤0"] = [_pm(m, s) for m, s in zip(table.folding_percent, table.folding_percent_std)]
    out["SDlogJ"] = [_pm(m, s) for m, s in zip(table.sdlogj_l2r, table.sdlogj_l2r_std)]
    out["HD95 (vox)"] = [_pm(m, s, 2) for m, s in zip(table.hd95, table.hd95_std)]
    if table.endpoint_error.notna().any():
        out["EPE (vox)"] = [_pm(m, s, 2) for m, s in zip(table.endpoint_error, table.endpoint_error_std)]
    for column, title in (("seconds_per_iteration", "s/iter"), ("ofg_share", "OFG share"),
                          ("best_val_dice", "best val Dice"), ("final_val_dice", "final val Dice")):
        if column in table:
            out[title] = [_num(v) for v in table[column]]
    return out


def display_cost(table: pd.DataFrame) -> pd.DataFrame:
    """Human-readable columns of the training-cost table."""
    out = table[["dataset", "model", "method", "run", "seed", "epochs"]].copy()
    for column, title in (("seconds_per_iteration", "s/iter"), ("ofg_seconds_per_iteration", "OFG s/iter"),
                          ("ofg_share", "OFG share"), ("teacher_seconds_per_iteration", "teacher s/iter"),
                          ("peak_memory_mb", "peak memory (MB)"),
                          ("train_wall_seconds_last_invocation", "train wall s (last run)"),
                          ("train_max_rss_mb", "max RSS (MB)"), ("inference_seconds", "inference s/pair")):
        out[title] = [_num(v) for v in table[column]]
    return out


def _latex_escape(text: Any) -> str:
    text = str(text)
    for old, new in (("\\", r"\textbackslash{}"), ("&", r"\&"), ("%", r"\%"), ("_", r"\_"), ("#", r"\#"),
                     ("±", r"$\pm$"), ("≤", r"$\leq$"), ("×", r"$\times$"), ("<", r"$<$"), ("–", "--")):
        text = text.replace(old, new)
    return text


def to_latex(table: pd.DataFrame, caption: str) -> str:
    """A booktabs ``tabular`` of the table's cells (as strings) with ``caption`` in a table float."""
    columns = "l" * len(table.columns)
    lines = [r"\begin{table}", r"\centering", rf"\caption{{{_latex_escape(caption)}}}",
             rf"\begin{{tabular}}{{{columns}}}", r"\toprule",
             " & ".join(_latex_escape(c) for c in table.columns) + r" \\", r"\midrule"]
    lines += [" & ".join(_latex_escape(v) for v in row) + r" \\" for row in table.astype(str).itertuples(index=False)]
    lines += [r"\bottomrule", r"\end{tabular}", r"\end{table}", ""]
    return "\n".join(lines)


def write_table(numeric: pd.DataFrame, shown: pd.DataFrame, paths: Sequence[Path], caption: str) -> None:
    """CSV of the numeric table; Markdown and LaTeX of the human-readable one, both with ``caption``."""
    csv, md, tex = paths
    with atomic_path(csv) as tmp:
        numeric.to_csv(tmp, index=False)
    body = shown.to_markdown(index=False) if len(shown) else "(no rows: the experiment is not configured)"
    write_text_atomic(md, f"{body}\n\n{caption}\n")
    write_text_atomic(tex, to_latex(shown, caption))


#: what each rule of :data:`ofg.metrics.DICE_RULES` averages, as a caption says it
DICE_RULE_TEXT = {"either": "the mean over the labels present in the warped or the fixed map",
                  "both": "the sum over the labels present in both the moving and the fixed map divided by their "
                          "number, as the reference code for AbdomenCTCT"}


def dice_rule_caption(plan: Mapping[str, Any]) -> str:
    """The caption sentence naming the Dice rule(s) of the plan's datasets (``plan["dice_rules"]``;
    'either' for every dataset of a plan without it)."""
    rules = dict(plan.get("dice_rules") or {})
    used = sorted(set(rules.values())) or ["either"]
    if len(used) == 1:
        return f"A pair's mean Dice is {DICE_RULE_TEXT[used[0]]} (rule '{used[0]}')."
    parts = [f"{DICE_RULE_TEXT[rule]} (rule '{rule}': {', '.join(d for d, r in rules.items() if r == rule)})"
             for rule in used]
    return f"A pair's mean Dice is {'; or '.join(parts)}."


TEST_SUBSET_TEXT = {"all": "every subject of its test folder (IXI: the 115 of TransMorph's table)",
                    "reference20": "20 subjects of its test folder drawn with seed 42, as the reference's infer.py"}


def test_subset_caption(plan: Mapping[str, Any]) -> str:
    """The caption sentence naming each dataset's test subjects where the config chose them (IXI)."""
    subsets = dict(plan.get("test_subsets") or {})
    return "".join(f" {dataset} test set: {TEST_SUBSET_TEXT.get(subset, subset)} ('{subset}')."
                   for dataset, subset in subsets.items())


def arithmetic_caption(records: Sequence[Mapping[str, Any] | None]) -> str:
    """The caption sentence naming the arithmetic of the runs (records of
    :func:`ofg.report.load.load_arithmetic`), with how many runs used each where they differ; '' for no runs."""
    if not records:
        return ""
    networks = Counter(_network_text(r) for r in records)
    refinements = Counter([{True: "fused", False: "eager"}[r["fused_refinement"]] for r in records
                           if r and r.get("fused_refinement") is not None])
    text = f" Arithmetic of the {len(records)} trainings (their summary.json): {_join(networks, len(records))}"
    if refinements:
        text += f"; refinement {_join(refinements, sum(refinements.values()))}"
    return text + "."


def _join(counts: Mapping[str, int], total: int) -> str:
    if len(counts) == 1:
        return next(iter(counts))
    return "; ".join(f"{text} ({n} of {total})" for text, n in counts.items())


def _network_text(record: Mapping[str, Any] | None) -> str:
    if not record:
        return "not recorded"
    network = record.get("network", "?")
    if network == "float32":
        network += f" (convolutions: {record.get('float32_convolutions', '?')})"
    layout = ", channels-last" if record.get("channels_last") else ""
    native = "bf16 native" if record.get("bf16_native") else "bf16 not native"
    return (f"network {network}{layout} on {record.get('device', '?')}, {record.get('cpu', '?')} "
            f"({record.get('cpu_capability', '?')}, {native})")


def table_caption(plan: Mapping[str, Any], text: str, metric_columns: bool = True) -> str:
    """``text``, then the evaluation's conventions (split, label warping, Dice rule), with
    ``metric_columns`` what the metric tables' columns hold (Dice under both warpings, the ± spreads,
    folding, SDlogJ, HD95), then the arithmetic of ``plan["runs"]`` and the embedded-data caveat."""
    conventions = f"Split: {plan['split']}.{test_subset_caption(plan)} Labels warped by {plan['label_mode']} for Dice"
    conventions += (", ± and p; 'Dice nearest' (the OFG reference code's convention) and 'Dice one-hot' "
                    "(TransMorph's: trilinear one-hot, argmax) give the mean under each. " if metric_columns else ". ")
    conventions += dice_rule_caption(plan)
    if metric_columns:
        conventions += (" Seeds are averaged per test pair; Dice ± over pairs is the std of per-pair mean Dice, ± "
                        "over seeds the std of the per-seed means, ± over structures×pairs the std over all "
                        "(structure, pair) values; %|J|≤0 from np.gradient of identity+displacement; SDlogJ by the "
                        "Learn2Reg formula; HD95 in voxels.")
    caveat = f" {EMBEDDED_CAVEAT}" if plan.get("embedded") else ""
    arithmetic = arithmetic_caption(load_arithmetic(plan["results"], plan["runs"])) if "runs" in plan else ""
    return f"{text} {conventions}{arithmetic}{caveat}"
