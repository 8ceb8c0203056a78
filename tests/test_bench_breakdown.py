"""ofg.bench.breakdown: the phases of one training step and its most expensive operators."""

from __future__ import annotations

import argparse
import math

import torch

from ofg.bench.breakdown import PHASES, format_breakdown
from ofg.bench.train import measure, run


def test_phases_add_up_to_the_step_and_the_target_is_inside_the_loss():
    result = measure("ofg", 16, torch.device("cpu"), repeats=2, steps=3, breakdown=True)
    phases = result["breakdown"]["phases"]
    assert set(phases) == set(PHASES) and all(v >= 0 for v in phases.values())
    assert 0 < phases["of which target"] <= phases["loss"]
    step = sum(v for k, v in phases.items() if k != "of which target")
    # the phases replay the step: within a factor of the timed iteration (timings on a shared machine)
    assert 0.3 * result["seconds"] < step < 3 * result["seconds"]
    operators = result["breakdown"]["operators"]
    names = [name for name, _, _ in operators]
    assert any("conv" in name for name in names), names  # the network's convolutions are among the top
    shares = [share for _, _, share in operators]
    assert shares == sorted(shares, reverse=True) and 0 < sum(shares) <= 1 + 1e-9
    assert all(math.isfinite(seconds) and seconds > 0 for _, seconds, _ in operators)


def test_run_prints_the_breakdown_of_each_measurement(capsys):
    args = argparse.Namespace(device="cpu", repeats=1, sizes=[(16, 16, 16)], paths=["float32"], model="voxelmorph",
                              model_size="small", breakdown=True)
    results = run(args)
    out = capsys.readouterr().out
    assert out.count("    phases: network + warp") == 3  # unsupervised, ofg, ofg-fused
    assert format_breakdown(results["16x16x16/float32/unsupervised"]["breakdown"]) in out
    assert results["16x16x16/float32/unsupervised"]["breakdown"]["phases"]["of which target"] == 0
