"""Tests of ofg.budget: where a learning curve stops rising."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from ofg.budget import main, plateau_iteration, stage_breakdown
from ofg.layout import Layout, RunKey
from ofg.io import DataError


def test_a_saturating_curve_stops_rising_where_it_is_within_tolerance_of_its_best():
    x = np.arange(100, 3100, 100)
    y = 0.6 - 0.1 * np.exp(-x / 400.0)  # best 0.6 - 0.1 e^-7.5; within 0.02 once e^(-x/400) <= 0.2
    expected = x[np.argmax(y >= y.max() - 0.02)]
    assert plateau_iteration(x, y, tolerance=0.02, horizon=500) == expected == 700


def test_noise_and_a_flat_start_do_not_fool_the_running_best():
    x = np.arange(100, 2500, 100)
    y = np.r_[np.full(8, 0.54), np.linspace(0.55, 0.62, 8), np.full(8, 0.62)]
    y[5] = 0.50  # a bad epoch early on
    y[20] = 0.58  # and one late: the running best ignores both
    assert plateau_iteration(x, y, tolerance=0.02, horizon=500) == x[8 + 5]  # first running best >= 0.60


def test_a_curve_still_rising_at_its_end_has_no_answer():
    x = np.arange(100, 2500, 100)
    assert plateau_iteration(x, 0.5 + x * 1e-4, tolerance=0.02, horizon=500) is None
    assert plateau_iteration(x[:3], [0.5, 0.5, 0.5], horizon=500) is None  # shorter than the horizon
    assert plateau_iteration(x, np.full(x.size, np.nan)) is None


def test_bad_curves_are_refused():
    with pytest.raises(ValueError, match="increase"):
        plateau_iteration([200, 100], [0.5, 0.6])
    with pytest.raises(ValueError, match="one non-zero length"):
        plateau_iteration([100, 200], [0.5])
    with pytest.raises(ValueError, match="tolerance"):
        plateau_iteration([100, 200], [0.5, 0.6], tolerance=-1)


def test_cli_prints_the_largest_plateau_and_names_a_bad_file(tmp_path, capsys):
    epochs = np.arange(24)
    fast = 0.6 - 0.1 * np.exp(-(epochs + 1) / 3.0)
    slow = 0.6 - 0.1 * np.exp(-(epochs + 1) / 6.0)
    for name, curve in (("fast", fast), ("slow", slow)):
        pd.DataFrame({"epoch": epochs, "val_dice": curve}).to_csv(tmp_path / f"{name}.csv", index=False)
    assert main(["curves", str(tmp_path / "fast.csv"), str(tmp_path / "slow.csv"), "--iterations-per-epoch", "100"]) == 0
    out = capsys.readouterr().out
    expected = max(plateau_iteration((epochs + 1) * 100, c) for c in (fast, slow))
    assert f"iterations for every run: {expected}" in out
    pd.DataFrame({"epoch": epochs}).to_csv(tmp_path / "bad.csv", index=False)
    with pytest.raises(DataError, match="bad.csv.*val_dice"):
        main(["curves", str(tmp_path / "bad.csv"), "--iterations-per-epoch", "100"])
    with pytest.raises(DataError, match="missing.csv"):
        main(["curves", str(tmp_path / "missing.csv"), "--iterations-per-epoch", "100"])


def test_stage_breakdown_sums_each_stage_of_the_benchmarks(tmp_path, capsys):
    layout = Layout(tmp_path)
    header = "s\th:m:s\tmax_rss\tmax_vms\tcpu_time\n"
    files = {layout.benchmark("train", *RunKey("d", "m", "unsupervised", "0").parts()): (30.0, 500, 25.5),
             layout.benchmark("train", *RunKey("d", "m", "ofg-k10", "0").parts()): (50.0, 700, 41.0),
             layout.benchmark("prepare", "d"): (5.0, "-", 4.0)}
    for path, (seconds, rss, cpu) in files.items():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(header + f"{seconds}\t0:00:00\t{rss}\t1\t{cpu}\n")
    table = stage_breakdown(tmp_path).set_index("stage")
    assert table.loc["train", "jobs"] == 2 and table.loc["train", "total_s"] == 80 and table.loc["train", "longest_s"] == 50
    assert table.loc["train", "cpu_s"] == 66.5 and table.loc["prepare", "cpu_s"] == 4.0
    assert table.loc["train", "max_rss_mb"] == 700 and np.isnan(table.loc["prepare", "max_rss_mb"])
    assert list(table.index) == ["train", "prepare"]  # longest first
    assert main(["rules", str(tmp_path)]) == 0
    assert "summed job time 85 s over 3 jobs; summed CPU time 70 s" in capsys.readouterr().out
    # benchmarks of Snakemake versions without cpu_time: NaN, not 0
    files = {layout.benchmark("train", *RunKey("d", "m", "ofg-k10", "0").parts()): "12.0\t0:00:12\t1\t1\n"}
    for path, row in files.items():
        path.write_text("s\th:m:s\tmax_rss\tmax_vms\n" + row)
    assert stage_breakdown(tmp_path).set_index("stage").loc["train", "cpu_s"] == 25.5
    with pytest.raises(DataError, match="no Snakemake benchmark"):
        stage_breakdown(tmp_path / "empty")


def test_the_learning_curve_run_configs_are_valid_and_match_the_default_config():
    from pathlib import Path

    import yaml

    from ofg.config import RunConfig

    repo = Path(__file__).resolve().parents[1]
    default = yaml.safe_load((repo / "config" / "config.yaml").read_text())
    # the robustness probes (*-lr1e-4.yaml) change the learning rate on purpose: tests/test_robustness.py
    paths = sorted(p for p in (repo / "config" / "curves").glob("*.yaml") if not p.stem.endswith("-lr1e-4"))
    assert [p.stem for p in paths] == ["brain-ofg", "brain-unsupervised", "ct-ofg", "ct-unsupervised"]
    for path in paths:
        run = RunConfig.from_dict(yaml.safe_load(path.read_text()))
        assert run.lr == default["training"]["lr"] and run.val_pairs is None and run.seed == 0
        assert run.val_label_mode == default["evaluation"]["label_mode"]
        assert run.ofg.steps == default["ofg"]["steps"] and run.model.name == "voxelmorph"


def test_history_iterations_column_counts_capped_and_bidirectional_epochs(tmp_path):
    from ofg.budget import history_curve

    # 40 train pairs cap a 100-iteration epoch at 40; a bidirectional epoch of 100 pairs holds 200 steps
    pd.DataFrame({"epoch": [0, 1, 2], "iterations": [40, 40, 40], "val_dice": [0.5, 0.6, 0.6]}).to_csv(
        tmp_path / "h.csv", index=False)
    x, y = history_curve(tmp_path / "h.csv", iterations_per_epoch=100)
    assert x.tolist() == [40, 80, 120] and y.tolist() == [0.5, 0.6, 0.6]
    pd.DataFrame({"epoch": [0, 1], "val_dice": [0.5, 0.6]}).to_csv(tmp_path / "old.csv", index=False)
    assert history_curve(tmp_path / "old.csv", 100)[0].tolist() == [100, 200]
    with pytest.raises(DataError, match="old.csv.*iterations-per-epoch"):
        history_curve(tmp_path / "old.csv")
