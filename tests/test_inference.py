"""Tests of ofg.inference: the one forward pass, per-field metrics, validation scores, the qualitative sample."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import synthetic
from ofg.evaluate import evaluate
from ofg.inference import (as_field, both_dice, field_metrics, forward, mean_dice, qualitative_sample,
                           validation_scores)
from ofg.metrics import jacobian_determinant
from synthetic import Oracle


@pytest.fixture
def data():
    return synthetic.SyntheticDataset(size=(16, 16, 16), n_test=2, amplitude=2.5)


def test_validation_scores_match_evaluate(data):
    oracle = Oracle(data, "test", scale=0.5)
    table = evaluate(oracle, data, "test", progress=False)
    dice, folding = validation_scores(oracle, data, "test")
    assert dice == pytest.approx(table["dice_mean"].mean()) and folding == pytest.approx(table["folding_percent"].mean())
    first, _ = validation_scores(oracle, data, "test", max_pairs=1)
    assert first == pytest.approx(table["dice_mean"].iloc[0])


def test_validation_follows_the_label_mode(data):
    oracle = Oracle(data, "test", scale=0.5)
    for mode in ("onehot", "nearest"):
        table = evaluate(oracle, data, "test", label_mode=mode, progress=False)
        dice, _ = validation_scores(oracle, data, "test", label_mode=mode)
        assert dice == pytest.approx(table["dice_mean"].mean())
    onehot, _ = validation_scores(oracle, data, "test", label_mode="onehot")
    nearest, _ = validation_scores(oracle, data, "test", label_mode="nearest")
    assert onehot != nearest  # the two conventions really differ on a half-way field
    with pytest.raises(ValueError, match="label_mode"):
        validation_scores(oracle, data, "test", label_mode="linear")


def test_both_dice_gives_each_convention_and_the_configured_one(data):
    pair, labels = data.pairs("test")[0], list(data.labels)
    disp = 0.5 * torch.from_numpy(data.ground_truth("test", 0))[None]
    for mode in ("nearest", "onehot"):
        row = both_dice(disp, pair.moving_label, pair.fixed_label, labels, label_mode=mode)
        expected = {m: field_metrics(disp, pair.moving_label, pair.fixed_label, labels, label_mode=m)["dice_mean"]
                    for m in ("nearest", "onehot")}
        assert row == {"dice_mean": expected[mode], "dice_mean_nearest": expected["nearest"],
                       "dice_mean_onehot": expected["onehot"]}
    assert row["dice_mean_nearest"] != row["dice_mean_onehot"]  # a half-way field tells them apart
    with pytest.raises(ValueError, match="label_mode"):
        both_dice(disp, pair.moving_label, pair.fixed_label, labels, label_mode="linear")


def test_validation_follows_the_dice_rule(data):
    oracle = Oracle(data, "test", scale=0.5)
    for rule in ("either", "both"):
        table = evaluate(oracle, data, "test", label_mode="nearest", dice_rule=rule, progress=False)
        dice, _ = validation_scores(oracle, data, "test", label_mode="nearest", dice_rule=rule)
        assert dice == pytest.approx(table["dice_mean"].mean())


def test_forward_amp_keeps_the_field_and_warp_in_float32(data):
    torch.manual_seed(0)
    net = torch.nn.Conv3d(2, 3, 3, padding=1)

    class Net(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = net

        def forward(self, x):
            disp = self.conv(x)
            return x[:, :1], disp

    pair = data.pairs("test")[0]
    moving = torch.from_numpy(pair.moving)[None, None]
    warped, disp = forward(Net(), moving, moving, amp=True)
    assert disp.dtype == torch.float32 and warped.dtype == torch.float32
    plain_warped, plain = forward(Net(), moving, moving)
    assert torch.allclose(disp, plain, atol=0.05)


def test_qualitative_sample_is_the_middle_slice_of_the_prediction(data):
    oracle = Oracle(data, "test")
    pair = data.pairs("test")[0]
    sample = qualitative_sample(oracle, pair, "cpu")
    truth = data.ground_truth("test", 0)
    z = truth.shape[1] // 2
    np.testing.assert_allclose(sample["displacement"], truth[1:, z], rtol=1e-6)
    det = np.asarray(jacobian_determinant(truth.astype(np.float32)))
    np.testing.assert_allclose(sample["jacobian"], det[z], rtol=1e-5)
    assert float(sample["folding_percent"]) == pytest.approx(100 * np.mean(det <= 0))
    np.testing.assert_array_equal(sample["moving"], pair.moving[z])


def test_mean_dice_skips_labels_absent_from_both_images(data):
    pair = data.pairs("test")[0]
    field = as_field(torch.from_numpy(data.ground_truth("test", 0))[None])
    labels = [int(l) for l in data.labels]
    mean, per_label, _ = mean_dice(field, pair.moving_label, pair.fixed_label, labels + [250])
    assert np.isnan(per_label[-1]) and mean == pytest.approx(np.nanmean(per_label))
    row = field_metrics(torch.from_numpy(data.ground_truth("test", 0))[None], pair.moving_label, pair.fixed_label,
                        labels, full=False)
    assert set(row) == {"dice_mean", "folding_percent", *(f"dice_{l}" for l in labels)}


def test_hd95_in_mm_scales_isotropic_voxels_and_recomputes_anisotropic_ones(data):
    from ofg.metrics import hd95, warp_labels
    pair, labels = data.pairs("test")[0], list(data.labels)
    disp = 0.5 * torch.from_numpy(data.ground_truth("test", 0))[None]
    iso = field_metrics(disp, pair.moving_label, pair.fixed_label, labels, hd95=True, spacing=(2.0, 2.0, 2.0))
    assert iso["hd95_mm"] == pytest.approx(2.0 * iso["hd95"], rel=1e-12) and iso["hd95"] > 0
    spacing = (2.0, 1.0, 0.5)
    aniso = field_metrics(disp, pair.moving_label, pair.fixed_label, labels, hd95=True, spacing=spacing)
    warped = warp_labels(pair.moving_label, as_field(disp), None, mode="onehot")
    expected = [hd95(warped == k, pair.fixed_label == k, spacing) for k in labels
                if (warped == k).any() and (pair.fixed_label == k).any()]
    assert aniso["hd95_mm"] == pytest.approx(np.mean(expected), rel=1e-12)


def test_validation_resolves_device_auto(data):
    oracle = Oracle(data, "test", scale=0.5)
    assert validation_scores(oracle, data, "test", device="auto") == validation_scores(oracle, data, "test")
