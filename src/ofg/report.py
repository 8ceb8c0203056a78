"""Tables (CSV, Markdown, LaTeX) and figures (PNG, PDF) from the workflow's results files.

Everything is read from the layout of :mod:`ofg.workflow` under ``plan["results"]``; ``plan`` is
:func:`ofg.workflow.report_plan`. :func:`output_paths` names every file :func:`make_report` writes, so
the Snakefile declares exactly those outputs.

Conventions stated in every table: Dice "± over pairs" is the std of the per-pair mean Dice;
"± over structures × pairs" is the std over every (structure, pair) Dice (TransMorph's convention).
%|J|≤0 uses ``np.gradient`` of identity + displacement over the whole volume; SDlogJ is the
Learn2Reg formula; HD95 is in voxels (and mm where the spacing is known).
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import numpy as np
import pandas as pd

TABLES = ("main_results", "training_cost", "self_training", "step_ablation", "published")
TABLE_FORMATS = ("csv", "md", "tex")
FIGURE_FORMATS = ("png", "pdf")
EMBEDDED_CAVEAT = ("Embedded data: one real anatomy per modality with known synthetic deformations, "
                   "a proxy for inter-subject variability; not comparable with published numbers.")
#: columns of a metrics file that are not pair keys
METRIC_PREFIXES = ("dice_", "folding_percent", "sdlogj", "hd95", "endpoint_error", "inference_seconds",
                   "label_mode")
METHOD_LABELS = {"unsupervised": "unsupervised", "self_training": "self-training",
                 "opt_self_training": "optimised self-training", "ofg": "OFG"}

#: PAPER.md, "Published numbers": never mixed with our runs
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


# ---------------------------------------------------------------- names


def _slug(*parts: str) -> str:
    return "_".join(parts)


def table_paths(results: str | Path) -> dict[str, list[Path]]:
    """table name -> [csv, md, tex] paths."""
    root = Path(results) / "tables"
    return {name: [root / f"{name}.{ext}" for ext in TABLE_FORMATS] for name in TABLES}


def figure_paths(plan: Mapping[str, Any]) -> dict[str, list[Path]]:
    """figure stem -> [png, pdf] paths; the stem starts with the figure kind."""
    stems = [_slug("training_curves", d, m) for d, m in plan["main"]]
    stems += [_slug("ablation", d, m) for d, m in plan["ablation"]["pairs"]]
    stems += [_slug("refinement", d) for d in plan["refinement"]]
    stems += [_slug("structure_dice", d) for d in dict.fromkeys(d for d, _ in plan["main"])]
    stems += [_slug("qualitative", d, m) for d, m in plan["qualitative"]]
    root = Path(plan["results"]) / "figures"
    return {stem: [root / f"{stem}.{ext}" for ext in FIGURE_FORMATS] for stem in stems}


def output_paths(plan: Mapping[str, Any]) -> list[Path]:
    """Every file :func:`make_report` writes."""
    paths = [p for group in table_paths(plan["results"]).values() for p in group]
    return paths + [p for group in figure_paths(plan).values() for p in group]


# ---------------------------------------------------------------- loading


def _run_dir(results: Path, dataset: str, model: str, run: str) -> Path:
    return results / "runs" / dataset / model / run


def _method(run: str) -> tuple[str, int | None]:
    from ofg.workflow import parse_run_id

    return parse_run_id(run)


def load_metrics(results: str | Path, runs: Iterable[Sequence[str]]) -> pd.DataFrame:
    """Concatenated per-pair metrics of ``runs`` ((dataset, model, run) triples) with those columns added."""
    frames = []
    for dataset, model, run in runs:
        path = Path(results) / "metrics" / dataset / model / f"{run}.csv"
        frame = pd.read_csv(path)
        method, steps = _method(run)
        frames.append(frame.assign(dataset=dataset, model=model, run=run, method=method, steps=steps))
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def load_history(results: str | Path, dataset: str, model: str, run: str) -> pd.DataFrame:
    return pd.read_csv(_run_dir(Path(results), dataset, model, run) / "history.csv")


def load_benchmark(results: str | Path, stage: str, dataset: str, model: str, run: str) -> dict[str, float]:
    """Snakemake's benchmark TSV of one job (wall seconds ``s``, ``max_rss`` MB, ...); {} if absent."""
    path = Path(results) / "benchmarks" / stage / dataset / model / f"{run}.tsv"
    if not path.exists():
        return {}
    row = pd.read_csv(path, sep="\t").iloc[-1]
    return {k: _float(v) for k, v in row.items() if k != "h:m:s"}


def _float(value: Any) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan


PAIR_KEYS = ("split", "pair_index", "moving", "fixed")


def pair_key_columns(frame: pd.DataFrame) -> list[str]:
    """Columns of a metrics file that identify the pair: ``PAIR_KEYS`` when present, else every column
    that is neither a metric nor a run label."""
    if set(PAIR_KEYS) <= set(frame.columns):
        return list(PAIR_KEYS)
    labels = {"dataset", "model", "run", "method", "steps", "checkpoint"}
    return [c for c in frame.columns if c not in labels and not c.startswith(METRIC_PREFIXES)
            and not c.startswith("refine")]


def structure_columns(frame: pd.DataFrame) -> list[str]:
    """Per-structure Dice columns (``dice_<label>``), without ``dice_mean``."""
    return [c for c in frame.columns if c.startswith("dice_") and c != "dice_mean"]


# ---------------------------------------------------------------- statistics


def mean_std(values: Iterable[float]) -> tuple[float, float, int]:
    """(mean, sample std, n) over the finite values; NaNs where there are none (std NaN for n=1)."""
    array = np.asarray(list(values), dtype=float)
    array = array[np.isfinite(array)]
    if array.size == 0:
        return math.nan, math.nan, 0
    std = float(array.std(ddof=1)) if array.size > 1 else math.nan
    return float(array.mean()), std, int(array.size)


def paired_wilcoxon(a: pd.DataFrame, b: pd.DataFrame, column: str = "dice_mean") -> tuple[float, int]:
    """Two-sided Wilcoxon signed-rank p-value of ``column`` between two runs on the same pairs.

    Pairs are matched on :func:`pair_key_columns`; returns (p, number of matched pairs). p is NaN with
    fewer than two matched pairs or when every difference is zero (the test is undefined there).
    """
    from scipy.stats import wilcoxon

    keys = [k for k in pair_key_columns(a) if k in b.columns]
    if not keys:
        raise ValueError("paired_wilcoxon: the metrics files share no pair-key columns to match pairs on")
    merged = a[keys + [column]].merge(b[keys + [column]], on=keys, suffixes=("_a", "_b")).dropna()
    diff = merged[f"{column}_a"].to_numpy() - merged[f"{column}_b"].to_numpy()
    if len(diff) < 2 or np.all(diff == 0):
        return math.nan, len(diff)
    return float(wilcoxon(merged[f"{column}_a"], merged[f"{column}_b"]).pvalue), len(diff)


def summarize_run(frame: pd.DataFrame) -> dict[str, float]:
    """Mean/std of each metric of one run's per-pair metrics."""
    out: dict[str, float] = {}
    out["n_pairs"] = len(frame)
    out["dice_mean"], out["dice_std_pairs"], _ = mean_std(frame["dice_mean"])
    structures = frame[structure_columns(frame)].to_numpy(dtype=float).ravel()
    _, out["dice_std_structures_pairs"], _ = mean_std(structures)
    for column in ("folding_percent", "sdlogj_l2r", "sdlogj_plain", "hd95", "hd95_mm", "endpoint_error",
                   "inference_seconds"):
        values = frame[column] if column in frame else []
        out[column], out[f"{column}_std"], _ = mean_std(values)
    return out


# ---------------------------------------------------------------- tables


def main_results(plan: Mapping[str, Any], metrics: pd.DataFrame) -> pd.DataFrame:
    """Unsupervised and main OFG run per (dataset, model): metrics and the paired Wilcoxon p (OFG row)."""
    rows = []
    for dataset, model in plan["main"]:
        runs = {run: metrics[(metrics.dataset == dataset) & (metrics.model == model) & (metrics.run == run)]
                for run in ("unsupervised", plan["main_run"])}
        for run, frame in runs.items():
            row = {"dataset": dataset, "model": model, "method": METHOD_LABELS[_method(run)[0]], "run": run}
            row.update(summarize_run(frame))
            row["wilcoxon_p_vs_unsupervised"] = math.nan
            if run != "unsupervised":
                row["wilcoxon_p_vs_unsupervised"], _ = paired_wilcoxon(frame, runs["unsupervised"])
            rows.append(row)
    return pd.DataFrame(rows)


def training_cost(plan: Mapping[str, Any], metrics: pd.DataFrame) -> pd.DataFrame:
    """Per run: seconds per iteration (history), OFG share, peak memory, wall time and RSS (benchmark),
    inference seconds (metrics)."""
    results = Path(plan["results"])
    rows = []
    for dataset, model, run in plan["runs"]:
        history = load_history(results, dataset, model, run)
        bench = load_benchmark(results, "train", dataset, model, run)
        s_it, _, _ = mean_std(history.get("seconds_per_iteration", []))
        ofg_it, _, _ = mean_std(history.get("ofg_seconds_per_iteration", []))
        teacher_it, _, _ = mean_std(history.get("teacher_seconds_per_iteration", []))
        frame = metrics[(metrics.dataset == dataset) & (metrics.model == model) & (metrics.run == run)]
        method, steps = _method(run)
        rows.append({
            "dataset": dataset, "model": model, "method": METHOD_LABELS[method], "run": run,
            "epochs": len(history),
            "seconds_per_iteration": s_it,
            "ofg_seconds_per_iteration": ofg_it if method != "unsupervised" else 0.0,
            "ofg_share": (ofg_it / s_it) if method != "unsupervised" and s_it > 0 else 0.0,
            # self-training: time to fetch the teacher's field (predicted/refined once, then cached)
            "teacher_seconds_per_iteration": teacher_it,
            "peak_memory_mb": float(np.nanmax(history["peak_memory_mb"])) if "peak_memory_mb" in history
            and history["peak_memory_mb"].notna().any() else math.nan,
            "train_wall_seconds_last_invocation": bench.get("s", math.nan),
            "train_max_rss_mb": bench.get("max_rss", math.nan),
            "inference_seconds": mean_std(frame.get("inference_seconds", []))[0],
        })
    return pd.DataFrame(rows)


def self_training(plan: Mapping[str, Any], metrics: pd.DataFrame) -> pd.DataFrame:
    """The four methods of paper Fig. 3 per (dataset, model): test metrics and validation Dice."""
    rows = []
    for dataset, model in plan["self_training"]:
        for run in ("unsupervised", "self_training", "opt_self_training", plan["main_run"]):
            frame = metrics[(metrics.dataset == dataset) & (metrics.model == model) & (metrics.run == run)]
            history = load_history(plan["results"], dataset, model, run)
            row = {"dataset": dataset, "model": model, "method": METHOD_LABELS[_method(run)[0]], "run": run}
            row.update(summarize_run(frame))
            row["best_val_dice"] = float(history["val_dice"].max()) if "val_dice" in history else math.nan
            row["final_val_dice"] = float(history["val_dice"].iloc[-1]) if "val_dice" in history else math.nan
            rows.append(row)
    return pd.DataFrame(rows)


def step_ablation(plan: Mapping[str, Any], metrics: pd.DataFrame, cost: pd.DataFrame) -> pd.DataFrame:
    """Test Dice, folding and training time against the number of OFG steps k (k=0: unsupervised)."""
    from ofg.workflow import ofg_run_id

    rows = []
    for dataset, model in plan["ablation"]["pairs"]:
        for k in plan["ablation"]["steps"]:
            run = ofg_run_id(k)
            frame = metrics[(metrics.dataset == dataset) & (metrics.model == model) & (metrics.run == run)]
            c = cost[(cost.dataset == dataset) & (cost.model == model) & (cost.run == run)].iloc[0]
            row = {"dataset": dataset, "model": model, "k": k, "run": run}
            row.update(summarize_run(frame))
            row["seconds_per_iteration"] = c["seconds_per_iteration"]
            row["ofg_share"] = c["ofg_share"]
            rows.append(row)
    return pd.DataFrame(rows)


def published() -> pd.DataFrame:
    """The published numbers of PAPER.md, labelled as such."""
    columns = ["dataset", "model", "dice", "folding_percent", "sdlogj", "hd95", "source"]
    return pd.DataFrame(PUBLISHED, columns=columns).assign(origin="published")


# ---------------------------------------------------------------- formatting


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
    out["Dice (± pairs)"] = [_pm(m, s) for m, s in zip(table.dice_mean, table.dice_std_pairs)]
    out["Dice (± structures×pairs)"] = [_pm(m, s) for m, s in zip(table.dice_mean, table.dice_std_structures_pairs)]
    out["%|J|≤0"] = [_pm(m, s) for m, s in zip(table.folding_percent, table.folding_percent_std)]
    out["SDlogJ"] = [_pm(m, s) for m, s in zip(table.sdlogj_l2r, table.sdlogj_l2r_std)]
    out["HD95 (vox)"] = [_pm(m, s, 2) for m, s in zip(table.hd95, table.hd95_std)]
    if table.endpoint_error.notna().any():
        out["EPE (vox)"] = [_pm(m, s, 2) for m, s in zip(table.endpoint_error, table.endpoint_error_std)]
    for column, title in (("wilcoxon_p_vs_unsupervised", "p (Wilcoxon vs unsup.)"),
                          ("seconds_per_iteration", "s/iter"), ("ofg_share", "OFG share"),
                          ("best_val_dice", "best val Dice"), ("final_val_dice", "final val Dice")):
        if column in table:
            out[title] = [_num(v) for v in table[column]]
    return out


def display_cost(table: pd.DataFrame) -> pd.DataFrame:
    out = table[["dataset", "model", "method", "run", "epochs"]].copy()
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
    from ofg.io import atomic_path, write_text_atomic

    csv, md, tex = paths
    with atomic_path(csv) as tmp:
        numeric.to_csv(tmp, index=False)
    body = shown.to_markdown(index=False) if len(shown) else "(no rows: the experiment is not configured)"
    write_text_atomic(md, f"{body}\n\n{caption}\n")
    write_text_atomic(tex, to_latex(shown, caption))


def _caption(plan: Mapping[str, Any], text: str) -> str:
    conventions = (f"Split: {plan['split']}; labels warped by {plan['label_mode']}; Dice ± over pairs is the std "
                   "of per-pair mean Dice, ± over structures×pairs the std over all (structure, pair) values; "
                   "%|J|≤0 from np.gradient of identity+displacement; SDlogJ by the Learn2Reg formula; HD95 in "
                   "voxels.")
    caveat = f" {EMBEDDED_CAVEAT}" if plan.get("embedded") else ""
    return f"{text} {conventions}{caveat}"


# ---------------------------------------------------------------- figures


def _save(fig: Any, paths: Sequence[Path], caveat: str | None) -> None:
    import matplotlib.pyplot as plt

    from ofg.io import atomic_path

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
    """Validation Dice per epoch of every method trained on (dataset, model) (paper Fig. 3)."""
    import matplotlib.pyplot as plt

    runs = [run for d, m, run in plan["runs"] if (d, m) == (dataset, model)
            and (run in ("unsupervised", "self_training", "opt_self_training", plan["main_run"]))]
    fig, ax = plt.subplots(figsize=(5.5, 3.8))
    for run in runs:
        history = load_history(plan["results"], dataset, model, run)
        ax.plot(history["epoch"], history["val_dice"], marker="o", ms=3,
                label=f"{METHOD_LABELS[_method(run)[0]]} ({run})")
    ax.set(xlabel="epoch", ylabel="validation Dice", title=f"{model} on {dataset}")
    ax.legend(fontsize=7)
    _save(fig, paths, _caveat(dataset))


def figure_ablation(plan: Mapping[str, Any], table: pd.DataFrame, dataset: str, model: str,
                    paths: Sequence[Path]) -> None:
    """Test Dice and seconds per iteration against k."""
    import matplotlib.pyplot as plt

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
    import matplotlib.pyplot as plt

    curves = pd.read_csv(Path(plan["results"]) / "refinement" / f"{dataset}.csv")
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
    """Box plots of per-structure Dice over test pairs, model/method as hue."""
    import matplotlib.pyplot as plt

    frame = metrics[(metrics.dataset == dataset) & metrics.run.isin(["unsupervised", plan["main_run"]])]
    structures = structure_columns(frame)
    groups = list(frame.groupby(["model", "method"], sort=True))
    width = 0.8 / max(len(groups), 1)
    fig, ax = plt.subplots(figsize=(max(6.0, 0.35 * len(structures) * max(len(groups), 1) / 2 + 2), 4))
    for j, ((model, method), group) in enumerate(groups):
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


def predict_pair(checkpoint: str | Path, split: str = "test", index: int = 0,
                 device: str = "cpu") -> dict[str, np.ndarray]:
    """Run a trained checkpoint on pair ``index`` of ``split`` of its own dataset.

    Returns numpy arrays: moving, fixed, warped (D,H,W) and displacement (3,D,H,W) in voxels.
    """
    import torch

    from ofg.data import open_dataset
    from ofg.evaluate import load_checkpoint

    model, config = load_checkpoint(checkpoint, device)
    spec = config.dataset
    pair = open_dataset(spec.name, spec.root, **spec.options).pairs(split)[index]
    moving = torch.from_numpy(np.ascontiguousarray(pair.moving))[None, None].to(device)
    fixed = torch.from_numpy(np.ascontiguousarray(pair.fixed))[None, None].to(device)
    with torch.no_grad():
        warped, disp = model(torch.cat([moving, fixed], dim=1))
    return {"moving": pair.moving, "fixed": pair.fixed, "warped": warped[0, 0].cpu().numpy(),
            "displacement": disp[0].cpu().numpy()}


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


def figure_qualitative(plan: Mapping[str, Any], dataset: str, model: str, paths: Sequence[Path],
                       index: int = 0) -> None:
    """Moving, fixed, warped, deformation grid and Jacobian determinant on the middle axial slice,
    unsupervised (top) against OFG (bottom), for test pair ``index``."""
    import matplotlib.pyplot as plt

    from ofg.metrics import jacobian_determinant

    runs = ("unsupervised", plan["main_run"])
    fig, axes = plt.subplots(len(runs), 5, figsize=(13, 3.3 * len(runs)), squeeze=False)
    for row, run in zip(axes, runs):
        checkpoint = _run_dir(Path(plan["results"]), dataset, model, run) / "checkpoints" / "best.pt"
        out = predict_pair(checkpoint, plan["split"], index, device="cpu")
        z = out["moving"].shape[0] // 2
        det = np.asarray(jacobian_determinant(out["displacement"]))
        # one grey scale for the three images, so that intensity differences stay visible
        low, high = np.percentile(np.concatenate([out["moving"][z].ravel(), out["fixed"][z].ravel()]), [0.5, 99.5])
        for ax, image, title in zip(row[:3], (out["moving"], out["fixed"], out["warped"]),
                                    ("moving", "fixed", "warped")):
            ax.imshow(image[z], cmap="gray", vmin=low, vmax=high)
            ax.set_title(f"{METHOD_LABELS[_method(run)[0]]}: {title}", fontsize=8)
        _grid_lines(row[3], out["displacement"][1:, z])
        row[3].set_title("deformation grid", fontsize=8)
        shown = row[4].imshow(det[z], cmap="RdBu_r", vmin=0, vmax=2)
        row[4].set_title(f"Jacobian det. ({100 * np.mean(det <= 0):.3f}% ≤ 0)", fontsize=8)
        fig.colorbar(shown, ax=row[4], fraction=0.046)
        for ax in row:
            ax.set_xticks([])
            ax.set_yticks([])
    fig.suptitle(f"{model} on {dataset}, {plan['split']} pair {index}, slice {z} of axis 0", fontsize=9)
    _save(fig, paths, _caveat(dataset))


# ---------------------------------------------------------------- everything


def make_report(plan: Mapping[str, Any], progress: bool = True) -> list[Path]:
    """Write every table and figure of ``plan``; return the paths (those of :func:`output_paths`)."""
    import matplotlib

    matplotlib.use("Agg")
    from tqdm.auto import tqdm

    metrics = load_metrics(plan["results"], plan["runs"])
    tables = table_paths(plan["results"])
    main = main_results(plan, metrics)
    cost = training_cost(plan, metrics)
    selft = self_training(plan, metrics) if plan["self_training"] else _empty_summary()
    ablation = step_ablation(plan, metrics, cost) if plan["ablation"]["pairs"] else _empty_summary(["k"])
    write_table(main, display_metrics(main), tables["main_results"], _caption(
        plan, f"Main results: unsupervised vs OFG (k={_method(plan['main_run'])[1]}); p is the two-sided paired "
        "Wilcoxon signed-rank test of per-pair mean Dice, OFG vs unsupervised on the same pairs."))
    write_table(cost, display_cost(cost), tables["training_cost"], _caption(
        plan, "Training cost: s/iter and OFG s/iter are means over epochs from history.csv; OFG share = OFG "
        "s/iter ÷ s/iter; peak memory as the trainer records it in history.csv; wall time and max RSS from Snakemake's "
        "benchmark of the last training invocation; inference s per test pair from the metrics."))
    write_table(selft, display_metrics(selft), tables["self_training"], _caption(
        plan, "Self-training comparison (paper Fig. 3): the teacher of (optimised) self-training is the "
        "unsupervised run."))
    write_table(ablation, display_metrics(ablation), tables["step_ablation"], _caption(
        plan, f"Step ablation: k = 0 is the unsupervised run, k = {_method(plan['main_run'])[1]} the main OFG run."))
    pub = published()
    write_table(pub, pub, tables["published"],
                "PUBLISHED numbers from the literature (PAPER.md), on the real datasets; not produced by this "
                "workflow and not comparable with runs on the embedded data.")

    for stem, paths in tqdm(list(figure_paths(plan).items()), desc="figures", disable=not progress):
        if stem.startswith("training_curves_"):
            dataset, model = _split_stem(stem, "training_curves_")
            figure_training_curves(plan, dataset, model, paths)
        elif stem.startswith("ablation_"):
            dataset, model = _split_stem(stem, "ablation_")
            figure_ablation(plan, ablation, dataset, model, paths)
        elif stem.startswith("refinement_"):
            figure_refinement(plan, stem.removeprefix("refinement_"), paths)
        elif stem.startswith("structure_dice_"):
            figure_structure_dice(plan, metrics, stem.removeprefix("structure_dice_"), paths)
        elif stem.startswith("qualitative_"):
            dataset, model = _split_stem(stem, "qualitative_")
            figure_qualitative(plan, dataset, model, paths)
    return output_paths(plan)


def _split_stem(stem: str, prefix: str) -> tuple[str, str]:
    """(dataset, model) of a figure stem; dataset names contain '-' but never '_'."""
    dataset, _, model = stem.removeprefix(prefix).partition("_")
    return dataset, model


def _empty_summary(extra: Sequence[str] = ()) -> pd.DataFrame:
    columns = ["dataset", "model", "method", *extra, "n_pairs", "dice_mean", "dice_std_pairs",
               "dice_std_structures_pairs", "folding_percent", "folding_percent_std", "sdlogj_l2r",
               "sdlogj_l2r_std", "hd95", "hd95_std", "endpoint_error", "endpoint_error_std"]
    return pd.DataFrame(columns=columns)


def load_plan(path: str | Path) -> dict[str, Any]:
    """Read a plan written as JSON (the report notebook's optional input)."""
    return json.loads(Path(path).read_text())
