"""ofg.timing: the controlled timing job (interleaved rounds after a warm-up) and its place in the plan."""

from __future__ import annotations

import pandas as pd
import pytest

from ofg import runner, stages, standalone
from ofg.timing import COLUMNS, interleaved


def test_interleaved_warms_up_then_alternates_the_order():
    calls: list[str] = []

    def timer(name: str, seconds: float):
        def run() -> float:
            calls.append(name)
            return seconds
        return run

    timers = {("inference", "unsupervised", "unsupervised", 0): timer("a", 1.0),
              ("inference", "ofg", "ofg-k10", 0): timer("b", 2.0)}
    table = interleaved(timers, repeats=3)
    assert calls == ["a", "b", "a", "b", "b", "a", "a", "b"]  # warm-up, then rounds in alternating order
    assert list(table.columns) == COLUMNS and len(table) == 6
    assert table.groupby("method")["seconds"].mean().to_dict() == {"ofg": 2.0, "unsupervised": 1.0}
    assert sorted(table["repeat"].unique()) == [0, 1, 2]


def test_timing_measures_every_seed_of_the_main_comparison():
    config = standalone.tiny_config()
    config["training"]["seeds"] = [0, 3]
    runs = stages.timing_runs(config, "embedded-brain", "voxelmorph")
    assert {(r.method, r.seed) for r in runs} == {("unsupervised", 0), ("ofg", 0), ("unsupervised", 3), ("ofg", 3)}
    params = stages.timing_parameters(config, "embedded-brain", "voxelmorph")
    assert [r["checkpoint"].endswith("checkpoints/best.pt") for r in params["runs"]] == [True] * 4
    assert params["out"].endswith("timing/embedded-brain/voxelmorph.csv")
    assert stages.report_plan(config)["timing"] == [["embedded-brain", "voxelmorph"]]
    config["timing"]["enabled"] = False
    assert stages.timing_pairs(config) == [] and stages.report_plan(config)["timing"] == []


@pytest.mark.slow
def test_timing_job_on_tiny_trained_runs(tmp_path):
    config = standalone.tiny_config(tmp_path)
    out = runner.ensure_timing(config, "embedded-brain", "voxelmorph")
    table = pd.read_csv(out)
    assert list(table.columns) == COLUMNS
    # 2 kinds x 2 methods x 1 seed x 2 rounds, every time positive
    assert len(table) == 8 and (table["seconds"] > 0).all()
    assert set(table["run"]) == {"unsupervised", "ofg-k2"}
