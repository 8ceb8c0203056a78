import pytest
import torch
import torch.nn.functional as F

from ofg.bench.core import naive_ncc_loss
from ofg.losses import (FixedImageMSE, FixedImageNCC, _box_sum, diffusion_loss, diffusion_terms, fixed_window_sums,
                        lku_smoothness_loss, local_ncc, ncc_loss, window_sum)


def reference_ncc(fixed: torch.Tensor, warped: torch.Tensor, window: int = 9) -> torch.Tensor:
    """PAPER.md's formula verbatim: five zero-padded 'same' ones-kernel window sums, then means."""
    ndim = fixed.ndim - 2
    conv = F.conv3d if ndim == 3 else F.conv2d
    ones = torch.ones([1, 1] + [window] * ndim, dtype=fixed.dtype, device=fixed.device)
    s = {name: conv(x, ones, padding=window // 2) for name, x in
         {"I": fixed, "J": warped, "II": fixed * fixed, "JJ": warped * warped, "IJ": fixed * warped}.items()}
    n = window ** ndim
    u_i, u_j = s["I"] / n, s["J"] / n
    cross = s["IJ"] - u_j * s["I"] - u_i * s["J"] + u_i * u_j * n
    var_i = s["II"] - 2 * u_i * s["I"] + u_i * u_i * n
    var_j = s["JJ"] - 2 * u_j * s["J"] + u_j * u_j * n
    return -(cross * cross / (var_i * var_j + 1e-5)).mean()


@pytest.mark.parametrize("shape,window", [((2, 1, 11, 12, 13), 9), ((1, 1, 7, 8, 9), 5), ((1, 1, 15, 14), 9),
                                          ((1, 1, 5, 6, 7), 9), ((1, 1, 6, 6, 6), 1)])
def test_ncc_equals_naive_formula_value_and_gradient(gen, device, shape, window):
    fixed = torch.rand(shape, generator=gen, dtype=torch.float64).to(device)
    warped = torch.rand(shape, generator=gen, dtype=torch.float64).to(device).requires_grad_(True)
    ours = ncc_loss(fixed, warped, window)
    (grad_ours,) = torch.autograd.grad(ours, warped)
    ref = reference_ncc(fixed, warped, window)
    (grad_ref,) = torch.autograd.grad(ref, warped)
    torch.testing.assert_close(ours, ref, rtol=1e-6, atol=0)
    torch.testing.assert_close(grad_ours, grad_ref, rtol=1e-6, atol=1e-12)
    torch.testing.assert_close(naive_ncc_loss(fixed, warped.detach(), window), ref.detach(), rtol=1e-12, atol=0)


def test_window_sum_equals_ones_convolution_and_is_self_adjoint(gen, device):
    volume = torch.rand((2, 3, 6, 7, 12), generator=gen, dtype=torch.float64).to(device).requires_grad_(True)
    for window in (1, 3, 9, 15):
        ones = torch.ones((1, 1, window, window, window), dtype=torch.float64, device=device)
        expected = F.conv3d(volume.detach().reshape(6, 1, 6, 7, 12), ones, padding=window // 2).reshape(2, 3, 6, 7, 12)
        torch.testing.assert_close(window_sum(volume.detach(), window), expected, rtol=1e-12, atol=1e-12)
    small = volume[:1, :1, :4, :5, :6].detach().clone().requires_grad_(True)
    assert torch.autograd.gradcheck(lambda v: window_sum(v, 3), (small,))
    assert torch.autograd.gradcheck(lambda v: window_sum(v, 9), (small,))


def test_identical_textured_images_give_minus_one(gen, device):
    image = torch.rand((1, 1, 12, 12, 12), generator=gen, dtype=torch.float64).to(device)
    minus_one = torch.tensor(-1.0, dtype=torch.float64, device=device)
    torch.testing.assert_close(ncc_loss(image, image), minus_one, atol=1e-6, rtol=0)
    image32 = image.float()
    assert abs(ncc_loss(image32, image32).item() + 1.0) < 1e-5
    # a scaled copy keeps the local correlation at one (an offset would not: zero padding)
    torch.testing.assert_close(ncc_loss(image, 3 * image), minus_one, atol=1e-6, rtol=0)


def test_symmetric_and_bounded(gen):
    a = torch.rand((2, 1, 9, 10, 11), generator=gen, dtype=torch.float64)
    b = torch.rand((2, 1, 9, 10, 11), generator=gen, dtype=torch.float64)
    torch.testing.assert_close(ncc_loss(a, b), ncc_loss(b, a), rtol=1e-14, atol=0)
    assert -1.0 <= ncc_loss(a, b).item() <= 0.0


def test_gradcheck_ncc(gen):
    fixed = torch.rand((1, 1, 5, 6, 7), generator=gen, dtype=torch.float64)
    warped = torch.rand((1, 1, 5, 6, 7), generator=gen, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda w: ncc_loss(fixed, w, 3), (warped,))
    assert torch.autograd.gradcheck(lambda w: ncc_loss(fixed, w, 9), (warped,))


@pytest.mark.parametrize("value", [0.0, 0.7, 123.0])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_constant_and_zero_images_are_finite(gen, device, value, dtype):
    flat = torch.full((1, 1, 8, 9, 10), value, dtype=dtype, device=device, requires_grad=True)
    textured = torch.rand((1, 1, 8, 9, 10), generator=gen, dtype=dtype).to(device).requires_grad_(True)
    for a, b in ((flat, flat), (flat, textured), (textured, flat)):
        loss = ncc_loss(a, b)
        grads = torch.autograd.grad(loss, (a, b))
        assert torch.isfinite(loss)
        assert -1.0 <= loss.item() <= 1e-6
        assert all(torch.isfinite(g).all() for g in grads)


def test_fixed_sums_path_is_identical(gen, device):
    fixed = torch.rand((2, 1, 9, 10, 11), generator=gen, dtype=torch.float64).to(device)
    warped = torch.rand((2, 1, 9, 10, 11), generator=gen, dtype=torch.float64).to(device).requires_grad_(True)
    sums = fixed_window_sums(fixed, 9)
    assert sums.shape == (2, 2, 9, 10, 11) and not sums.requires_grad
    plain = local_ncc(fixed, warped, 9)
    cached = local_ncc(fixed, warped, 9, fixed_sums=sums)
    torch.testing.assert_close(cached, plain, rtol=1e-12, atol=1e-14)
    g_plain, = torch.autograd.grad(plain.sum(), warped)
    g_cached, = torch.autograd.grad(cached.sum(), warped)
    torch.testing.assert_close(g_cached, g_plain, rtol=1e-10, atol=1e-14)
    with pytest.raises(ValueError, match="fixed_sums: expected shape"):
        local_ncc(fixed, warped, 9, fixed_sums=sums[:1])


def test_diffusion_closed_form(gen):
    a = 0.7
    grid = torch.arange(6, dtype=torch.float64)
    disp = torch.zeros((2, 3, 6, 7, 8), dtype=torch.float64)
    disp[:, 0] = a * grid.view(6, 1, 1)
    # only channel 0 along axis 0 changes: that axis term is a^2/3 (one channel of three), others 0
    torch.testing.assert_close(diffusion_loss(disp, "l2"), torch.tensor(a * a / 9, dtype=torch.float64))
    torch.testing.assert_close(diffusion_loss(-disp, "l1"), torch.tensor(a / 9, dtype=torch.float64))
    torch.testing.assert_close(diffusion_loss(disp + 5.0), diffusion_loss(disp))
    disp2d = torch.zeros((1, 2, 5, 4), dtype=torch.float64)
    disp2d[:, 1] = a * torch.arange(4, dtype=torch.float64)
    torch.testing.assert_close(diffusion_loss(disp2d), torch.tensor(a * a / 4, dtype=torch.float64))


def test_diffusion_matches_reference_and_per_sample_terms(gen, device):
    disp = torch.randn((3, 3, 5, 6, 7), generator=gen, dtype=torch.float64).to(device)
    dy = disp[:, :, 1:] - disp[:, :, :-1]
    dx = disp[:, :, :, 1:] - disp[:, :, :, :-1]
    dz = disp[:, :, :, :, 1:] - disp[:, :, :, :, :-1]
    for penalty, f in (("l2", lambda d: d * d), ("l1", torch.abs)):
        expected = (f(dy).mean() + f(dx).mean() + f(dz).mean()) / 3.0
        torch.testing.assert_close(diffusion_loss(disp, penalty), expected)
        terms = diffusion_terms(disp, penalty)
        assert terms.shape == (3,)
        torch.testing.assert_close(terms.mean(), expected)
        torch.testing.assert_close(terms[1], diffusion_loss(disp[1:2], penalty))
    leaf = disp[:1, :, :3, :4, :4].clone().requires_grad_(True)
    assert torch.autograd.gradcheck(lambda d: diffusion_loss(d, "l2"), (leaf,))


def test_bad_inputs_raise_clear_errors():
    a = torch.rand(1, 1, 6, 6, 6)
    with pytest.raises(ValueError, match="shape .* but warped has shape"):
        ncc_loss(a, torch.rand(1, 1, 6, 6, 5))
    with pytest.raises(ValueError, match="window must be a positive odd integer"):
        ncc_loss(a, a, window=4)
    with pytest.raises(ValueError, match="floating-point"):
        ncc_loss(a, (a * 10).long())
    with pytest.raises(ValueError, match=r"expected shape \(B,C,D,H,W\)"):
        ncc_loss(a[0, 0], a[0, 0])
    with pytest.raises(ValueError, match="penalty must be one of"):
        diffusion_loss(torch.rand(1, 3, 4, 4, 4), "l3")
    with pytest.raises(ValueError, match="expected 3 channels"):
        diffusion_loss(torch.rand(1, 1, 4, 4, 4))
    with pytest.raises(ValueError, match="volume: expected"):
        window_sum(torch.rand(4, 4, 4), 3)


@pytest.mark.parametrize("shape,window", [((2, 1, 9, 10, 11), 9), ((1, 1, 7, 8, 9), 5), ((1, 1, 15, 14), 9),
                                          ((2, 1, 6, 7), 3), ((1, 1, 6, 6, 6), 1)])
def test_fixed_image_ncc_closed_form_gradient_equals_autograd_of_reference(gen, device, shape, window):
    fixed = torch.rand(shape, generator=gen, dtype=torch.float64).to(device)
    warped = torch.rand(shape, generator=gen, dtype=torch.float64).to(device).requires_grad_(True)
    # per-sample energies of the PAPER.md formula (conv-based), differentiated by autograd
    expected = torch.stack([reference_ncc(fixed[b:b + 1], warped[b:b + 1], window) for b in range(shape[0])])
    (grad_expected,) = torch.autograd.grad(expected.sum(), warped)
    ncc = FixedImageNCC(fixed, window)
    energy, grad = ncc.energy_and_grad(warped)
    torch.testing.assert_close(energy, expected.detach(), rtol=1e-10, atol=1e-14)
    torch.testing.assert_close(grad, grad_expected, rtol=1e-8, atol=1e-14)
    torch.testing.assert_close(ncc.energy(warped), energy, rtol=0, atol=0)
    again, grad_again = ncc.energy_and_grad(warped)  # buffers are reused: no state leaks between calls
    assert torch.equal(again, energy) and torch.equal(grad_again, grad)


def test_fixed_image_ncc_gradient_matches_finite_differences(gen):
    fixed = torch.rand((1, 1, 5, 6, 7), generator=gen, dtype=torch.float64)
    warped = torch.rand((1, 1, 5, 6, 7), generator=gen, dtype=torch.float64)
    ncc = FixedImageNCC(fixed, 3)
    _, grad = ncc.energy_and_grad(warped)
    step = 1e-6
    for index in [(0, 0, 0, 0, 0), (0, 0, 2, 3, 4), (0, 0, 4, 5, 6), (0, 0, 1, 0, 6)]:
        plus, minus = warped.clone(), warped.clone()
        plus[index] += step
        minus[index] -= step
        numeric = (ncc.energy(plus) - ncc.energy(minus)).item() / (2 * step)
        assert grad[index].item() == pytest.approx(numeric, rel=1e-6, abs=1e-10)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_fixed_image_ncc_flat_regions_follow_the_clamped_autograd_gradient(gen, device, dtype):
    """Flat warped images: round-off can make D − B²/n negative, where the clamp passes no gradient."""
    fixed = torch.rand((1, 1, 8, 9, 10), generator=gen, dtype=dtype).to(device)
    for value in (0.0, 0.7, 123.0):
        warped = torch.full((1, 1, 8, 9, 10), value, dtype=dtype, device=device, requires_grad=True)
        warped.data[..., :4] += torch.rand((1, 1, 8, 9, 4), generator=gen, dtype=dtype).to(device)  # half textured
        expected = -local_ncc(fixed, warped).flatten(1).mean(1)
        (grad_expected,) = torch.autograd.grad(expected.sum(), warped)
        energy, grad = FixedImageNCC(fixed).energy_and_grad(warped)
        assert torch.isfinite(grad).all()
        tol = 1e-12 if dtype == torch.float64 else 1e-5
        torch.testing.assert_close(energy, expected.detach(), rtol=tol, atol=tol)
        torch.testing.assert_close(grad, grad_expected, rtol=tol * 10, atol=tol * 1e-2)


def test_fixed_image_ncc_bad_inputs():
    with pytest.raises(ValueError, match="fixed: expected"):
        FixedImageNCC(torch.rand(1, 2, 6, 6, 6))
    with pytest.raises(ValueError, match="window must be a positive odd integer"):
        FixedImageNCC(torch.rand(1, 1, 6, 6, 6), window=4)
    with pytest.raises(ValueError, match="warped: expected shape"):
        FixedImageNCC(torch.rand(1, 1, 6, 6, 6)).energy(torch.rand(1, 1, 6, 6, 5))


def test_box_sum_with_scratch_buffers_equals_fresh_allocation(gen, device):
    volume = torch.rand((2, 3, 7, 8, 9), generator=gen, dtype=torch.float64).to(device)
    scratch = (torch.empty_like(volume), torch.empty_like(volume))
    for window in (1, 3, 9):
        expected = window_sum(volume, window)
        assert torch.equal(_box_sum(volume, window, scratch), expected)


def _reference_smoothloss(y_pred):
    """The reference's LKU-Net ``smoothloss``, transcribed, on a field in normalised grid units."""
    d2, h2, w2 = y_pred.shape[-3:]
    dy = torch.abs(y_pred[:, :, 1:, :, :] - y_pred[:, :, :-1, :, :]) / 2 * d2
    dx = torch.abs(y_pred[:, :, :, 1:, :] - y_pred[:, :, :, :-1, :]) / 2 * h2
    dz = torch.abs(y_pred[:, :, :, :, 1:] - y_pred[:, :, :, :, :-1]) / 2 * w2
    return (torch.mean(dx * dx) + torch.mean(dy * dy) + torch.mean(dz * dz)) / 3.0


def test_lku_smoothness_loss_is_the_reference_formula_on_the_normalised_field(gen, device):
    disp = torch.randn((2, 3, 6, 9, 5), generator=gen, dtype=torch.float64).to(device)
    normalised = disp * torch.tensor([2 / 5, 2 / 8, 2 / 4], dtype=torch.float64, device=device).view(1, 3, 1, 1, 1)
    torch.testing.assert_close(lku_smoothness_loss(disp), _reference_smoothloss(normalised), rtol=1e-12, atol=0)
    # a linear field u_0 = x_0 (unit differences along axis 0 only): (n_0/(n_0-1))^2 / 3
    linear = torch.zeros((1, 3, 6, 9, 5), dtype=torch.float64, device=device)
    linear[:, 0] = torch.arange(6, dtype=torch.float64, device=device).view(6, 1, 1)
    assert float(lku_smoothness_loss(linear)) == pytest.approx((6 / 5) ** 2 / 3 / 3)
    with pytest.raises(ValueError, match="3-D"):
        lku_smoothness_loss(torch.zeros(1, 2, 4, 4))


# ---- FixedImageMSE: the MSE image term of the OFG energy --------------------------------------


@pytest.mark.parametrize("shape", [(2, 1, 9, 10, 11), (1, 1, 6, 7), (3, 1, 4, 5, 6)])
def test_fixed_image_mse_closed_form_gradient_equals_autograd_in_float64(gen, device, shape):
    fixed = torch.rand(shape, generator=gen, dtype=torch.float64).to(device)
    warped = (torch.rand(shape, generator=gen, dtype=torch.float64) * 3 - 1).to(device).requires_grad_(True)
    expected = torch.stack([F.mse_loss(warped[b:b + 1], fixed[b:b + 1]) for b in range(shape[0])])
    (grad_expected,) = torch.autograd.grad(expected.sum(), warped)
    mse = FixedImageMSE(fixed)
    energy, grad = mse.energy_and_grad(warped)
    torch.testing.assert_close(energy, expected.detach(), rtol=1e-13, atol=0)
    torch.testing.assert_close(grad, grad_expected, rtol=1e-13, atol=1e-16)
    assert torch.equal(mse.energy(warped), energy)
    assert warped.grad is None and not grad.requires_grad and not energy.requires_grad


def test_fixed_image_mse_passes_gradcheck(gen):
    fixed = torch.rand((2, 1, 4, 5, 3), generator=gen, dtype=torch.float64)
    warped = torch.rand((2, 1, 4, 5, 3), generator=gen, dtype=torch.float64, requires_grad=True)
    mse = FixedImageMSE(fixed)

    class Energy(torch.autograd.Function):
        @staticmethod
        def forward(ctx, x):
            energy, grad = mse.energy_and_grad(x)
            ctx.save_for_backward(grad)
            return energy

        @staticmethod
        def backward(ctx, upstream):
            (grad,) = ctx.saved_tensors
            return grad * upstream.view(-1, *[1] * (grad.ndim - 1))

    assert torch.autograd.gradcheck(Energy.apply, (warped,), eps=1e-6, atol=1e-9)


def test_fixed_image_mse_bad_inputs():
    with pytest.raises(ValueError, match="fixed: expected"):
        FixedImageMSE(torch.rand(1, 2, 6, 6, 6))
    with pytest.raises(ValueError, match="warped: expected shape"):
        FixedImageMSE(torch.rand(1, 1, 6, 6, 6)).energy(torch.rand(1, 1, 6, 6, 5))
