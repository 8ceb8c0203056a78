"""The report's figures (PNG and PDF), drawn from result files only.

Every figure of embedded data carries the caveat that it is one anatomy with synthetic deformations.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping, Sequence

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from ofg.io import atomic_path
from ofg.names import GAP_ROLES, gap_column
from ofg.report.load import load_history, load_refinement, load_sample, structure_columns
from ofg.report.render import EMBEDDED_CAVEAT
from ofg.report.stats import seed_average
from ofg.report.tables import METHOD_LABELS, figure3_runs, runs_of, seed_records


def _save(fig: Any, paths: Sequence[Path], caveat: str | None) -> None:
    if caveat:
        fig.text(0.5, 0.005, caveat, ha="center", va="bottom", fontsize=7, style="italic", wrap=True)
        fig.tight_layout(rect=(0, 0.05, 1, 1))
    else:
        fig.tight_layout()
    for path in paths:
        with atomic_path(path) as tmp:
            fig.savefig(tmp, dpi=120, format=path.suffix[1:])
    plt.close(fig)


def _caveat(dataset: str) -> str | None:
    return EMBEDDED_CAVEAT if dataset.startswith("embedded") else None


def figure_training_curves(plan: Mapping[str, Any], dataset: str, model: str, paths: Sequence[Path]) -> None:
    """Validation Dice per epoch of every method trained on (dataset, model) (paper Fig. 3): the mean over
    seeds, and the band from the lowest to the highest seed where there are several."""
    fig, ax = plt.subplots(figsize=(5.5, 3.8))
    for run in figure3_runs(plan, dataset, model):
        curves = pd.concat([load_history(plan["results"], r)[["epoch", "val_dice"]] for r in seed_records(plan, run)])
        stats = curves.groupby("epoch")["val_dice"].agg(["mean", "min", "max", "count"]).reset_index()
        seeds = int(stats["count"].max())
        line, = ax.plot(stats["epoch"], stats["mean"], marker="o", ms=3,
                        label=f"{METHOD_LABELS[run['method']]} ({run['run']}" + (f", {seeds} seeds)" if seeds > 1 else ")"))
        if seeds > 1:
            ax.fill_between(stats["epoch"], stats["min"], stats["max"], color=line.get_color(), alpha=0.2)
    ax.set(xlabel="epoch", ylabel="validation Dice", title=f"{model} on {dataset}")
    ax.legend(fontsize=7)
    _save(fig, paths, _caveat(dataset))


#: panels of the guidance-gap figure: (history quantity of :mod:`ofg.gap`, axis label)
GAP_PANELS = (("dice", "validation Dice"), ("energy", "energy (image term + w·regulariser)"),
              ("epe", "end-point error (voxels)"))


def _gap_curves(plan: Mapping[str, Any], run: Mapping[str, Any], quantity: str) -> pd.DataFrame | None:
    """Per epoch, mean/min/max over seeds of ``gap_<quantity>_{prediction,target}``; None where no seed's
    history has a value (histories from before the measurement, or runs without it). ``attrs["seeds"]``:
    how many seeds have them."""
    columns = [gap_column(quantity, role) for role in GAP_ROLES]
    frames = [h[["epoch", *columns]] for h in (load_history(plan["results"], r) for r in seed_records(plan, run))
              if set(columns) <= set(h.columns) and h[columns].notna().any().all()]
    if not frames:
        return None
    stats = pd.concat(frames).groupby("epoch")[columns].agg(["mean", "min", "max"])
    stats.attrs["seeds"] = len(frames)
    return stats


def figure_guidance_gap(plan: Mapping[str, Any], dataset: str, model: str, paths: Sequence[Path],
                        note: str = "") -> None:
    """The guidance gap through training (history columns of :mod:`ofg.gap`): validation Dice, energy and,
    where the true field is known, end-point error of the network's prediction (solid) and of its k-step
    refined target (dashed), unsupervised and the main OFG run; mean over seeds, band min–max over seeds.
    Runs whose histories lack the columns are left out and named in the title; with none, the figure is
    that note alone. ``note`` (e.g. the robustness setting) is added to the title."""
    runs = [r for r in (runs_of(plan, dataset, model).get(i) for i in ("unsupervised", plan["main_run"])) if r]
    curves = {q: {r["run"]: _gap_curves(plan, r, q) for r in runs} for q, _ in GAP_PANELS}
    panels = [(q, label) for q, label in GAP_PANELS if any(c is not None for c in curves[q].values())]
    fig, axes = plt.subplots(1, max(len(panels), 1), figsize=(4.2 * max(len(panels), 1), 3.8), squeeze=False)
    for ax, (quantity, label) in zip(axes[0], panels):
        for j, run in enumerate(runs):
            stats = curves[quantity][run["run"]]
            if stats is not None:
                _gap_lines(ax, stats, quantity, _run_label(run), plt.get_cmap("tab10")(j))
        ax.set(xlabel="epoch", ylabel=label)
    title = (f"Guidance gap: {model} on {dataset}, prediction (solid) vs its k={plan.get('main_steps')} refined "
             "target (dashed); mean over seeds, band min–max where several" + (f"\n{note}" if note else ""))
    missing = [r["run"] for r in runs if curves["dice"][r["run"]] is None]
    if missing:
        title += (f"\nno guidance-gap columns in the histories of {', '.join(missing)} (trained before the "
                  "measurement, or with training.guidance_gap: false)")
    if panels:
        axes[0][0].legend(fontsize=6)
    else:
        axes[0][0].set_axis_off()
    fig.suptitle(title, fontsize=8)
    _save(fig, paths, _caveat(dataset))


def _run_label(run: Mapping[str, Any]) -> str:
    """The method's label, with the run id where it says more (``OFG (ofg-k10)``, ``unsupervised``)."""
    label = METHOD_LABELS[run["method"]]
    return label if run["run"] == label else f"{label} ({run['run']})"


def _gap_lines(ax: Any, stats: pd.DataFrame, quantity: str, name: str, color: Any) -> None:
    """The prediction (solid) and target (dashed) curves of one run, with min–max bands over several seeds."""
    for role, style in (("prediction", "-"), ("target", "--")):
        column = stats[gap_column(quantity, role)]
        ax.plot(stats.index, column["mean"], style, color=color, marker="o", ms=2, label=f"{name}: {role}")
        if stats.attrs["seeds"] > 1:
            ax.fill_between(stats.index, column["min"], column["max"], color=color, alpha=0.15)


def figure_ablation(plan: Mapping[str, Any], table: pd.DataFrame, dataset: str, model: str,
                    paths: Sequence[Path]) -> None:
    """Test Dice and seconds per iteration against k."""
    rows = table[(table.dataset == dataset) & (table.model == model)].sort_values("k")
    fig, (left, right) = plt.subplots(1, 2, figsize=(8, 3.4))
    left.errorbar(rows.k, rows.dice_mean, yerr=rows.dice_std_pairs.fillna(0), marker="o", capsize=3)
    left.set(xlabel="OFG steps k (0 = unsupervised)", ylabel="test Dice (± over pairs)")
    right.plot(rows.k, rows.seconds_per_iteration, marker="o")
    right.set(xlabel="OFG steps k", ylabel="seconds per training iteration")
    fig.suptitle(f"Step ablation: {model} on {dataset}")
    _save(fig, paths, _caveat(dataset))


def figure_refinement(plan: Mapping[str, Any], dataset: str, paths: Sequence[Path]) -> None:
    """Dice and energy of the optimiser alone against its step, per start (paper Fig. 2)."""
    curves = load_refinement(plan["results"], dataset)
    fig, (left, right) = plt.subplots(1, 2, figsize=(8, 3.4))
    for start, group in curves.groupby("start"):
        for ax, column in ((left, "dice"), (right, "energy")):
            stats = group.groupby("step")[column].agg(["mean", "std"]).reset_index()
            ax.plot(stats["step"], stats["mean"], label=str(start))
            ax.fill_between(stats["step"], stats["mean"] - stats["std"].fillna(0),
                            stats["mean"] + stats["std"].fillna(0), alpha=0.2)
    left.set(xlabel="optimiser step", ylabel="Dice (mean ± std over pairs)")
    right.set(xlabel="optimiser step", ylabel="energy NCC + w·Grad")
    left.legend(title="start", fontsize=8)
    fig.suptitle(f"Optimiser refinement on {dataset}")
    _save(fig, paths, _caveat(dataset))


def figure_structure_dice(plan: Mapping[str, Any], metrics: pd.DataFrame, dataset: str,
                          paths: Sequence[Path]) -> None:
    """Box plots of per-structure Dice over test pairs (seeds averaged per pair), model/method as hue."""
    frame = metrics[(metrics.dataset == dataset) & metrics.run.isin(["unsupervised", plan["main_run"]])]
    structures = structure_columns(frame)
    groups = list(frame.groupby(["model", "method"], sort=True))
    width = 0.8 / max(len(groups), 1)
    fig, ax = plt.subplots(figsize=(max(6.0, 0.35 * len(structures) * max(len(groups), 1) / 2 + 2), 4))
    for j, ((model, method), group) in enumerate(groups):
        group = seed_average(group)
        data = [group[c].dropna().to_numpy() for c in structures]
        positions = np.arange(len(structures)) + (j - (len(groups) - 1) / 2) * width
        boxes = ax.boxplot(data, positions=positions, widths=width * 0.9, patch_artist=True, flierprops={"ms": 2})
        color = plt.get_cmap("tab10")(j)
        for box in boxes["boxes"]:
            box.set(facecolor=color, alpha=0.7, linewidth=0.7)
        ax.plot([], [], "s", color=color, label=f"{model} / {METHOD_LABELS[method]}")
    ax.set_xticks(np.arange(len(structures)), [c.removeprefix("dice_") for c in structures], rotation=90, fontsize=7)
    ax.set(xlabel="structure (label)", ylabel="Dice", title=f"Per-structure test Dice on {dataset}")
    ax.legend(fontsize=7)
    _save(fig, paths, _caveat(dataset))


def _grid_lines(ax: Any, disp_slice: np.ndarray, spacing: int = 4) -> None:
    """Deformed grid: lines of constant row/column moved by the in-plane displacement (2,H,W)."""
    h, w = disp_slice.shape[1:]
    rows, cols = np.meshgrid(np.arange(h), np.arange(w), indexing="ij")
    y, x = rows + disp_slice[0], cols + disp_slice[1]
    for i in range(0, h, spacing):
        ax.plot(x[i], y[i], color="k", lw=0.5)
    for j in range(0, w, spacing):
        ax.plot(x[:, j], y[:, j], color="k", lw=0.5)
    ax.set(xlim=(0, w - 1), ylim=(h - 1, 0), aspect="equal")


def figure_qualitative(plan: Mapping[str, Any], dataset: str, model: str, paths: Sequence[Path]) -> None:
    """Moving, fixed, warped, deformation grid and Jacobian determinant on the middle slice of axis 0,
    unsupervised (top) against OFG (bottom), from the samples the evaluations wrote."""
    runs = runs_of(plan, dataset, model)
    shown_runs = (runs["unsupervised"], runs[plan["main_run"]])
    fig, axes = plt.subplots(len(shown_runs), 5, figsize=(13, 3.3 * len(shown_runs)), squeeze=False)
    for row, run in zip(axes, shown_runs):
        out = load_sample(plan["results"], run)
        index, z = int(out["index"]), int(out["slice"])
        # one grey scale for the three images, so that intensity differences stay visible
        low, high = np.percentile(np.concatenate([out["moving"].ravel(), out["fixed"].ravel()]), [0.5, 99.5])
        for ax, name in zip(row[:3], ("moving", "fixed", "warped")):
            ax.imshow(out[name], cmap="gray", vmin=low, vmax=high)
            ax.set_title(f"{METHOD_LABELS[run['method']]}: {name}", fontsize=8)
        _grid_lines(row[3], out["displacement"])
        row[3].set_title("deformation grid", fontsize=8)
        shown = row[4].imshow(out["jacobian"], cmap="RdBu_r", vmin=0, vmax=2)
        row[4].set_title(f"Jacobian det. ({float(out['folding_percent']):.3f}% ≤ 0)", fontsize=8)
        fig.colorbar(shown, ax=row[4], fraction=0.046)
        for ax in row:
            ax.set_xticks([])
            ax.set_yticks([])
    fig.suptitle(f"{model} on {dataset}, {plan['split']} pair {index}, slice {z} of axis 0", fontsize=9)
    _save(fig, paths, _caveat(dataset))
