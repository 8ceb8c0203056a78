"""Tests of ofg.data.synthesis: resampling against closed forms and scipy/torch oracles, and the
random transforms (diffeomorphic, exact inverse, the documented composition order)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import ndimage

from ofg.data import synthesis
from ofg.spatial import compose, warp


def jacobian_det(disp: np.ndarray) -> np.ndarray:
    """det of d(x + u)/dx by np.gradient (central differences), (D,H,W)."""
    grads = [np.gradient(disp[i].astype(np.float64)) for i in range(3)]
    jac = np.array([[grads[i][j] + (i == j) for j in range(3)] for i in range(3)])
    return np.linalg.det(np.moveaxis(jac, (0, 1), (-2, -1)))


def smooth_field(seed: int, shape: tuple[int, ...], amplitude: float, sigma: float = 3.0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    field = np.stack([ndimage.gaussian_filter(rng.standard_normal(shape), sigma) for _ in range(3)])
    return (field * amplitude / np.abs(field).max()).astype(np.float32)


def test_block_average_matches_world_coordinates():
    # A ramp f = world x (mm) on a 0.5 mm grid: each block mean must equal f at the block centre
    # that the returned affine gives.
    shape = (13, 8, 6)
    affine = np.diag([0.5, 0.5, 0.5, 1.0])
    affine[:3, 3] = [-3.0, 2.0, 1.0]
    world_x = (affine @ np.vstack([np.indices(shape).reshape(3, -1), np.ones(np.prod(shape))]))[0]
    ramp = world_x.reshape(shape).astype(np.float32)
    averaged, new_affine = synthesis.block_average(ramp, affine, resolution=1.6)  # blocks of 3
    assert averaged.shape == (4, 2, 2)
    np.testing.assert_allclose(synthesis.voxel_sizes(new_affine), [1.5, 1.5, 1.5])
    centres = new_affine @ np.vstack([np.indices(averaged.shape).reshape(3, -1), np.ones(averaged.size)])
    np.testing.assert_allclose(averaged.ravel(), centres[0], atol=1e-5)


def test_block_average_same_for_fortran_order():
    volume = np.random.default_rng(0).integers(0, 255, (14, 9, 8)).astype(np.uint8)
    affine = np.diag([0.7, 0.7, 2.5, 1.0])
    c_out, c_affine = synthesis.block_average(volume, affine, 2.0)  # blocks (2, 2, 1)
    f_out, f_affine = synthesis.block_average(np.asfortranarray(volume), affine, 2.0)
    np.testing.assert_array_equal(c_out, f_out)
    np.testing.assert_array_equal(c_affine, f_affine)
    np.testing.assert_allclose(c_out[1, 2, 3], volume[2:4, 4:6, 3].mean(), rtol=1e-6)


def test_block_average_keeps_fine_enough_volumes():
    volume = np.arange(24, dtype=np.int16).reshape(2, 3, 4)
    out, affine = synthesis.block_average(volume, np.eye(4), resolution=1.5)
    np.testing.assert_array_equal(out, volume)
    assert out.dtype == np.float32 and np.array_equal(affine, np.eye(4))


def test_grid_affine_centres_the_grid():
    affine = synthesis.grid_affine((48, 64, 32), 3.0, (10.0, -20.0, 5.0))
    middle = affine @ np.array([47 / 2, 63 / 2, 31 / 2, 1.0])
    np.testing.assert_allclose(middle[:3], [10.0, -20.0, 5.0])
    np.testing.assert_allclose(synthesis.voxel_sizes(affine), [3.0, 3.0, 3.0])


def test_clamp_center_keeps_grid_inside_or_centres_it():
    src_affine = np.eye(4)  # source spans 0..99 mm along every axis
    center = synthesis.clamp_center(np.array([5.0, 50.0, 95.0]), (20, 20, 200), 1.0, (100, 100, 100), src_affine)
    np.testing.assert_allclose(center, [9.5, 50.0, 49.5])


def test_resample_identity_and_integer_shift():
    rng = np.random.default_rng(0)
    volume = rng.random((10, 11, 12)).astype(np.float32)
    affine = synthesis.grid_affine(volume.shape, 2.0, (0.0, 0.0, 0.0))
    same = synthesis.resample(volume, affine, affine, volume.shape)
    np.testing.assert_allclose(same, volume, atol=1e-6)
    shifted_affine = affine @ synthesis.translation(2)  # destination voxel i is source voxel i + 2
    shifted = synthesis.resample(volume, affine, shifted_affine, (8, 9, 10))
    np.testing.assert_allclose(shifted, volume[2:, 2:, 2:], atol=1e-6)
    labels = rng.integers(0, 5, volume.shape).astype(np.int16)
    assert synthesis.resample(labels, affine, affine, volume.shape, order=0).dtype == np.int16


def test_resample_with_displacement_matches_spatial_warp():
    # Same grid, so resample(V, disp) must equal ofg.spatial.warp (torch grid_sample, zero padding).
    shape = (16, 18, 20)
    rng = np.random.default_rng(1)
    volume = ndimage.gaussian_filter(rng.random(shape), 1.0).astype(np.float32)
    disp = smooth_field(2, shape, amplitude=2.5)
    affine = synthesis.grid_affine(shape, 1.5, (3.0, 2.0, 1.0))
    ours = synthesis.resample(volume, affine, affine, shape, disp, order=1, cval=0.0)
    ref = warp(torch.from_numpy(volume)[None, None], torch.from_numpy(disp)[None])[0, 0].numpy()
    np.testing.assert_allclose(ours, ref, atol=1e-5)


def test_relabel_maps_and_zeroes_unknown():
    labels = np.array([[0, 5, 63], [52, 7, 99]])
    out = synthesis.relabel(labels, {5: 6, 63: 9, 52: 8})
    np.testing.assert_array_equal(out, [[0, 6, 9], [8, 0, 0]])
    assert out.dtype == np.int16
    with pytest.raises(ValueError, match="non-negative"):
        synthesis.relabel(np.array([-1, 2]), {2: 1})


def test_channels_roundtrip_and_error():
    disp = np.random.default_rng(0).standard_normal((3, 4, 5, 6)).astype(np.float32)
    last = synthesis.to_channels_last(disp)
    assert last.shape == (4, 5, 6, 3) and last[1, 2, 3, 0] == disp[0, 1, 2, 3]
    np.testing.assert_array_equal(synthesis.to_channels_first(last), disp)
    with pytest.raises(ValueError, match=r"\(D,H,W,3\)"):
        synthesis.to_channels_first(disp)


def test_smooth_noise_equals_periodic_gaussian_filter():
    shape, sigma = (24, 20, 16), 2.5
    ours = synthesis.smooth_noise(np.random.default_rng(3), shape, sigma)
    noise = np.random.default_rng(3).standard_normal(shape)
    ref = ndimage.gaussian_filter(noise, sigma, mode="wrap", truncate=8.0)
    np.testing.assert_allclose(ours, ref, atol=1e-3 * np.abs(ref).max())


def test_random_velocity_peak_and_determinism():
    v1 = synthesis.random_velocity(np.random.default_rng(5), (20, 20, 20), 3.0, 2.5)
    v2 = synthesis.random_velocity(np.random.default_rng(5), (20, 20, 20), 3.0, 2.5)
    v3 = synthesis.random_velocity(np.random.default_rng(6), (20, 20, 20), 3.0, 2.5)
    assert np.sqrt((v1 ** 2).sum(0)).max() == pytest.approx(2.5)
    np.testing.assert_array_equal(v1, v2)
    assert not np.allclose(v1, v3)


def test_random_affine_is_small_and_orientation_preserving():
    for seed in range(20):
        matrix, offset = synthesis.random_affine(np.random.default_rng(seed), translation=1.0)
        assert np.linalg.det(matrix) > 0
        assert np.abs(matrix - np.eye(3)).max() < 0.12
        assert np.abs(offset).max() <= 1.0


@pytest.mark.parametrize("sigma,magnitude", [(2.5, 1.0), (4.0, 2.5)])
def test_random_transform_is_diffeomorphic_with_accurate_inverse(sigma, magnitude):
    shape = (32, 28, 24)
    t = synthesis.random_transform(np.random.default_rng(7), shape, sigma, magnitude, inverse=True)
    assert t.forward.shape == (3, *shape) and t.forward.dtype == np.float32
    assert t.inverse.shape == (3, *[s + 2 * t.margin for s in shape])
    assert jacobian_det(t.forward).min() > 0
    # The margin covers every x + u(x), so φ⁻¹(φ(x)) = x everywhere.
    assert np.abs(t.forward).max() < t.margin
    roundtrip = synthesis.compose_with_inverse(t.inverse, t.margin, t.forward)
    assert np.sqrt((roundtrip ** 2).sum(0)).max() < 0.05
    # And φ(φ⁻¹(y)) = y, checked with ofg.spatial.compose (zero padding: interior only).
    m = t.margin
    inner_inverse = torch.from_numpy(np.ascontiguousarray(t.inverse[:, m:-m, m:-m, m:-m]))[None]
    back = compose(torch.from_numpy(t.forward)[None], inner_inverse)[0].norm(dim=0).numpy()
    assert back[m:-m, m:-m, m:-m].max() < 0.1


def test_random_transform_composes_velocity_after_affine(monkeypatch):
    # With a constant velocity c, exp(v) is the translation by c, so φ(x) = M(x − centre) + centre + t + c.
    shift = np.array([0.7, -0.4, 0.2])
    monkeypatch.setattr(synthesis, "random_velocity",
                        lambda rng, shape, sigma, magnitude: np.broadcast_to(shift.reshape(3, 1, 1, 1),
                                                                              (3, *shape)).copy())
    shape = (16, 20, 12)
    t = synthesis.random_transform(np.random.default_rng(11), shape, 3.0, 1.0, inverse=True)
    matrix, offset = synthesis.random_affine(np.random.default_rng(11), translation=0.5)
    grid = np.indices(shape, dtype=np.float64)
    centre = (np.array(shape) - 1).reshape(3, 1, 1, 1) / 2
    expected = np.einsum("ij,j...->i...", matrix, grid - centre) + centre + offset.reshape(3, 1, 1, 1) \
        + shift.reshape(3, 1, 1, 1) - grid
    np.testing.assert_allclose(t.forward, expected, atol=1e-4)
    roundtrip = synthesis.compose_with_inverse(t.inverse, t.margin, t.forward)
    assert np.abs(roundtrip).max() < 1e-4


def test_random_transform_zero_magnitude_is_identity():
    t = synthesis.random_transform(np.random.default_rng(0), (16, 16, 16), 3.0, 0.0, inverse=True)
    assert not t.forward.any() and not t.inverse.any()


def test_compose_with_inverse_matches_spatial_compose_in_the_interior():
    shape = (20, 22, 18)
    first = smooth_field(8, shape, amplitude=1.5)
    second = smooth_field(9, shape, amplitude=1.5)
    margin = 3
    padded = np.pad(first, [(0, 0)] + [(margin, margin)] * 3, mode="edge")
    ours = synthesis.compose_with_inverse(padded, margin, second)
    ref = compose(torch.from_numpy(first)[None], torch.from_numpy(second)[None])[0].numpy()
    inner = (slice(None),) + (slice(2, -2),) * 3
    np.testing.assert_allclose(ours[inner], ref[inner], atol=1e-5)


def test_augment_mr_range_background_and_determinism():
    image = np.zeros((24, 24, 24), dtype=np.float32)
    image[4:20, 4:20, 4:20] = np.linspace(0.1, 0.9, 16).reshape(16, 1, 1)  # a "head" with contrast
    a = synthesis.augment_mr(image, np.random.default_rng(1), resolution=3.0)
    b = synthesis.augment_mr(image, np.random.default_rng(1), resolution=3.0)
    np.testing.assert_array_equal(a, b)
    assert a.dtype == np.float32 and a.min() >= 0 and a.max() <= 1
    assert not a[image == 0].any()
    inside = image > 0
    assert 0.8 < np.corrcoef(a[inside], image[inside])[0, 1] < 1.0


def test_bias_field_is_smooth_positive_with_set_strength():
    field = synthesis.bias_field(np.random.default_rng(2), (32, 32, 32), resolution=2.0, strength=0.1)
    assert field.min() > 0
    assert np.log(field).std() == pytest.approx(0.1, rel=1e-3)
    # Smooth: neighbour differences relative to the field's spread are √2 for white noise, and
    # 2·sin(π/32) ≈ 0.2 for the slowest periodic mode on 32 voxels, which dominates here.
    log_field = np.log(field)
    assert abs(log_field.mean()) < 1e-6
    assert np.diff(log_field, axis=0).std() < 0.25 * log_field.std()


def test_add_gaussian_noise_std():
    noisy = synthesis.add_gaussian_noise(np.zeros((40, 40, 40), np.float32), np.random.default_rng(0), 20.0)
    assert noisy.std() == pytest.approx(20.0, rel=0.02)
