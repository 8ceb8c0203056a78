"""The guidance-gap summary (ofg.report.gap_summary) on synthetic histories with known means."""

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from ofg.io import DataError
from ofg.report.gap_summary import gap_summary, group_name, main


def _history(path: Path, epochs: int, offset: float, ahead_until: int) -> Path:
    """A history whose target Dice leads the prediction by 0.05 up to epoch ``ahead_until``, then trails."""
    e = np.arange(epochs)
    prediction = 0.5 + 0.01 * e + offset
    target = prediction + np.where(e <= ahead_until, 0.05, -0.02)
    frame = pd.DataFrame({
        "epoch": e, "loss": 1.0, "gap_lr": 0.1 * (1 - e / epochs) ** 0.9,
        "gap_dice_prediction": prediction, "gap_dice_target": target,
        "gap_energy_prediction": -0.3 - 0.01 * e, "gap_energy_target": -0.4 - 0.01 * e,
        "gap_epe_prediction": 2.0 - 0.01 * e + offset, "gap_epe_target": 1.5 - 0.01 * e + offset})
    path.parent.mkdir(parents=True, exist_ok=True)
    frame.to_csv(path, index=False)
    return path


def test_group_names_join_the_seeds_of_a_workflow_run_and_keep_other_folders():
    assert group_name(Path("r/runs/embedded-ct/voxelmorph/ofg-k10/seed-2/history.csv")) == "embedded-ct voxelmorph ofg-k10"
    assert group_name(Path("results/curves/runs/brain-ofg-lr1e-4/history.csv")) == "brain-ofg-lr1e-4"


def test_summary_means_over_seeds_at_the_five_checkpoints(tmp_path):
    runs = tmp_path / "runs" / "embedded-brain" / "voxelmorph"
    paths = [_history(runs / "ofg-k10" / f"seed-{s}" / "history.csv", 41, offset, ahead_until=20)
             for s, offset in enumerate((-0.01, 0.0, 0.01))]
    paths.append(_history(runs / "unsupervised" / "seed-0" / "history.csv", 41, 0.0, ahead_until=40))
    table = gap_summary(paths)
    ofg = table[table.run == "embedded-brain voxelmorph ofg-k10"]
    assert ofg.epoch.tolist() == [0, 10, 20, 30, 40] and (ofg.seeds == 3).all()
    # the seed offsets cancel in the mean: prediction Dice 0.5 + 0.01 e
    np.testing.assert_allclose(ofg["dice prediction"], 0.5 + 0.01 * ofg.epoch, atol=1e-12)
    np.testing.assert_allclose(ofg["dice gap"], [0.05, 0.05, 0.05, -0.02, -0.02], atol=1e-12)
    np.testing.assert_allclose(ofg["epe gap"], -0.5, atol=1e-12)
    np.testing.assert_allclose(ofg["energy gap"], -0.1, atol=1e-12)
    assert (ofg["dice ahead"] == "21/41").all() and (ofg["last ahead"] == 20).all()
    assert (ofg["seed-epochs ahead"] == "63/123").all()
    unsup = table[table.run == "embedded-brain voxelmorph unsupervised"]
    assert (unsup["dice ahead"] == "41/41").all() and (unsup.seeds == 1).all()


def test_a_seed_that_trails_shows_in_the_seed_epochs_not_in_the_mean(tmp_path):
    runs = tmp_path / "runs" / "embedded-ct" / "voxelmorph" / "ofg-k10"
    # two seeds lead by 0.05 in all 9 epochs, one trails by 0.02 in all: the seed mean leads by 0.027
    paths = [_history(runs / f"seed-{s}" / "history.csv", 9, 0.0, ahead_until=until)
             for s, until in enumerate((8, 8, -1))]
    table = gap_summary(paths)
    np.testing.assert_allclose(table["dice gap"], 0.08 / 3, atol=1e-12)
    assert (table["dice ahead"] == "9/9").all() and (table["seed-epochs ahead"] == "18/27").all()


def test_a_history_without_gap_columns_is_named(tmp_path):
    old = tmp_path / "old" / "history.csv"
    old.parent.mkdir()
    pd.DataFrame({"epoch": [0, 1], "val_dice": [0.5, 0.6]}).to_csv(old, index=False)
    with pytest.raises(DataError, match="old/history.csv.*no guidance-gap columns"):
        gap_summary([old])
    assert main([str(old)]) == 1


def test_histories_without_the_columns_are_skipped_by_name_when_asked(tmp_path, capsys):
    """A workflow's runs/<dataset>/<model>/*/seed-*/history.csv includes self-training runs (no gap)."""
    runs = tmp_path / "runs" / "embedded-brain" / "voxelmorph"
    ofg = _history(runs / "ofg-k10" / "seed-0" / "history.csv", 9, 0.0, ahead_until=4)
    teacher = runs / "self_training" / "seed-0" / "history.csv"
    teacher.parent.mkdir(parents=True)
    pd.DataFrame({"epoch": [0, 1], "val_dice": [0.5, 0.6], "gap_lr": np.nan, "gap_dice_prediction": np.nan,
                  "gap_dice_target": np.nan, "gap_energy_prediction": np.nan, "gap_energy_target": np.nan,
                  "gap_epe_prediction": np.nan, "gap_epe_target": np.nan}).to_csv(teacher, index=False)
    skipped: list[str] = []
    table = gap_summary([ofg, teacher], skipped)
    assert table.run.unique().tolist() == ["embedded-brain voxelmorph ofg-k10"]
    assert len(skipped) == 1 and "self_training/seed-0/history.csv" in skipped[0] and "all NaN" in skipped[0]
    with pytest.raises(DataError, match="none of the 1 histories"):
        gap_summary([teacher], [])
    assert main([str(ofg), str(teacher)]) == 0
    captured = capsys.readouterr()
    assert "skipped" in captured.err and "self_training" in captured.err and "ofg-k10" in captured.out


def test_cli_prints_markdown_and_writes_the_csv(tmp_path, capsys):
    path = _history(tmp_path / "probe" / "history.csv", 9, 0.0, ahead_until=-1)
    assert main([str(path), "--csv", str(tmp_path / "gap.csv")]) == 0
    out = capsys.readouterr().out
    assert "| probe " in out and "never" in out
    assert len(pd.read_csv(tmp_path / "gap.csv")) == 5
