"""Tables (CSV, Markdown, LaTeX) and figures (PNG, PDF) from the workflow's result files.

``plan`` is :func:`ofg.plan.report_plan`. :func:`outputs` lists every file :func:`make_report` writes
as records (kind, dataset, model, paths), so the Snakefile declares exactly those outputs and flags
each for ``snakemake --report`` by its kind. The report reads files only (metrics, histories,
benchmarks, refinement curves, evaluation samples); it never loads a network.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import matplotlib
from tqdm.auto import tqdm

from ofg.layout import Layout
from ofg.report import figures, tables
from ofg.report.claims_table import write_claims
from ofg.report.load import load_metrics, pair_key_columns, structure_columns
from ofg.report.render import (EMBEDDED_CAVEAT, display_cost, display_metrics, table_caption, to_latex,
                               write_table)
from ofg.report.stats import mean_std, paired_wilcoxon, seed_average, summarize_run
from ofg.report.tables import published

#: the claims table first: it is what the report is for
TABLES = ("claims", "main_results", "training_cost", "self_training", "step_ablation", "published")
FIGURES = ("training_curves", "ablation", "refinement", "structure_dice", "qualitative")


@dataclass(frozen=True)
class Output:
    """One table or figure: ``category`` "table" or "figure", its ``kind`` (a name of :data:`TABLES`
    or :data:`FIGURES`), what it shows (dataset, model; None where it spans them) and its files."""

    category: str
    kind: str
    dataset: str | None
    model: str | None
    paths: tuple[Path, ...]


def outputs(plan: Mapping[str, Any]) -> list[Output]:
    """Every table and figure :func:`make_report` writes for ``plan``."""
    layout = Layout(plan["results"])
    records = [Output("table", name, None, None, tuple(layout.table(name))) for name in TABLES]
    figure_parts = [("training_curves", d, m) for d, m in plan["main"]]
    figure_parts += [("ablation", d, m) for d, m in plan["ablation"]["pairs"]]
    figure_parts += [("refinement", d, None) for d in plan["refinement"]]
    figure_parts += [("structure_dice", d, None) for d in dict.fromkeys(d for d, _ in plan["main"])]
    figure_parts += [("qualitative", d, m) for d, m in plan["qualitative"]]
    for kind, dataset, model in figure_parts:
        parts = (dataset,) if model is None else (dataset, model)
        records.append(Output("figure", kind, dataset, model, tuple(layout.figure(kind, *parts))))
    return records


def output_paths(plan: Mapping[str, Any]) -> list[Path]:
    """Every file :func:`make_report` writes."""
    return [path for record in outputs(plan) for path in record.paths]


def make_report(plan: Mapping[str, Any], progress: bool = True) -> list[Path]:
    """Write every table and figure of ``plan``; return the paths (those of :func:`output_paths`)."""
    matplotlib.use("Agg")
    records = outputs(plan)
    paths = {r.kind: r.paths for r in records if r.category == "table"}
    metrics = load_metrics(plan["results"], plan["runs"])
    write_claims(plan, paths["claims"])
    main = tables.main_results(plan, metrics)
    cost = tables.training_cost(plan, metrics)
    selft = tables.self_training(plan, metrics) if plan["self_training"] else tables.empty_summary()
    ablation = (tables.step_ablation(plan, metrics, cost) if plan["ablation"]["pairs"]
                else tables.empty_summary(["k"]))
    write_table(main, display_metrics(main), paths["main_results"], table_caption(
        plan, f"Main results: unsupervised vs OFG (k={plan['main_steps']}); p is the two-sided paired "
        "Wilcoxon signed-rank test of per-pair mean Dice, OFG vs unsupervised on the same pairs."))
    write_table(cost, display_cost(cost), paths["training_cost"], table_caption(
        plan, "Training cost: s/iter and OFG s/iter are means over epochs from history.csv; OFG share = OFG "
        "s/iter ÷ s/iter; peak memory as the trainer records it in history.csv; wall time and max RSS from Snakemake's "
        "benchmark of the last training invocation; inference s per test pair from the metrics."))
    write_table(selft, display_metrics(selft), paths["self_training"], table_caption(
        plan, "Self-training comparison (paper Fig. 3): the teacher of (optimised) self-training is the "
        "unsupervised run."))
    write_table(ablation, display_metrics(ablation), paths["step_ablation"], table_caption(
        plan, f"Step ablation: k = 0 is the unsupervised run, k = {plan['main_steps']} the main OFG run."))
    pub = published()
    write_table(pub, pub, paths["published"],
                "PUBLISHED numbers from the literature, on the real datasets; not produced by this "
                "workflow and not comparable with runs on the embedded data.")
    for record in tqdm([r for r in records if r.category == "figure"], desc="figures", disable=not progress):
        _draw(plan, record, metrics, ablation)
    return [path for record in records for path in record.paths]


def _draw(plan: Mapping[str, Any], record: Output, metrics: Any, ablation: Any) -> None:
    if record.kind == "training_curves":
        figures.figure_training_curves(plan, record.dataset, record.model, record.paths)
    elif record.kind == "ablation":
        figures.figure_ablation(plan, ablation, record.dataset, record.model, record.paths)
    elif record.kind == "refinement":
        figures.figure_refinement(plan, record.dataset, record.paths)
    elif record.kind == "structure_dice":
        figures.figure_structure_dice(plan, metrics, record.dataset, record.paths)
    elif record.kind == "qualitative":
        figures.figure_qualitative(plan, record.dataset, record.model, record.paths)


__all__ = ["EMBEDDED_CAVEAT", "FIGURES", "TABLES", "Output", "display_cost", "display_metrics", "make_report",
           "mean_std", "output_paths", "outputs", "pair_key_columns", "paired_wilcoxon", "published",
           "seed_average", "structure_columns", "summarize_run", "to_latex"]
