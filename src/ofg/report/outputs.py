"""The report's outputs: every table and figure :func:`ofg.report.make_report` writes for a plan.

``plan`` is :func:`ofg.stages.report_plan`. :func:`outputs` lists them as records (kind, dataset,
model, paths), so the Snakefile declares exactly those outputs and flags each for
``snakemake --report`` by its kind. Standard library only: the workflow calls it while parsing.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

from ofg.layout import Layout
from ofg.names import GAP_FIGURE

#: the claims table first: it is what the report is for
TABLES = ("claims", "main_results", "training_cost", "self_training", "step_ablation", "published")
FIGURES = ("training_curves", GAP_FIGURE, "ablation", "refinement", "structure_dice", "qualitative")


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
    figure_parts += [(GAP_FIGURE, d, m) for d, m in plan["main"]]
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
