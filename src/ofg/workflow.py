"""The workflow's plan: which runs, evaluations and experiments a workflow config asks for, and where
their files live.

The Snakefile and the notebooks share these functions, so that a notebook run alone in JupyterLab and a
rule run by Snakemake read and write the same paths. Layout under the results folder ``R``::

    R/data/<dataset>/manifest.json                  prepared embedded cohort (written last)
    R/runs/<dataset>/<model>/<run>/summary.json      finished training run (+ checkpoints/, history.csv)
    R/metrics/<dataset>/<model>/<run>.csv            per-pair test metrics
    R/refinement/<dataset>.csv                       optimiser-refinement curves (paper Fig. 2)
    R/benchmarks/{train,evaluate}/<dataset>/<model>/<run>.tsv
    R/notebooks/<NN_name>/...ipynb                   executed notebooks (the rules' logs)
    R/tables/*.{csv,md,tex}, R/figures/*.{png,pdf}   see :mod:`ofg.report`

A run id names the method and, for OFG, its number of optimiser steps: ``unsupervised``, ``ofg-k10``,
``self_training``, ``opt_self_training``. The step ablation's k=0 is the ``unsupervised`` run and its
k equal to ``ofg.steps`` is the main OFG run, so neither is trained twice.
"""

from __future__ import annotations

import copy
import os
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

EMBEDDED = {"embedded-brain": "brain", "embedded-ct": "ct"}
REAL = ("ixi", "oasis", "lpba", "abdomen")
SELF_TRAINING_RUNS = ("unsupervised", "self_training", "opt_self_training")
_RUN_ID = re.compile(r"^(unsupervised|self_training|opt_self_training|ofg-k(\d+))$")


@dataclass(frozen=True, order=True)
class Run:
    """One training run of the plan."""

    dataset: str
    model: str
    run: str

    @property
    def method(self) -> str:
        return parse_run_id(self.run)[0]

    @property
    def steps(self) -> int | None:
        return parse_run_id(self.run)[1]


def use_threads(threads: int) -> int:
    """Give torch ``threads`` CPU threads, but never more than this process may run on; return the count.

    Snakemake's ``--cores`` budget can exceed the machine (``--cores 4`` on 2 cores): more compute
    threads than cores make PyTorch's CPU kernels several times slower, so the count is capped.
    """
    import torch

    available = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    count = max(1, min(int(threads), available))
    torch.set_num_threads(count)
    return count


def ofg_run_id(steps: int) -> str:
    """Run id of OFG with ``steps`` optimiser steps; k=0 is the unsupervised baseline."""
    return "unsupervised" if int(steps) == 0 else f"ofg-k{int(steps)}"


def parse_run_id(run: str) -> tuple[str, int | None]:
    """(method, ofg steps or None) of a run id; a malformed id raises a ValueError."""
    match = _RUN_ID.match(run)
    if match is None:
        raise ValueError(f"run id {run!r}: expected unsupervised, self_training, opt_self_training or ofg-k<N>")
    if match.group(2) is not None:
        return "ofg", int(match.group(2))
    return match.group(1), None


# ---------------------------------------------------------------- config checks beyond the schema


def check_config(config: Mapping[str, Any]) -> None:
    """Cross-field checks the JSON schema cannot express; raise a ValueError naming the config key."""
    datasets = config["datasets"]
    for name, entry in datasets.items():
        if name not in EMBEDDED and name not in REAL:
            raise ValueError(f"config datasets.{name}: unknown dataset; valid: {', '.join([*EMBEDDED, *REAL])}")
        if name in REAL and not entry.get("root"):
            raise ValueError(f"config datasets.{name}.root: set it to the folder holding the {name} data "
                             "(README.md, 'Running on real data'): copy config/paper.yaml, fill in the roots "
                             "and pass the copy with --configfile")
        if name in REAL and not Path(entry["root"]).is_dir():
            raise ValueError(f"config datasets.{name}.root: {entry['root']!r} is not a folder")
        if name in EMBEDDED and entry.get("root"):
            raise ValueError(f"config datasets.{name}.root: embedded cohorts are prepared by the workflow "
                             f"under <results>/data/{name}; remove the root (got {entry['root']!r})")
    for experiment in ("self_training", "ablation", "refinement"):
        section = config[experiment]
        for name in section["datasets"]:
            if name not in datasets:
                raise ValueError(f"config {experiment}.datasets: {name!r} is not among the configured datasets "
                                 f"({', '.join(datasets)})")
            models = section["models"] if "models" in section else [section["model"]]
            for model in models:
                if model not in datasets[name]["models"]:
                    raise ValueError(f"config {experiment}: model {model!r} is not trained on {name!r} "
                                     f"(datasets.{name}.models = {datasets[name]['models']})")


# ---------------------------------------------------------------- what to run


def training_runs(config: Mapping[str, Any]) -> list[Run]:
    """Every training run of the plan, each once (sorted)."""
    runs = set()
    main = ofg_run_id(config["ofg"]["steps"])
    for name, entry in config["datasets"].items():
        for model in entry["models"]:
            runs |= {Run(name, model, "unsupervised"), Run(name, model, main)}
    for name in config["self_training"]["datasets"]:
        for model in config["self_training"]["models"]:
            runs |= {Run(name, model, run) for run in (*SELF_TRAINING_RUNS, main)}
    for name in config["ablation"]["datasets"]:
        for model in config["ablation"]["models"]:
            runs |= {Run(name, model, ofg_run_id(k)) for k in [0, *config["ablation"]["steps"]]}
    return sorted(runs)


def results_dir(config: Mapping[str, Any]) -> Path:
    return Path(config["results"])


def data_root(config: Mapping[str, Any], dataset: str) -> Path:
    """Folder of ``dataset``: the prepared cohort for embedded data, the user's root for real data."""
    if dataset in EMBEDDED:
        return results_dir(config) / "data" / dataset
    return Path(config["datasets"][dataset]["root"])


def run_dir(config: Mapping[str, Any], run: Run) -> Path:
    return results_dir(config) / "runs" / run.dataset / run.model / run.run


def metrics_path(config: Mapping[str, Any], run: Run) -> Path:
    return results_dir(config) / "metrics" / run.dataset / run.model / f"{run.run}.csv"


def prepare_parameters(config: Mapping[str, Any], dataset: str) -> dict[str, Any]:
    """Notebook 01's parameters for an embedded ``dataset``."""
    if dataset not in EMBEDDED:
        raise ValueError(f"dataset {dataset!r} needs no preparation; only {', '.join(EMBEDDED)} do")
    options = dict(config["datasets"][dataset].get("prepare", {}))
    return {"kind": EMBEDDED[dataset], "out_dir": str(data_root(config, dataset)),
            "options": options, "cache_dir": config.get("cache_dir"), "progress": False}


def run_config(config: Mapping[str, Any], run: Run) -> dict[str, Any]:
    """The run config (see :mod:`ofg.config`) of ``run``, validated; the teacher of a self-training run
    is the best checkpoint of the same dataset and model's unsupervised run."""
    from ofg.config import RunConfig

    entry = config["datasets"][run.dataset]
    train = config["training"]
    method, steps = parse_run_id(run.run)
    ofg = dict(config["ofg"])
    if steps is not None:
        ofg["steps"] = steps
    out: dict[str, Any] = {
        "dataset": {"name": run.dataset, "root": str(data_root(config, run.dataset)),
                    "options": dict(entry.get("options", {}))},
        "model": {"name": run.model, "size": config["model_size"]},
        "method": method,
        "ofg": ofg,
        "loss": dict(train["loss"]),
        "device": config["device"],
        "teacher": None,
    }
    for key in ("epochs", "iterations_per_epoch", "val_pairs", "lr", "seed", "compile", "amp", "num_workers"):
        out[key] = train[key]
    for key in ("bidirectional", "augment_flips"):
        out[key] = entry.get(key)
    if method in ("self_training", "opt_self_training"):
        out["teacher"] = str(run_dir(config, Run(run.dataset, run.model, "unsupervised")) / "checkpoints" / "best.pt")
    RunConfig.from_dict(out)  # raises a ValueError naming the key
    return out


def evaluate_parameters(config: Mapping[str, Any], run: Run) -> dict[str, Any]:
    """Notebook 03's parameters for ``run``."""
    evaluation = config["evaluation"]
    return {"checkpoint": str(run_dir(config, run) / "checkpoints" / "best.pt"),
            "out": str(metrics_path(config, run)), "split": evaluation["split"],
            "hd95": evaluation["hd95"], "label_mode": evaluation["label_mode"],
            "device": config["device"], "progress": False}


def refinement_parameters(config: Mapping[str, Any], dataset: str) -> dict[str, Any]:
    """Notebook 04's parameters for ``dataset``."""
    section = config["refinement"]
    return {"dataset_name": dataset, "root": str(data_root(config, dataset)),
            "options": dict(config["datasets"][dataset].get("options", {})),
            "model_name": section["model"], "model_size": config["model_size"], "starts": list(section["starts"]),
            "steps": section["steps"], "lr": section["lr"], "reg_weight": section["reg_weight"],
            "n_pairs": section["n_pairs"], "split": section["split"], "seed": section["seed"],
            "device": config["device"], "out": str(results_dir(config) / "refinement" / f"{dataset}.csv")}


def report_plan(config: Mapping[str, Any]) -> dict[str, Any]:
    """Everything :func:`ofg.report.make_report` needs to know about the plan (plain, YAML-safe)."""
    main = ofg_run_id(config["ofg"]["steps"])
    pairs = [[name, model] for name, entry in config["datasets"].items() for model in entry["models"]]
    return {
        "results": str(results_dir(config)),
        "main_run": main,
        "runs": [[r.dataset, r.model, r.run] for r in training_runs(config)],
        "main": pairs,
        "self_training": [[d, m] for d in config["self_training"]["datasets"] for m in config["self_training"]["models"]],
        "ablation": {"steps": sorted({0, *config["ablation"]["steps"]}),
                     "pairs": [[d, m] for d in config["ablation"]["datasets"] for m in config["ablation"]["models"]]},
        "refinement": list(config["refinement"]["datasets"]),
        "qualitative": pairs,
        "embedded": any(name in EMBEDDED for name in config["datasets"]),
        "label_mode": config["evaluation"]["label_mode"],
        "split": config["evaluation"]["split"],
        "device": config["device"],
    }


# ---------------------------------------------------------------- notebooks run alone


def standalone_dir() -> Path:
    """Work folder of notebooks run alone with their default parameters (a temp folder)."""
    return Path(tempfile.gettempdir()) / "ofg-standalone"


def tiny_config(results: str | Path | None = None) -> dict[str, Any]:
    """A tiny workflow config rooted at ``results`` (default :func:`standalone_dir`): the tiny embedded
    brain cohort, one model, one epoch of two iterations, two training runs. The notebooks use it when
    run alone; ``config/tiny.yaml`` is the workflow's (larger) CI config."""
    results = Path(results) if results is not None else standalone_dir()
    return copy.deepcopy({
        "results": str(results), "cache_dir": None, "device": "cpu", "model_size": "small",
        "datasets": {"embedded-brain": {"prepare": {"preset": "tiny", "seed": 0}, "options": {},
                                        "models": ["voxelmorph"]}},
        "training": {"epochs": 1, "iterations_per_epoch": 2, "val_pairs": 1, "lr": 1.0e-4, "seed": 0,
                     "compile": False, "amp": False, "num_workers": 0,
                     "loss": {"ncc_weight": 1.0, "mse_weight": 1.0, "diffusion_weight": None}},
        "ofg": {"steps": 2, "lr": 0.1, "reg_weight": 1.0, "window": 9},
        "evaluation": {"split": "test", "hd95": False, "label_mode": "onehot"},
        # the ablation reuses the two main runs (k=0, k=2); no self-training: two trainings in all
        "self_training": {"datasets": [], "models": []},
        "ablation": {"steps": [2], "datasets": ["embedded-brain"], "models": ["voxelmorph"]},
        "refinement": {"datasets": ["embedded-brain"], "model": "voxelmorph", "starts": ["untrained", "random"],
                       "steps": 3, "lr": 0.1, "reg_weight": 1.0, "n_pairs": 1, "split": "test", "seed": 0},
    })


def ensure_prepared(config: Mapping[str, Any], dataset: str, progress: bool = False) -> Path:
    """Prepare the embedded ``dataset`` unless its manifest exists; return its root."""
    root = data_root(config, dataset)
    if dataset in EMBEDDED and not (root / "manifest.json").exists():
        from ofg.data.embedded import prepare_embedded

        params = prepare_parameters(config, dataset)
        prepare_embedded(params["kind"], root, cache_dir=params["cache_dir"], progress=progress,
                         **params["options"])
    return root


def ensure_trained(config: Mapping[str, Any], run: Run, progress: bool = False) -> Path:
    """Train ``run`` (and its teacher first) unless finished; return its run folder."""
    from ofg.train import train

    ensure_prepared(config, run.dataset, progress)
    if run.method in ("self_training", "opt_self_training"):
        ensure_trained(config, Run(run.dataset, run.model, "unsupervised"), progress)
    out = run_dir(config, run)
    if not (out / "summary.json").exists():
        train(run_config(config, run), out, progress=progress)
    return out


def ensure_evaluated(config: Mapping[str, Any], run: Run, progress: bool = False) -> Path:
    """Evaluate ``run`` on the configured split unless its metrics file exists; return that file."""
    from ofg.evaluate import evaluate_checkpoint

    ensure_trained(config, run, progress)
    params = evaluate_parameters(config, run)
    if not Path(params["out"]).exists():
        evaluate_checkpoint(params["checkpoint"], split=params["split"], out=params["out"], hd95=params["hd95"],
                            label_mode=params["label_mode"], device=params["device"], progress=progress)
    return Path(params["out"])


def ensure_refinement(config: Mapping[str, Any], dataset: str, progress: bool = False) -> Path:
    """Run the refinement experiment on ``dataset`` unless its CSV exists; return that file."""
    params = refinement_parameters(config, dataset)
    out = Path(params["out"])
    if not out.exists():
        ensure_prepared(config, dataset, progress)
        run_refinement(params)
    return out


def run_refinement(params: Mapping[str, Any]) -> "Any":
    """Run :func:`ofg.experiments.refinement_curve` for every start in ``params`` and write the CSV."""
    import pandas as pd

    from ofg.data import open_dataset
    from ofg.experiments import refinement_curve
    from ofg.io import atomic_path

    dataset = open_dataset(params["dataset_name"], params["root"], **params["options"])
    frames = [refinement_curve(dataset, params["model_name"], params["model_size"], start=start,
                               steps=params["steps"], lr=params["lr"], reg_weight=params["reg_weight"],
                               n_pairs=params["n_pairs"], split=params["split"], seed=params["seed"],
                               device=params["device"], progress=False)
              for start in params["starts"]]
    table = pd.concat(frames, ignore_index=True)
    with atomic_path(params["out"]) as tmp:
        table.to_csv(tmp, index=False)
    return table


def ensure_all(config: Mapping[str, Any], progress: bool = False) -> dict[str, Any]:
    """Run the whole plan in-process, skipping what exists (notebook 05 run alone); return the plan."""
    for run in training_runs(config):
        ensure_evaluated(config, run, progress)
    for dataset in config["refinement"]["datasets"]:
        ensure_refinement(config, dataset, progress)
    return report_plan(config)


def check_image_size(run_config: Mapping[str, Any], image_size: Sequence[int] | None) -> None:
    """Raise a ValueError when the run's dataset does not have the configured ``image_size`` (D,H,W)."""
    if image_size is None:
        return
    from ofg.data import open_dataset

    spec = run_config["dataset"]
    actual = tuple(open_dataset(spec["name"], spec["root"], **spec.get("options", {})).image_size)
    if actual != tuple(image_size):
        raise ValueError(f"dataset {spec['name']!r} at {spec['root']}: images are {actual}, but the workflow "
                         f"config says image_size {list(image_size)}; fix the data or datasets.{spec['name']}"
                         ".image_size")


def restart_reasons(run_config: Mapping[str, Any], out_dir: str | Path) -> list[str]:
    """Why an existing run folder must be trained from scratch rather than resumed; [] to resume.

    A folder is resumed (the trainer continues from ``checkpoints/last.pt``) unless its stored config
    differs from ``run_config`` in a key that changes the numbers, or its teacher checkpoint or its
    prepared cohort is newer than the run (they were rebuilt upstream since the run began).
    """
    from ofg.config import coerce, differing_keys, resolve
    from ofg.data import open_dataset
    from ofg.train import RUNTIME_KEYS

    stored_path = Path(out_dir) / "config.yaml"
    if not stored_path.is_file():
        return []
    new = coerce(dict(run_config))
    dataset = open_dataset(new.dataset.name, new.dataset.root, **new.dataset.options)
    stored = coerce(stored_path)
    reasons = [f"config key {key} changed" for key in
               differing_keys(stored, resolve(new, dataset), ignore=RUNTIME_KEYS)]
    started = stored_path.stat().st_mtime
    for what, path in (("teacher", new.teacher), ("cohort", Path(new.dataset.root) / "manifest.json")):
        if path and Path(path).is_file() and Path(path).stat().st_mtime > started:
            reasons.append(f"{what} {path} is newer than the run")
    return reasons
