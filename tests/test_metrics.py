import itertools

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from ofg.metrics import (dice, endpoint_error, folding_percent, hd95, jacobian_determinant, labels_present_in_both,
                         mean_dice, mean_dice_of, sdlogj, warp_labels)
from ofg.spatial import warp


def _smooth_field(rng, shape, amplitude):
    coarse = torch.from_numpy(rng.standard_normal((1, len(shape), 3, 3, 3)))
    return amplitude * F.interpolate(coarse, size=shape, mode="trilinear", align_corners=True)[0].numpy()


def test_dice_closed_form():
    pred = np.zeros((4, 4, 4), dtype=np.int64)
    true = np.zeros_like(pred)
    pred[:2] = 1          # 32 voxels
    true[1:3] = 1         # 32 voxels, 16 shared
    pred[3, 0, 0] = 2     # only in pred
    scores = dice(pred, true, labels=[1, 2, 3])
    np.testing.assert_allclose(scores[:2], [0.5, 0.0])
    assert np.isnan(scores[2])
    np.testing.assert_allclose(dice(torch.from_numpy(pred), torch.from_numpy(pred), [1, 2]), [1.0, 1.0])
    with pytest.raises(ValueError, match="pred_labels has shape"):
        dice(pred, true[:3], [1])


def _abdomen_reference_dice(warped, fixed, moving, max_label):
    """The reference code's AbdomenCTCT validation Dice, transcribed to numpy: Dice with a 1e-8
    guard on voxel fractions for every label 1..max_label-1, summed, divided by the number of
    labels whose self-Dice exceeds 0.1 in both the fixed and the moving map."""
    def per_label(a, b):
        out = np.zeros(max_label - 1)
        for k in range(1, max_label):
            i, t = (a == k).astype(float), (b == k).astype(float)
            out[k - 1] = 2 * (i * t).mean() / (1e-8 + i.mean() + t.mean())
        return out
    ident = per_label(fixed, fixed) * per_label(moving, moving)
    return per_label(fixed, warped).sum() / (ident > 0.1).sum()


def test_mean_dice_rules_hand_computed():
    # 1D strips in a 1x1x8 volume. label 1: in both, Dice 0.5 after warping; label 2: fixed only;
    # label 3: moving only (carried into the warped map); label 4: in both, lost by the warp.
    moving = np.array([1, 1, 3, 4, 0, 0, 0, 0]).reshape(1, 1, 8)
    warped = np.array([0, 1, 1, 3, 0, 0, 0, 0]).reshape(1, 1, 8)
    fixed = np.array([1, 1, 0, 0, 2, 4, 0, 0]).reshape(1, 1, 8)
    labels = [1, 2, 3, 4, 5]
    # per label: 1 -> 2*1/(2+2) = 0.5, 2 -> 0, 3 -> 0, 4 -> 0, 5 -> NaN (absent everywhere)
    np.testing.assert_array_equal(labels_present_in_both(moving, fixed, labels), [True, False, False, True, False])
    assert mean_dice(warped, fixed, labels, rule="both", moving_labels=moving) == pytest.approx(0.5 / 2)
    assert mean_dice(warped, fixed, labels) == pytest.approx(0.5 / 4)
    assert mean_dice(warped, fixed, labels, rule="both", moving_labels=moving) == pytest.approx(
        _abdomen_reference_dice(warped, fixed, moving, max_label=6), rel=1e-6)
    assert np.isnan(mean_dice_of(np.full(2, np.nan), "either"))
    assert np.isnan(mean_dice_of(np.zeros(2), "both", np.zeros(2, dtype=bool)))


def test_mean_dice_against_the_reference_formula_on_random_maps(rng):
    moving = rng.integers(0, 14, size=(6, 7, 8))
    fixed = rng.integers(0, 12, size=(6, 7, 8))  # labels 12 and 13 absent from the fixed map
    warped = np.roll(moving, 1, axis=0)
    ours = mean_dice(warped, fixed, list(range(1, 14)), rule="both", moving_labels=moving)
    assert ours == pytest.approx(_abdomen_reference_dice(warped, fixed, moving, max_label=14), rel=1e-6)


def test_mean_dice_bad_arguments():
    labels = np.ones((2, 2, 2), dtype=int)
    with pytest.raises(ValueError, match="moving_labels"):
        mean_dice(labels, labels, [1], rule="both")
    with pytest.raises(ValueError, match="rule must be one of"):
        mean_dice(labels, labels, [1], rule="mean")
    with pytest.raises(ValueError, match="present_in_both"):
        mean_dice_of(np.ones(2), "both")


def _plain_onehot_warp(labels, disp, classes):
    """All classes at once: the memory-hungry definition the chunked version must equal."""
    onehot = torch.stack([torch.from_numpy(labels == c).float() for c in classes])[None]
    warped = warp(onehot, torch.from_numpy(disp).float()[None])[0]
    return np.asarray(classes)[warped.argmax(0).numpy()]


def test_onehot_warp_chunked_equals_plain(rng):
    labels = rng.integers(0, 6, size=(10, 11, 12)) * 3  # values 0,3,...,15
    disp = _smooth_field(rng, (10, 11, 12), 2.0)
    plain = _plain_onehot_warp(labels, disp, [0, 3, 6, 9, 12, 15])
    for chunk in (1, 2, 4, 100):
        out = warp_labels(labels, disp, mode="onehot", chunk=chunk)
        np.testing.assert_array_equal(out, plain)
        assert out.dtype == labels.dtype
    kept = warp_labels(labels, disp, labels_list=[3, 9], mode="onehot", chunk=1)
    np.testing.assert_array_equal(kept, _plain_onehot_warp(np.where(np.isin(labels, [3, 9]), labels, 0), disp,
                                                           [0, 3, 9]))


@pytest.mark.parametrize("mode", ["onehot", "nearest"])
def test_label_warp_identity_and_integer_shift(rng, mode):
    labels = rng.integers(0, 4, size=(6, 7, 8))
    np.testing.assert_array_equal(warp_labels(labels, np.zeros((3, 6, 7, 8)), mode=mode), labels)
    disp = np.zeros((3, 6, 7, 8))
    disp[2] = 2.0
    shifted = warp_labels(torch.from_numpy(labels), torch.from_numpy(disp), mode=mode)
    np.testing.assert_array_equal(shifted[:, :, :6], labels[:, :, 2:])
    np.testing.assert_array_equal(shifted[:, :, 6:], 0)


def test_nearest_label_warp_matches_scipy(rng):
    from scipy.ndimage import map_coordinates
    labels = rng.integers(0, 50, size=(8, 9, 10)) * 7
    disp = _smooth_field(rng, (8, 9, 10), 1.5) + 0.01  # off the rounding ties
    coords = np.stack(np.meshgrid(*[np.arange(n) for n in labels.shape], indexing="ij")) + disp
    expected = map_coordinates(labels, coords, order=0, mode="grid-constant", cval=0)
    np.testing.assert_array_equal(warp_labels(labels, disp, mode="nearest"), expected)


def test_warp_labels_bad_inputs():
    with pytest.raises(ValueError, match="mode must be one of"):
        warp_labels(np.zeros((4, 4, 4), int), np.zeros((3, 4, 4, 4)), mode="linear")
    with pytest.raises(ValueError, match="labels have shape"):
        warp_labels(np.zeros((4, 4, 5), int), np.zeros((3, 4, 4, 4)))
    with pytest.raises(ValueError, match="integer label volume"):
        warp_labels(np.zeros((4, 4, 4)), np.zeros((3, 4, 4, 4)))
    with pytest.raises(ValueError, match=r"disp: expected \(3,D,H,W\)"):
        warp_labels(np.zeros((4, 4, 4), int), np.zeros((2, 4, 4, 4)))


def test_jacobian_zero_field_and_linear_field(rng):
    shape = (6, 7, 8)
    zero = np.zeros((3, *shape))
    np.testing.assert_allclose(jacobian_determinant(zero), 1.0)
    assert folding_percent(zero) == 0.0
    matrix = rng.normal(scale=0.3, size=(3, 3))
    coords = np.stack(np.meshgrid(*[np.arange(n) for n in shape], indexing="ij")).astype(float)
    linear = np.einsum("ij,j...->i...", matrix, coords)
    det = jacobian_determinant(torch.from_numpy(linear))
    assert det.shape == shape
    np.testing.assert_allclose(det, np.linalg.det(np.eye(3) + matrix), rtol=1e-10)
    reflect = np.zeros((3, *shape))
    reflect[0] = -2.0 * coords[0]  # x -> -x along axis 0: det = -1 everywhere
    assert folding_percent(reflect) == 100.0
    matrix2d = np.array([[0.2, -0.1], [0.4, 0.3]])
    coords2d = np.stack(np.meshgrid(np.arange(5), np.arange(6), indexing="ij")).astype(float)
    np.testing.assert_allclose(jacobian_determinant(np.einsum("ij,j...->i...", matrix2d, coords2d)),
                               np.linalg.det(np.eye(2) + matrix2d))


def test_jacobian_equals_numpy_determinant_of_gradients(rng):
    disp = rng.normal(size=(3, 5, 6, 7))
    grads = np.stack([np.stack(np.gradient(disp[i]), 0) for i in range(3)])  # (3,3,D,H,W)
    jac = np.moveaxis(grads, (0, 1), (-2, -1)) + np.eye(3)
    np.testing.assert_allclose(jacobian_determinant(disp), np.linalg.det(jac), rtol=1e-10, atol=1e-12)


def test_local_fold_counts_only_folded_voxels():
    shape = (10, 10, 10)
    disp = np.zeros((3, *shape))
    # slices 4,5,6 go to 6,5,4; central differences of x+u along axis 0 are the determinant
    disp[0, 4:7] = np.array([2.0, 0.0, -2.0]).reshape(3, 1, 1)
    expected = np.array([1, 1, 1, 2, 1, -1, 1, 2, 1, 1], dtype=float).reshape(10, 1, 1)
    np.testing.assert_allclose(jacobian_determinant(disp), np.broadcast_to(expected, shape))
    assert folding_percent(disp) == pytest.approx(10.0)


def _l2r_reference(disp):
    """Learn2Reg's formula written with explicit zero padding and slicing."""
    padded = np.pad(disp, ((0, 0), (1, 1), (1, 1), (1, 1)))
    core = (slice(1, -1),) * 3
    jac = np.empty((3, 3) + disp.shape[1:])
    for i, j in itertools.product(range(3), range(3)):
        fwd = [slice(1, -1)] * 3
        bwd = [slice(1, -1)] * 3
        fwd[j], bwd[j] = slice(2, None), slice(None, -2)
        jac[i, j] = 0.5 * (padded[i][tuple(fwd)] - padded[i][tuple(bwd)]) + (i == j)
    assert core
    det = np.linalg.det(np.moveaxis(jac, (0, 1), (-2, -1)))[2:-2, 2:-2, 2:-2]
    return np.log(np.clip(det + 3, 1e-9, 1e9)).std()


def test_sdlogj_conventions(rng):
    shape = (12, 13, 14)
    disp = _smooth_field(rng, shape, 2.0) + 0.2 * rng.normal(size=(3, *shape))
    assert sdlogj(disp, "l2r") == pytest.approx(_l2r_reference(disp), rel=1e-10)
    det = jacobian_determinant(disp)
    assert sdlogj(disp, "plain") == pytest.approx(np.log(det[det > 0]).std(), rel=1e-12)
    coords = np.stack(np.meshgrid(*[np.arange(n) for n in shape], indexing="ij")).astype(float)
    linear = np.einsum("ij,j...->i...", 0.1 * rng.normal(size=(3, 3)), coords)
    assert sdlogj(linear, "l2r") == pytest.approx(0.0, abs=1e-12)   # constant det after the crop
    assert sdlogj(linear, "plain") == pytest.approx(0.0, abs=1e-12)
    assert sdlogj(np.zeros((3, *shape)), "l2r") == 0.0
    with pytest.raises(ValueError, match="convention must be"):
        sdlogj(disp, "l1")
    with pytest.raises(ValueError, match="too small"):
        sdlogj(np.zeros((3, 4, 8, 8)))


def _brute_force_hd95(a, b, spacing):
    """Surfaces by explicit 6-neighbour checks, distances by all pairs, pooled 95th percentile."""
    def surface(mask):
        points = []
        for index in zip(*np.nonzero(mask)):
            for axis, step in itertools.product(range(mask.ndim), (-1, 1)):
                neighbour = list(index)
                neighbour[axis] += step
                if not 0 <= neighbour[axis] < mask.shape[axis] or not mask[tuple(neighbour)]:
                    points.append(index)
                    break
        return np.asarray(points, dtype=np.float64) * np.asarray(spacing)
    sa, sb = surface(a), surface(b)
    pairwise = np.sqrt(((sa[:, None, :] - sb[None, :, :]) ** 2).sum(-1))
    return np.percentile(np.concatenate([pairwise.min(1), pairwise.min(0)]), 95)


def test_hd95_brute_force_oracle(rng):
    for spacing in ((1.0, 1.0, 1.0), (1.5, 0.8, 2.0)):
        for _ in range(3):
            a = rng.random((7, 8, 6)) < 0.35
            b = rng.random((7, 8, 6)) < 0.35
            assert hd95(a, b, spacing) == pytest.approx(_brute_force_hd95(a, b, spacing), rel=1e-12)


@pytest.mark.parametrize("shift", [1, 2, 4])
def test_hd95_closed_form_shifted_plate_and_cube(shift):
    plate = np.zeros((12, 10, 10), bool)
    plate[3, 2:8, 2:8] = True
    moved = np.roll(plate, shift, axis=0)
    # every voxel of a one-voxel-thick plate is surface and faces its copy at distance `shift`
    assert hd95(plate, moved) == pytest.approx(shift)
    assert hd95(plate, moved, spacing=(2.5, 1.0, 1.0)) == pytest.approx(2.5 * shift)
    cube = np.zeros((16, 16, 16), bool)
    cube[4:10, 4:10, 4:10] = True
    assert hd95(cube, cube) == 0.0
    # a cube moved by `shift` along an axis: its far face lies `shift` from the other's far face and
    # every surface distance is at most `shift` (the maximum), reached on whole faces (>5% of voxels)
    assert hd95(cube, np.roll(cube, shift, axis=1)) == pytest.approx(shift)


def test_hd95_of_small_structures_in_a_large_volume_equals_the_uncropped_oracle(rng):
    # the distance transforms run on the masks' bounding box: the answer is the whole volume's
    for _ in range(5):
        a, b = np.zeros((30, 26, 22), bool), np.zeros((30, 26, 22), bool)
        a[3:9, 4:10, 0:5] = rng.random((6, 6, 5)) > 0.3   # touching the array's border
        b[5:12, 6:13, 2:8] = rng.random((7, 7, 6)) > 0.3
        for spacing in ((1.0, 1.0, 1.0), (2.5, 1.0, 0.5)):
            assert hd95(a, b, spacing) == pytest.approx(_brute_force_hd95(a, b, spacing), rel=1e-12)


def test_hd95_empty_and_bad_inputs():
    mask = np.zeros((5, 5, 5), bool)
    full = mask.copy()
    full[2, 2, 2] = True
    assert np.isnan(hd95(mask, full)) and np.isnan(hd95(full, mask))
    with pytest.raises(ValueError, match="pred_mask has shape"):
        hd95(full, full[:4])
    with pytest.raises(ValueError, match="spacing: expected 3 positive"):
        hd95(full, full, spacing=(1, 1))


def test_endpoint_error():
    disp = np.zeros((3, 4, 5, 6))
    truth = np.zeros_like(disp)
    truth[0], truth[1], truth[2] = 1.0, 2.0, 2.0
    assert endpoint_error(disp, truth) == pytest.approx(3.0)
    assert endpoint_error(torch.from_numpy(disp), truth, spacing=(2.0, 1.0, 1.0)) == pytest.approx(np.sqrt(12.0))
    truth[:, 0] = 0.0
    mask = np.zeros((4, 5, 6), bool)
    mask[0] = True
    assert endpoint_error(disp, truth, mask=mask) == 0.0
    assert endpoint_error(disp, truth) == pytest.approx(3.0 * 3 / 4)
    with pytest.raises(ValueError, match="mask is empty"):
        endpoint_error(disp, truth, mask=np.zeros((4, 5, 6), bool))
    with pytest.raises(ValueError, match="disp has shape"):
        endpoint_error(disp, truth[:, :3])
    with pytest.raises(ValueError, match="spacing: expected 3 positive"):
        endpoint_error(disp, truth, spacing=(1.0, 0.0, 1.0))
    with pytest.raises(ValueError, match="floating-point"):
        endpoint_error(disp.astype(int), truth)


def test_statistics_of_a_precomputed_determinant_equal_the_field_versions():
    from ofg.metrics import folding_percent_of, sdlogj_plain_of

    rng = np.random.default_rng(3)
    disp = 0.8 * rng.standard_normal((3, 10, 11, 12))  # rough enough to fold somewhere
    det = jacobian_determinant(disp)
    assert 0 < folding_percent(disp) == folding_percent_of(det)
    assert sdlogj(disp, convention="plain") == sdlogj_plain_of(det)
    assert np.isnan(sdlogj_plain_of(-np.ones((4, 4, 4))))
