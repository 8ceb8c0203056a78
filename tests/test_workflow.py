"""The Snakemake workflow: dry runs of every config, lint, config validation, the plan (profiles: test_profiles.py)."""

from __future__ import annotations

import itertools
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from ofg import plan as ofg_plan
from ofg import stages as ofg_stages
from ofg.layout import Layout, RunKey

REPO = Path(__file__).resolve().parents[1]
SNAKEMAKE = [sys.executable, "-m", "snakemake"]


def snakemake(*args: str, cwd: Path = REPO, env: dict | None = None, timeout: int = 300) -> subprocess.CompletedProcess:
    """Run snakemake with this interpreter's scripts (papermill) first on PATH, as in an activated venv."""
    env = dict(os.environ if env is None else env)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    return subprocess.run([*SNAKEMAKE, "--snakefile", str(REPO / "Snakefile"), *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=timeout)


def load_config(name: str, **changes) -> dict:
    """A config file of config/, with the schema's defaults filled in by the same validator."""
    from snakemake.utils import validate

    config = yaml.safe_load((REPO / "config" / name).read_text())
    config.update(changes)
    validate(config, str(REPO / "config" / "schema.yaml"))
    return config


def job_counts(stdout: str) -> dict[str, int]:
    table = stdout.split("Job stats:")[1]
    counts = {m.group(1): int(m.group(2)) for m in re.finditer(r"^(\w+)\s+(\d+)$", table, re.M)}
    counts.pop("total", None)
    return counts


def planned_runs(stdout: str) -> set[str]:
    return set(re.findall(r"output: (\S+/runs/\S+/summary\.json)", stdout))


# ---------------------------------------------------------------- the plan


def test_run_ids_and_look_up_by_key():
    assert ofg_plan.ofg_run_id(5) == "ofg-k5" and ofg_plan.ofg_run_id(0) == "unsupervised"
    assert ofg_plan.ofg_run("d", "m", 0) == ofg_plan.Run("d", "m", "unsupervised")
    config = load_config("config.yaml")
    run = ofg_plan.find_run(config, ("embedded-brain", "voxelmorph", "ofg-k5", "0"))
    assert (run.method, run.steps, run.seed) == ("ofg", 5, 0)
    with pytest.raises(KeyError, match="ofg-5"):
        ofg_plan.find_run(config, ("embedded-brain", "voxelmorph", "ofg-5", "0"))


def test_seed_axis_matches_seeds_in_every_comparison():
    config = load_config("config.yaml")
    assert config["training"]["seeds"] == [0, 1, 2] and not config["training"].get("model_seeds")
    for dataset in ("embedded-brain", "embedded-ct"):  # the default's two networks on both cohorts
        assert config["datasets"][dataset]["models"] == ["voxelmorph", "lkunet"]
    default = ofg_plan.training_runs(config)
    for dataset, model in itertools.product(("embedded-brain", "embedded-ct"), ("voxelmorph", "lkunet")):
        for run_id in ("unsupervised", "ofg-k10"):  # the main comparison: both networks, the same 3 seeds
            assert {r.seed for r in default if (r.dataset, r.model, r.id) == (dataset, model, run_id)} == {0, 1, 2}
    assert len(default) == 39
    config["training"]["model_seeds"] = {"lkunet": [0]}  # a secondary model on one seed
    runs = ofg_plan.training_runs(config)
    main = {(r.dataset, r.model, r.id): set() for r in runs}
    for r in runs:
        main[(r.dataset, r.model, r.id)].add(r.seed)
    for (dataset, model, run_id), seeds in main.items():  # self-training and every ablation k: every seed
        assert seeds == ({0} if model == "lkunet" else {0, 1, 2}), (dataset, model, run_id)
    assert {r.id for r in runs if r.dataset == "embedded-brain" and r.model == "voxelmorph"} == {
        "unsupervised", "ofg-k1", "ofg-k5", "ofg-k10", "ofg-k20", "self_training", "opt_self_training"}
    for dataset in ("embedded-brain", "embedded-ct"):  # the main comparison: VoxelMorph, 3 seeds, both cohorts
        assert main[(dataset, "voxelmorph", "unsupervised")] == main[(dataset, "voxelmorph", "ofg-k10")] == {0, 1, 2}
    student = ofg_plan.Run("embedded-brain", "voxelmorph", "self_training", seed=2)
    assert ofg_plan.run_config(config, student)["teacher"].endswith("unsupervised/seed-2/checkpoints/best.pt")
    assert ofg_plan.run_config(config, ofg_plan.Run("embedded-ct", "voxelmorph", "ofg", 10, 2))["seed"] == 2
    # without model_seeds every model runs every seed
    del config["training"]["model_seeds"]
    assert {r.seed for r in ofg_plan.training_runs(config) if r.model == "lkunet"} == {0, 1, 2}


def test_a_dataset_may_have_its_own_epochs():
    config = load_config("config.yaml")
    config["datasets"]["embedded-ct"]["epochs"] = 3
    config["datasets"]["embedded-brain"].pop("epochs", None)
    assert ofg_plan.run_config(config, ofg_plan.Run("embedded-ct", "voxelmorph", "unsupervised"))["epochs"] == 3
    brain = ofg_plan.run_config(config, ofg_plan.Run("embedded-brain", "voxelmorph", "unsupervised"))
    assert brain["epochs"] == config["training"]["epochs"]


def test_training_runs_reuse_main_runs_in_ablation_and_self_training():
    config = load_config("config.yaml")
    config["datasets"]["embedded-brain"]["models"] = ["voxelmorph", "lkunet"]
    runs = ofg_plan.training_runs(config)
    assert len(runs) == len(set(runs))
    brain_vm = {r.id for r in runs if (r.dataset, r.model) == ("embedded-brain", "voxelmorph")}
    # k=0 is the baseline and k=10 the main OFG run: 4 main/self-training runs + k in {1,5,20}
    assert brain_vm == {"unsupervised", "ofg-k10", "self_training", "opt_self_training",
                        "ofg-k1", "ofg-k5", "ofg-k20"}
    assert {r.id for r in runs if r.dataset == "embedded-ct"} == {"unsupervised", "ofg-k10"}
    assert {r.id for r in runs if r.model == "lkunet"} == {"unsupervised", "ofg-k10"}


def test_run_config_is_valid_and_self_training_uses_unsupervised_teacher():
    config = load_config("config.yaml")
    run = ofg_plan.Run("embedded-brain", "voxelmorph", "opt_self_training")
    rc = ofg_plan.run_config(config, run)
    assert rc["method"] == "opt_self_training"
    assert rc["teacher"] == str(Path("results/runs/embedded-brain/voxelmorph/unsupervised/seed-0/checkpoints/best.pt"))
    assert rc["dataset"] == {"name": "embedded-brain", "root": str(Path("results/data/embedded-brain")), "options": {}}
    ablation = ofg_plan.run_config(config, ofg_plan.Run("embedded-brain", "voxelmorph", "ofg", 5))
    assert ablation["ofg"]["steps"] == 5 and ablation["method"] == "ofg"
    assert ablation["epochs"] == config["training"]["epochs"]


def test_guidance_gap_switch_reaches_the_run_config_only_when_off():
    config = load_config("config.yaml")
    assert config["training"]["guidance_gap"] is True  # the schema's default
    run = ofg_plan.Run("embedded-brain", "voxelmorph", "unsupervised")
    assert "guidance_gap" not in ofg_plan.run_config(config, run)  # older trainings keep their parameters
    config["training"]["guidance_gap"] = False
    assert ofg_plan.run_config(config, run)["guidance_gap"] is False


def test_model_options_become_the_model_overrides_of_the_dataset_s_runs():
    config = load_config("config.yaml")
    config["datasets"]["embedded-brain"]["model_options"] = {"voxelmorph": {"encoder": [4, 8, 8, 8]}}
    rc = ofg_plan.run_config(config, ofg_plan.Run("embedded-brain", "voxelmorph", "unsupervised"))
    assert rc["model"]["overrides"] == {"encoder": [4, 8, 8, 8]}
    ct = ofg_plan.run_config(config, ofg_plan.Run("embedded-ct", "voxelmorph", "unsupervised"))
    assert ct["model"]["overrides"] == {}


def test_refinement_parameters_carry_the_window_and_label_mode():
    config = load_config("config.yaml")
    config["ofg"]["window"] = 5
    config["evaluation"]["label_mode"] = "nearest"
    params = ofg_stages.refinement_parameters(config, "embedded-brain")
    assert params["settings"]["window"] == 5 and params["label_mode"] == "nearest"
    assert params["settings"]["steps"] == config["refinement"]["steps"]


def test_run_overrides_replace_loss_and_ofg_keys_dataset_first_then_model():
    config = load_config("config.yaml")
    config["training"]["loss"]["ncc_weight"] = 3.0
    config["datasets"]["embedded-ct"]["run_overrides"] = {"loss": {"image": "mse", "diffusion_weight": 0.02},
                                                          "ofg": {"reg_weight": 0.02}}
    config["model_run_overrides"] = {"lkunet": {"loss": {"regularizer": "lku_smooth", "diffusion_weight": 5.0},
                                                "ofg": {"reg_weight": 5.0}}}
    config["datasets"]["embedded-ct"]["models"] = ["voxelmorph", "lkunet"]

    def sections(dataset, model, method="ofg"):
        run = ofg_plan.Run(dataset, model, method, 10 if method == "ofg" else None)
        rc = ofg_plan.run_config(config, run)
        return rc["loss"], rc["ofg"]

    loss, ofg = sections("embedded-ct", "voxelmorph")
    assert loss == {"ncc_weight": 3.0, "mse_weight": 1.0, "diffusion_weight": 0.02, "image": "mse"}
    assert ofg["reg_weight"] == 0.02 and ofg["steps"] == 10 and ofg["window"] == 9
    loss, ofg = sections("embedded-ct", "lkunet", "unsupervised")  # the model's keys win, the rest stays
    assert loss == {"ncc_weight": 3.0, "mse_weight": 1.0, "diffusion_weight": 5.0, "image": "mse",
                    "regularizer": "lku_smooth"}
    assert ofg["reg_weight"] == 5.0
    loss, ofg = sections("embedded-brain", "lkunet")
    assert loss["regularizer"] == "lku_smooth" and "image" not in loss and ofg["reg_weight"] == 5.0
    loss, ofg = sections("embedded-brain", "voxelmorph")
    assert loss == config["training"]["loss"] and ofg == {**config["ofg"], "steps": 10}
    assert config["training"]["loss"]["ncc_weight"] == 3.0 and "image" not in config["training"]["loss"]
    # the refinement experiment's energy is that of (dataset, its model)
    config["refinement"]["model"] = "lkunet"
    config["datasets"]["embedded-brain"]["models"] = ["voxelmorph", "lkunet"]
    settings = ofg_stages.refinement_parameters(config, "embedded-ct")["settings"]
    assert (settings["image"], settings["regularizer"]) == ("mse", "lku_smooth")
    assert settings["reg_weight"] == config["refinement"]["reg_weight"]  # the section's own weight


def test_default_configs_run_configs_are_unchanged_by_the_protocol_keys():
    for name in ("config.yaml", "tiny.yaml"):
        config = load_config(name)
        for run in ofg_plan.training_runs(config):
            rc = ofg_plan.run_config(config, run)
            assert rc["loss"] == config["training"]["loss"]
            assert {k: v for k, v in rc["ofg"].items() if k != "steps"} == \
                {k: v for k, v in config["ofg"].items() if k != "steps"}
        params = ofg_stages.refinement_parameters(config, config["refinement"]["datasets"][0])
        assert (params["settings"]["image"], params["settings"]["regularizer"]) == ("ncc", "grad_l2")


def test_dice_rule_reaches_evaluation_refinement_and_report():
    config = load_config("config.yaml")
    run = ofg_plan.Run("embedded-ct", "voxelmorph", "unsupervised")
    assert ofg_stages.evaluate_parameters(config, run)["dice_rule"] == "either"
    config["datasets"]["embedded-ct"]["dice_rule"] = "both"
    assert ofg_stages.evaluate_parameters(config, run)["dice_rule"] == "both"
    assert ofg_stages.refinement_parameters(config, "embedded-ct")["dice_rule"] == "both"
    # the per-epoch validation (which selects best.pt) scores Dice as the evaluation does
    config["evaluation"]["label_mode"] = "nearest"
    rc = ofg_plan.run_config(config, run)
    assert (rc["val_label_mode"], rc["val_dice_rule"]) == ("nearest", "both")
    brain = ofg_plan.run_config(config, ofg_plan.Run("embedded-brain", "voxelmorph", "unsupervised"))
    assert (brain["val_label_mode"], brain["val_dice_rule"]) == ("nearest", "either")
    assert ofg_stages.report_plan(config)["dice_rules"] == {"embedded-brain": "either", "embedded-ct": "both"}


def test_check_config_names_the_key():
    config = load_config("config.yaml")
    config["ablation"]["models"] = ["transmorph"]
    with pytest.raises(ValueError, match=r"ablation: model 'transmorph' is not trained on 'embedded-brain'"):
        ofg_plan.check_config(config)
    paper = load_config("paper.yaml")
    with pytest.raises(ValueError, match=r"datasets.ixi.root: set it"):
        ofg_plan.check_config(paper)


def test_report_outputs_name_every_table_and_figure_kind():
    from ofg.report import TABLES, output_paths

    plan = ofg_stages.report_plan(load_config("tiny.yaml"))
    names = {p.name for p in output_paths(plan)}
    for table in TABLES:
        assert {f"{table}.csv", f"{table}.md", f"{table}.tex"} <= names
    for kind in ("training_curves", "guidance_gap", "ablation", "refinement", "structure_dice", "qualitative"):
        assert any(n.startswith(kind) and n.endswith(".png") for n in names), kind
        assert any(n.startswith(kind) and n.endswith(".pdf") for n in names), kind


def test_every_table_and_figure_has_its_report_caption():
    """`snakemake --report` needs a caption file for each kind (workflow/rules/common.smk names them)."""
    from ofg.report.outputs import FIGURES, TABLES

    captions = REPO / "workflow" / "report"
    missing = [f"{category}_{kind}.rst" for category, kinds in (("table", TABLES), ("figure", FIGURES))
               for kind in kinds if not (captions / f"{category}_{kind}.rst").is_file()]
    assert missing == []


# ---------------------------------------------------------------- snakemake


def test_dry_run_default_config_plans_every_job_once(tmp_path):
    # an empty results folder, so that runs a user already finished under results/ do not count
    results = tmp_path / "results"
    result = snakemake("-n", "--cores", "4", "--config", f"results={results}")
    assert result.returncode == 0, result.stderr[-3000:]
    config = load_config("config.yaml")
    counts = job_counts(result.stdout)
    runs = ofg_plan.training_runs(config)
    # seeds x (brain VoxelMorph: 2 main, 2 self-training, k 1/5/20; brain LKU-Net: 2; CT: 2 per network)
    assert counts["train"] == len(runs) == 3 * (7 + 2 + 2 * 2)
    seeds = {(r.dataset, r.model, r.id): set() for r in runs}
    for r in runs:
        assert str(Layout(results).run(r.key).summary) in result.stdout
        seeds[(r.dataset, r.model, r.id)].add(r.seed)
    for dataset, model in itertools.product(("embedded-brain", "embedded-ct"), ("voxelmorph", "lkunet")):
        for run_id in ("unsupervised", "ofg-k10"):  # the dry run lists 3 seeds of each main run
            assert seeds[(dataset, model, run_id)] == {0, 1, 2}
            assert all(f"{dataset}/{model}/{run_id}/seed-{s}/" in result.stdout for s in range(3))
    assert counts["evaluate"] == len(runs)
    assert counts["prepare_data"] == 2 and counts["refinement"] == 2 and counts["tables_and_figures"] == 1
    assert counts["timing"] == 4  # each (dataset, network) of the main comparison
    assert counts["baselines"] == 2
    assert planned_runs(result.stdout) == {str(Layout(results).run(r.key).summary) for r in runs}
    # every job runs a notebook with papermill and keeps it as its log
    assert result.stdout.count("papermill --no-progress-bar -k python3") == sum(counts.values()) - 1


def test_dry_run_tiny_config_replaces_default_datasets(tmp_path):
    result = snakemake("-n", "--cores", "2", "--configfile", str(REPO / "config" / "tiny.yaml"),
                       "--config", f"results={tmp_path / 'results'}")
    assert result.returncode == 0, result.stderr[-3000:]
    counts = job_counts(result.stdout)
    assert counts["train"] == len(ofg_plan.training_runs(load_config("tiny.yaml"))) == 5
    assert "embedded-ct" not in result.stdout  # a --configfile replaces config/config.yaml, no merge


def test_dry_run_paper_config_with_fixture_roots(tmp_path):
    from ofg.data.fixtures import make_paper_roots

    roots = make_paper_roots(tmp_path / "data")
    config = yaml.safe_load((REPO / "config" / "paper.yaml").read_text())
    config["results"] = str(tmp_path / "results")
    for name, root in roots.items():
        config["datasets"][name]["root"] = str(root)
    path = tmp_path / "paper.yaml"
    path.write_text(yaml.safe_dump(config))
    result = snakemake("-n", "--cores", "4", "--configfile", str(path))
    assert result.returncode == 0, result.stderr[-3000:]
    counts = job_counts(result.stdout)
    # 4 datasets x 4 models x 2 methods, + self-training on LPBA, + ablation k in {1,2,5,20} on IXI
    assert counts["train"] == 32 + 2 + 4
    assert "prepare_data" not in counts  # real data is read in place
    assert '"epochs": 500' in result.stdout and '"size": "paper"' in result.stdout


FIXTURES_HEADING = "### Trying `paper.yaml` before you have the data"


def readme_commands(heading: str) -> list[list[str]]:
    """The commands of the first bash block after ``heading`` in README.md, split as a shell would."""
    block = (REPO / "README.md").read_text().split(heading)[1].split("```bash")[1].split("```")[0]
    return [shlex.split(line) for line in block.strip().splitlines()]


def paper_fixtures_config(results: Path) -> dict:
    """config/paper.yaml with config/paper-fixtures.yaml merged over it as Snakemake merges config files."""
    from snakemake.utils import update_config, validate

    config = yaml.safe_load((REPO / "config" / "paper.yaml").read_text())
    update_config(config, yaml.safe_load((REPO / "config" / "paper-fixtures.yaml").read_text()))
    config["results"] = str(results)
    validate(config, str(REPO / "config" / "schema.yaml"))
    return config


@pytest.mark.slow
def test_paper_config_runs_end_to_end_on_the_fixture_roots(tmp_path):
    """README's two commands (fixtures of the four layouts, then paper.yaml with paper-fixtures.yaml merged
    over it) run every rule of paper.yaml's plan to the report; every table holds rows of its datasets."""
    import time

    import pandas as pd

    from ofg.report import output_paths

    fixtures, workflow = readme_commands(FIXTURES_HEADING)
    assert fixtures[:4] == ["python", "-m", "ofg.data", "fixtures"] and workflow[0] == "snakemake"
    made = subprocess.run([sys.executable, *fixtures[1:]], cwd=tmp_path, capture_output=True, text=True)
    assert made.returncode == 0, made.stderr
    start = time.perf_counter()  # run from the repository, as the README says, in a scratch work folder
    result = snakemake(*workflow[1:], "--directory", str(tmp_path), timeout=600)
    elapsed = time.perf_counter() - start
    assert result.returncode == 0, result.stderr[-5000:]
    print(f"paper.yaml on fixtures: {elapsed:.0f} s")
    # no assertion on the time: CI machines differ; the subprocess timeout bounds a hang
    config = paper_fixtures_config(tmp_path / "results" / "paper-fixtures")
    datasets = ["ixi", "oasis", "lpba", "abdomen"]
    assert list(config["datasets"]) == datasets and config["baselines"]["datasets"] == datasets
    counts = job_counts(result.stdout + result.stderr)  # a real run logs its job stats to stderr
    assert counts["train"] == len(ofg_plan.training_runs(config)) == 4 * 2 + 2 + 1
    assert (counts["baselines"], counts["refinement"], counts["tables_and_figures"]) == (4, 1, 1)
    for output in output_paths(ofg_stages.report_plan(config)):
        assert output.is_file() and output.stat().st_size > 0, output
    tables = Path(config["results"]) / "tables"
    main = pd.read_csv(tables / "main_results.csv")
    methods = {"unsupervised", "OFG", "before registration", "instance optimisation", "SyN (ANTs)"}
    for dataset in datasets:
        rows = main[main["dataset"] == dataset]
        assert set(rows["method"]) == methods and (rows["n_pairs"] > 0).all(), dataset
        assert rows["dice_mean"].between(0, 1).all(), dataset
    assert set(pd.read_csv(tables / "self_training.csv")["dataset"]) == {"lpba"}
    assert set(pd.read_csv(tables / "step_ablation.csv")["dataset"]) == {"ixi"}
    assert set(pd.read_csv(tables / "training_cost.csv")["dataset"]) == set(datasets)


def test_paper_config_without_roots_fails_clearly():
    result = snakemake("-n", "--cores", "1", "--configfile", str(REPO / "config" / "paper.yaml"))
    assert result.returncode != 0
    assert "Invalid workflow config: config datasets.ixi.root: set it to the folder" in result.stdout + result.stderr


def test_schema_violation_names_the_key(tmp_path):
    config = yaml.safe_load((REPO / "config" / "tiny.yaml").read_text())
    config["training"]["epochs"] = 0
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(config))
    result = snakemake("-n", "--cores", "1", "--configfile", str(path))
    assert result.returncode != 0
    assert "Error validating config file" in result.stdout + result.stderr
    assert "0 is less than the minimum of 1" in result.stdout + result.stderr
    assert "epochs" in result.stdout + result.stderr

    config = yaml.safe_load((REPO / "config" / "tiny.yaml").read_text())
    config["training"]["epoch"] = 3  # a typo
    path.write_text(yaml.safe_dump(config))
    result = snakemake("-n", "--cores", "1", "--configfile", str(path))
    assert result.returncode != 0 and "'epoch' was unexpected" in result.stdout + result.stderr


def test_lint_is_clean():
    result = snakemake("--lint")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Congratulations, your workflow is in a good condition!" in result.stdout + result.stderr


@pytest.mark.slow
def test_tiny_workflow_end_to_end_resumes_and_is_idempotent(tmp_path):
    """The tiny config builds every table and figure and the HTML report; a second run does nothing;
    a training run whose summary is gone (as after a kill) is re-run and resumes from its checkpoint."""
    import time

    from ofg.report import output_paths

    config = yaml.safe_load((REPO / "config" / "tiny.yaml").read_text())
    config["results"] = "results"
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(config))
    start = time.perf_counter()
    result = snakemake("--cores", "2", "--configfile", str(path), "--directory", str(tmp_path), timeout=600)
    elapsed = time.perf_counter() - start
    assert result.returncode == 0, result.stderr[-5000:]
    print(f"tiny workflow: {elapsed:.0f} s")
    # no assertion on the time: CI machines differ; the subprocess timeout bounds a hang
    plan = ofg_stages.report_plan(load_config("tiny.yaml", results=str(tmp_path / "results")))
    for output in output_paths(plan):
        assert output.is_file() and output.stat().st_size > 0, output
    notebooks = list((tmp_path / "results" / "notebooks").rglob("*.ipynb"))
    assert len(notebooks) == 1 + 5 + 5 + 1 + 1 + 1 + 1  # prepare, train, evaluate, refinement, baselines, timing, report

    again = snakemake("-n", "--cores", "2", "--configfile", str(path), "--directory", str(tmp_path))
    assert again.returncode == 0 and "Nothing to be done" in again.stdout + again.stderr

    report = snakemake("--cores", "1", "--configfile", str(path), "--directory", str(tmp_path),
                       "--report", str(tmp_path / "report.html"))
    assert report.returncode == 0, report.stderr[-3000:]
    assert (tmp_path / "report.html").stat().st_size > 0

    layout, key = Layout(tmp_path / "results"), RunKey("embedded-brain", "voxelmorph", "ofg-k2", "0")
    run = layout.run(key).path
    last = (run / "checkpoints" / "last.pt").stat().st_mtime_ns
    (run / "summary.json").unlink()
    resumed = snakemake("--cores", "2", "--configfile", str(path), "--directory", str(tmp_path),
                        str(run.relative_to(tmp_path) / "summary.json"))
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert (run / "summary.json").is_file()
    log = layout.notebook("train", *key.parts())
    assert "restart: no" in log.read_text()
    # every epoch was already done: the trainer resumed from last.pt and trained nothing again
    assert "resuming" in (run / "train.log").read_text()
    assert (run / "checkpoints" / "last.pt").stat().st_mtime_ns == last


def test_readme_use_ofg_snippet_runs_and_trains():
    """The README's 'Use OFG in your own network' code runs as printed, and its loss moves the network."""
    import torch

    text = (REPO / "README.md").read_text()
    snippet = text.split("## Use OFG in your own network")[1].split("```python")[1].split("```")[0]

    class Net(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = torch.nn.Conv3d(2, 3, 3, padding=1)

        def forward(self, moving, fixed):
            return self.conv(torch.cat([moving, fixed], dim=1))

    torch.manual_seed(0)
    net = Net()
    before = [p.detach().clone() for p in net.parameters()]
    image = torch.rand(1, 1, 12, 12, 12)
    loader = [(image, torch.roll(image, 1, dims=2))]
    scope = {"net": net, "loader": loader}
    exec(compile(snippet, "README.md", "exec"), scope)
    assert scope["warped"].shape == image.shape
    assert any(not torch.equal(a, b) for a, b in zip(before, net.parameters()))


def test_use_threads_never_exceeds_the_cores_this_process_may_use(monkeypatch):
    import os

    import torch

    from ofg.runtime import ITK_THREADS, use_threads

    monkeypatch.delenv(ITK_THREADS, raising=False)  # restored after the test
    before = torch.get_num_threads()
    try:
        available = len(os.sched_getaffinity(0))
        assert use_threads(available + 8) == available == torch.get_num_threads()
        assert os.environ[ITK_THREADS] == str(available)
        assert use_threads(1) == 1 == torch.get_num_threads()
        assert os.environ[ITK_THREADS] == "1"
        assert use_threads(0) == 1
    finally:
        torch.set_num_threads(before)


def test_keeps_torch_threads_restores_the_count_after_a_call_and_an_error():
    import pytest
    import torch

    from ofg.runtime import keeps_torch_threads

    before = torch.get_num_threads()

    @keeps_torch_threads
    def change(fail: bool) -> int:
        torch.set_num_threads(before + 1)
        if fail:
            raise RuntimeError("boom")
        return torch.get_num_threads()

    try:
        assert change(False) == before + 1 and torch.get_num_threads() == before
        with pytest.raises(RuntimeError):
            change(True)
        assert torch.get_num_threads() == before
    finally:
        torch.set_num_threads(before)
