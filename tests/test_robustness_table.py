"""ofg.report.robustness_table: the Dice-gain verdict under each setting, on synthetic metrics with known effects
in the layout's paths of config/robustness.yaml's settings."""

from __future__ import annotations

import zlib
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from ofg import claim_rows, robustness
from ofg.claims import CLAIM_BY_NAME
from ofg.layout import Layout, RunKey
from ofg.report import claims_table
from ofg.report.robustness_table import robustness_table, write_robustness
from test_robustness import EPOCHS, merged_config

#: setting -> OFG minus unsupervised Dice built into its metrics
EFFECT = {"baseline": -0.04, "lr-1e-4": 0.03, "paper-size": 0.0, "cohort-seed": -0.03, "network-lkunet": 0.02}
VERDICT = {"baseline": "contradicted", "lr-1e-4": "supported", "paper-size": "inconclusive",
           "cohort-seed": "contradicted", "network-lkunet": "supported"}


def pairs(dataset: str) -> tuple[list[str], list[str]]:
    """Atlas → 40 subjects on the brain, 40 disjoint subject pairs on the CT (units = pairs on both)."""
    if dataset == "embedded-brain":
        return ["atlas"] * 40, [f"s{i}" for i in range(40)]
    return [f"c{2 * i}" for i in range(40)], [f"c{2 * i + 1}" for i in range(40)]


def metrics(setting: str, dataset: str, method: str, seed: int) -> pd.DataFrame:
    """Per-pair Dice: a pair difficulty shared by both methods; OFG adds the setting's effect, a pair effect
    shared by its seeds and noise per (pair, seed), both of mean 0 where the effect is 0."""
    moving, fixed = pairs(dataset)
    shared = np.random.default_rng(0)
    base, pair_effect = shared.uniform(0.5, 0.7, 40), 0.005 * shared.standard_normal(40)
    dice = base.copy()
    if method == "ofg":
        noise = 0.002 * np.random.default_rng(zlib.crc32(repr((setting, dataset, seed)).encode())).standard_normal(40)
        if not EFFECT[setting]:
            pair_effect, noise = pair_effect - pair_effect.mean(), noise - noise.mean()
        dice = base + EFFECT[setting] + pair_effect + noise
    return pd.DataFrame({"split": "test", "pair_index": range(40), "moving": moving, "fixed": fixed,
                         "label_mode": "nearest", "dice_mean": dice})


def history(offset: float) -> pd.DataFrame:
    epochs = np.arange(3)
    return pd.DataFrame({"epoch": epochs, "val_dice": 0.5 + offset + 0.01 * epochs,
                         **{f"gap_{q}_{role}": 0.5 + offset + 0.1 * (role == "target") + 0.0 * epochs
                            for q in ("dice", "energy", "epe") for role in ("prediction", "target")}})


@pytest.fixture
def robustness_plan(tmp_path):
    rplan = robustness.report_plan(merged_config(tmp_path / "results", EPOCHS))
    for setting in rplan["settings"]:
        layout = Layout(setting["plan"]["results"])
        for run in setting["plan"]["runs"]:
            key = RunKey(run["dataset"], run["model"], run["run"], str(run["seed"]))
            layout.metrics(key).parent.mkdir(parents=True, exist_ok=True)
            metrics(setting["name"], run["dataset"], run["method"], run["seed"]).to_csv(layout.metrics(key), index=False)
            layout.run(key).path.mkdir(parents=True, exist_ok=True)
            history(0.05 * (run["method"] == "ofg") + 0.01 * run["seed"]).to_csv(layout.run(key).history, index=False)
    return rplan


def engine_row(setting: dict, dataset: str) -> dict:
    """The claims engine's Dice row on the setting's files, read here independently of the table's code."""
    plan, frames = setting["plan"], {}
    for run_id in ("unsupervised", plan["main_run"]):
        runs = [r for r in plan["runs"] if r["dataset"] == dataset and r["run"] == run_id]
        frames[run_id] = pd.concat([pd.read_csv(Layout(plan["results"]).metrics(
            RunKey(r["dataset"], r["model"], r["run"], str(r["seed"])))).assign(seed=r["seed"]) for r in runs])
    return claim_rows.compare(CLAIM_BY_NAME["dice_gain"], frames[plan["main_run"]], frames["unsupervised"])


def test_one_row_per_setting_and_dataset_with_the_engine_s_numbers(robustness_plan):
    table = robustness_table(robustness_plan)
    assert list(zip(table["setting"], table["dataset"])) == [
        (name, dataset) for name in EFFECT for dataset in ("embedded-brain", "embedded-ct")]
    settings = {s["name"]: s for s in robustness_plan["settings"]}
    for row in table.itertuples():
        expected = engine_row(settings[row.setting], row.dataset)
        for column in ("effect", "ci_low", "ci_high", "p", "se"):
            assert getattr(row, column) == pytest.approx(expected[column], rel=1e-12, abs=1e-15), (row.setting, column)
        assert row.n == expected["n"] and row.n_units == 40 and row.n_seeds == 3
        assert row.effect == pytest.approx(EFFECT[row.setting], abs=0.002)
        assert row.verdict == VERDICT[row.setting], row.setting
        assert row.model == ("lkunet" if row.setting == "network-lkunet" else "voxelmorph")
        assert row.dice_ofg - row.dice_unsupervised == pytest.approx(row.effect)
    lr = table[table["setting"] == "lr-1e-4"].iloc[0]
    assert (lr["training_lr"], lr["training_epochs"], lr["reused"]) == (1.0e-4, 200, False)
    assert table[table["setting"] == "cohort-seed"]["training_cohort_seed"].tolist() == [2, 2]


def test_the_baseline_rows_are_the_claims_table_s_before_holm(robustness_plan):
    baseline = robustness_plan["settings"][0]
    claims = claims_table.claims_table(baseline["plan"])
    primary = claims[claims["claim"] == "dice_gain"].set_index("dataset")
    rows = robustness_table(robustness_plan).query("setting == 'baseline'").set_index("dataset")
    for dataset, row in rows.iterrows():
        assert row["effect"] == primary.at[dataset, "effect"] and row["p"] == primary.at[dataset, "p"]
        assert row["p"] <= primary.at[dataset, "p_holm"]  # the sensitivity rows are not adjusted


def test_writes_the_table_with_its_caption_and_each_setting_s_gap_figure(robustness_plan):
    write_robustness(robustness_plan)
    csv, md, tex = map(Path, robustness_plan["table"])
    assert len(pd.read_csv(csv)) == 10
    text = md.read_text()
    assert "| setting" in text and "lr-1e-4" in text and "baseline (reused)" in text
    assert "lr 0.0001, small, 200 epochs, cohort seed 0" in text and "lr 0.001, paper, 41 epochs" in text
    for phrase in ("Dice-gain verdict under each setting", "sensitivity analysis, outside the paper-claim families",
                   "p is not adjusted (no Holm)", "Cochran–Cox"):
        assert phrase in text, phrase
    # its columns are effects and means: the metric tables' column conventions would describe absent columns
    assert "Labels warped by nearest for Dice." in text
    assert not any(absent in text for absent in ("Dice one-hot", "HD95", "SDlogJ", "± over pairs"))
    assert "\\begin{tabular}" in tex.read_text()
    for setting in robustness_plan["settings"]:
        assert len(setting["figures"]) == 2
        for figure in setting["figures"]:
            assert all(Path(p).is_file() and Path(p).stat().st_size > 0 for p in figure["paths"])
            assert f"/robustness/{setting['name']}/" in figure["paths"][0]


def test_a_missing_metrics_file_is_named(robustness_plan):
    from ofg.io import DataError

    setting = robustness_plan["settings"][2]
    run = setting["plan"]["runs"][0]
    path = Layout(setting["plan"]["results"]).metrics(RunKey(run["dataset"], run["model"], run["run"], str(run["seed"])))
    path.unlink()
    with pytest.raises(DataError, match=str(path)):
        robustness_table(robustness_plan)
