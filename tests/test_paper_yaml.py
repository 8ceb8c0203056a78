"""config/paper.yaml, the reference protocol: every cell builds at its paper size, and every loader option
and protocol choice it names exists in the code (CPU, construction only, fixtures for the loaders)."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from ofg.data import open_dataset
from ofg.data.ixi import TEST_SUBSETS
from ofg.metrics import DICE_RULES
from ofg.models import build_model

REPO = Path(__file__).resolve().parents[1]
PAPER = yaml.safe_load((REPO / "config" / "paper.yaml").read_text())
SCHEMA = yaml.safe_load((REPO / "config" / "schema.yaml").read_text())
CELLS = [(name, model) for name, entry in PAPER["datasets"].items() for model in entry["models"]]


@pytest.mark.parametrize("dataset, model", CELLS)
def test_every_cell_builds_at_its_paper_size(dataset, model):
    entry = PAPER["datasets"][dataset]
    options = entry.get("model_options", {}).get(model, {})
    net = build_model(model, tuple(entry["image_size"]), size=PAPER["model_size"], **options)
    assert net.img_size == tuple(entry["image_size"])
    if model == "transmorph":
        assert net.window == tuple(options["window"])


def test_transmorph_windows_are_the_reference_ones():
    windows = {name: tuple(entry["model_options"]["transmorph"]["window"]) for name, entry in PAPER["datasets"].items()}
    assert windows == {"ixi": (5, 6, 7), "oasis": (5, 6, 7), "lpba": (5, 6, 5), "abdomen": (5, 6, 7)}


def test_loader_options_open_the_fixtures(tmp_path):
    from ofg.data.fixtures import make_paper_roots

    roots = make_paper_roots(tmp_path / "data")
    datasets = {name: open_dataset(name, roots[name], image_size=None, **entry.get("options", {}))
                for name, entry in PAPER["datasets"].items()}
    assert datasets["oasis"].train_pairing == "reference" and "reference epochs" in datasets["oasis"].notes["train"]
    assert "test_subset 'reference20'" in datasets["ixi"].notes["test"]
    assert not datasets["lpba"].augment_flips and datasets["ixi"].augment_flips
    assert datasets["lpba"].pairs("train")[0].moving.max() > 1.0  # raw intensities (fixture spans [0, 200])


def test_protocol_choices_name_what_the_code_implements():
    from ofg.losses import lku_smoothness_loss  # noqa: F401  (the lku_smooth regulariser)

    entry = SCHEMA["properties"]["datasets"]["additionalProperties"]["properties"]
    assert entry["dice_rule"]["enum"] == list(DICE_RULES)
    assert PAPER["datasets"]["abdomen"]["dice_rule"] == "both"
    assert PAPER["datasets"]["ixi"]["options"]["test_subset"] in TEST_SUBSETS
    overrides = SCHEMA["definitions"]["run_overrides"]["properties"]
    assert overrides["loss"]["properties"]["image"]["enum"] == ["ncc", "mse"]
    assert overrides["loss"]["properties"]["regularizer"]["enum"] == ["grad_l2", "lku_smooth"]
    assert PAPER["model_run_overrides"]["lkunet"] == {
        "loss": {"regularizer": "lku_smooth", "diffusion_weight": 5.0}, "ofg": {"reg_weight": 5.0}}
    assert PAPER["evaluation"]["label_mode"] == "nearest"
