"""What each stage of the workflow is given: the parameters its notebook runs with, and which jobs it has.

One function per notebook (01 prepare, 02 train, 03 evaluate, 04 refinement, 06 baselines, 07 timing,
and the report plan notebook 05 reads), each a pure function of the workflow config that returns plain,
YAML-safe values: the Snakefile passes them to papermill, :mod:`ofg.runner` to the same code in-process,
so both run a stage with the same inputs. Which runs exist and how one is configured is
:mod:`ofg.plan`'s; this module only turns them into each stage's paths (:mod:`ofg.layout`) and settings.
Like the plan it reads no file and imports nothing heavy: the Snakefile needs it while parsing.
"""

from __future__ import annotations

from typing import Any, Mapping

from ofg.config import LossConfig
from ofg.names import EMBEDDED
from ofg.plan import (Run, data_root, dataset_options, dice_rule, layout, ofg_run, ofg_run_id, protocol,
                      run_config, section_pairs, seeds, training_runs)


# ---------------------------------------------------------------- the rules' notebooks


def prepare_parameters(config: Mapping[str, Any], dataset: str) -> dict[str, Any]:
    """Notebook 01's parameters for an embedded ``dataset``."""
    if dataset not in EMBEDDED:
        raise ValueError(f"dataset {dataset!r} needs no preparation; only {', '.join(EMBEDDED)} do")
    options = dict(config["datasets"][dataset].get("prepare", {}))
    return {"kind": EMBEDDED[dataset], "out_dir": str(data_root(config, dataset)),
            "options": options, "cache_dir": config.get("cache_dir"), "progress": False}


def train_parameters(config: Mapping[str, Any], run: Run) -> dict[str, Any]:
    """Notebook 02's parameters for ``run``."""
    return {"run_config": run_config(config, run), "out_dir": str(layout(config).run(run.key).path),
            "progress": False}


def evaluate_parameters(config: Mapping[str, Any], run: Run) -> dict[str, Any]:
    """Notebook 03's parameters for ``run``."""
    evaluation, paths = config["evaluation"], layout(config)
    return {"checkpoint": str(paths.run(run.key).best), "out": str(paths.metrics(run.key)),
            "sample_out": str(paths.sample(run.key)), "split": evaluation["split"],
            "hd95": evaluation["hd95"], "label_mode": evaluation["label_mode"],
            "dice_rule": dice_rule(config, run.dataset), "device": config["device"], "progress": False}


def refinement_parameters(config: Mapping[str, Any], dataset: str) -> dict[str, Any]:
    """Notebook 04's parameters for ``dataset``: the refinement settings are those of the OFG energy of
    (dataset, section model) (:func:`ofg.plan.protocol`: window, image term, regulariser) with the section's
    steps, lr and weight; Dice as the evaluation's."""
    section = config["refinement"]
    energy = protocol(config, dataset, section["model"])
    settings = {"steps": section["steps"], "lr": section["lr"], "reg_weight": section["reg_weight"],
                "window": energy["ofg"]["window"], "image": energy["loss"].get("image", LossConfig.image),
                "regularizer": energy["loss"].get("regularizer", LossConfig.regularizer),
                "fused": config["ofg"].get("fused", False)}
    return {"dataset_name": dataset, "root": str(data_root(config, dataset)),
            "options": dataset_options(config, dataset),
            "model_name": section["model"], "model_size": config["model_size"], "starts": list(section["starts"]),
            "settings": settings, "label_mode": config["evaluation"]["label_mode"],
            "dice_rule": dice_rule(config, dataset),
            "n_pairs": section["n_pairs"], "split": section["split"], "seed": section["seed"],
            "device": config["device"], "out": str(layout(config).refinement(dataset))}


def baseline_parameters(config: Mapping[str, Any], dataset: str) -> dict[str, Any]:
    """Notebook 06's parameters for ``dataset``: the reference rows on the evaluation's pairs, scored as the
    networks are; instance optimisation is the OFG optimiser (``ofg`` settings) for ``instance_steps``
    steps from the zero field."""
    section, evaluation = config["baselines"], config["evaluation"]
    settings = {key: config["ofg"][key] for key in ("lr", "reg_weight", "window")}
    return {"dataset_name": dataset, "root": str(data_root(config, dataset)),
            "options": dataset_options(config, dataset), "methods": list(section["methods"]),
            "settings": {**settings, "steps": section["instance_steps"]}, "split": evaluation["split"],
            "label_mode": evaluation["label_mode"], "dice_rule": dice_rule(config, dataset), "hd95": evaluation["hd95"],
            "device": config["device"], "out": str(layout(config).baselines(dataset))}


# ---------------------------------------------------------------- the timing jobs and the report


def timing_pairs(config: Mapping[str, Any]) -> list[tuple[str, str]]:
    """(dataset, model) of the main comparison the timing job measures ([] when ``timing.enabled`` is false)."""
    if not config["timing"]["enabled"]:
        return []
    return [(name, model) for name, entry in config["datasets"].items() for model in entry["models"]]


def timing_runs(config: Mapping[str, Any], dataset: str, model: str) -> list[Run]:
    """The runs the timing job of (dataset, model) measures: every seed's unsupervised and main OFG run."""
    steps = int(config["ofg"]["steps"])
    return [run for seed in seeds(config, model)
            for run in (Run(dataset, model, "unsupervised", seed=seed), ofg_run(dataset, model, steps, seed))]


def timing_parameters(config: Mapping[str, Any], dataset: str, model: str) -> dict[str, Any]:
    """Notebook 07's parameters for (dataset, model): each run's best checkpoint, the evaluation's split,
    the ``timing`` section's rounds and iterations (:mod:`ofg.timing`)."""
    paths, section, measured = layout(config), config["timing"], timing_runs(config, dataset, model)
    runs = [{"method": run.method, "run": run.id, "seed": run.seed, "checkpoint": str(paths.run(run.key).best)}
            for run in measured]
    return {"runs": runs, "split": config["evaluation"]["split"], "repeats": section["repeats"],
            "iterations": section["iterations"], "device": config["device"],
            "teacher_cache": str(paths.run(measured[0].key).teacher_fields),
            "out": str(paths.timing(dataset, model))}


def _run_record(run: Run) -> dict[str, Any]:
    return {"dataset": run.dataset, "model": run.model, "run": run.id, "method": run.method, "steps": run.steps,
            "seed": run.seed}


def report_plan(config: Mapping[str, Any]) -> dict[str, Any]:
    """Everything :func:`ofg.report.make_report` needs to know about the plan (plain, YAML-safe)."""
    steps = int(config["ofg"]["steps"])
    pairs = [[name, model] for name, entry in config["datasets"].items() for model in entry["models"]]
    ablation_steps = sorted({0, *config["ablation"]["steps"]})
    return {
        "results": str(layout(config).root),
        "main_run": ofg_run_id(steps),
        "main_steps": steps,
        "runs": [_run_record(run) for run in training_runs(config)],
        "main": pairs,
        "self_training": [list(p) for p in section_pairs(config["self_training"])],
        "ablation": {"steps": ablation_steps, "runs": [[k, ofg_run_id(k)] for k in ablation_steps],
                     "pairs": [list(p) for p in section_pairs(config["ablation"])]},
        "refinement": list(config["refinement"]["datasets"]),
        "baselines": list(config["baselines"]["datasets"]),
        "timing": [list(pair) for pair in timing_pairs(config)],
        "qualitative": pairs,
        "embedded": any(name in EMBEDDED for name in config["datasets"]),
        "label_mode": config["evaluation"]["label_mode"],
        "dice_rules": {name: dice_rule(config, name) for name in config["datasets"]},
        "test_subsets": {name: entry["options"]["test_subset"] for name, entry in config["datasets"].items()
                         if "test_subset" in entry.get("options", {})},
        "split": config["evaluation"]["split"],
        "device": config["device"],
    }
