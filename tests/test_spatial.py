import numpy as np
import pytest
import torch
import torch.nn.functional as F
from scipy.ndimage import map_coordinates

from ofg.spatial import (_normalised_identity, compose, grid_sample_parallel, identity_grid, integrate,
                         resize_displacement, warp)


def _oracle_warp(image: np.ndarray, disp: np.ndarray, order: int) -> np.ndarray:
    """scipy sampling of image at x + u(x); 'grid-constant' = zero padding with interpolation at
    the border, which is grid_sample's padding_mode='zeros'."""
    coords = np.stack(np.meshgrid(*[np.arange(n) for n in image.shape], indexing="ij")) + disp
    return map_coordinates(image, coords, order=order, mode="grid-constant", cval=0.0)


def _smooth_field(gen, batch, shape, amplitude):
    coarse = torch.randn((batch, len(shape), *[3] * len(shape)), generator=gen, dtype=torch.float64)
    mode = "trilinear" if len(shape) == 3 else "bilinear"
    return amplitude * F.interpolate(coarse, size=shape, mode=mode, align_corners=True)


@pytest.mark.parametrize("shape", [(6, 7, 8), (9, 11)])
@pytest.mark.parametrize("mode,order", [("bilinear", 1), ("nearest", 0)])
def test_warp_matches_scipy_oracle(gen, shape, mode, order):
    image = torch.rand((1, 1, *shape), generator=gen, dtype=torch.float64)
    disp = 2.0 * torch.randn((1, len(shape), *shape), generator=gen, dtype=torch.float64)
    expected = _oracle_warp(image[0, 0].numpy(), disp[0].numpy(), order)
    np.testing.assert_allclose(warp(image, disp, mode)[0, 0].numpy(), expected, atol=1e-10)


def test_warp_inside_volume_matches_plain_constant_mode(gen):
    """Where x + u stays inside [0, n-1] the 'constant' mode oracle applies too."""
    shape = (5, 6, 7)
    image = torch.rand((1, 1, *shape), generator=gen, dtype=torch.float64)
    disp = torch.rand((1, 3, *shape), generator=gen, dtype=torch.float64) * 0.9
    disp[:, :, -1] = 0.0
    disp[:, :, :, -1] = 0.0
    disp[:, :, :, :, -1] = 0.0
    coords = np.stack(np.meshgrid(*[np.arange(n) for n in shape], indexing="ij")) + disp[0].numpy()
    expected = map_coordinates(image[0, 0].numpy(), coords, order=1, mode="constant", cval=0.0)
    np.testing.assert_allclose(warp(image, disp)[0, 0].numpy(), expected, atol=1e-10)


@pytest.mark.parametrize("axis,shift", [(0, 2), (1, -1), (2, 3)])
@pytest.mark.parametrize("mode", ["bilinear", "nearest"])
def test_integer_shift(gen, axis, shift, mode):
    image = torch.rand((1, 1, 6, 7, 8), generator=gen, dtype=torch.float64)
    disp = torch.zeros((1, 3, 6, 7, 8), dtype=torch.float64)
    disp[:, axis] = shift
    out = warp(image, disp, mode)
    n = image.shape[2 + axis]
    expected = torch.zeros_like(image)
    if shift > 0:
        expected.narrow(2 + axis, 0, n - shift).copy_(image.narrow(2 + axis, shift, n - shift))
    else:
        expected.narrow(2 + axis, -shift, n + shift).copy_(image.narrow(2 + axis, 0, n + shift))
    torch.testing.assert_close(out, expected, atol=1e-12, rtol=0)


def test_zero_field_is_identity(gen):
    image = torch.rand((2, 3, 5, 6, 7), generator=gen)
    torch.testing.assert_close(warp(image, torch.zeros(2, 3, 5, 6, 7)), image, atol=1e-6, rtol=0)
    image2d = torch.rand((1, 1, 9, 4), generator=gen)
    torch.testing.assert_close(warp(image2d, torch.zeros(1, 2, 9, 4)), image2d, atol=1e-6, rtol=0)


def test_batch_broadcast_and_channels(gen):
    image = torch.rand((1, 2, 5, 6, 7), generator=gen, dtype=torch.float64)
    disp = torch.randn((3, 3, 5, 6, 7), generator=gen, dtype=torch.float64)
    out = warp(image, disp)
    assert out.shape == (3, 2, 5, 6, 7)
    for b in range(3):
        torch.testing.assert_close(out[b:b + 1], warp(image, disp[b:b + 1]), atol=0, rtol=0)
        for c in range(2):
            torch.testing.assert_close(out[b:b + 1, c:c + 1], warp(image[:, c:c + 1], disp[b:b + 1]))


def test_identity_grid_is_cached():
    before = _normalised_identity.cache_info().hits
    first = _normalised_identity((4, 5, 6), torch.device("cpu"), torch.float32)
    again = _normalised_identity((4, 5, 6), torch.device("cpu"), torch.float32)
    assert first is again
    assert _normalised_identity.cache_info().hits > before
    voxel = identity_grid((4, 5, 6))
    assert voxel.shape == (1, 3, 4, 5, 6)
    assert voxel[0, 2, 1, 2, 3] == 3 and voxel[0, 0, 3, 0, 0] == 3


def test_gradcheck_warp_wrt_displacement_and_image(gen):
    image = torch.rand((1, 1, 4, 5, 6), generator=gen, dtype=torch.float64, requires_grad=True)
    disp = (0.3 + torch.rand((1, 3, 4, 5, 6), generator=gen, dtype=torch.float64)).requires_grad_(True)
    assert torch.autograd.gradcheck(lambda d: warp(image.detach(), d), (disp,))
    assert torch.autograd.gradcheck(lambda i: warp(i, disp.detach()), (image,))


def test_integrate_small_field_is_the_field(gen):
    grid = identity_grid((16, 16, 16), dtype=torch.float64)[0]
    phases = torch.rand((3, 3), generator=gen, dtype=torch.float64) * 6.3
    velocity = torch.stack([sum(torch.sin(grid[j] / 8.0 + phases[i, j]) for j in range(3))
                            for i in range(3)])[None] * 1e-2
    disp = integrate(velocity, steps=7)
    # exp(v) = v + (grad v) v / 2 + O(|v|^3) away from the zero-padded border; trilinear sampling
    # takes one-sided slopes, so on a grid the second-order term holds to O(1/wavelength)
    v = velocity[0].numpy()
    jac_v = np.stack([sum(np.gradient(v[i], axis=j) * v[j] for j in range(3)) for i in range(3)])
    inner = (slice(None),) + (slice(2, -2),) * 3
    first_order = np.abs(disp[0].numpy() - v)[inner].max()
    second_order = np.abs(disp[0].numpy() - v - 0.5 * jac_v)[inner].max()
    assert first_order < 5e-3 * np.abs(v).max()
    assert second_order < 0.2 * first_order
    torch.testing.assert_close(integrate(velocity, steps=0), velocity)


def test_integrate_forward_then_inverse_is_identity(gen):
    shape = (24, 24, 24)
    velocity = _smooth_field(gen, 1, shape, 1.5)
    forward, backward = integrate(velocity), integrate(-velocity)
    roundtrip = compose(forward, backward)
    inner = (slice(None), slice(None)) + (slice(5, -5),) * 3
    assert roundtrip[inner].abs().max() < 0.05 * velocity.abs().max()
    assert forward[inner].abs().max() > 1.0


def test_compose_translations_add_and_zero_is_neutral(gen):
    shape = (8, 9, 10)
    a = torch.zeros((1, 3, *shape), dtype=torch.float64)
    b = torch.zeros_like(a)
    a[:, 0], a[:, 2] = 1.0, -2.0
    b[:, 1] = 2.0
    inner = (slice(None), slice(None), slice(0, 7), slice(0, 7), slice(2, 10))
    torch.testing.assert_close(compose(a, b)[inner], (a + b)[inner])
    field = _smooth_field(gen, 2, shape, 1.0)
    torch.testing.assert_close(compose(torch.zeros_like(field), field), field)
    torch.testing.assert_close(compose(field, torch.zeros_like(field)), field, atol=1e-12, rtol=0)


def test_compose_is_sequential_warping(gen):
    shape = (20, 20, 20)
    x = torch.linspace(0, 3.0, 20, dtype=torch.float64)
    image = (torch.sin(x)[:, None, None] * torch.cos(x)[None, :, None] + x[None, None, :] / 3)[None, None]
    first, second = _smooth_field(gen, 1, shape, 1.0), _smooth_field(gen, 1, shape, 1.0)
    sequential = warp(warp(image, first), second)
    direct = warp(image, compose(first, second))
    inner = (slice(None), slice(None)) + (slice(4, -4),) * 3
    assert (sequential - direct)[inner].abs().max() < 0.02


@pytest.mark.parametrize("old,new", [((6, 7, 8), (11, 13, 4)), ((5, 9), (9, 17))])
def test_resize_affine_field(gen, old, new):
    ndim = len(old)
    matrix = torch.randn((ndim, ndim), generator=gen, dtype=torch.float64) * 0.3
    offset = torch.randn(ndim, generator=gen, dtype=torch.float64)
    coords = identity_grid(old, dtype=torch.float64)[0]
    disp = (torch.einsum("ij,j...->i...", matrix, coords) + offset.view(ndim, *[1] * ndim))[None]
    scale = torch.tensor([(m - 1) / (n - 1) for m, n in zip(new, old)], dtype=torch.float64)
    new_coords = identity_grid(new, dtype=torch.float64)[0]
    old_of_new = new_coords / scale.view(ndim, *[1] * ndim)
    expected = (torch.einsum("ij,j...->i...", matrix, old_of_new) + offset.view(ndim, *[1] * ndim))
    expected = expected * scale.view(ndim, *[1] * ndim)
    torch.testing.assert_close(resize_displacement(disp, new)[0], expected, atol=1e-10, rtol=0)


def test_resize_then_warp_is_consistent(gen):
    """A translation of 2 voxels at 9^3 is 4 voxels at 17^3 (align_corners scaling)."""
    disp = torch.zeros((1, 3, 9, 9, 9), dtype=torch.float64)
    disp[:, 1] = 2.0
    resized = resize_displacement(disp, (17, 17, 17))
    torch.testing.assert_close(resized[:, 1], torch.full((1, 17, 17, 17), 4.0, dtype=torch.float64))
    torch.testing.assert_close(resized[:, 0], torch.zeros((1, 17, 17, 17), dtype=torch.float64))


def test_bad_inputs_raise_clear_errors():
    image, disp = torch.rand(1, 1, 4, 5, 6), torch.rand(1, 3, 4, 5, 6)
    with pytest.raises(ValueError, match="mode must be one of"):
        warp(image, disp, mode="bicubic")
    with pytest.raises(ValueError, match="expected 3 channels"):
        warp(image, torch.rand(1, 2, 4, 5, 6))
    with pytest.raises(ValueError, match="does not match image spatial shape"):
        warp(image, torch.rand(1, 3, 4, 5, 7))
    with pytest.raises(ValueError, match="floating-point"):
        warp(image.long(), disp)
    with pytest.raises(ValueError, match="batch sizes differ"):
        warp(torch.rand(2, 1, 4, 5, 6), torch.rand(3, 3, 4, 5, 6))
    with pytest.raises(ValueError, match="2-D"):
        warp(torch.rand(1, 1, 5, 6), disp)
    with pytest.raises(ValueError, match="steps must be >= 0"):
        integrate(disp, steps=-1)
    with pytest.raises(ValueError, match="cannot compose"):
        compose(disp, torch.rand(1, 3, 4, 5, 7))
    with pytest.raises(ValueError, match="size must have 3 entries"):
        resize_displacement(disp, (8, 8))


@pytest.mark.parametrize("mode", ["bilinear", "nearest"])
def test_grid_sample_parallel_is_bit_identical_to_grid_sample(gen, mode):
    threads = torch.get_num_threads()
    torch.set_num_threads(2)  # the slice-parallel path is taken with more than one thread
    try:
        image = torch.rand((2, 3, 6, 7, 8), generator=gen)
        grid = (2.2 * torch.rand((2, 5, 4, 9, 3), generator=gen) - 1.1).requires_grad_(True)
        ours = grid_sample_parallel(image, grid, mode)
        expected = F.grid_sample(image, grid, mode=mode, padding_mode="zeros", align_corners=True)
        assert ours.shape == expected.shape and torch.equal(ours, expected)
        weights = torch.rand(expected.shape, generator=gen)
        (g_ours,) = torch.autograd.grad(ours, grid, weights)
        (g_expected,) = torch.autograd.grad(expected, grid, weights)
        assert torch.equal(g_ours, g_expected)
        # an image that needs a gradient takes the plain kernel; the gradients still agree
        leaf = image.clone().requires_grad_(True)
        (gi_ours,) = torch.autograd.grad(grid_sample_parallel(leaf, grid.detach(), mode), leaf, weights)
        (gi_expected,) = torch.autograd.grad(F.grid_sample(leaf, grid.detach(), mode=mode, padding_mode="zeros",
                                                           align_corners=True), leaf, weights)
        assert torch.equal(gi_ours, gi_expected)
    finally:
        torch.set_num_threads(threads)
