"""ofg.report: statistics against independent references, and every table/figure from a synthetic results tree."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from ofg import report
from ofg.io import DataError
from ofg.layout import Layout, RunKey
from ofg.metrics import DICE_RULES
from ofg.stages import report_plan
from ofg.report.render import DICE_RULE_TEXT, table_caption

LABELS = (2, 3, 4)
PAIRS = [("atlas", f"s{i}") for i in range(6)]


def metrics_frame(rng: np.random.Generator, offset: float, order: np.ndarray | None = None) -> pd.DataFrame:
    rows = []
    for index, (moving, fixed) in enumerate(PAIRS):
        dice = np.clip(0.6 + offset + 0.05 * rng.standard_normal(len(LABELS)), 0, 1)
        rows.append({"checkpoint": f"ckpt-{offset}", "split": "test", "pair_index": index, "moving": moving,
                     "fixed": fixed, "label_mode": "onehot", "dice_rule": "either", "dice_mean": dice.mean(),
                     **{f"dice_{label}": d for label, d in zip(LABELS, dice)},
                     "folding_percent": rng.uniform(0, 1), "sdlogj_l2r": rng.uniform(0, 0.1),
                     "sdlogj_plain": rng.uniform(0, 0.1), "hd95": rng.uniform(1, 3), "hd95_mm": rng.uniform(3, 9),
                     "endpoint_error": rng.uniform(0, 2), "inference_seconds": rng.uniform(0.1, 0.2)})
    frame = pd.DataFrame(rows)
    return frame.iloc[order].reset_index(drop=True) if order is not None else frame


def test_mean_std_matches_float64_reference_and_skips_nan():
    values = [0.5, 0.7, np.nan, 0.9]
    mean, std, n = report.mean_std(values)
    assert n == 3
    assert mean == pytest.approx(0.7)
    assert std == pytest.approx(math.sqrt(((0.2) ** 2 + 0 + 0.2 ** 2) / 2))
    assert math.isnan(report.mean_std([0.3])[1])
    assert math.isnan(report.mean_std([])[0])


def test_pair_keys_ignore_checkpoint_and_metric_columns():
    frame = metrics_frame(np.random.default_rng(1), 0.0)
    assert report.pair_key_columns(frame) == ["split", "pair_index", "moving", "fixed"]
    assert report.structure_columns(frame) == [f"dice_{label}" for label in LABELS]


def test_summarize_run_spreads_over_pairs_and_over_structures_times_pairs():
    frame = metrics_frame(np.random.default_rng(2), 0.0)
    summary = report.summarize_run(frame)
    assert summary["dice_std_pairs"] == pytest.approx(np.std(frame.dice_mean.to_numpy(), ddof=1))
    every = frame[[f"dice_{label}" for label in LABELS]].to_numpy().ravel()
    assert summary["dice_std_structures_pairs"] == pytest.approx(np.std(every, ddof=1))
    assert summary["hd95"] == pytest.approx(frame.hd95.mean())


def test_structure_columns_are_the_per_label_dice_only():
    frame = metrics_frame(np.random.default_rng(0), 0.0)
    assert report.structure_columns(frame) == [f"dice_{label}" for label in LABELS]
    summary = report.summarize_run(frame)  # the string column dice_rule is no structure
    assert summary["n_pairs"] == len(PAIRS)


def test_caption_names_the_dice_rule_of_every_dataset():
    base = {"split": "test", "label_mode": "nearest"}
    single = table_caption({**base, "dice_rules": {"ixi": "either", "lpba": "either"}}, "T.")
    assert "(rule 'either')" in single and "both" not in single
    assert "(rule 'either')" in table_caption(base, "T.")  # a plan from before the rules were recorded
    mixed = table_caption({**base, "dice_rules": {"ixi": "either", "oasis": "either", "abdomen": "both"}}, "T.")
    assert "(rule 'either': ixi, oasis)" in mixed and "(rule 'both': abdomen)" in mixed
    assert DICE_RULE_TEXT["both"] in mixed and DICE_RULE_TEXT["either"] in mixed
    assert set(DICE_RULE_TEXT) == set(DICE_RULES)


def test_latex_escapes_special_characters():
    tex = report.to_latex(pd.DataFrame({"%|J|≤0": ["0.1 ± 0.2"], "a_b": ["x&y"]}), "cap 50%")
    assert r"\%|J|$\leq$0" in tex and r"0.1 $\pm$ 0.2" in tex and r"a\_b" in tex and r"x\&y" in tex
    assert r"\caption{cap 50\%}" in tex and r"\begin{tabular}{ll}" in tex


def test_published_table_is_labelled_and_holds_paper_numbers():
    table = report.published()
    assert set(table.origin) == {"published"}
    ixi = table[table.dataset == "IXI"].set_index("model")
    assert ixi.loc["TransMorph", "dice"] == "0.753" and ixi.loc["LKU-Net", "dice"] == "0.765"
    assert table[(table.dataset == "OASIS") & (table.model == "LapIRN")].hd95.item() == "1.67"


# ---------------------------------------------------------------- a synthetic results tree


def write_results(root: Path, plan: dict, rng: np.random.Generator) -> None:
    layout = Layout(root)
    for run in plan["runs"]:
        key = RunKey(run["dataset"], run["model"], run["run"], str(run["seed"]))
        offset = 0.0 if run["method"] == "unsupervised" else 0.03
        layout.metrics(key).parent.mkdir(parents=True, exist_ok=True)
        metrics_frame(rng, offset).to_csv(layout.metrics(key), index=False)
        folder = layout.run(key)
        folder.path.mkdir(parents=True, exist_ok=True)
        steps = run["steps"] or 0
        pd.DataFrame({"epoch": [1, 2, 3], "val_dice": [0.5, 0.55, 0.6], "seconds_per_iteration": [1.0, 2.0, 3.0],
                      "ofg_seconds_per_iteration": [0.1 * steps] * 3, "peak_memory_mb": [10.0, 30.0, 20.0]}
                     ).to_csv(folder.history, index=False)
        folder.summary.write_text("{}")
        bench = layout.benchmark("train", *key.parts())
        bench.parent.mkdir(parents=True, exist_ok=True)
        bench.write_text("s\th:m:s\tmax_rss\tmax_vms\n12.5\t0:00:12\t345.0\t900.0\n")
        image = rng.random((12, 10)).astype(np.float32)
        layout.sample(key).parent.mkdir(parents=True, exist_ok=True)
        np.savez(layout.sample(key), moving=image, fixed=image, warped=image, index=0, split="test", slice=6,
                 displacement=rng.normal(size=(2, 12, 10)).astype(np.float32),
                 jacobian=np.ones((12, 10), np.float32), folding_percent=0.0)
    for dataset in plan["baselines"]:
        frames = [metrics_frame(rng, offset).assign(method=method, seconds_per_pair=seconds)
                  for method, offset, seconds in (("before_registration", -0.2, 0.0), ("syn", 0.05, 3.0))]
        layout.baselines(dataset).parent.mkdir(parents=True, exist_ok=True)
        pd.concat(frames).to_csv(layout.baselines(dataset), index=False)
    for dataset in plan["refinement"]:
        path = layout.refinement(dataset)
        path.parent.mkdir(parents=True, exist_ok=True)
        rows = [{"start": start, "pair": pair, "step": step, "dice": 0.4 + 0.01 * step, "energy": -0.1 * step}
                for start in ("untrained", "random") for pair in range(2) for step in range(4)]
        pd.DataFrame(rows).to_csv(path, index=False)


@pytest.fixture
def synthetic_plan(tmp_path):
    import yaml
    from snakemake.utils import validate

    repo = Path(__file__).resolve().parents[1]
    config = yaml.safe_load((repo / "config" / "tiny.yaml").read_text())
    config["results"] = str(tmp_path / "results")
    config["training"]["seeds"] = [0, 1]  # the main comparison with two seeds, the rest with the first
    validate(config, str(repo / "config" / "schema.yaml"))
    plan = report_plan(config)
    write_results(tmp_path / "results", plan, np.random.default_rng(3))
    return plan


def test_outputs_are_records_of_kind_dataset_and_model(synthetic_plan):
    records = report.outputs(synthetic_plan)
    assert {r.kind for r in records if r.category == "table"} == set(report.TABLES)
    assert {r.kind for r in records if r.category == "figure"} == set(report.FIGURES)
    qualitative = next(r for r in records if r.kind == "qualitative")
    assert (qualitative.dataset, qualitative.model) == ("embedded-brain", "voxelmorph")
    assert [p.suffix for p in qualitative.paths] == [".png", ".pdf"]


def test_make_report_writes_every_declared_file(synthetic_plan):
    paths = report.make_report(synthetic_plan, progress=False)
    assert paths == report.output_paths(synthetic_plan)
    for path in paths:
        assert path.is_file() and path.stat().st_size > 0, path
    assert Path(paths[0]).read_bytes()  # csv
    for png in (p for p in paths if p.suffix == ".png"):
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    for pdf in (p for p in paths if p.suffix == ".pdf"):
        assert pdf.read_bytes()[:5] == b"%PDF-"


def test_tables_content(synthetic_plan):
    report.make_report(synthetic_plan, progress=False)
    tables = Path(synthetic_plan["results"]) / "tables"
    main = pd.read_csv(tables / "main_results.csv")
    # the reference rows on the same pairs come first, then the networks
    assert list(main.run) == ["before_registration", "syn", "unsupervised", synthetic_plan["main_run"]]
    assert list(main.model[:2]) == ["—", "—"] and "SyN (ANTs)" in set(main.method)
    networks = main[main.model != "—"]
    assert list(networks.n_seeds) == [2, 2] and networks.dice_std_seeds.notna().all()
    assert main.dice_mean[0] < main.dice_mean[2]
    assert "published" not in main.to_string()
    assert not any("wilcoxon" in c for c in main.columns)  # inference is the claims table's
    cost = pd.read_csv(tables / "training_cost.csv")
    assert set(cost[cost.run == "unsupervised"].seed) == {0, 1}
    cost = cost[cost.seed == 0].set_index("run")
    # ofg-k2: OFG 0.2 s of 2.0 s per iteration on average
    assert cost.loc["ofg-k2", "ofg_share"] == pytest.approx(0.1)
    assert cost.loc["unsupervised", "ofg_share"] == 0
    assert cost.loc["ofg-k2", "peak_memory_mb"] == 30.0
    assert cost.loc["ofg-k2", "train_wall_seconds_last_invocation"] == 12.5
    ablation = pd.read_csv(tables / "step_ablation.csv")
    assert list(ablation.k) == [0, 1, 2]
    selft = pd.read_csv(tables / "self_training.csv")
    assert list(selft.run) == ["unsupervised", "self_training", "opt_self_training", synthetic_plan["main_run"]]
    assert selft.best_val_dice.tolist() == [0.6] * 4
    md = (tables / "main_results.md").read_text()
    assert "± over structures×pairs" in md and report.EMBEDDED_CAVEAT in md
    assert "(rule 'either')" in md and "Labels warped by onehot" in md
    assert "PUBLISHED" in (tables / "published.md").read_text()


def test_missing_metrics_file_fails_naming_it(synthetic_plan):
    victim = Layout(synthetic_plan["results"]).metrics(RunKey("embedded-brain", "voxelmorph", "unsupervised", "0"))
    victim.unlink()
    with pytest.raises(DataError, match="unsupervised/seed-0.csv: missing metrics file"):
        report.make_report(synthetic_plan, progress=False)


def test_seeds_are_averaged_per_pair_before_the_statistics():
    rng = np.random.default_rng(5)
    seed0, seed1 = metrics_frame(rng, 0.0).assign(seed=0), metrics_frame(rng, 0.1).assign(seed=1)
    both = pd.concat([seed0, seed1], ignore_index=True)
    averaged = report.seed_average(both)
    assert len(averaged) == len(seed0)
    np.testing.assert_allclose(averaged.dice_mean, (seed0.dice_mean.to_numpy() + seed1.dice_mean.to_numpy()) / 2)
    summary = report.summarize_run(both)
    assert summary["n_pairs"] == len(seed0) and summary["n_seeds"] == 2
    expected = np.std([seed0.dice_mean.mean(), seed1.dice_mean.mean()], ddof=1)
    assert summary["dice_std_seeds"] == pytest.approx(expected)


def test_the_caption_names_the_ixi_test_subset():
    from ofg.report.render import table_caption

    plan = {"split": "test", "label_mode": "nearest", "test_subsets": {"ixi": "reference20"}}
    assert "ixi test set: 20 subjects of its test folder drawn with seed 42" in table_caption(plan, "T.")
    assert "115" in table_caption({**plan, "test_subsets": {"ixi": "all"}}, "T.")
    assert "test set" not in table_caption({"split": "test", "label_mode": "onehot"}, "T.")


def test_the_caption_names_the_arithmetic_of_the_trainings(tmp_path):
    """Each run's summary.json records its arithmetic (ofg.runtime.arithmetic_path); captions say it, with
    counts where the runs differ, and 'not recorded' for runs without the record."""
    from ofg.report.load import load_arithmetic
    from ofg.report.render import arithmetic_caption

    fast = {"device": "cpu", "network": "bfloat16 autocast", "channels_last": True, "float32_convolutions": "onednn",
            "fused_refinement": None, "cpu": "Some CPU", "cpu_capability": "AVX512", "bf16_native": True}
    runs = []
    for i, record in enumerate([fast, {**fast, "fused_refinement": True}, None]):
        run = {"dataset": "d", "model": "voxelmorph", "run": f"r{i}", "seed": 0, "method": "ofg", "steps": 1}
        folder = Layout(tmp_path).run(RunKey("d", "voxelmorph", f"r{i}", 0)).path
        folder.mkdir(parents=True)
        (folder / "summary.json").write_text(json.dumps({"arithmetic": record} if record else {}))
        runs.append(run)
    records = load_arithmetic(tmp_path, runs)
    assert records == [fast, {**fast, "fused_refinement": True}, None]
    text = arithmetic_caption(records)
    assert "bfloat16 autocast, channels-last on cpu, Some CPU (AVX512, bf16 native) (2 of 3)" in text
    assert "not recorded (1 of 3)" in text and "refinement fused." in text
    single = arithmetic_caption([{**fast, "network": "float32", "channels_last": False, "bf16_native": False}])
    assert "network float32 (convolutions: onednn) on cpu, Some CPU (AVX512, bf16 not native)." in single
    assert arithmetic_caption([]) == ""
