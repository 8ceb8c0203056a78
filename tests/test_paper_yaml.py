"""config/paper.yaml, the reference protocol: every cell builds at its paper size, resolves to the run
config of the reference protocol, and every loader option and protocol choice it names exists in the
code (CPU, construction only, fixtures for the loaders): a GPU-size dry run without a GPU."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import yaml
from snakemake.utils import validate

from ofg import plan, stages
from ofg.config import RunConfig, resolve
from ofg.data import abdomen, ixi, lpba, oasis, open_dataset
from ofg.data.fixtures import make_paper_roots
from ofg.data.ixi import TEST_SUBSETS
from ofg.data.pairing import REFERENCE_TRAIN_SUBJECTS
from ofg.losses import IMAGE_TERMS, REGULARIZERS
from ofg.metrics import DICE_RULES
from ofg.models import MODEL_NAMES
from ofg.train import build_network

REPO = Path(__file__).resolve().parents[1]
PAPER = yaml.safe_load((REPO / "config" / "paper.yaml").read_text())
SCHEMA = yaml.safe_load((REPO / "config" / "schema.yaml").read_text())
CELLS = [(name, model) for name, entry in PAPER["datasets"].items() for model in entry["models"]]

#: each dataset's image size in the paper, as its loader knows it (OASIS: the pkl release, or the NIfTI
#: release with axes [0, 2, 1])
PAPER_SIZES = {"ixi": ixi.PAPER_SIZE, "oasis": oasis.PKL_SIZE, "lpba": lpba.PAPER_SIZE, "abdomen": abdomen.PAPER_SIZE}
#: the protocol of each cell: image term, regulariser, regulariser weight of the unsupervised and of the
#: OFG network loss, weight of the OFG energy's regulariser
BRAIN = ("ncc", "grad_l2", 1.0, 0.02, 1.0)
LKU = ("lku_smooth", 5.0, 5.0, 5.0)
PROTOCOL = {
    **{(d, m): BRAIN for d in ("ixi", "oasis", "lpba") for m in ("voxelmorph", "transmorph", "vitvnet")},
    **{(d, "lkunet"): ("ncc", *LKU) for d in ("ixi", "oasis", "lpba")},
    **{("abdomen", m): ("mse", "grad_l2", 0.02, 0.02, 0.02) for m in ("voxelmorph", "transmorph", "vitvnet")},
    ("abdomen", "lkunet"): ("mse", *LKU),
}
DIRECTIONS = {"ixi": 1, "oasis": 2, "lpba": 1, "abdomen": 2}
FLIPS = {"ixi": True, "oasis": False, "lpba": False, "abdomen": False}


@pytest.fixture(scope="module")
def paper_config(tmp_path_factory):
    """paper.yaml with the schema's defaults and fixture roots; the fixture datasets opened as paper.yaml says."""
    roots = make_paper_roots(tmp_path_factory.mktemp("paper") / "data")
    config = copy.deepcopy(PAPER)
    for name, root in roots.items():
        config["datasets"][name]["root"] = str(root)
    validate(config, str(REPO / "config" / "schema.yaml"))
    plan.check_config(config)
    datasets = {name: open_dataset(name, roots[name], image_size=None, **entry.get("options", {}))
                for name, entry in config["datasets"].items()}
    return config, datasets


def test_paper_yaml_lists_every_cell():
    datasets = ("ixi", "oasis", "lpba", "abdomen")
    assert CELLS == [(d, m) for d in datasets for m in MODEL_NAMES]  # 16 cells, each (dataset, model) once
    assert sorted(PROTOCOL) == sorted(CELLS)


@pytest.mark.parametrize("dataset, model", CELLS)
def test_every_cell_builds_at_its_paper_size_and_resolves_the_reference_protocol(paper_config, dataset, model):
    config, datasets = paper_config
    entry = config["datasets"][dataset]
    assert tuple(entry["image_size"]) == PAPER_SIZES[dataset]
    unsupervised = resolve(RunConfig.from_dict(plan.run_config(config, plan.Run(dataset, model, "unsupervised"))),
                           datasets[dataset])
    main = resolve(RunConfig.from_dict(plan.run_config(config, plan.ofg_run(dataset, model, config["ofg"]["steps"]))),
                   datasets[dataset])
    # the model the trainer builds from the run config, at the paper size (construction only)
    net = build_network(main, PAPER_SIZES[dataset])
    assert net.img_size == PAPER_SIZES[dataset] and main.model.size == "paper"
    if model == "transmorph":
        assert net.window == tuple(entry["model_options"]["transmorph"]["window"])
    # schedule and data: 500 epochs of every pair of the epoch (iterations_per_epoch null), each trained in the
    # dataset's directions: one optimiser step per pair and direction
    image, regularizer, unsupervised_weight, ofg_weight, energy_weight = PROTOCOL[dataset, model]
    for run in (unsupervised, main):
        assert (run.epochs, run.iterations_per_epoch, run.lr, run.seed) == (500, None, 1e-4, 0)
        assert run.bidirectional is (DIRECTIONS[dataset] == 2) and run.augment_flips is FLIPS[dataset]
        assert (run.loss.image, run.loss.regularizer, run.ofg.image, run.ofg.regularizer) == (image, regularizer) * 2
        assert (run.loss.ncc_weight, run.loss.mse_weight) == (1.0, 1.0)
    if dataset == "oasis":  # the reference's epochs: each sampled subject once with a partner, both ways
        steps = len(datasets[dataset].epoch_pairs("train", 1)) * DIRECTIONS[dataset]
        assert f"{steps} steps per epoch" in datasets[dataset].notes["train"]
        assert 2 * REFERENCE_TRAIN_SUBJECTS == 400  # on the real data: 200 subjects
    # weights: the network's regulariser for each method, and the OFG energy (k = 10 Adam steps at lr 0.1)
    assert unsupervised.diffusion_weight == unsupervised_weight and main.diffusion_weight == ofg_weight
    assert (main.ofg.steps, main.ofg.lr, main.ofg.window, main.ofg.reg_weight) == (10, 0.1, 9, energy_weight)
    # validation (best.pt) and test Dice: nearest-neighbour labels, the dataset's Dice rule
    rule = "both" if dataset == "abdomen" else "either"
    params = stages.evaluate_parameters(config, plan.Run(dataset, model, "unsupervised"))
    assert (params["label_mode"], params["dice_rule"]) == ("nearest", rule)
    for run in (unsupervised, main):
        assert (run.val_label_mode, run.val_dice_rule, run.val_pairs) == ("nearest", rule, None)


def test_every_training_run_of_the_plan_resolves_with_its_cell_s_protocol(paper_config):
    config, datasets = paper_config
    runs = plan.training_runs(config)
    assert len(runs) == 2 * len(CELLS) + 2 + 4  # + self-training on LPBA40, + k in {1, 2, 5, 20} on IXI
    for run in runs:
        resolved = resolve(RunConfig.from_dict(plan.run_config(config, run)), datasets[run.dataset])
        image, regularizer, _, _, energy_weight = PROTOCOL[run.dataset, run.model]
        assert (resolved.loss.image, resolved.loss.regularizer, resolved.ofg.reg_weight) == \
            (image, regularizer, energy_weight), run


def test_transmorph_windows_are_the_reference_ones():
    windows = {name: tuple(entry["model_options"]["transmorph"]["window"]) for name, entry in PAPER["datasets"].items()}
    assert windows == {"ixi": (5, 6, 7), "oasis": (5, 6, 7), "lpba": (5, 6, 5), "abdomen": (5, 6, 7)}


def test_loader_options_open_the_fixtures(paper_config):
    _, datasets = paper_config
    assert datasets["oasis"].train_pairing == "reference" and "reference epochs" in datasets["oasis"].notes["train"]
    assert "test_subset 'reference20'" in datasets["ixi"].notes["test"]
    assert not datasets["lpba"].augment_flips and datasets["ixi"].augment_flips
    assert datasets["lpba"].pairs("train")[0].moving.max() > 1.0  # raw intensities (fixture spans [0, 200])


def test_protocol_choices_name_what_the_code_implements():
    entry = SCHEMA["properties"]["datasets"]["additionalProperties"]["properties"]
    assert entry["dice_rule"]["enum"] == list(DICE_RULES)
    assert PAPER["datasets"]["abdomen"]["dice_rule"] == "both"
    assert PAPER["datasets"]["ixi"]["options"]["test_subset"] in TEST_SUBSETS
    overrides = SCHEMA["definitions"]["run_overrides"]["properties"]
    assert overrides["loss"]["properties"]["image"]["enum"] == list(IMAGE_TERMS)
    assert overrides["loss"]["properties"]["regularizer"]["enum"] == list(REGULARIZERS)
    loss = SCHEMA["properties"]["training"]["properties"]["loss"]["properties"]
    assert loss["image"]["enum"] == list(IMAGE_TERMS) and loss["regularizer"]["enum"] == list(REGULARIZERS)
    assert PAPER["model_run_overrides"]["lkunet"] == {
        "loss": {"regularizer": "lku_smooth", "diffusion_weight": 5.0}, "ofg": {"reg_weight": 5.0}}
    assert PAPER["datasets"]["abdomen"]["run_overrides"] == {
        "loss": {"image": "mse", "diffusion_weight": 0.02}, "ofg": {"reg_weight": 0.02}}
    assert PAPER["evaluation"]["label_mode"] == "nearest"
