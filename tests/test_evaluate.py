"""Tests of ofg.evaluate: an oracle network that returns the true field scores perfectly."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

import synthetic
from synthetic import Oracle
from ofg.checkpoint import load_checkpoint, save_checkpoint
from ofg.config import RunConfig
from ofg.data.base import PairList
from ofg.evaluate import evaluate, evaluate_checkpoint, main
from ofg.guidance import RefineSettings
from ofg.inference import mean_dice
from ofg.models import build_model


@pytest.fixture
def data():
    return synthetic.SyntheticDataset(size=(16, 16, 16), n_test=2, amplitude=2.5)


def test_oracle_scores_zero_error_and_no_folding(data):
    table = evaluate(Oracle(data, "test"), data, "test", label_mode="nearest", hd95=True, progress=False)
    assert len(table) == 2
    assert list(table["moving"]) == ["test00_moving", "test01_moving"]
    assert np.allclose(table["endpoint_error"], 0.0)
    assert (table["folding_percent"] == 0).all()
    # The fixed labels were made by scipy's nearest-neighbour warp with this very field.
    assert (table["dice_mean"] > 0.99).all()
    assert (table["hd95"] < 1.0).all() and (table["hd95_mm"] < 1.0).all()
    assert {f"dice_{label}" for label in data.labels} <= set(table)
    assert (table["label_mode"] == "nearest").all()
    assert (table["inference_seconds"] >= 0).all()


def test_identity_scores_agree_with_a_scipy_reference(data):
    """A zero field: Dice equals scipy-free counting on the raw labels; EPE is the mean |u_true|."""

    class Zero(torch.nn.Module):
        def forward(self, x):
            return x[:, :1], torch.zeros(x.shape[0], 3, *x.shape[2:], dtype=x.dtype)

    table = evaluate(Zero(), data, "test", progress=False)
    for i, row in table.iterrows():
        pair = data.pairs("test")[i]
        for label in data.labels:
            a, b = pair.moving_label == label, pair.fixed_label == label
            assert row[f"dice_{label}"] == pytest.approx(2 * (a & b).sum() / (a.sum() + b.sum()))
        truth = data.ground_truth("test", i).astype(np.float64)
        assert row["endpoint_error"] == pytest.approx(np.sqrt((truth ** 2).sum(0)).mean())
        assert row["folding_percent"] == 0 and row["sdlogj_plain"] == pytest.approx(0.0, abs=1e-12)
        assert row["sdlogj_l2r"] >= 0  # zero padding makes the Learn2Reg border non-constant


def test_folding_is_detected(data):
    """A field that squeezes a slab far enough folds it; the folded share matches np.gradient directly."""
    oracle = Oracle(data, "test", scale=4.0)
    table = evaluate(oracle, data, "test", progress=False)
    for i, row in table.iterrows():
        field = 4.0 * data.ground_truth("test", i).astype(np.float64)
        grads = [np.gradient(field[c]) for c in range(3)]
        jac = np.stack([np.stack([grads[c][d] + (c == d) for d in range(3)], -1) for c in range(3)], -2)
        expected = 100.0 * (np.linalg.det(jac) <= 0).mean()
        assert row["folding_percent"] == pytest.approx(expected)
    assert (table["folding_percent"] > 0).any()


def test_refinement_columns_and_improvement(data):
    class Zero(torch.nn.Module):
        def forward(self, x):
            return x[:, :1], torch.zeros(x.shape[0], 3, *x.shape[2:], dtype=x.dtype)

    table = evaluate(Zero(), data, "test", refine_settings=RefineSettings(steps=20, lr=0.1), progress=False)
    assert {"refined_dice_mean", "refined_endpoint_error", "refined_folding_percent", "refine_seconds"} <= set(table)
    assert (table["refined_endpoint_error"] < table["endpoint_error"]).all()


class _Zero(torch.nn.Module):
    def forward(self, x):
        return x[:, :1], torch.zeros(x.shape[0], 3, *x.shape[2:], dtype=x.dtype)


class _MovingWithoutLabel3:
    """The test pairs of ``data`` with label 3 erased from the moving label map (present in fixed only)."""

    def __init__(self, data):
        self.data, self.labels, self.image_size = data, data.labels, data.image_size

    def pairs(self, split):
        pairs = self.data.pairs(split)
        return PairList(pairs.keys, lambda i: pairs[i]._replace(
            moving_label=np.where(pairs[i].moving_label == 3, 0, pairs[i].moving_label)))

    def ground_truth(self, split, index):
        return self.data.ground_truth(split, index)


def test_dice_rule_both_averages_over_labels_present_in_moving_and_fixed(data):
    dataset = _MovingWithoutLabel3(data)
    settings = RefineSettings(steps=2, lr=0.1)
    either = evaluate(_Zero(), dataset, "test", refine_settings=settings, progress=False)
    both = evaluate(_Zero(), dataset, "test", dice_rule="both", refine_settings=settings, progress=False)
    assert (either["dice_rule"] == "either").all() and (both["dice_rule"] == "both").all()
    assert (either["dice_3"] == 0).all()  # in the fixed map only: the warped map cannot have it
    for prefix in ("", "refined_"):
        d1, d2 = either[f"{prefix}dice_1"], either[f"{prefix}dice_2"]
        np.testing.assert_allclose(either[f"{prefix}dice_mean"], (d1 + d2 + either[f"{prefix}dice_3"]) / 3)
        np.testing.assert_allclose(both[f"{prefix}dice_mean"], (d1 + d2) / 2)  # label 3 is not in both
    per_label = [c for c in either.columns if c.startswith("dice_") and not c.startswith("dice_mean")
                 and c != "dice_rule"]
    for table, rule in ((either, "either"), (both, "both")):  # each convention's mean follows the rule too
        for index, pair in enumerate(dataset.pairs("test")):
            for mode in ("nearest", "onehot"):
                expected = mean_dice(np.zeros((3, *pair.fixed_label.shape)), pair.moving_label, pair.fixed_label,
                                     list(data.labels), mode, rule)[0]
                assert table[f"dice_mean_{mode}"].iloc[index] == pytest.approx(expected)
        assert (table["dice_mean"] == table["dice_mean_onehot"]).all()  # the default label mode
    pd.testing.assert_frame_equal(either[per_label], both[per_label])  # only the mean follows the rule
    # a label missing from one image only counts where it is in both: on the untouched pairs the rules agree
    plain_either = evaluate(_Zero(), data, "test", progress=False)
    plain_both = evaluate(_Zero(), data, "test", dice_rule="both", progress=False)
    np.testing.assert_array_equal(plain_either["dice_mean"], plain_both["dice_mean"])
    with pytest.raises(ValueError, match="dice_rule must be one of"):
        evaluate(_Zero(), data, "test", dice_rule="all", progress=False)


def test_bad_arguments(data):
    model = Oracle(data, "test")
    with pytest.raises(ValueError, match="label_mode"):
        evaluate(model, data, label_mode="linear", progress=False)
    with pytest.raises(ValueError, match="split"):
        evaluate(model, data, split="dev", progress=False)
    with pytest.raises(ValueError, match="refinement steps"):
        evaluate(model, data, refine_settings=RefineSettings(steps=-1), progress=False)


def test_checkpoint_evaluation_and_cli(tmp_path, monkeypatch):
    synthetic.register(monkeypatch)
    config = RunConfig.from_dict({"dataset": {"name": "synthetic", "root": "unused",
                                              "options": {"size": [16, 16, 16], "n_test": 2}},
                                  "model": {"name": "voxelmorph", "size": "small"}, "method": "unsupervised"})
    model = build_model("voxelmorph", (16, 16, 16), size="small")
    save_checkpoint(tmp_path / "best.pt", {"model": model.state_dict(), "epoch": 1, "config": config.to_dict(),
                                           "image_size": [16, 16, 16]})
    loaded, loaded_config = load_checkpoint(tmp_path / "best.pt")
    assert loaded_config == config and not loaded.training
    table = evaluate_checkpoint(tmp_path / "best.pt", "test", tmp_path / "m.csv", sample_out=tmp_path / "s.npz",
                                progress=False)
    with np.load(tmp_path / "s.npz") as sample:
        assert sample["moving"].shape == sample["jacobian"].shape == (16, 16)
        assert sample["displacement"].shape == (2, 16, 16) and int(sample["slice"]) == 8
    pd.testing.assert_frame_equal(pd.read_csv(tmp_path / "m.csv"), table, check_dtype=False)
    assert (table["method"] == "unsupervised").all() and len(table) == 2
    assert main([str(tmp_path / "best.pt"), "--out", str(tmp_path / "cli.csv"), "--label-mode", "nearest",
                 "--no-progress", "--device", "cpu"]) == 0
    cli = pd.read_csv(tmp_path / "cli.csv")
    assert (cli["label_mode"] == "nearest").all() and len(cli) == 2
    assert (table["dice_rule"] == "either").all() and (cli["dice_rule"] == "either").all()
    assert main([str(tmp_path / "best.pt"), "--out", str(tmp_path / "both.csv"), "--dice-rule", "both",
                 "--no-progress", "--device", "cpu"]) == 0
    assert (pd.read_csv(tmp_path / "both.csv")["dice_rule"] == "both").all()
    assert main([str(tmp_path / "missing.pt"), "--out", str(tmp_path / "x.csv"), "--no-progress"]) == 1
    assert not (tmp_path / "x.csv").exists()


def test_device_auto_is_resolved(data):
    auto = evaluate(Oracle(data, "test"), data, "test", device="auto", progress=False)
    assert len(auto) == len(data.pairs("test"))
