"""Tests of ofg.experiments.refinement_curve (paper Fig. 2) on an easy synthetic pair."""

from __future__ import annotations

import numpy as np
import pytest
import pandas as pd
import torch

import synthetic
from ofg.experiments import COLUMNS, randomize_parameters, refinement_curve
from ofg.guidance import RefineSettings, refine
from ofg.inference import as_field, mean_dice
from ofg.models import build_model


@pytest.fixture
def data():
    return synthetic.SyntheticDataset(size=(16, 16, 16), n_test=2, amplitude=2.5)


def test_untrained_curve_shape_and_improvement(data):
    curve = refinement_curve(data, "voxelmorph", "small", start="untrained", settings=RefineSettings(steps=6, lr=0.2), n_pairs=2,
                             progress=False)
    assert list(curve.columns) == COLUMNS and len(curve) == 2 * 7
    assert sorted(set(curve["step"])) == list(range(7)) and set(curve["start"]) == {"untrained"}
    for _, one in curve.groupby("pair"):
        one = one.sort_values("step")
        assert one["dice"].iloc[-1] >= one["dice"].iloc[0]
        assert one["energy"].iloc[-1] < one["energy"].iloc[0]


def test_step_rows_are_the_iterates_of_one_refinement(data):
    """Row k's energy is the energy after k steps of a single K-step refinement."""
    curve = refinement_curve(data, "voxelmorph", "small", settings=RefineSettings(steps=4), n_pairs=1, progress=False)
    torch.manual_seed(0)
    model = build_model("voxelmorph", (16, 16, 16), size="small").eval()
    pair = data.pairs("test")[0]
    moving = torch.from_numpy(pair.moving)[None, None]
    fixed = torch.from_numpy(pair.fixed)[None, None]
    with torch.no_grad():
        disp0 = model(torch.cat([moving, fixed], 1))[1]
    _, energies = refine(moving, fixed, disp0, steps=4)
    # energies[k] is the energy before step k (= after k steps), energies[4] after the last one
    assert np.allclose(curve["energy"].to_numpy(), energies, rtol=1e-5, atol=1e-7)


def test_random_start_is_a_few_voxels_deformation(data):
    model = build_model("voxelmorph", (16, 16, 16), size="small")
    pair = data.pairs("test")[0]
    x = torch.from_numpy(np.stack([pair.moving, pair.fixed]))[None]
    randomize_parameters(model, x, rms=2.0, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        disp = model(x)[1]
    assert float(disp.pow(2).mean().sqrt()) == pytest.approx(2.0, rel=1e-4)
    assert float(disp.std()) > 0.5  # not a constant shift

    curve = refinement_curve(data, "voxelmorph", "small", start="random", settings=RefineSettings(steps=3), n_pairs=1, progress=False)
    assert set(curve["start"]) == {"random"} and len(curve) == 4
    assert curve["energy"].iloc[-1] < curve["energy"].iloc[0]


def test_bad_arguments(data):
    with pytest.raises(ValueError, match="start"):
        refinement_curve(data, "voxelmorph", start="pretrained", progress=False)
    with pytest.raises(ValueError, match="steps"):
        refinement_curve(data, "voxelmorph", settings=RefineSettings(steps=-1), progress=False)
    with pytest.raises(ValueError, match="unknown model"):
        refinement_curve(data, "unet", progress=False)


def test_window_and_label_mode_reach_the_curve(data):
    """The refinement curve's energy uses the settings' window and its Dice the label mode (both used to be dropped)."""
    common = dict(n_pairs=1, progress=False)
    nine = refinement_curve(data, "voxelmorph", "small", settings=RefineSettings(steps=2, window=9), **common)
    five = refinement_curve(data, "voxelmorph", "small", settings=RefineSettings(steps=2, window=5), **common)
    assert nine.energy[0] != five.energy[0]
    nearest = refinement_curve(data, "voxelmorph", "small", settings=RefineSettings(steps=2), label_mode="nearest",
                               **common)
    pair, labels = data.pairs("test")[0], [int(label) for label in data.labels]
    field = as_field(torch.zeros(1, 3, *data.image_size))
    expected, _, _ = mean_dice(field, pair.moving_label, pair.fixed_label, labels, "nearest")
    # the untrained network predicts a near-zero field: step 0 scores about the identity's nearest Dice
    assert nearest.dice[0] == pytest.approx(expected, abs=0.02)
    with pytest.raises(ValueError, match="label_mode"):
        refinement_curve(data, "voxelmorph", "small", label_mode="linear", **common)


def test_device_auto_is_resolved_like_the_trainer_does(data):
    """The workflow passes the config's device ("auto" by default) to every stage."""
    auto = refinement_curve(data, "voxelmorph", "small", settings=RefineSettings(steps=2), n_pairs=1, device="auto",
                            progress=False)
    cpu = refinement_curve(data, "voxelmorph", "small", settings=RefineSettings(steps=2), n_pairs=1, device="cpu",
                           progress=False)
    if not torch.cuda.is_available():
        pd.testing.assert_frame_equal(auto, cpu)
