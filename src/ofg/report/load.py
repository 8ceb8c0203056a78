"""Reading the workflow's result files for the report (paths from :mod:`ofg.layout`)."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Iterable, Mapping

import numpy as np
import pandas as pd

from ofg.io import DataError
from ofg.layout import Layout, RunKey

#: columns of a metrics file that are not pair keys
METRIC_PREFIXES = ("dice_", "folding_percent", "sdlogj", "hd95", "endpoint_error", "inference_seconds",
                   "label_mode")
PAIR_KEYS = ("split", "pair_index", "moving", "fixed")


def _key(run: Mapping[str, Any]) -> RunKey:
    return RunKey(run["dataset"], run["model"], run["run"], str(run["seed"]))


def _read_csv(path: Path, what: str, **kwargs: Any) -> pd.DataFrame:
    if not path.is_file():
        raise DataError(f"{path}: missing {what}; run the workflow stage that writes it first")
    return pd.read_csv(path, **kwargs)


def load_metrics(results: str | Path, runs: Iterable[Mapping[str, Any]]) -> pd.DataFrame:
    """Concatenated per-pair metrics of ``runs`` (run records of :func:`ofg.stages.report_plan`), with the
    run's dataset, model, run id, method, steps and seed added as columns."""
    layout, frames = Layout(results), []
    for run in runs:
        frame = _read_csv(layout.metrics(_key(run)), "metrics file")
        frames.append(frame.assign(dataset=run["dataset"], model=run["model"], run=run["run"], method=run["method"],
                                   steps=run["steps"], seed=run["seed"]))
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def load_arithmetic(results: str | Path, runs: Iterable[Mapping[str, Any]]) -> list[dict[str, Any] | None]:
    """The ``arithmetic`` record of each finished run's ``summary.json`` (:func:`ofg.runtime.arithmetic_path`),
    in the order of ``runs``; None for a run without one (unfinished, or trained before it was recorded)."""
    layout, out = Layout(results), []
    for run in runs:
        path = layout.run(_key(run)).summary
        try:
            record = json.loads(path.read_text()).get("arithmetic") if path.is_file() else None
        except (OSError, ValueError) as exc:
            raise DataError(f"{path}: unreadable training summary ({exc})") from exc
        out.append(record)
    return out


def load_history(results: str | Path, run: Mapping[str, Any]) -> pd.DataFrame:
    """history.csv of one run (one row per epoch)."""
    return _read_csv(Layout(results).run(_key(run)).history, "training history")


def load_benchmark(results: str | Path, stage: str, run: Mapping[str, Any]) -> dict[str, float]:
    """Snakemake's benchmark TSV of one job (wall seconds ``s``, ``max_rss`` MB, ...); {} if absent."""
    path = Layout(results).benchmark(stage, *_key(run).parts())
    if not path.exists():
        return {}
    row = pd.read_csv(path, sep="\t").iloc[-1]
    return {k: _float(v) for k, v in row.items() if k != "h:m:s"}


def load_sample(results: str | Path, run: Mapping[str, Any]) -> dict[str, np.ndarray]:
    """The qualitative sample an evaluation wrote (see :func:`ofg.inference.qualitative_sample`)."""
    path = Layout(results).sample(_key(run))
    if not path.is_file():
        raise DataError(f"{path}: missing qualitative sample; run the evaluation that writes it first")
    with np.load(path) as data:
        return {name: data[name] for name in data.files}


def load_baselines(results: str | Path, dataset: str) -> pd.DataFrame:
    """The reference rows of ``dataset`` (one row per method and pair, see :mod:`ofg.baselines`)."""
    return _read_csv(Layout(results).baselines(dataset), "reference rows (baselines)")


def load_refinement(results: str | Path, dataset: str) -> pd.DataFrame:
    """The refinement curves of ``dataset``."""
    return _read_csv(Layout(results).refinement(dataset), "refinement curves")


def load_timing(results: str | Path, dataset: str, model: str) -> pd.DataFrame | None:
    """The controlled timing measurement of (dataset, model) (:meth:`ofg.layout.Layout.timing`); ``None``
    when the file is absent (older results, or a plan without the timing job)."""
    path = Layout(results).timing(dataset, model)
    return pd.read_csv(path) if path.is_file() else None


def _float(value: Any) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan


def pair_key_columns(frame: pd.DataFrame) -> list[str]:
    """Columns of a metrics file that identify the pair: ``PAIR_KEYS`` when present, else every column
    that is neither a metric nor a run label."""
    if set(PAIR_KEYS) <= set(frame.columns):
        return list(PAIR_KEYS)
    labels = {"dataset", "model", "run", "method", "steps", "checkpoint"}
    return [c for c in frame.columns if c not in labels and not c.startswith(METRIC_PREFIXES)
            and not c.startswith("refine")]


def structure_columns(frame: pd.DataFrame) -> list[str]:
    """Per-structure Dice columns (``dice_<label>``), without the means (``dice_mean``,
    ``dice_mean_nearest``, ``dice_mean_onehot``) and ``dice_rule``."""
    return [c for c in frame.columns if c.startswith("dice_") and not c.startswith("dice_mean") and c != "dice_rule"]
