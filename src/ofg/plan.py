"""The plan: which training runs a workflow config asks for, and each run's config.

Pure functions of the workflow config (a mapping validated against ``config/schema.yaml``): nothing
here reads or writes a file. The Snakefile, the notebooks and :mod:`ofg.runner` share them, so a
notebook run alone and a rule run by Snakemake use the same paths (:mod:`ofg.layout`) and settings;
what each stage's notebook is given is built from them in :mod:`ofg.stages`.

A :class:`Run` is one training run. Its id names the method and, for OFG, the number of optimiser
steps: ``unsupervised``, ``ofg-k10``, ``self_training``, ``opt_self_training``; its seed is one of
``training.seeds`` (or the model's ``training.model_seeds``). OFG with k = 0 steps is the unsupervised baseline, so the step ablation's k = 0 and
its k = ``ofg.steps`` reuse the main runs: nothing is trained twice. Every comparison has matched
seeds: the main comparison (unsupervised and OFG on every dataset and model), the self-training
comparison (each seed's teacher is that seed's unsupervised run) and every k of the step ablation run
each seed of the model (:func:`seeds`), so a claim compares seed s with seed s on both sides.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

from ofg.config import RunConfig
from ofg.layout import Layout, RunKey
from ofg.names import EMBEDDED, REAL, TEACHER_METHODS


@dataclass(frozen=True)
class Run:
    """One training run: ``method`` of :data:`ofg.config.METHODS`; ``steps`` only for ``ofg``."""

    dataset: str
    model: str
    method: str
    steps: int | None = None
    seed: int = 0

    @property
    def id(self) -> str:
        return run_id(self.method, self.steps)

    @property
    def key(self) -> RunKey:
        return RunKey(self.dataset, self.model, self.id, str(self.seed))

    def teacher(self) -> "Run":
        """The run whose best checkpoint teaches a self-training run: the unsupervised one, same seed."""
        return Run(self.dataset, self.model, "unsupervised", seed=self.seed)


def run_id(method: str, steps: int | None = None) -> str:
    """The id of a run of ``method`` (with ``steps`` for OFG): a folder and file name of the layout."""
    return method if steps is None else f"ofg-k{steps}"


def ofg_run_id(steps: int) -> str:
    """Run id of OFG with ``steps`` optimiser steps; k = 0 is the unsupervised baseline."""
    return run_id("unsupervised") if int(steps) == 0 else run_id("ofg", int(steps))


def ofg_run(dataset: str, model: str, steps: int, seed: int = 0) -> Run:
    """OFG with ``steps`` optimiser steps; k = 0 is the unsupervised baseline."""
    if int(steps) == 0:
        return Run(dataset, model, "unsupervised", seed=seed)
    return Run(dataset, model, "ofg", int(steps), seed)


def seeds(config: Mapping[str, Any], model: str | None = None) -> list[int]:
    """The training seeds of the main comparison (``training.seeds``; for ``model``, its entry of
    ``training.model_seeds`` where there is one): every comparison of that model runs each."""
    per_model = (config["training"].get("model_seeds") or {}).get(model) if model is not None else None
    return [int(s) for s in (per_model or config["training"]["seeds"])]


def layout(config: Mapping[str, Any]) -> Layout:
    return Layout(config["results"], config.get("cohorts"))


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
        dataset_options(config, name)  # raises on options.image_size
    for experiment in ("self_training", "ablation", "refinement", "baselines"):
        section = config[experiment]
        for name in section["datasets"]:
            if name not in datasets:
                raise ValueError(f"config {experiment}.datasets: {name!r} is not among the configured datasets "
                                 f"({', '.join(datasets)})")
            models = section["models"] if "models" in section else [section["model"]] if "model" in section else []
            for model in models:
                if model not in datasets[name]["models"]:
                    raise ValueError(f"config {experiment}: model {model!r} is not trained on {name!r} "
                                     f"(datasets.{name}.models = {datasets[name]['models']})")


# ---------------------------------------------------------------- what to run


def section_pairs(section: Mapping[str, Any]) -> list[tuple[str, str]]:
    """(dataset, model) of an experiment section (``self_training``, ``ablation``): each dataset with each model."""
    return [(d, m) for d in section["datasets"] for m in section["models"]]


def training_runs(config: Mapping[str, Any]) -> list[Run]:
    """Every training run of the plan, each once, sorted by (dataset, model, run id)."""
    runs: set[Run] = set()
    steps = config["ofg"]["steps"]
    for name, entry in config["datasets"].items():
        for model in entry["models"]:
            for seed in seeds(config, model):
                runs |= {Run(name, model, "unsupervised", seed=seed), ofg_run(name, model, steps, seed)}
    for name, model in section_pairs(config["self_training"]):
        runs |= {Run(name, model, m, seed=seed) for m in TEACHER_METHODS for seed in seeds(config, model)}
    for name, model in section_pairs(config["ablation"]):
        runs |= {ofg_run(name, model, k, seed) for k in config["ablation"]["steps"] for seed in seeds(config, model)}
    return sorted(runs, key=lambda run: (run.dataset, run.model, run.id, run.seed))


def find_run(config: Mapping[str, Any], key: RunKey) -> Run:
    """The run of the plan stored under ``key`` (e.g. from Snakemake's wildcards); KeyError if none."""
    runs = {run.key: run for run in training_runs(config)}
    if tuple(key) not in runs:
        raise KeyError(f"no training run {'/'.join(key)} in this workflow config")
    return runs[RunKey(*key)]


def wildcard_lists(runs: list[Run]) -> dict[str, list[str]]:
    """{"dataset": [...], "model": [...], "run": [...], "seed": [...]} of ``runs``, for Snakemake's
    ``expand(..., zip)``."""
    return {name: [getattr(run.key, name) for run in runs] for name in RunKey._fields}


def dataset_options(config: Mapping[str, Any], dataset: str) -> dict[str, Any]:
    """The keyword arguments of ``dataset``'s loader (:func:`ofg.data.open_dataset`) in every stage that
    opens it (training, and through the run config the evaluation; refinement; baselines):
    ``datasets.<dataset>.options`` plus, where the key is given, ``datasets.<dataset>.image_size`` as the
    loader's ``image_size`` option ([D,H,W] = every image must have it; null = the files' own size).
    Absent, the loader's default holds (a real dataset's paper size, an embedded cohort's manifest size).
    ``options.image_size`` is refused: the expected size has one key."""
    entry = config["datasets"][dataset]
    options = dict(entry.get("options") or {})
    if "image_size" in options:
        raise ValueError(f"config datasets.{dataset}.options.image_size: the expected image size is set by "
                         f"datasets.{dataset}.image_size alone ([D, H, W], or null to take it from the files); "
                         "move it there")
    if "image_size" in entry:
        size = entry["image_size"]
        options["image_size"] = None if size is None else [int(s) for s in size]
    return options


def data_root(config: Mapping[str, Any], dataset: str) -> Path:
    """Folder of ``dataset``: the prepared cohort for embedded data, the user's root for real data."""
    if dataset in EMBEDDED:
        return layout(config).data(dataset)
    return Path(config["datasets"][dataset]["root"])


# ---------------------------------------------------------------- one run's settings


def protocol(config: Mapping[str, Any], dataset: str, model: str) -> dict[str, dict[str, Any]]:
    """The ``loss`` and ``ofg`` sections of (dataset, model)'s runs: ``training.loss`` and ``ofg``, replaced
    key by key by ``datasets.<dataset>.run_overrides``, then by ``model_run_overrides.<model>`` (the
    model's win)."""
    out = {"loss": dict(config["training"]["loss"]), "ofg": dict(config["ofg"])}
    layers = (config["datasets"][dataset].get("run_overrides") or {},
              (config.get("model_run_overrides") or {}).get(model) or {})
    for layer in layers:
        for section in out:
            out[section].update(layer.get(section) or {})
    return out


def dice_rule(config: Mapping[str, Any], dataset: str) -> str:
    """How ``dataset``'s per-label Dice are averaged (:data:`ofg.metrics.DICE_RULES`; default 'either')."""
    return config["datasets"][dataset].get("dice_rule") or "either"


def run_config(config: Mapping[str, Any], run: Run) -> dict[str, Any]:
    """The run config (see :mod:`ofg.config`) of ``run``, validated; the teacher of a self-training run
    is the best checkpoint of the same dataset and model's unsupervised run. The dataset's loader options
    are :func:`dataset_options` (its expected image size included, so the evaluation, which reopens the
    dataset from the checkpoint's run config, checks it too). The dataset's
    ``model_options`` of ``run.model`` become the model's constructor overrides (e.g. TransMorph's
    per-dataset window); ``loss`` and ``ofg`` are :func:`protocol`'s; ``datasets.<dataset>.epochs``, where
    given, replaces ``training.epochs``."""
    entry = config["datasets"][run.dataset]
    train = config["training"]
    sections = protocol(config, run.dataset, run.model)
    ofg = sections["ofg"]
    if run.steps is not None:
        ofg["steps"] = run.steps
    out: dict[str, Any] = {
        "dataset": {"name": run.dataset, "root": str(data_root(config, run.dataset)),
                    "options": dataset_options(config, run.dataset)},
        "model": {"name": run.model, "size": config["model_size"],
                  "overrides": dict(entry.get("model_options", {}).get(run.model, {}))},
        "method": run.method,
        "ofg": ofg,
        "loss": sections["loss"],
        "device": config["device"],
        "teacher": None,
    }
    for key in ("epochs", "iterations_per_epoch", "val_pairs", "lr", "compile", "amp", "channels_last",
                "num_workers"):
        out[key] = train[key]
    out["epochs"] = entry.get("epochs") or train["epochs"]  # a dataset's own budget (its learning curves)
    if not train.get("guidance_gap", True):  # the default stays out: older trainings keep their parameters
        out["guidance_gap"] = False
    out["seed"] = run.seed
    for key in ("bidirectional", "augment_flips"):
        out[key] = entry.get(key)
    # validation Dice (which selects best.pt) as the evaluation's: its label warping, the dataset's rule
    out["val_label_mode"], out["val_dice_rule"] = config["evaluation"]["label_mode"], dice_rule(config, run.dataset)
    if run.method in TEACHER_METHODS:
        out["teacher"] = str(layout(config).run(run.teacher().key).best)
    RunConfig.from_dict(out)  # raises a ValueError naming the key
    return out
