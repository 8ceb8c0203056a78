"""ofg.robustness and its rules: the settings of config/robustness.yaml, reuse of the default's runs, the
refusal of unmeasured epochs, and dry runs of the `robustness` target (the table: test_robustness_table.py)."""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path

import pytest
import yaml

from ofg import plan as ofg_plan
from ofg import robustness
from ofg.layout import Layout
from test_workflow import REPO, job_counts, snakemake

OVERLAY = REPO / "config" / "robustness.yaml"
#: what a later session fills in from the lr-1e-4 probes (any numbers do for the plan)
EPOCHS = {"robustness": {"variants": {"lr-1e-4": {"epochs": {"embedded-brain": 200, "embedded-ct": 40}}}}}
TRAINED = ("lr-1e-4", "paper-size", "cohort-seed")
DATASETS = ("embedded-brain", "embedded-ct")


def merged_config(results: Path, *overlays: dict) -> dict:
    """config/config.yaml, then config/robustness.yaml and ``overlays`` merged in as Snakemake merges config
    files, validated (defaults filled in) by the same validator, rooted at ``results``."""
    from snakemake.utils import update_config, validate

    config = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
    for overlay in (yaml.safe_load(OVERLAY.read_text()), *overlays):
        update_config(config, overlay)
    config["results"] = str(results)
    validate(config, str(REPO / "config" / "schema.yaml"))
    return config


def by_name(config: dict) -> dict[str, robustness.Setting]:
    return {setting.name: setting for setting in robustness.settings(config)}


# ---------------------------------------------------------------- the settings


def test_the_overlay_declares_the_baseline_and_four_variants(tmp_path):
    settings = by_name(merged_config(tmp_path, EPOCHS))
    assert list(settings) == ["baseline", *TRAINED, "network-lkunet"]
    assert {name for name, s in settings.items() if s.reused} == {"baseline", "network-lkunet"}
    assert settings["network-lkunet"].model == "lkunet"
    for setting in settings.values():  # the main comparison alone: both cohorts x 2 methods x seeds 0-2
        assert setting.datasets == list(DATASETS)
        assert sorted({(r.id, r.seed) for r in setting.runs()}) == sorted(
            (run_id, seed) for run_id in ("ofg-k10", "unsupervised") for seed in (0, 1, 2))
        assert len(setting.runs()) == 12


def test_each_variant_reverts_its_departure_in_its_own_tree(tmp_path):
    settings = by_name(merged_config(tmp_path, EPOCHS))
    resolved = {name: {(r.dataset, r.method): ofg_plan.run_config(s.config, r) for r in s.runs()}
                for name, s in settings.items()}
    for (dataset, method), run_config in resolved["baseline"].items():
        assert (run_config["lr"], run_config["model"]["size"]) == (1.0e-3, "small")
        assert run_config["epochs"] == {"embedded-brain": 41, "embedded-ct": 9}[dataset]
        lr = resolved["lr-1e-4"][(dataset, method)]
        assert (lr["lr"], lr["epochs"]) == (1.0e-4, EPOCHS["robustness"]["variants"]["lr-1e-4"]["epochs"][dataset])
        size = resolved["paper-size"][(dataset, method)]
        assert size["model"]["size"] == "paper" and size["epochs"] == run_config["epochs"]
    for dataset in DATASETS:
        assert settings["cohort-seed"].config["datasets"][dataset]["prepare"]["seed"] == 2
        assert settings["baseline"].config["datasets"][dataset]["prepare"]["seed"] != 2
    roots = {name: Path(s.config["results"]) for name, s in settings.items()}
    assert roots["baseline"] == roots["network-lkunet"] == tmp_path
    assert all(roots[name] == Layout(tmp_path).robustness(name).root for name in TRAINED)
    # the cohorts: the default's, except where the variant prepares them otherwise
    cohorts = {name: ofg_plan.data_root(s.config, "embedded-ct") for name, s in settings.items()}
    assert cohorts["lr-1e-4"] == cohorts["paper-size"] == cohorts["baseline"] == Layout(tmp_path).data("embedded-ct")
    assert cohorts["cohort-seed"] == Layout(tmp_path).robustness("cohort-seed").data("embedded-ct")


def test_unmeasured_epochs_refuse_to_plan_and_name_the_probe(tmp_path):
    unmeasured = {"robustness": {"variants": {"lr-1e-4": {"epochs": {"embedded-brain": None, "embedded-ct": None}}}}}
    with pytest.raises(ValueError) as error:
        robustness.settings(merged_config(tmp_path, unmeasured))
    message = str(error.value)
    assert "robustness.variants.lr-1e-4.epochs: not measured yet for embedded-brain, embedded-ct" in message
    assert "ofg-train config/curves/$r-lr1e-4.yaml" in message and "python -m ofg.budget curves" in message
    off = merged_config(tmp_path, unmeasured, {"robustness": {"variants": {"lr-1e-4": {"enabled": False}}}})
    assert "lr-1e-4" not in by_name(off) and "paper-size" in by_name(off)


def test_one_measured_dataset_plans_that_dataset_alone(tmp_path):
    half = {"robustness": {"variants": {"lr-1e-4": {"epochs": {"embedded-brain": 249, "embedded-ct": None}}}}}
    with pytest.raises(ValueError, match="not measured yet for embedded-ct[.]"):
        robustness.settings(merged_config(tmp_path, half))
    brain = by_name(merged_config(tmp_path, half, {"robustness": {"datasets": ["embedded-brain"]}}))["lr-1e-4"]
    assert brain.datasets == ["embedded-brain"]
    assert {(r.dataset, ofg_plan.run_config(brain.config, r)["epochs"]) for r in brain.runs()} == {
        ("embedded-brain", 249)}


def test_a_variant_whose_runs_are_the_default_s_is_reused_not_retrained(tmp_path):
    same = {"robustness": {"variants": {"same-lr": {"reverts": "nothing", "changes": {"training": {"lr": 1.0e-3}}},
                                        "seed-0": {"reverts": "nothing", "changes": {
                                            "datasets": {"embedded-brain": {"prepare": {"seed": 0}}}}}}}}
    settings = by_name(merged_config(tmp_path, EPOCHS, same))
    assert settings["same-lr"].reused and settings["same-lr"].config["results"] == str(tmp_path)
    assert settings["seed-0"].reused  # the brain's prepare seed is 0 already: the same cohort
    assert "same-lr" not in robustness.trained(merged_config(tmp_path, EPOCHS, same))


def test_the_run_configs_of_the_probes_differ_from_the_default_s_in_lr_and_length_only():
    from ofg.config import RunConfig

    for name in ("brain-unsupervised", "brain-ofg", "ct-unsupervised", "ct-ofg"):
        default = yaml.safe_load((REPO / "config" / "curves" / f"{name}.yaml").read_text())
        probe = yaml.safe_load((REPO / "config" / "curves" / f"{name}-lr1e-4.yaml").read_text())
        RunConfig.from_dict(probe)
        assert (default["lr"], probe["lr"]) == (1.0e-3, 1.0e-4)
        assert probe["epochs"] >= 10 * {"brain": 41, "ct": 9}[name.split("-")[0]]  # ten times the lr-1e-3 plateau
        assert probe["ofg"] == {**default["ofg"], "fused": True}
        unchanged = {k: v for k, v in probe.items() if k not in ("lr", "epochs", "ofg")}
        assert unchanged == {k: v for k, v in default.items() if k not in ("lr", "epochs", "ofg")}


@pytest.mark.parametrize("section, message", [
    ({"variants": {"x": {"reverts": "r", "changes": {"results": "elsewhere"}}}}, "may not change results"),
    ({"datasets": ["embedded-brain"], "model": "transmorph"}, "does not train (datasets.embedded-brain.models)"),
])
def test_a_wrong_section_is_named(tmp_path, section, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        robustness.settings(merged_config(tmp_path, EPOCHS, {"robustness": section}))


def test_no_variant_no_setting(tmp_path):
    from snakemake.utils import validate

    config = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
    validate(config, str(REPO / "config" / "schema.yaml"))
    assert robustness.settings(config) == [] and config["robustness"]["variants"] == {}


# ---------------------------------------------------------------- dry runs


def dry_run(results: Path, *args: str, overlays: tuple[Path, ...] = (OVERLAY,)) -> str:
    configfiles = ("--configfile", str(REPO / "config" / "config.yaml"), *map(str, overlays)) if overlays else ()
    result = snakemake(*args, "-n", "-p", "--cores", "4", *configfiles, "--config", f"results={results}")
    assert result.returncode == 0, (result.stdout + result.stderr)[-3000:]
    return result.stdout


def jobs(stdout: str) -> list[tuple[str, str, str]]:
    """(rule, first output, shell command) of every job of a dry run's printout (``-p``) that has both."""
    found = []
    for block in re.split(r"^rule ", stdout, flags=re.M)[1:]:
        output = re.search(r"^\s+output: ([^,\n]+)", block, re.M)
        command = re.search(r"^Shell command: (.*)$", block, re.M)
        if output and command:
            found.append((block.split(":", 1)[0], output.group(1), command.group(1)))
    return found


@pytest.fixture(scope="module")
def epochs_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("overlay") / "epochs.yaml"
    path.write_text(yaml.safe_dump(EPOCHS))
    return path


def test_dry_run_trains_each_variant_seed_once_and_reuses_the_default_s_runs(tmp_path, epochs_file):
    results = tmp_path / "results"
    out = dry_run(results, "robustness", overlays=(OVERLAY, epochs_file))
    counts = job_counts(out)
    # 3 variants x 2 cohorts x (unsupervised, OFG) x 3 seeds; only cohort-seed prepares cohorts of its own
    assert counts["robustness_train"] == counts["robustness_evaluate"] == 3 * 2 * 2 * 3
    assert counts["robustness_prepare_data"] == 2 and counts["robustness_report"] == counts["robustness"] == 1
    # the baseline (VoxelMorph) and network-lkunet are the default's main runs, planned by the default's rules
    assert counts["train"] == counts["evaluate"] == 2 * 2 * 2 * 3 and counts["prepare_data"] == 2
    summaries = re.findall(r"output: (\S+/summary\.json)", out)
    assert len(summaries) == len(set(summaries)) == 36 + 24
    variant_runs = Counter()
    for path in summaries:
        parts = Path(path).relative_to(results).parts
        if parts[0] == "robustness":
            variant, (dataset, model, run, seed) = parts[1], parts[3:7]
            assert parts[2] == "runs" and model == "voxelmorph"
            variant_runs[(variant, dataset, run, seed)] += 1
        else:
            assert parts[0] == "runs" and parts[2] in ("voxelmorph", "lkunet") and parts[3] in ("unsupervised", "ofg-k10")
    assert set(variant_runs) == {(v, d, r, f"seed-{s}") for v in TRAINED for d in DATASETS
                                 for r in ("unsupervised", "ofg-k10") for s in (0, 1, 2)}
    assert set(variant_runs.values()) == {1}
    assert '"lr": 0.0001' in out and '"size": "paper"' in out
    assert out.count('"options": {"preset": "cpu", "seed": 2}') == 2  # cohort-seed prepares its two cohorts
    assert "not configured" not in out and "robustness.md" in out


def test_the_default_s_jobs_in_the_robustness_plan_are_the_default_run_s(tmp_path, epochs_file):
    """So a finished default run is reused as it is (no changed parameters, nothing re-run), and the overlay
    adds nothing to the default target."""
    results = tmp_path / "results"
    default_out = dry_run(results, overlays=())
    default = {(rule, output): command for rule, output, command in jobs(default_out)}
    merged = dry_run(results, overlays=(OVERLAY, epochs_file))
    assert jobs(merged) and sorted(jobs(merged)) == sorted(jobs(default_out))
    assert job_counts(merged) == job_counts(default_out) and sum(job_counts(merged).values()) == 90
    target = jobs(dry_run(results, "robustness", overlays=(OVERLAY, epochs_file)))
    shared = [(rule, output, command) for rule, output, command in target if not rule.startswith("robustness")]
    assert len(shared) == 24 + 24 + 2
    assert all(default[(rule, output)] == command for rule, output, command in shared)


def test_dry_run_refuses_unmeasured_epochs_and_an_unconfigured_target(tmp_path):
    unmeasured = tmp_path / "unmeasured.yaml"
    unmeasured.write_text("robustness: {variants: {lr-1e-4: {epochs: {embedded-brain: null, embedded-ct: null}}}}\n")
    result = snakemake("robustness", "-n", "--cores", "4", "--configfile", str(REPO / "config" / "config.yaml"),
                       str(OVERLAY), str(unmeasured), "--config", f"results={tmp_path}")
    text = result.stdout + result.stderr
    assert result.returncode != 0 and "Invalid robustness config: config robustness.variants.lr-1e-4.epochs" in text
    assert "ofg-train config/curves/$r-lr1e-4.yaml" in text
    result = snakemake("robustness", "-n", "--cores", "4", "--config", f"results={tmp_path}")
    assert result.returncode != 0 and "the robustness experiment is not configured" in result.stdout + result.stderr
