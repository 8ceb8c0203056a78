import functools

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from ofg.bench.core import naive_diffusion_l2, naive_ncc_loss, naive_refine, naive_warp
from ofg.guidance import OFGLoss, RefineSettings, poly_lr, refine
from ofg.losses import lku_smoothness_loss


def _pair(gen, batch=1, shape=(12, 12, 12), dtype=torch.float64, device=torch.device("cpu")):
    """A textured fixed image, the moving image = fixed shifted by one voxel, and a small field, drawn on
    the CPU (the same numbers on every device) and moved to ``device``."""
    base = torch.rand((batch, 1, *[n + 2 for n in shape]), generator=gen, dtype=dtype)
    smooth = F.avg_pool3d(base, 3, stride=1) if len(shape) == 3 else F.avg_pool2d(base, 3, stride=1)
    fixed = smooth
    moving = torch.roll(smooth, shifts=1, dims=2)
    disp = 0.3 * torch.randn((batch, len(shape), *shape), generator=gen, dtype=dtype)
    return moving.to(device), fixed.to(device), disp.to(device)


def test_refine_equals_reference_loop_in_float64(gen, device):
    moving, fixed, disp = _pair(gen, device=device)
    ours, energies = refine(moving, fixed, disp, steps=6, lr=0.1, reg_weight=1.0)
    expected = naive_refine(moving, fixed, disp, steps=6, lr=0.1, reg_weight=1.0)
    torch.testing.assert_close(ours, expected, rtol=0, atol=1e-9)
    assert (ours - disp).abs().max() > 0.05  # the optimiser moved the field
    first = naive_ncc_loss(fixed, naive_warp(moving, disp)) + naive_diffusion_l2(disp)
    last = naive_ncc_loss(fixed, naive_warp(moving, expected)) + naive_diffusion_l2(expected)
    assert len(energies) == 7
    assert energies[0] == pytest.approx(first.item(), rel=1e-10)
    assert energies[-1] == pytest.approx(last.item(), rel=1e-10)
    assert energies[-1] < energies[0]


def test_refine_reg_weight_and_window_reach_the_energy(gen, device):
    moving, fixed, disp = _pair(gen, device=device)
    for reg_weight, window in ((0.0, 9), (2.5, 5)):
        ours, _ = refine(moving, fixed, disp, steps=3, lr=0.05, reg_weight=reg_weight, window=window)
        expected = naive_refine(moving, fixed, disp, steps=3, lr=0.05, reg_weight=reg_weight, window=window)
        torch.testing.assert_close(ours, expected, rtol=0, atol=1e-9)


def test_each_sample_of_a_batch_is_refined_as_if_alone(gen, device):
    moving, fixed, disp = _pair(gen, batch=2, device=device)
    moving[1] = moving[1] * 2.0  # different contrast: different gradient scales per sample
    batched, energies = refine(moving, fixed, disp, steps=5)
    alone = [refine(moving[b:b + 1], fixed[b:b + 1], disp[b:b + 1], steps=5) for b in range(2)]
    for b in range(2):
        torch.testing.assert_close(batched[b:b + 1], alone[b][0], rtol=0, atol=1e-12)
    solo_mean = [(alone[0][1][k] + alone[1][1][k]) / 2 for k in range(6)]
    assert energies == pytest.approx(solo_mean, rel=1e-10)


def test_refine_in_2d(gen, device):
    moving, fixed, disp = _pair(gen, shape=(16, 14), device=device)
    out, energies = refine(moving, fixed, disp, steps=4)
    assert out.shape == disp.shape and len(energies) == 5 and energies[-1] < energies[0]


def test_refine_is_detached_and_leaves_inputs_alone(gen, device):
    moving, fixed, disp = _pair(gen, dtype=torch.float32, device=device)
    prediction = disp.clone().requires_grad_(True)
    snapshot = [t.detach().clone() for t in (moving, fixed, prediction)]
    with torch.no_grad():
        out, energies = refine(moving, fixed, prediction, steps=3)
    assert not out.requires_grad and out.grad_fn is None
    assert out.dtype == torch.float32 and out.shape == disp.shape
    assert all(isinstance(e, float) for e in energies)
    assert prediction.grad is None and not moving.requires_grad and not fixed.requires_grad
    for before, after in zip(snapshot, (moving, fixed, prediction)):
        assert torch.equal(before, after.detach())
    again, _ = refine(moving, fixed, prediction, steps=3)  # fresh optimiser: same result
    assert torch.equal(out, again)
    assert torch.is_grad_enabled()


def test_refine_zero_steps_and_zero_lr(gen):
    moving, fixed, disp = _pair(gen)
    out, energies = refine(moving, fixed, disp, steps=0)
    assert torch.equal(out, disp) and out.data_ptr() != disp.data_ptr() and len(energies) == 1
    still, _ = refine(moving, fixed, disp, steps=3, lr=0.0)
    assert torch.equal(still, disp)


def test_refine_bad_inputs():
    image, disp = torch.rand(1, 1, 6, 6, 6), torch.zeros(1, 3, 6, 6, 6)
    with pytest.raises(ValueError, match="moving: expected one channel"):
        refine(torch.rand(1, 2, 6, 6, 6), image, disp)
    with pytest.raises(ValueError, match="moving has shape .* but fixed has shape"):
        refine(image, torch.rand(1, 1, 6, 6, 5), disp)
    with pytest.raises(ValueError, match="disp: expected 3 channels"):
        refine(image, image, torch.zeros(1, 2, 6, 6, 6))
    with pytest.raises(ValueError, match="disp: expected shape"):
        refine(image, image, torch.zeros(2, 3, 6, 6, 6))
    with pytest.raises(ValueError, match="disp: expected shape"):
        refine(image, image, torch.zeros(1, 3, 6, 6, 7))
    with pytest.raises(ValueError, match="disp is 2-D"):
        refine(image, image, torch.zeros(1, 2, 6, 6))
    with pytest.raises(ValueError, match="fixed: expected a floating-point tensor"):
        refine(image, image.long(), disp)
    with pytest.raises(ValueError, match="steps must be a non-negative integer"):
        refine(image, image, disp, steps=-1)
    with pytest.raises(ValueError, match="lr must be >= 0"):
        refine(image, image, disp, lr=-0.1)
    with pytest.raises(ValueError, match="window must be a positive odd integer"):
        refine(image, image, disp, window=8)


def test_ofg_loss_is_mse_to_the_refined_field(gen, device):
    moving, fixed, disp = _pair(gen, dtype=torch.float32, device=device)
    moving.requires_grad_(True)
    prediction = disp.clone().requires_grad_(True)
    criterion = OFGLoss(steps=3, lr=0.05)
    loss = criterion(moving, fixed, prediction)
    target, energies = refine(moving.detach(), fixed, disp, steps=3, lr=0.05)
    assert loss.device.type == target.device.type == device.type
    torch.testing.assert_close(loss, ((disp - target) ** 2).mean())
    loss.backward()
    torch.testing.assert_close(prediction.grad, 2 * (disp - target) / disp.numel())
    assert moving.grad is None
    again, info = criterion(moving, fixed, prediction, return_info=True)
    assert torch.equal(again, loss) and info.energies == tuple(energies) and info.refine_seconds > 0
    assert not hasattr(criterion, "last_energies") and not hasattr(criterion, "last_refine_seconds")
    criterion.lr = 0.0  # per-epoch schedule: with lr 0 the target is the prediction itself
    assert criterion(moving, fixed, prediction).item() == 0.0
    assert "steps=3" in repr(criterion)


def test_poly_lr():
    assert poly_lr(0.1, 0, 500) == 0.1
    assert poly_lr(0.1, 500, 500) == 0.0
    assert poly_lr(0.1, 250, 500) == round(0.1 * 0.5 ** 0.9, 8)
    assert poly_lr(0.1, 250, 500, power=1.0) == 0.05
    value = poly_lr(1e-4, 1, 500)
    assert value == round(value, 8) and value != 1e-4 * (1 - 1 / 500) ** 0.9
    with pytest.raises(ValueError, match="max_epoch must be positive"):
        poly_lr(0.1, 0, 0)
    with pytest.raises(ValueError, match="epoch must lie in"):
        poly_lr(0.1, 501, 500)


def test_callback_sees_every_iterate_of_one_refinement(gen, device):
    moving, fixed, disp = _pair(gen, device=device)
    seen = []
    final, energies = refine(moving, fixed, disp, steps=4, lr=0.1,
                             callback=lambda k, phi, e: seen.append((k, phi.clone(), e)))
    assert [k for k, _, _ in seen] == [0, 1, 2, 3, 4]
    assert [e for _, _, e in seen] == energies
    assert torch.equal(seen[0][1], disp)
    assert torch.equal(seen[-1][1], final)
    for k in (1, 3):
        # a fresh refinement of k steps is the k-th iterate: Adam restarts from zero moments
        alone, _ = refine(moving, fixed, disp, steps=k, lr=0.1)
        torch.testing.assert_close(seen[k][1], alone, rtol=0, atol=1e-12)


def test_refine_equals_reference_loop_in_2d_and_per_sample_in_a_batch(gen, device):
    """The closed-form energy gradient, grid layout and Adam(foreach) against autograd + default Adam."""
    moving, fixed, disp = _pair(gen, batch=1, shape=(16, 14), device=device)
    ours, _ = refine(moving, fixed, disp, steps=5, lr=0.1, window=5)
    torch.testing.assert_close(ours, naive_refine(moving, fixed, disp, steps=5, lr=0.1, window=5), rtol=0, atol=1e-9)
    moving, fixed, disp = _pair(gen, batch=2, shape=(10, 11, 12), device=device)
    ours, energies = refine(moving, fixed, disp, steps=4, lr=0.1, reg_weight=0.5)
    for b in range(2):
        expected = naive_refine(moving[b:b + 1], fixed[b:b + 1], disp[b:b + 1], steps=4, lr=0.1, reg_weight=0.5)
        torch.testing.assert_close(ours[b:b + 1], expected, rtol=0, atol=1e-9)


def test_refine_energies_follow_the_reference_energy_along_the_trajectory(gen, device):
    moving, fixed, disp = _pair(gen, device=device)
    seen = []
    _, energies = refine(moving, fixed, disp, steps=3, lr=0.1, reg_weight=2.0,
                         callback=lambda k, phi, e: seen.append(phi.clone()))
    for phi, energy in zip(seen, energies):
        expected = naive_ncc_loss(fixed, naive_warp(moving, phi)) + 2.0 * naive_diffusion_l2(phi)
        assert energy == pytest.approx(expected.item(), rel=1e-10)


# ---- the image term and the regulariser of the energy (loss.image, loss.regularizer) -----------


def naive_terms_refine(moving, fixed, disp, steps, lr, reg_weight, window, image, regularizer):
    """The reference loop for a batch of one with any image term and regulariser, by autograd."""
    phi = disp.detach().clone().requires_grad_(True)
    optimiser = torch.optim.Adam([phi], lr=lr, amsgrad=True, weight_decay=0)
    energies = []
    for _ in range(steps + 1):
        warped = naive_warp(moving, phi)
        similarity = naive_ncc_loss(fixed, warped, window) if image == "ncc" else F.mse_loss(warped, fixed)
        smooth = naive_diffusion_l2(phi) if regularizer == "grad_l2" else lku_smoothness_loss(phi)
        energy = similarity + reg_weight * smooth
        energies.append(energy.item())
        if len(energies) > steps:
            break
        optimiser.zero_grad()
        energy.backward()
        optimiser.step()
    return phi.detach(), energies


@pytest.mark.parametrize("image, regularizer", [("mse", "grad_l2"), ("ncc", "lku_smooth"), ("mse", "lku_smooth")])
def test_refine_with_other_terms_equals_the_autograd_loop_in_float64(gen, device, image, regularizer):
    moving, fixed, disp = _pair(gen, shape=(9, 12, 10), device=device)  # unequal sizes: lku_smooth weighs every axis differently
    ours, energies = refine(moving, fixed, disp, steps=5, lr=0.1, reg_weight=5.0, window=5, image=image,
                            regularizer=regularizer)
    expected, expected_energies = naive_terms_refine(moving, fixed, disp, 5, 0.1, 5.0, 5, image, regularizer)
    torch.testing.assert_close(ours, expected, rtol=0, atol=1e-9)
    assert energies == pytest.approx(expected_energies, rel=1e-10)
    assert (ours - disp).abs().max() > 0.05 and energies[-1] < energies[0]
    plain, _ = refine(moving, fixed, disp, steps=5, lr=0.1, reg_weight=5.0, window=5)
    assert (plain - ours).abs().max() > 1e-3  # the choice reaches the energy


def test_refine_terms_batch_is_per_sample_and_settings_carry_them(gen, device):
    moving, fixed, disp = _pair(gen, batch=2, shape=(8, 9, 10), device=device)
    settings = RefineSettings(steps=3, lr=0.1, reg_weight=2.0, window=5, image="mse", regularizer="lku_smooth")
    batched, _ = refine(moving, fixed, disp, **settings.kwargs())
    for b in range(2):
        alone, _ = refine(moving[b:b + 1], fixed[b:b + 1], disp[b:b + 1], **settings.kwargs())
        torch.testing.assert_close(batched[b:b + 1], alone, rtol=0, atol=1e-12)
    criterion = OFGLoss.from_settings(settings)
    assert (criterion.image, criterion.regularizer) == ("mse", "lku_smooth") and "image=mse" in repr(criterion)
    target, _ = refine(moving, fixed, disp, **settings.kwargs())
    torch.testing.assert_close(criterion(moving, fixed, disp), F.mse_loss(disp, target), rtol=0, atol=0)
    assert (RefineSettings().image, RefineSettings().regularizer) == ("ncc", "grad_l2")


def test_refine_refuses_unknown_terms_and_a_2d_lku_smooth():
    image, disp = torch.rand(1, 1, 6, 6, 6), torch.zeros(1, 3, 6, 6, 6)
    with pytest.raises(ValueError, match="image must be one of"):
        refine(image, image, disp, image="lncc")
    with pytest.raises(ValueError, match="regularizer one of"):
        refine(image, image, disp, regularizer="bending")
    with pytest.raises(ValueError, match="'lku_smooth'.* is 3-D"):
        refine(torch.rand(1, 1, 6, 6), torch.rand(1, 1, 6, 6), torch.zeros(1, 2, 6, 6), regularizer="lku_smooth")


# ---- OFGLoss keeps no state: two losses, wrappers and re-entrant calls ----------------------------


def _loss_cases(gen):
    """(loss, inputs) pairs that share the numba workspaces' key (size, dtype) or not, fused or eager."""
    same = _pair(gen, batch=2, shape=(8, 9, 10), dtype=torch.float32)
    other = _pair(gen, batch=1, shape=(8, 9, 10), dtype=torch.float32)
    smaller = _pair(gen, batch=1, shape=(7, 8, 6), dtype=torch.float32)
    return {
        "fused": (OFGLoss(steps=3, lr=0.1, window=5, fused=True), same),
        "fused, same size, other settings": (OFGLoss(steps=2, lr=0.05, reg_weight=2.0, window=3, fused=True), other),
        "fused, other size": (OFGLoss(steps=2, window=3, fused=True), smaller),
        "eager": (OFGLoss(steps=2, window=5), smaller),
    }


def _same(got, expected):
    (loss, info), (loss_alone, info_alone) = got, expected
    assert torch.equal(loss, loss_alone) and info.energies == info_alone.energies


def test_interleaved_losses_each_equal_the_loss_computed_alone(gen):
    cases = _loss_cases(gen)
    alone = {name: loss(*inputs, return_info=True) for name, (loss, inputs) in cases.items()}
    for name in ["fused", "fused, same size, other settings", "fused", "fused, other size", "eager",
                 "fused, same size, other settings", "fused, other size", "fused"]:
        loss, inputs = cases[name]
        _same(loss(*inputs, return_info=True), alone[name])


def test_loss_called_inside_another_refinement_leaves_both_exact(gen):
    """Re-entrant: a loss computed between two steps of a fused refinement of the same size and dtype."""
    cases = _loss_cases(gen)
    outer_loss, (moving, fixed, disp) = cases["fused"]
    expected_field, expected_energies = refine(moving, fixed, disp, steps=3, lr=0.1, window=5, fused=True)
    for name in ["fused, same size, other settings", "fused", "eager"]:
        loss, inputs = cases[name]
        expected = loss(*inputs, return_info=True)
        inner = []
        field, energies = refine(moving, fixed, disp, steps=3, lr=0.1, window=5, fused=True,
                                 callback=lambda k, phi, e: inner.append(loss(*inputs, return_info=True)))
        assert torch.equal(field, expected_field) and energies == expected_energies, name
        assert len(inner) == 4
        for got in inner:
            _same(got, expected)


class _Wrapper(nn.Module):
    """A thin module around a loss, as a training harness would hold it."""

    def __init__(self, loss: nn.Module) -> None:
        super().__init__()
        self.loss = loss

    def forward(self, *args, **kwargs):
        return self.loss(*args, **kwargs)


def test_loss_through_wrappers_equals_the_direct_call(gen):
    for name, (loss, (moving, fixed, disp)) in _loss_cases(gen).items():
        prediction = disp.clone().requires_grad_(True)
        direct = loss(moving, fixed, prediction)
        (grad,) = torch.autograd.grad(direct, prediction)
        for call in (nn.DataParallel(loss), _Wrapper(loss), functools.partial(loss, moving, fixed)):
            got = call(prediction) if isinstance(call, functools.partial) else call(moving, fixed, prediction)
            assert torch.equal(got, direct), name
            assert torch.equal(torch.autograd.grad(got, prediction)[0], grad), name
        wrapped, info = _Wrapper(loss)(moving, fixed, prediction, return_info=True)
        assert torch.equal(wrapped, direct) and len(info.energies) == loss.steps + 1 and info.refine_seconds > 0
