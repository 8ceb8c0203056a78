"""ofg.bench.train runs the trainer's own step (the code path of real training) for both methods."""

from __future__ import annotations

import torch

from ofg.bench.train import measure


def test_measure_runs_the_training_step_of_each_method():
    ofg = measure("ofg", 16, torch.device("cpu"), repeats=1, steps=2)
    unsupervised = measure("unsupervised", 16, torch.device("cpu"), repeats=1)
    assert ofg["refine_seconds"] > 0 and unsupervised["refine_seconds"] == 0
    assert ofg["seconds"] >= ofg["refine_seconds"] and unsupervised["seconds"] > 0
