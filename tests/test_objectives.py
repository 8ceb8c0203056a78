"""The method objectives use the configured image term and regulariser (loss.image, loss.regularizer);
the defaults are NCC and Grad_l2, bit for bit the formulas they always were."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from ofg.config import RunConfig
from ofg.guidance import refine
from ofg.losses import diffusion_loss, lku_smoothness_loss, ncc_loss
from ofg.objectives import OnTheFlyGuidance, Unsupervised


def _tensors(gen):
    moving = torch.rand((1, 1, 8, 9, 10), generator=gen)
    fixed = torch.rand((1, 1, 8, 9, 10), generator=gen)
    warped = torch.rand((1, 1, 8, 9, 10), generator=gen)
    disp = 0.5 * torch.randn((1, 3, 8, 9, 10), generator=gen)
    return moving, fixed, warped, disp


def test_unsupervised_default_is_ncc_plus_grad_l2_bit_for_bit(gen):
    moving, fixed, warped, disp = _tensors(gen)
    config = RunConfig.from_dict({"method": "unsupervised", "ofg": {"window": 5}, "loss": {"ncc_weight": 2.0}})
    total, terms, _ = Unsupervised(config)(moving, fixed, warped, disp, "a->b")
    expected = 2.0 * ncc_loss(fixed, warped, window=5) + 1.0 * diffusion_loss(disp, "l2")
    assert torch.equal(total, expected)
    assert set(terms) == {"ncc", "diffusion"}


def test_unsupervised_with_mse_image_term_and_lku_smoothness(gen):
    moving, fixed, warped, disp = _tensors(gen)
    config = RunConfig.from_dict({"method": "unsupervised", "loss": {"image": "mse", "regularizer": "lku_smooth",
                                                                     "ncc_weight": 2.0, "diffusion_weight": 5.0}})
    total, terms, _ = Unsupervised(config)(moving, fixed, warped, disp, "a->b")
    torch.testing.assert_close(total, 2.0 * F.mse_loss(warped, fixed) + 5.0 * lku_smoothness_loss(disp),
                               rtol=0, atol=0)
    assert set(terms) == {"image_mse", "lku_smooth"}
    assert terms["image_mse"] == pytest.approx(float(F.mse_loss(warped, fixed)))


def test_ofg_target_comes_from_the_energy_with_the_same_terms(gen):
    moving, fixed, _, disp = _tensors(gen)
    config = RunConfig.from_dict({"method": "ofg", "ofg": {"steps": 3, "reg_weight": 5.0},
                                  "loss": {"image": "mse", "regularizer": "lku_smooth", "diffusion_weight": 5.0}})
    objective = OnTheFlyGuidance(config)
    objective.start_epoch(0, 10)
    assert (objective.criterion.image, objective.criterion.regularizer) == ("mse", "lku_smooth")
    prediction = disp.clone().requires_grad_(True)
    total, terms, _ = objective(moving, fixed, None, prediction, "a->b")
    target, _ = refine(moving, fixed, disp, steps=3, lr=0.1, reg_weight=5.0, image="mse", regularizer="lku_smooth")
    torch.testing.assert_close(total, F.mse_loss(disp, target) + 5.0 * lku_smoothness_loss(disp), rtol=1e-6, atol=0)
    assert {"mse", "lku_smooth", "energy_before", "energy_after"} == set(terms)
