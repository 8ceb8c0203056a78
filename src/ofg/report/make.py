"""Write every table and figure of a plan from the workflow's result files.

The report reads files only (metrics, histories, benchmarks, refinement curves, evaluation samples);
it never loads a network. Its plotting and table libraries are the ``[workflow]`` extra.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

import matplotlib
from tqdm.auto import tqdm

from ofg.names import GAP_FIGURE
from ofg.report import figures, tables
from ofg.report.claims_table import write_claims
from ofg.report.load import load_metrics
from ofg.report.outputs import Output, outputs
from ofg.report.render import display_cost, display_metrics, table_caption, write_table
from ofg.report.tables import published


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
        plan, f"Main results: unsupervised vs OFG (k={plan['main_steps']}), descriptive (mean ± spread over "
        "pairs, structures × pairs and seeds). Whether OFG raises Dice, with its CI, p and verdict (independent "
        "units, matched seeds), is the claims table's Dice row."))
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
    elif record.kind == GAP_FIGURE:
        figures.figure_guidance_gap(plan, record.dataset, record.model, record.paths)
    elif record.kind == "ablation":
        figures.figure_ablation(plan, ablation, record.dataset, record.model, record.paths)
    elif record.kind == "refinement":
        figures.figure_refinement(plan, record.dataset, record.paths)
    elif record.kind == "structure_dice":
        figures.figure_structure_dice(plan, metrics, record.dataset, record.paths)
    elif record.kind == "qualitative":
        figures.figure_qualitative(plan, record.dataset, record.model, record.paths)
