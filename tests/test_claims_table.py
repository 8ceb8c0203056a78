"""ofg.report.claims_table: the claims table from a results tree with seeds and known effects."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from ofg.io import DataError
from ofg.layout import Layout, RunKey
from ofg.report import claims_table
from ofg.report.render import EMBEDDED_CAVEAT

DATASET, MODEL = "embedded-brain", "voxelmorph"
#: (method, steps) -> Dice offset over the unsupervised run
DICE_OFFSET = {("unsupervised", None): 0.0, ("ofg", 10): 0.03, ("ofg", 5): 0.025, ("self_training", None): 0.01,
               ("opt_self_training", None): 0.03}


def make_plan(root: Path, seeds=(0, 1, 2)) -> dict:
    runs = [{"dataset": DATASET, "model": MODEL, "run": method if steps is None else f"ofg-k{steps}",
             "method": method, "steps": steps, "seed": seed} for method, steps in DICE_OFFSET for seed in seeds]
    pair = [DATASET, MODEL]
    return {"results": str(root), "main_run": "ofg-k10", "main_steps": 10, "runs": runs, "main": [pair],
            "self_training": [pair], "ablation": {"steps": [0, 5, 10], "runs": [], "pairs": [pair]},
            "refinement": [DATASET], "qualitative": [], "embedded": True, "label_mode": "nearest", "split": "test",
            "device": "cpu"}


def write_tree(plan: dict, n_pairs: int = 40) -> None:
    """Per-pair metrics with known effects; seed noise (−e, 0, +e) cancels in the per-pair seed mean."""
    layout, rng = Layout(plan["results"]), np.random.default_rng(0)
    base = rng.uniform(0.5, 0.7, n_pairs)
    steps = rng.uniform(0.001, 0.01, n_pairs // 2)
    symmetric = np.concatenate([steps, -steps])  # a difference with mean 0 and Wilcoxon p = 1
    seconds = 0.05 + 0.01 * rng.standard_normal(n_pairs)
    for run in plan["runs"]:
        ofg_main = (run["method"], run["steps"]) == ("ofg", 10)
        noise = 0.004 * (run["seed"] - 1)
        dice = base + DICE_OFFSET[(run["method"], run["steps"])] + noise
        if run["method"] == "opt_self_training":
            dice = dice + symmetric  # OFG and optimised self-training do not differ
        frame = pd.DataFrame({
            "split": "test", "pair_index": range(n_pairs), "moving": "atlas", "fixed": [f"s{i}" for i in range(n_pairs)],
            "label_mode": "nearest", "dice_mean": dice, "dice_1": dice,
            "folding_percent": base * (0.5 if ofg_main else 1.0),       # fewer folds: supported
            "sdlogj_l2r": base + (symmetric if ofg_main else 0.0),      # no difference: inconclusive
            "endpoint_error": base + (0.2 if ofg_main else 0.0),        # farther from the truth: contradicted
            "inference_seconds": seconds + 1e-4 * rng.standard_normal(n_pairs)})  # no cost: supported
        key = RunKey(run["dataset"], run["model"], run["run"], str(run["seed"]))
        layout.metrics(key).parent.mkdir(parents=True, exist_ok=True)
        frame.sample(frac=1.0, random_state=run["seed"]).to_csv(layout.metrics(key), index=False)
        history = layout.run(key).history
        history.parent.mkdir(parents=True, exist_ok=True)
        per_iteration = (1.2 if run["method"] == "ofg" else 1.0) * (1 + 0.02 * run["seed"])
        pd.DataFrame({"epoch": [1, 2], "seconds_per_iteration": [per_iteration] * 2}).to_csv(history, index=False)
    for dataset in plan["refinement"]:
        rows = [{"start": start, "pair": p, "step": k, "dice": 0.4 + 0.01 * p + 0.005 * k + 0.001 * np.sin(p * k),
                 "energy": 0.0} for start in ("untrained", "random") for p in range(8) for k in range(13)]
        layout.refinement(dataset).parent.mkdir(parents=True, exist_ok=True)
        pd.DataFrame(rows).to_csv(layout.refinement(dataset), index=False)


@pytest.fixture
def plan(tmp_path):
    plan = make_plan(tmp_path / "results")
    write_tree(plan)
    return plan


def test_every_claim_gets_the_verdict_of_its_known_effect(plan):
    table = claims_table.write_claims(plan)
    verdicts = {(row.claim, row.start if isinstance(row.start, str) else ""): row.verdict
                for row in table.itertuples()}
    assert verdicts == {
        ("dice_gain", ""): "supported", ("fewer_folds", ""): "supported", ("smoother", ""): "inconclusive",
        ("closer_to_truth", ""): "contradicted", ("no_inference_cost", ""): "supported",
        ("modest_overhead", ""): "supported", ("best_steps", ""): "supported",
        ("beats_self_training", ""): "supported", ("beats_opt_self_training", ""): "inconclusive",
        ("optimiser_alone", "untrained"): "supported", ("optimiser_alone", "random"): "supported"}
    dice = table.set_index("claim").loc["dice_gain"]
    assert dice.effect == pytest.approx(0.03) and (dice.n_pairs, dice.n_seeds) == (40, 3)
    assert dice.seed_spread_ofg == pytest.approx(0.004)  # per-seed means 0.004 apart
    assert table.set_index("claim").loc["modest_overhead"].effect == pytest.approx(1.2)
    assert table.set_index("claim").loc["best_steps"].best_k == 10
    assert table.p_holm.notna().sum() == 8  # the Wilcoxon rows: 4 main, 2 self-training, 2 refinement


def test_the_files_state_their_conventions(plan):
    claims_table.write_claims(plan)
    csv, md, tex = Layout(plan["results"]).table("claims")
    assert pd.read_csv(csv).verdict.notna().all()
    text = md.read_text()
    assert "40 pairs × 3 seeds" in text and "bootstrap" in text and "Holm" in text and EMBEDDED_CAVEAT in text
    assert "Labels warped by nearest" in text
    assert r"\caption{" in tex.read_text() and "supported" in tex.read_text()


def test_too_few_pairs_give_insufficient_data(tmp_path):
    plan = make_plan(tmp_path / "results", seeds=(0,))
    write_tree(plan, n_pairs=4)
    table = claims_table.claims_table(plan)
    tested = table[~table.claim.isin(["modest_overhead", "optimiser_alone"])]  # 8 refinement pairs stay
    assert len(tested) == 8 and (tested.verdict == "insufficient data").all() and tested.p_holm.isna().all()
    assert (table[table.claim == "optimiser_alone"].verdict == "supported").all()


@pytest.mark.parametrize("victim", ["metrics", "history"])
def test_a_missing_result_file_is_named(plan, victim):
    key = RunKey(DATASET, MODEL, "unsupervised", "1")
    path = Layout(plan["results"]).metrics(key) if victim == "metrics" else Layout(plan["results"]).run(key).history
    path.unlink()
    with pytest.raises(DataError, match=str(path)):
        claims_table.write_claims(plan)
