"""ofg.report.claims_table: the claims table from a results tree with subjects, seeds and known effects."""

from __future__ import annotations

import zlib
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from ofg import claims
from ofg.io import DataError
from ofg.layout import Layout, RunKey
from ofg.report import claims_table
from ofg.report.render import EMBEDDED_CAVEAT

BRAIN, CT, MODEL = "embedded-brain", "embedded-ct", "voxelmorph"
SEEDS = (0, 1, 2)
#: (method, steps) -> Dice offset over the unsupervised run
DICE_OFFSET = {("unsupervised", None): 0.0, ("ofg", 1): 0.01, ("ofg", 5): 0.028, ("ofg", 10): 0.03, ("ofg", 20): 0.031,
               ("self_training", None): 0.01, ("opt_self_training", None): 0.03}
MAIN = {("unsupervised", None), ("ofg", 10)}


def subjects(dataset: str, crossed: int) -> tuple[list[str], list[str]]:
    """Atlas → 40 subjects for the brain; every ordered pair of ``crossed`` subjects for the CT."""
    if dataset == BRAIN:
        return ["atlas"] * 40, [f"s{i}" for i in range(40)]
    pairs = [(f"c{i}", f"c{j}") for i in range(crossed) for j in range(crossed) if i != j]
    return [m for m, _ in pairs], [f for _, f in pairs]


def make_plan(root: Path, seeds=SEEDS, comparator_seeds=None) -> dict:
    runs = []
    for (method, steps) in DICE_OFFSET:
        datasets = (BRAIN, CT) if (method, steps) in MAIN else (BRAIN,)
        own = comparator_seeds if comparator_seeds is not None and method == "self_training" else seeds
        runs += [{"dataset": d, "model": MODEL, "run": method if steps is None else f"ofg-k{steps}", "method": method,
                  "steps": steps, "seed": seed} for d in datasets for seed in own]
    brain = [BRAIN, MODEL]
    return {"results": str(root), "main_run": "ofg-k10", "main_steps": 10, "runs": runs, "main": [brain, [CT, MODEL]],
            "self_training": [brain], "ablation": {"steps": [0, 1, 5, 10, 20], "runs": [], "pairs": [brain]},
            "refinement": [BRAIN], "qualitative": [], "embedded": True, "label_mode": "nearest", "split": "test",
            "device": "cpu"}


def metrics(dataset: str, method: str, steps, seed: int, crossed: int) -> pd.DataFrame:
    """Per-pair metrics with known effects: pair difficulty shared by every method, a small effect per
    (method, seed) and noise per (pair, method, seed); OFG's Dice gain varies with the subjects."""
    moving, fixed = subjects(dataset, crossed)
    n = len(moving)
    shared = np.random.default_rng(0)
    base = shared.uniform(0.5, 0.7, n)
    subject_gain = dict(zip(sorted(set(moving) | set(fixed)), 0.003 * shared.standard_normal(n + 1)))
    symmetric = shared.uniform(-0.01, 0.01, n)
    # a perturbation whose mean over seeds and pairs is exactly 0 and whose per-seed means differ
    perturbation = np.roll(symmetric - symmetric.mean(), seed) + 0.002 * (seed - 1)
    rng = np.random.default_rng(zlib.crc32(repr((dataset, method, steps, seed)).encode()))
    main, ofg = (method, steps) == ("ofg", 10), method == "ofg"
    dice = base + DICE_OFFSET[(method, steps)] + 0.001 * rng.standard_normal() + 0.004 * rng.standard_normal(n)
    dice = dice + (np.array([subject_gain[m] + subject_gain[f] for m, f in zip(moving, fixed)]) if ofg else 0)
    if method == "opt_self_training":  # the main OFG run's values plus a perturbation of mean 0: no difference
        dice = metrics(dataset, "ofg", 10, seed, crossed).dice_mean.to_numpy() + perturbation
    return pd.DataFrame({
        "split": "test", "pair_index": range(n), "moving": moving, "fixed": fixed, "label_mode": "nearest",
        "dice_mean": dice, "dice_1": dice,
        "folding_percent": base * (0.3 if main else 1.0) * (1 + 0.02 * rng.standard_normal(n)),  # 70 % fewer
        "sdlogj_l2r": base + (perturbation if main else 0.0),                                       # no difference
        "endpoint_error": base + (0.2 if main else 0.0) + 0.01 * rng.standard_normal(n),           # farther
        "inference_seconds": 0.05 + 0.01 * rng.standard_normal(n)})


def timing_frame(repeats: int = 4) -> pd.DataFrame:
    """The controlled measurement: inference ratio ≈ 1, iteration ratio ≈ 1.2 for the main run (and 3 for
    another OFG run, which the rows leave out)."""
    rng, rows = np.random.default_rng(5), []
    for kind, ratio in (("inference", 1.0), ("iteration", 1.2)):
        for seed in SEEDS:
            for repeat in range(repeats):
                seconds = 0.05 * (1 + 0.01 * rng.standard_normal())
                rows += [{"kind": kind, "method": "unsupervised", "run": "unsupervised", "seed": seed,
                          "repeat": repeat, "seconds": seconds},
                         {"kind": kind, "method": "ofg", "run": "ofg-k10", "seed": seed, "repeat": repeat,
                          "seconds": seconds * ratio * (1 + 0.01 * rng.standard_normal())},
                         {"kind": kind, "method": "ofg", "run": "ofg-k20", "seed": seed, "repeat": repeat,
                          "seconds": seconds * 3}]
    return pd.DataFrame(rows)


def write_tree(plan: dict, crossed: int = 7, timing: bool = True) -> None:
    layout = Layout(plan["results"])
    for run in plan["runs"]:
        frame = metrics(run["dataset"], run["method"], run["steps"], run["seed"], crossed)
        key = RunKey(run["dataset"], run["model"], run["run"], str(run["seed"]))
        layout.metrics(key).parent.mkdir(parents=True, exist_ok=True)
        frame.sample(frac=1.0, random_state=run["seed"]).to_csv(layout.metrics(key), index=False)
    if timing:  # the brain only: the CT's timing rows have no measurement
        layout.timing(BRAIN, MODEL).parent.mkdir(parents=True, exist_ok=True)
        timing_frame().to_csv(layout.timing(BRAIN, MODEL), index=False)
    rows = [{"start": start, "pair": p, "step": k, "dice": 0.4 + 0.01 * p + 0.005 * k + 0.001 * np.sin(p * k),
             "energy": 0.0} for start in ("untrained", "random") for p in range(8) for k in range(13)]
    layout.refinement(BRAIN).parent.mkdir(parents=True, exist_ok=True)
    pd.DataFrame(rows).to_csv(layout.refinement(BRAIN), index=False)


@pytest.fixture
def plan(tmp_path):
    plan = make_plan(tmp_path / "results")
    write_tree(plan)
    return plan


def by_claim(table: pd.DataFrame) -> dict:
    """(claim, dataset) -> row, for the claims with one row per dataset."""
    return {(row.claim, row.dataset): row for row in table.itertuples() if row.claim != "optimiser_alone"}


def verdicts(table: pd.DataFrame) -> dict:
    return {(row.claim, row.dataset, row.start if isinstance(row.start, str) else ""): row.verdict
            for row in table.itertuples()}


def test_every_claim_gets_the_verdict_of_its_known_effect(plan):
    table = claims_table.write_claims(plan)
    b, c = BRAIN, CT
    assert verdicts(table) == {
        ("dice_gain", b, ""): "supported", ("dice_gain", c, ""): "supported",
        ("dice_consistent", "all", ""): "supported",
        ("fewer_folds", b, ""): "supported", ("fewer_folds", c, ""): "supported",
        ("smoother", b, ""): "inconclusive", ("smoother", c, ""): "inconclusive",
        ("beats_self_training", b, ""): "supported", ("beats_opt_self_training", b, ""): "inconclusive",
        ("steps_5_beat_1", b, ""): "supported", ("steps_10_beat_1", b, ""): "supported",
        ("steps_20_no_better", b, ""): "supported",
        ("optimiser_alone", b, "untrained"): "supported", ("optimiser_alone", b, "random"): "supported",
        ("closer_to_truth", b, ""): "contradicted", ("closer_to_truth", c, ""): "contradicted",
        ("no_inference_cost", b, ""): "supported", ("no_inference_cost", c, ""): "insufficient data",
        ("modest_overhead", b, ""): "supported", ("modest_overhead", c, ""): "insufficient data"}


def test_rows_count_independent_units_and_show_matched_seeds(plan):
    table = by_claim(claims_table.claims_table(plan))
    brain, ct = table[("dice_gain", BRAIN)], table[("dice_gain", CT)]
    assert brain.n == "40 pairs × 3 / 3 seeds" and (brain.n_units, brain.unit_kind) == (40, "pairs")
    assert ct.n == "7 subjects (42 pairs) × 3 / 3 seeds" and (ct.n_units, ct.unit_kind) == (7, "subjects")
    assert brain.effect == pytest.approx(0.03, abs=0.002) and len(brain.per_seed.split(";")) == 3
    assert "atlas" in brain.note
    folds = table[("fewer_folds", BRAIN)]
    assert folds.effect == pytest.approx(0.7, abs=0.01) and folds.ci_low > claims.SIZE_THRESHOLD
    margin = table[("steps_20_no_better", BRAIN)]
    assert margin.effect == pytest.approx(0.001, abs=0.002) and margin.ci_high < claims.NONINFERIORITY_MARGIN
    overhead = table[("modest_overhead", BRAIN)]
    assert overhead.effect == pytest.approx(1.2, abs=0.01) and overhead.n == "12 repeats (3 seeds pooled)"
    assert "timing file absent" in table[("modest_overhead", CT)].note


def test_holm_runs_within_the_declared_families(plan):
    table = claims_table.claims_table(plan)
    for names in claims.FAMILIES.values():
        members = table[table.claim.isin(names) & (table.verdict != "insufficient data")]
        assert members.p_holm.tolist() == pytest.approx(list(claims.holm(members.p)))
    assert table[table.family == "descriptive"].p_holm.isna().all()
    assert set(table.family) == {"primary", "primary (IUT)", "secondary", "fig3", "ablation", "descriptive"}


def test_the_files_state_their_conventions(plan):
    claims_table.write_claims(plan)
    csv, md, tex = Layout(plan["results"]).table("claims")
    assert pd.read_csv(csv).verdict.notna().all()
    text = md.read_text()
    assert "7 subjects (42 pairs) × 3 / 3 seeds" in text and "40 pairs × 3 / 3 seeds" in text
    for phrase in ("jackknife", "Cochran–Cox", "Holm families", "intersection-union", "equal by construction",
                   "at least halved", f"margin {claims.NONINFERIORITY_MARGIN}", "per seed", EMBEDDED_CAVEAT):
        assert phrase in text, phrase
    assert r"\caption{" in tex.read_text() and "supported" in tex.read_text()


def test_different_seeds_use_the_common_ones_and_say_so(tmp_path):
    plan = make_plan(tmp_path / "results", comparator_seeds=(0, 1))
    write_tree(plan)
    row = claims_table.claims_table(plan).set_index("claim").loc["beats_self_training"]
    assert row.n == "40 pairs × 3 / 2 seeds" and "common seeds [0, 1]" in row.note
    assert len(row.per_seed.split(";")) == 2


def test_too_few_subjects_give_insufficient_data(tmp_path):
    plan = make_plan(tmp_path / "results")
    write_tree(plan, crossed=4, timing=False)  # every ordered pair of 4 subjects: 12 pairs, 4 units
    table = claims_table.claims_table(plan)
    ct = table[table.dataset == CT]
    assert len(ct) == 6 and (ct.verdict == "insufficient data").all() and ct.p_holm.isna().all()
    assert (ct[ct.family != "descriptive"].n_units == 4).all()
    rows = by_claim(table)
    assert rows[("dice_consistent", "all")].verdict == "insufficient data"
    assert rows[("dice_gain", BRAIN)].verdict == "supported"


def test_a_missing_metrics_file_is_named(plan):
    path = Layout(plan["results"]).metrics(RunKey(BRAIN, MODEL, "unsupervised", "1"))
    path.unlink()
    with pytest.raises(DataError, match=str(path)):
        claims_table.write_claims(plan)
