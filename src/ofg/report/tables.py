"""The report's tables as numeric frames, one row per run (or per k of the step ablation).

``plan`` is :func:`ofg.stages.report_plan`; ``metrics`` the frame of :func:`ofg.report.load.load_metrics`.
"""

from __future__ import annotations

import math
from typing import Any, Mapping, Sequence

import numpy as np
import pandas as pd

from ofg.report.load import load_baselines, load_benchmark, load_history
from ofg.report.stats import mean_std, summarize_run

METHOD_LABELS = {"unsupervised": "unsupervised", "self_training": "self-training",
                 "opt_self_training": "optimised self-training", "ofg": "OFG",
                 "before_registration": "before registration", "instance_optimisation": "instance optimisation",
                 "syn": "SyN (ANTs)"}
#: the baselines of paper Fig. 3 (compared with the plan's main OFG run)
BASELINES = ("unsupervised", "self_training", "opt_self_training")

#: published numbers from the literature, on the real datasets: never mixed with our runs
PUBLISHED = [
    # dataset, model, dice, %|J|<=0, SDlogJ, HD95, source
    ("IXI", "Affine", "0.386", "–", "", "", "TransMorph paper, IXI table (30 VOIs)"),
    ("IXI", "SyN", "0.645", "<0.0001", "", "", "TransMorph paper, IXI table (30 VOIs)"),
    ("IXI", "VoxelMorph-2", "0.732", "1.522", "", "", "TransMorph paper, IXI table (30 VOIs)"),
    ("IXI", "ViT-V-Net", "0.734", "1.609", "", "", "TransMorph paper, IXI table (30 VOIs)"),
    ("IXI", "TransMorph", "0.753", "1.579", "", "", "TransMorph paper, IXI table (30 VOIs)"),
    ("IXI", "TransMorph-bspl", "0.761", "<0.0001", "", "", "TransMorph paper, IXI table (30 VOIs)"),
    ("IXI", "LKU-Net", "0.765", "", "", "", "LKU-Net paper, IXI"),
    ("OASIS", "TransMorph (label-supervised)", "0.816", "", "0.124", "1.69", "Learn2Reg 2021 OASIS test"),
    ("OASIS", "LapIRN", "0.82", "", "0.07", "1.67", "Learn2Reg 2021 OASIS test"),
    ("OASIS", "ConvexAdam", "0.81", "", "0.07", "1.63", "Learn2Reg 2021 OASIS test"),
]


def runs_of(plan: Mapping[str, Any], dataset: str, model: str) -> dict[str, dict[str, Any]]:
    """Run records of (dataset, model) by run id, each that of the run's first seed."""
    out: dict[str, dict[str, Any]] = {}
    for r in plan["runs"]:
        if (r["dataset"], r["model"]) == (dataset, model):
            out.setdefault(r["run"], r)
    return out


def seed_records(plan: Mapping[str, Any], run: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The records of every seed of ``run``'s (dataset, model, run id)."""
    return [r for r in plan["runs"] if (r["dataset"], r["model"], r["run"]) == (run["dataset"], run["model"], run["run"])]


def figure3_runs(plan: Mapping[str, Any], dataset: str, model: str) -> list[dict[str, Any]]:
    """The runs of paper Fig. 3 trained on (dataset, model): the baselines and the main OFG run."""
    wanted = (*BASELINES, plan["main_run"])
    return [r for run_id, r in runs_of(plan, dataset, model).items() if run_id in wanted]


def _select(metrics: pd.DataFrame, run: Mapping[str, Any]) -> pd.DataFrame:
    return metrics[(metrics.dataset == run["dataset"]) & (metrics.model == run["model"]) & (metrics.run == run["run"])]


def _label(run: Mapping[str, Any]) -> dict[str, Any]:
    return {"dataset": run["dataset"], "model": run["model"], "method": METHOD_LABELS[run["method"]], "run": run["run"]}


def reference_rows(plan: Mapping[str, Any], dataset: str) -> list[dict[str, Any]]:
    """The reference rows of ``dataset`` (none unless the plan runs its baselines): model "—"."""
    if dataset not in plan.get("baselines", []):
        return []
    frame = load_baselines(plan["results"], dataset)
    return [{"dataset": dataset, "model": "—", "method": METHOD_LABELS.get(method, method), "run": method,
             **summarize_run(group)}
            for method, group in frame.groupby("method", sort=False)]


def main_results(plan: Mapping[str, Any], metrics: pd.DataFrame) -> pd.DataFrame:
    """Per dataset its reference rows, then the unsupervised and main OFG run of each model: descriptive
    metrics (the test of OFG against unsupervised is the claims table's Dice row)."""
    rows = []
    for index, (dataset, model) in enumerate(plan["main"]):
        if dataset not in [d for d, _ in plan["main"][:index]]:
            rows += reference_rows(plan, dataset)
        runs = runs_of(plan, dataset, model)
        for run_id in ("unsupervised", plan["main_run"]):
            rows.append({**_label(runs[run_id]), **summarize_run(_select(metrics, runs[run_id]))})
    return pd.DataFrame(rows)


def training_cost(plan: Mapping[str, Any], metrics: pd.DataFrame) -> pd.DataFrame:
    """Per run: seconds per iteration (history), OFG share, peak memory, wall time and RSS (benchmark),
    inference seconds (metrics)."""
    rows = []
    for run in plan["runs"]:
        history = load_history(plan["results"], run)
        bench = load_benchmark(plan["results"], "train", run)
        s_it, _, _ = mean_std(history.get("seconds_per_iteration", []))
        ofg_it, _, _ = mean_std(history.get("ofg_seconds_per_iteration", []))
        teacher_it, _, _ = mean_std(history.get("teacher_seconds_per_iteration", []))
        baseline = run["method"] == "unsupervised"
        rows.append({
            **_label(run), "seed": run["seed"], "epochs": len(history),
            "seconds_per_iteration": s_it,
            "ofg_seconds_per_iteration": ofg_it if not baseline else 0.0,
            "ofg_share": (ofg_it / s_it) if not baseline and s_it > 0 else 0.0,
            # self-training: time to fetch the teacher's field (predicted/refined once, then cached)
            "teacher_seconds_per_iteration": teacher_it,
            "peak_memory_mb": float(np.nanmax(history["peak_memory_mb"])) if "peak_memory_mb" in history
            and history["peak_memory_mb"].notna().any() else math.nan,
            "train_wall_seconds_last_invocation": bench.get("s", math.nan),
            "train_max_rss_mb": bench.get("max_rss", math.nan),
            "inference_seconds": mean_std(_select(metrics, run).get("inference_seconds", []))[0],
        })
    return pd.DataFrame(rows)


def self_training(plan: Mapping[str, Any], metrics: pd.DataFrame) -> pd.DataFrame:
    """The four methods of paper Fig. 3 per (dataset, model): test metrics and validation Dice."""
    rows = []
    for dataset, model in plan["self_training"]:
        runs = runs_of(plan, dataset, model)
        for run_id in (*BASELINES, plan["main_run"]):
            history = load_history(plan["results"], runs[run_id])
            row = {**_label(runs[run_id]), **summarize_run(_select(metrics, runs[run_id]))}
            row["best_val_dice"] = float(history["val_dice"].max()) if "val_dice" in history else math.nan
            row["final_val_dice"] = float(history["val_dice"].iloc[-1]) if "val_dice" in history else math.nan
            rows.append(row)
    return pd.DataFrame(rows)


def step_ablation(plan: Mapping[str, Any], metrics: pd.DataFrame, cost: pd.DataFrame) -> pd.DataFrame:
    """Test Dice, folding and training time against the number of OFG steps k (k=0: unsupervised)."""
    rows = []
    for dataset, model in plan["ablation"]["pairs"]:
        runs = runs_of(plan, dataset, model)
        for k, run_id in plan["ablation"]["runs"]:
            c = cost[(cost.dataset == dataset) & (cost.model == model) & (cost.run == run_id)].mean(numeric_only=True)
            row = {"dataset": dataset, "model": model, "k": k, "run": run_id}
            row.update(summarize_run(_select(metrics, runs[run_id])))
            row["seconds_per_iteration"] = c["seconds_per_iteration"]
            row["ofg_share"] = c["ofg_share"]
            rows.append(row)
    return pd.DataFrame(rows)


def published() -> pd.DataFrame:
    """The published numbers of :data:`PUBLISHED`, labelled as such."""
    columns = ["dataset", "model", "dice", "folding_percent", "sdlogj", "hd95", "source"]
    return pd.DataFrame(PUBLISHED, columns=columns).assign(origin="published")


def empty_summary(extra: Sequence[str] = ()) -> pd.DataFrame:
    """A table of :func:`summarize_run` columns with no rows (an experiment the plan leaves out)."""
    columns = ["dataset", "model", "method", *extra, "n_seeds", "dice_std_seeds", "n_pairs", "dice_mean", "dice_std_pairs",
               "dice_std_structures_pairs", "folding_percent", "folding_percent_std", "sdlogj_l2r",
               "sdlogj_l2r_std", "hd95", "hd95_std", "endpoint_error", "endpoint_error_std"]
    return pd.DataFrame(columns=columns)
