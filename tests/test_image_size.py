"""One image size per dataset: the config key ``datasets.<d>.image_size`` reaches the loader of every stage
(training and, through the run config, evaluation; refinement; baselines) as its ``image_size`` option."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import yaml
from snakemake.utils import validate

from ofg import plan, stages
from ofg.data import open_dataset
from ofg.data.cohort import check_manifest_size
from ofg.data.fixtures import make_paper_roots
from ofg.io import DataError

REPO = Path(__file__).resolve().parents[1]
SCHEMA = str(REPO / "config" / "schema.yaml")


def load(name: str) -> dict:
    config = yaml.safe_load((REPO / "config" / name).read_text())
    validate(config, SCHEMA)
    return config


@pytest.fixture(scope="module")
def paper(tmp_path_factory) -> dict:
    """config/paper.yaml (schema defaults filled in) on the four fixture roots (16^3 volumes)."""
    config = load("paper.yaml")
    for name, root in make_paper_roots(tmp_path_factory.mktemp("paper") / "data").items():
        config["datasets"][name]["root"] = str(root)
    return config


def stage_options(config: dict, dataset: str) -> dict[str, dict]:
    """The loader options each stage of ``dataset`` opens it with."""
    config = {**config, "refinement": {**config["refinement"], "datasets": [dataset]},
              "baselines": {**config["baselines"], "datasets": [dataset]}}
    run = plan.Run(dataset, config["datasets"][dataset]["models"][0], "unsupervised")
    return {"train/evaluate": plan.run_config(config, run)["dataset"]["options"],
            "refinement": stages.refinement_parameters(config, dataset)["options"],
            "baselines": stages.baseline_parameters(config, dataset)["options"]}


def test_image_size_reaches_every_stage_as_the_loader_option(paper):
    for name, entry in paper["datasets"].items():
        for stage, options in stage_options(paper, name).items():
            assert options == {**entry["options"], "image_size": entry["image_size"]}, (name, stage)
    run = plan.Run("ixi", "voxelmorph", "unsupervised")
    assert "image_size" not in stages.train_parameters(paper, run)  # no second, training-only check


def test_paper_sizes_stop_every_stage_on_fixture_files_and_null_or_the_fixture_size_opens_them(paper):
    config = copy.deepcopy(paper)
    for name in config["datasets"]:
        for stage, options in stage_options(config, name).items():
            dataset = open_dataset(name, config["datasets"][name]["root"], **options)
            with pytest.raises(DataError, match=r"expected \(\d+, \d+, \d+\), found \(16, 16, 16\)"):
                dataset.pairs("test")[0]
        for size in (None, [16, 16, 16]):
            config["datasets"][name]["image_size"] = size
            validate(config, SCHEMA)
            for stage, options in stage_options(config, name).items():
                dataset = open_dataset(name, config["datasets"][name]["root"], **options)
                assert dataset.image_size == (16, 16, 16) and dataset.pairs("test")[0].moving.shape == (16, 16, 16)


def test_absent_image_size_leaves_the_default_configs_options_as_they_were():
    for name in ("config.yaml", "tiny.yaml"):
        config = load(name)
        for dataset, entry in config["datasets"].items():
            assert "image_size" not in entry
            assert all(options == entry["options"] for options in stage_options(config, dataset).values())


def test_options_image_size_is_a_config_error_naming_both_keys(paper):
    config = copy.deepcopy(paper)
    config["datasets"]["lpba"]["options"] = {"image_size": [16, 16, 16]}
    with pytest.raises(ValueError, match=r"datasets\.lpba\.options\.image_size: .* datasets\.lpba\.image_size"):
        plan.check_config(config)
    with pytest.raises(ValueError, match=r"datasets\.lpba\.options\.image_size"):
        stages.refinement_parameters({**config, "refinement": {**config["refinement"], "datasets": ["lpba"]}}, "lpba")


def test_embedded_image_size_is_checked_against_the_manifest(tmp_path):
    manifest = tmp_path / "manifest.json"
    check_manifest_size(manifest, (32, 32, 32), None)
    check_manifest_size(manifest, (32, 32, 32), [32, 32, 32])
    with pytest.raises(DataError, match=r"manifest\.json: the cohort's images are \(32, 32, 32\).*\(48, 64, 48\)"):
        check_manifest_size(manifest, (32, 32, 32), [48, 64, 48])
    with pytest.raises(ValueError, match="embedded cohort must be None"):
        check_manifest_size(manifest, (32, 32, 32), "paper")
