"""Tests of ofg.config: defaults, YAML round trip, unknown keys, validation, resolution."""

from __future__ import annotations

import pytest
import yaml

from ofg.config import RunConfig, coerce, resolve
from ofg.io import DataError
from ofg.resume import differing_keys

WORKFLOW_YAML = """
dataset: {name: embedded-brain, root: data/embedded-brain, options: {}}
model: {name: voxelmorph, size: small}
method: ofg
ofg: {steps: 10, lr: 0.1, reg_weight: 1.0, window: 9}
loss: {ncc_weight: 1.0, mse_weight: 1.0, diffusion_weight: null}
epochs: 500
iterations_per_epoch: null
val_pairs: null
val_label_mode: onehot
val_dice_rule: either
lr: 1.0e-4
seed: 0
device: auto
bidirectional: null
augment_flips: null
teacher: null
compile: false
amp: false
channels_last: false
num_workers: 0
guidance_gap: true
"""


def test_defaults_are_the_reference_protocol():
    config = RunConfig()
    assert config.method == "ofg" and config.epochs == 500 and config.lr == 1e-4
    assert (config.ofg.steps, config.ofg.lr, config.ofg.reg_weight, config.ofg.window) == (10, 0.1, 1.0, 9)
    assert config.diffusion_weight == 0.02
    assert RunConfig.from_dict({"method": "unsupervised"}).diffusion_weight == 1.0
    assert RunConfig.from_dict({"method": "unsupervised", "loss": {"diffusion_weight": 0.5}}).diffusion_weight == 0.5


def test_workflow_yaml_loads_and_round_trips(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text(WORKFLOW_YAML)
    config = RunConfig.load(path)
    assert config == RunConfig()  # the workflow's file spells out exactly the defaults
    config.model.overrides = {"encoder": [8, 8, 8, 8]}
    config.save(tmp_path / "out.yaml")
    again = RunConfig.load(tmp_path / "out.yaml")
    assert again == config
    assert set(yaml.safe_load((tmp_path / "out.yaml").read_text())) == set(yaml.safe_load(WORKFLOW_YAML))


def test_unknown_keys_are_listed_with_the_valid_ones():
    with pytest.raises(ValueError, match=r"unknown config key\(s\) epoch\b.*valid keys.*epochs"):
        RunConfig.from_dict({"epoch": 3})
    with pytest.raises(ValueError, match=r"ofg\.stepz.*valid keys under ofg: steps, lr, reg_weight, window"):
        RunConfig.from_dict({"ofg": {"stepz": 3}})


@pytest.mark.parametrize("patch, key", [
    ({"method": "magic"}, "method"),
    ({"epochs": 0}, "epochs"),
    ({"epochs": 2.5}, "epochs"),
    ({"ofg": {"window": 4}}, "ofg.window"),
    ({"ofg": {"lr": -1}}, "ofg.lr"),
    ({"model": {"size": "huge"}}, "model.size"),
    ({"device": "gpu"}, "device"),
    ({"iterations_per_epoch": 0}, "iterations_per_epoch"),
    ({"bidirectional": "yes"}, "bidirectional"),
    ({"guidance_gap": "yes"}, "guidance_gap"),
    ({"loss": {"diffusion_weight": "lots"}}, "loss.diffusion_weight"),
    ({"loss": {"image": "lncc"}}, "loss.image"),
    ({"val_label_mode": "linear"}, "val_label_mode"),
    ({"val_dice_rule": "all"}, "val_dice_rule"),
    ({"loss": {"regularizer": "bending"}}, "loss.regularizer"),
    ({"ofg": {"image": "mse"}}, "ofg.image"),
    ({"loss": {"regularizer": "lku_smooth"}, "ofg": {"regularizer": "grad_l2"}}, "ofg.regularizer"),
])
def test_bad_values_name_the_key(patch, key):
    with pytest.raises(ValueError, match=f"config key {key}"):
        RunConfig.from_dict(patch)


def test_yaml_exponent_without_dot_is_accepted(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("lr: 1e-4\nofg: {lr: 5e-2}\n")  # YAML 1.1 reads these as strings
    config = RunConfig.load(path)
    assert config.lr == 1e-4 and config.ofg.lr == 0.05


def test_self_training_needs_a_teacher():
    with pytest.raises(ValueError, match="teacher"):
        RunConfig.from_dict({"method": "self_training"})
    assert RunConfig.from_dict({"method": "opt_self_training", "teacher": "t.pt"}).teacher == "t.pt"


def test_bad_files_raise_data_error_naming_them(tmp_path):
    with pytest.raises(DataError, match="missing.yaml"):
        RunConfig.load(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("- a list\n")
    with pytest.raises(DataError, match="bad.yaml.*mapping"):
        RunConfig.load(bad)
    unknown = tmp_path / "unknown.yaml"
    unknown.write_text("epochz: 3\n")
    with pytest.raises(DataError, match="unknown.yaml.*epochz"):
        RunConfig.load(unknown)


class _Data:
    bidirectional = True
    augment_flips = False


def test_resolve_fills_nulls_from_method_and_dataset():
    config = RunConfig.from_dict({"method": "unsupervised", "augment_flips": True})
    resolved = resolve(config, _Data())
    assert resolved.loss.diffusion_weight == 1.0
    assert resolved.bidirectional is True and resolved.augment_flips is True  # explicit value wins
    assert config.loss.diffusion_weight is None  # the input is not modified


def test_differing_keys_and_coerce(tmp_path):
    a = RunConfig()
    b = RunConfig.from_dict({"epochs": 3, "ofg": {"steps": 5}, "dataset": {"options": {"n": 1}}})
    assert differing_keys(a, b) == ["dataset.options.n", "epochs", "ofg.steps"]
    assert differing_keys(a, b, ignore=("epochs",)) == ["dataset.options.n", "ofg.steps"]
    b.save(tmp_path / "b.yaml")
    assert coerce(tmp_path / "b.yaml") == b and coerce(b.to_dict()) == b and coerce(b) is not b
    with pytest.raises(ValueError, match="config"):
        coerce(42)


def test_image_term_and_regularizer_default_to_ncc_and_grad_l2_and_reach_the_energy(tmp_path):
    default = RunConfig()
    assert (default.loss.image, default.loss.regularizer) == ("ncc", "grad_l2")
    assert (default.ofg.image, default.ofg.regularizer) == ("ncc", "grad_l2")
    config = RunConfig.from_dict({"loss": {"image": "mse", "regularizer": "lku_smooth", "diffusion_weight": 5.0},
                                  "ofg": {"reg_weight": 5.0}})
    # the OFG energy uses the network loss's terms: the config copies them into the ofg section
    assert (config.ofg.image, config.ofg.regularizer) == ("mse", "lku_smooth")
    assert config.ofg.kwargs()["image"] == "mse" and config.diffusion_weight == 5.0
    config.save(tmp_path / "c.yaml")
    assert RunConfig.load(tmp_path / "c.yaml") == config  # the saved ofg.image equals loss.image: accepted
    assert RunConfig.from_dict({"loss": {"image": "mse"}, "ofg": {"image": "mse"}}).ofg.image == "mse"
    # a run folder written before these keys existed reads as the defaults: nothing becomes stale
    old = RunConfig().to_dict()
    old["loss"] = {k: v for k, v in old["loss"].items() if k not in ("image", "regularizer")}
    old["ofg"] = {k: v for k, v in old["ofg"].items() if k not in ("image", "regularizer")}
    assert differing_keys(RunConfig.from_dict(old), RunConfig()) == []
