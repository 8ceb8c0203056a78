"""The plan run in-process, skipping what exists: what notebooks run alone use instead of Snakemake.

Each ``ensure_*`` makes one output of :mod:`ofg.plan` (and what it needs first) unless it exists, with
the same parameters and paths as the workflow's rules, so results made either way are interchangeable.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

import torch

from ofg import plan, stages
from ofg.config import TEACHER_METHODS, coerce, resolve
from ofg.data import EMBEDDED, open_dataset
from ofg.data.embedded import prepare_embedded
from ofg.evaluate import evaluate_checkpoint
from ofg.experiments import run_refinement
from ofg.layout import RunFolder
from ofg.resume import stale_reasons
from ofg.runtime import bf16_is_fast, resolve_device
from ofg.timing import run_timing
from ofg.train import train


def train_or_resume(run_config: Mapping[str, Any], out_dir: str | Path, *, progress: bool = False) -> Path:
    """The workflow's training entry point: train, resume or skip ``run_config`` in ``out_dir``.

    A folder whose run cannot be continued (config, teacher or cohort changed) is started over. The
    expected image size is the loader's ``image_size`` option in the run config's dataset options
    (:func:`ofg.plan.dataset_options`): the loader raises on the first file of another size.
    """
    return train(run_config, out_dir, if_stale="restart", progress=progress)


def restart_reasons(run_config: Mapping[str, Any], out_dir: str | Path) -> list[str]:
    """Why the run folder ``out_dir`` would be started over for ``run_config``; [] to resume or skip."""
    config = coerce(dict(run_config))
    dataset = open_dataset(config.dataset.name, config.dataset.root, **config.dataset.options)
    return stale_reasons(RunFolder(out_dir), resolve(config, dataset, bf16_is_fast(resolve_device(config.device))))


def ensure_prepared(config: Mapping[str, Any], dataset: str, progress: bool = False) -> Path:
    """Prepare the embedded ``dataset`` unless its manifest exists; return its root."""
    root = plan.data_root(config, dataset)
    if dataset in EMBEDDED and not plan.layout(config).manifest(dataset).exists():
        params = stages.prepare_parameters(config, dataset)
        prepare_embedded(params["kind"], root, cache_dir=params["cache_dir"], progress=progress,
                         **params["options"])
    return root


def ensure_trained(config: Mapping[str, Any], run: plan.Run, progress: bool = False) -> Path:
    """Train ``run`` (and its teacher first) unless finished; return its run folder."""
    ensure_prepared(config, run.dataset, progress)
    if run.method in TEACHER_METHODS:
        ensure_trained(config, run.teacher(), progress)
    folder = plan.layout(config).run(run.key)
    if not folder.summary.exists():
        params = stages.train_parameters(config, run)
        train_or_resume(params["run_config"], params["out_dir"], progress=progress)
    return folder.path


def ensure_evaluated(config: Mapping[str, Any], run: plan.Run, progress: bool = False) -> Path:
    """Evaluate ``run`` on the configured split unless its metrics file exists; return that file."""
    ensure_trained(config, run, progress)
    params = stages.evaluate_parameters(config, run)
    if not (Path(params["out"]).exists() and Path(params["sample_out"]).exists()):
        evaluate_checkpoint(params["checkpoint"], split=params["split"], out=params["out"],
                            sample_out=params["sample_out"], hd95=params["hd95"], label_mode=params["label_mode"],
                            dice_rule=params["dice_rule"], device=params["device"], progress=progress)
    return Path(params["out"])


def ensure_refinement(config: Mapping[str, Any], dataset: str, progress: bool = False) -> Path:
    """Run the refinement experiment on ``dataset`` unless its CSV exists; return that file."""
    params = stages.refinement_parameters(config, dataset)
    if not Path(params["out"]).exists():
        ensure_prepared(config, dataset, progress)
        run_refinement(params)
    return Path(params["out"])


def ensure_timing(config: Mapping[str, Any], dataset: str, model: str, progress: bool = False) -> Path:
    """Run the timing job of (dataset, model) unless its CSV exists; return that file."""
    params = stages.timing_parameters(config, dataset, model)
    if not Path(params["out"]).exists():
        for run in stages.timing_runs(config, dataset, model):
            ensure_trained(config, run, progress)
        run_timing({**params, "threads": torch.get_num_threads()})
    return Path(params["out"])


def ensure_all(config: Mapping[str, Any], progress: bool = False) -> dict[str, Any]:
    """Run the whole plan in-process, skipping what exists (notebook 05 run alone); return the report plan."""
    for run in plan.training_runs(config):
        ensure_evaluated(config, run, progress)
    for dataset in config["refinement"]["datasets"]:
        ensure_refinement(config, dataset, progress)
    for dataset, model in stages.timing_pairs(config):
        ensure_timing(config, dataset, model, progress)
    return stages.report_plan(config)
