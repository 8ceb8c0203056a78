"""ofg.fused: the one-function refinement step against the eager refinement and independent oracles."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import ndimage

from ofg import fused, kernels
from ofg.guidance import refine
from ofg.losses import diffusion_loss
from ofg.spatial import warp


def pair(size=(10, 12, 9), batch=1, dtype=torch.float64, scale=1.2, seed=0, device=torch.device("cpu")):
    """moving, fixed (B,1,*size) and a field (B,3,*size) in voxels, drawn on the CPU, moved to ``device``."""
    g = torch.Generator().manual_seed(seed)
    moving = torch.nn.functional.avg_pool3d(torch.rand(batch, 1, *size, generator=g), 3, 1, 1).to(dtype)
    fixed = torch.roll(moving, (1, -1, 1), (2, 3, 4))
    disp = (torch.randn(batch, 3, *size, generator=g) * scale).to(dtype)  # some points leave the volume
    return moving.to(device), fixed.to(device), disp.to(device)


@pytest.fixture
def eager(monkeypatch):
    """The fused step uncompiled: the same functions, so the tests check its arithmetic quickly."""
    monkeypatch.setitem(fused._COMPILED, "refine_step", fused.refine_step)
    monkeypatch.setitem(fused._COMPILED, "energy_and_gradient", fused.energy_and_gradient)


def test_box_sum_is_scipy_zero_padded_uniform_filter():
    x = torch.rand(2, 7, 8, 6, dtype=torch.float64)
    expected = ndimage.uniform_filter(x.numpy(), size=(1, 5, 5, 5), mode="constant") * 125
    np.testing.assert_allclose(fused.box_sum(x, 5).numpy(), expected, rtol=1e-12, atol=1e-12)


def test_sampler_value_and_derivative_match_grid_sample_and_its_autograd(device):
    moving, _, disp = pair(scale=2.5, device=device)
    value, derivative = fused.sample_with_gradient(fused.pad_moving(moving[0, 0]), disp[0])
    u = disp.clone().requires_grad_(True)
    warped = warp(moving, u)
    weights = torch.rand_like(warped)
    (expected,) = torch.autograd.grad(warped, u, weights)
    torch.testing.assert_close(value, warped[0, 0].detach(), rtol=0, atol=1e-13)
    torch.testing.assert_close(derivative * weights[0], expected[0], rtol=0, atol=1e-12)


def test_diffusion_value_and_gradient_match_autograd():
    _, _, disp = pair()
    u = disp[0].clone().requires_grad_(True)
    value, grad = fused.diffusion_with_gradient(u.detach(), 0.7)
    expected = 0.7 * diffusion_loss(u[None], "l2")
    (expected_grad,) = torch.autograd.grad(expected, u)
    assert value.item() == pytest.approx(expected.item(), rel=1e-13)
    torch.testing.assert_close(grad, expected_grad, rtol=1e-12, atol=1e-15)


def test_adam_step_is_torch_adam_amsgrad():
    torch.manual_seed(0)
    p = torch.randn(50, dtype=torch.float64)
    reference = p.clone()
    optimiser = torch.optim.Adam([reference], lr=0.1, amsgrad=True)
    m, v, v_max = torch.zeros_like(p), torch.zeros_like(p), torch.zeros_like(p)
    for t in range(1, 8):
        grad = torch.sin(3 * p + t)
        reference.grad = grad.clone()
        optimiser.step()
        step_size = torch.tensor(0.1 / (1 - 0.9 ** t), dtype=p.dtype)
        bias2_sqrt = torch.tensor((1 - 0.999 ** t) ** 0.5, dtype=p.dtype)
        p, m, v, v_max = fused.adam_step(p, grad, m, v, v_max, step_size, bias2_sqrt)
        torch.testing.assert_close(p, reference, rtol=1e-14, atol=1e-14)


def test_compiled_path_refine_equals_the_eager_refine_in_float64(eager, device):
    """The torch step's loop (the CUDA path; on CPU ``refine(fused=True)`` runs ofg.kernels, tested there)."""
    moving, fixed, disp = pair(batch=2, device=device)
    steps_seen = []
    expected, expected_energies = refine(moving, fixed, disp, steps=6, lr=0.1, reg_weight=0.5, window=5)
    got, energies = fused.refine_compiled(moving, fixed, disp, 6, 0.1, 0.5, 5,
                                          lambda k, phi, e: steps_seen.append((k, phi.shape, e)))
    assert (got - expected).abs().max().item() < 1e-10
    assert np.allclose(energies, expected_energies, rtol=1e-12, atol=1e-14)
    assert [k for k, _, _ in steps_seen] == list(range(7)) and steps_seen[0][1] == disp.shape
    assert [e for _, _, e in steps_seen] == energies


def test_fused_refine_runs_where_the_tensors_live(eager, device, monkeypatch):
    """``refine(fused=True)``: CPU float64 tensors go to the numba kernels, CUDA ones to the torch step."""
    moving, fixed, disp = pair(batch=2, device=device)
    paths = []
    for module, name in ((kernels, "refine"), (fused, "refine_compiled")):
        original = getattr(module, name)
        monkeypatch.setattr(module, name, lambda *args, _f=original, _n=name: paths.append(_n) or _f(*args))
    expected, expected_energies = refine(moving, fixed, disp, steps=4, lr=0.1, reg_weight=0.5, window=5)
    got, energies = refine(moving, fixed, disp, steps=4, lr=0.1, reg_weight=0.5, window=5, fused=True)
    assert paths == (["refine"] if device.type == "cpu" else ["refine_compiled"])
    assert got.device == disp.device and got.dtype == disp.dtype
    assert (got - expected).abs().max().item() < 1e-10
    assert np.allclose(energies, expected_energies, rtol=1e-12, atol=1e-14)


def test_fused_refine_is_3d_only(eager):
    image = torch.rand(1, 1, 8, 8)
    with pytest.raises(ValueError, match="3-D only"):
        refine(image, image, torch.zeros(1, 2, 8, 8), steps=1, fused=True)


@pytest.mark.slow
def test_compiled_refinement_agrees_with_eager_in_float32(device):
    """torch.compile's generated code (C++ on CPU, Triton on CUDA): the same iterates as the eager
    refinement up to float32 round-off."""
    moving, fixed, disp = pair(size=(16, 16, 16), dtype=torch.float32, scale=0.5, device=device)
    expected, expected_energies = refine(moving, fixed, disp, steps=4)
    got, energies = fused.refine_compiled(moving, fixed, disp, 4, 0.1, 1.0, 9, None)
    assert np.allclose(energies, expected_energies, rtol=1e-4)
    assert torch.quantile((got - expected).abs().flatten(), 0.999).item() < 1e-3
