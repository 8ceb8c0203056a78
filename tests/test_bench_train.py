"""ofg.bench.train runs the trainer's own step (the code path of real training) for both methods."""

from __future__ import annotations

import torch

from ofg.bench.train import measure


def test_measure_runs_the_training_step_of_each_method():
    ofg = measure("ofg", 16, torch.device("cpu"), repeats=1, steps=2)
    ofg_fused = measure("ofg-fused", 16, torch.device("cpu"), repeats=1, steps=2)  # the numba kernels
    unsupervised = measure("unsupervised", 16, torch.device("cpu"), repeats=1)
    assert ofg["refine_seconds"] > 0 and ofg_fused["refine_seconds"] > 0 and unsupervised["refine_seconds"] == 0
    assert ofg["seconds"] >= ofg["refine_seconds"] and unsupervised["seconds"] > 0


def test_run_reports_each_path_and_the_ratios_for_another_model_and_size(capsys):
    """The [train] section at a DxHxW size with TransMorph (small, padded to its windows), two paths."""
    import argparse

    from ofg.bench.train import run

    args = argparse.Namespace(device="cpu", repeats=1, sizes=[(20, 24, 18)], paths=["float32", "fast"],
                              model="transmorph", model_size="small")
    results = run(args)
    out = capsys.readouterr().out
    assert "transmorph (small)" in out and "20x24x18 fast: OFG(k=10)/unsupervised time" in out
    assert "20x24x18 ofg: fast" in out
    assert "20x24x18 fast: OFG(k=10, fused)/unsupervised time" in out
    for path in ("float32", "fast"):
        assert results[f"20x24x18/{path}/ofg"]["refine_seconds"] > 0
        assert results[f"20x24x18/{path}/ofg-fused"]["refine_seconds"] > 0
        assert results[f"20x24x18/{path}/ratios"]["time"] > 0 and results[f"20x24x18/{path}/ratios-fused"]["time"] > 0


def test_float32_is_plain_pytorch_and_float32_onednn_takes_the_onednn_convs(monkeypatch):
    import ofg.bench.train as bench
    from ofg.models import onednn

    seen: dict[str, bool] = {}

    def record(method, shape, device, repeats, steps, path, model_name, model_size, breakdown):
        seen[path] = onednn.is_enabled()
        return {}

    monkeypatch.setattr(bench, "_measure", record)
    for path in ("float32", "float32-onednn", "fast"):
        bench.measure("unsupervised", 16, torch.device("cpu"), repeats=1, path=path)
    assert seen == {"float32": False, "float32-onednn": True, "fast": True} and onednn.is_enabled()
    monkeypatch.undo()
    assert bench.measure("unsupervised", 16, torch.device("cpu"), repeats=1, path="float32-onednn")["seconds"] > 0
