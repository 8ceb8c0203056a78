"""Notebooks run alone (from JupyterLab, with their default parameters): a tiny plan in a temp folder.

Each notebook, given no parameters, builds what it shows from :func:`tiny_config` under
:func:`standalone_dir`, preparing and training whatever it needs through :mod:`ofg.runner`.
"""

from __future__ import annotations

import copy
import tempfile
from pathlib import Path
from typing import Any, Mapping

from ofg.plan import Run, ofg_run, seeds


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
        "training": {"epochs": 1, "iterations_per_epoch": 2, "val_pairs": 1, "lr": 1.0e-4, "seeds": [0],
                     "compile": False, "amp": False, "channels_last": False,
                     "num_workers": 0,
                     "loss": {"ncc_weight": 1.0, "mse_weight": 1.0, "diffusion_weight": None}},
        "ofg": {"steps": 2, "lr": 0.1, "reg_weight": 1.0, "window": 9},
        "evaluation": {"split": "test", "hd95": False, "label_mode": "onehot"},
        # the ablation reuses the two main runs (k=0, k=2); no self-training: two trainings in all
        "self_training": {"datasets": [], "models": []},
        "ablation": {"steps": [2], "datasets": ["embedded-brain"], "models": ["voxelmorph"]},
        "refinement": {"datasets": ["embedded-brain"], "model": "voxelmorph", "starts": ["untrained", "random"],
                       "steps": 3, "lr": 0.1, "reg_weight": 1.0, "n_pairs": 1, "split": "test", "seed": 0},
        "baselines": {"datasets": [], "methods": [], "instance_steps": 100},
        "timing": {"enabled": True, "repeats": 2, "iterations": 2},
    })


def demo_run(config: Mapping[str, Any]) -> Run:
    """The run a notebook run alone shows: OFG on the first dataset and model of ``config``."""
    dataset, entry = next(iter(config["datasets"].items()))
    return ofg_run(dataset, entry["models"][0], config["ofg"]["steps"], seeds(config)[0])


def tiny_robustness_config(results: str | Path | None = None) -> dict[str, Any]:
    """:func:`tiny_config` with a tiny robustness experiment (:mod:`ofg.robustness`; notebook 08 run alone):
    the baseline and two variants that train, another learning rate (its own epochs) and another cohort
    seed (its own cohort)."""
    config = tiny_config(results)
    config["robustness"] = {"datasets": ["embedded-brain"], "model": "voxelmorph", "variants": {
        "lr-1e-3": {"reverts": "network learning rate 1e-4 -> 1e-3", "changes": {"training": {"lr": 1.0e-3}},
                    "epochs": {"embedded-brain": 1}},
        "cohort-seed": {"reverts": "cohort seed 0 -> 1",
                        "changes": {"datasets": {"embedded-brain": {"prepare": {"seed": 1}}}}}}}
    return config
