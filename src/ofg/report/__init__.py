"""Tables (CSV, Markdown, LaTeX) and figures (PNG, PDF) from the workflow's result files.

``plan`` is :func:`ofg.stages.report_plan`. :func:`outputs` (:mod:`ofg.report.outputs`, standard
library only) lists every file :func:`make_report` (:mod:`ofg.report.make`) writes, so the
Snakefile declares them while parsing without loading the report's libraries. Those libraries
(matplotlib, pandas' Markdown through tabulate) are the ``[workflow]`` extra: ``make_report`` and the
statistics helpers below are imported on first use, and a missing extra is named in the error.
"""

from __future__ import annotations

import importlib
from typing import Any

from ofg.extras import require
from ofg.report.outputs import FIGURES, TABLES, Output, output_paths, outputs

#: names handed on from the report's modules on first use -> that module
_LAZY = {"make_report": "make", "EMBEDDED_CAVEAT": "render", "display_cost": "render",
         "display_metrics": "render", "to_latex": "render", "mean_std": "stats",
         "seed_average": "stats", "summarize_run": "stats", "pair_key_columns": "load",
         "structure_columns": "load", "published": "tables"}


def __getattr__(name: str) -> Any:
    if name not in _LAZY:
        raise AttributeError(f"module 'ofg.report' has no attribute {name!r}")
    require("workflow", f"ofg.report.{name}", ("matplotlib", "tabulate"))
    return getattr(importlib.import_module(f"ofg.report.{_LAZY[name]}"), name)


__all__ = ["FIGURES", "TABLES", "Output", "output_paths", "outputs", *_LAZY]
