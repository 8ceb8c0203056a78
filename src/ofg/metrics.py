"""Evaluation metrics: numpy in, numpy out (torch tensors are accepted and moved to numpy).

Conventions:
- Displacements are (3,D,H,W) (2-D: (2,H,W)) in voxels; channel i moves along array axis i;
  a warped volume is L(x + u(x)).
- Dice per label; a label absent from both volumes gives NaN (skip it with ``np.nanmean``).
  The mean over labels follows one of :data:`DICE_RULES` (:func:`mean_dice_of`).
- %|J|≤0 uses ``np.gradient`` of identity+displacement over the whole volume.
- SDlogJ "l2r" is the Learn2Reg formula; "plain" is std(log det) over voxels with det > 0.
- HD95 pools the surface distances of both directions (MedPy's convention) and takes their
  95th percentile; voxels with unit spacing, mm otherwise.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
from scipy import ndimage

from ofg.names import DICE_RULES, LABEL_MODES
from ofg.spatial import warp

# LABEL_MODES: how label maps are warped for Dice, one-hot trilinear + argmax or nearest neighbour.
# DICE_RULES: how a pair's per-label Dice are averaged: "either" = over the labels present in the
# warped or the fixed map; "both" = over the labels present in both the moving (before warping) and
# the fixed map (the reference code's AbdomenCTCT rule).


def _numpy(array: np.ndarray | torch.Tensor) -> np.ndarray:
    if isinstance(array, torch.Tensor):
        return array.detach().cpu().numpy()
    return np.asarray(array)


def _field(disp: np.ndarray | torch.Tensor, name: str = "disp") -> np.ndarray:
    """Return ``disp`` as a float64 (ndim,*spatial) array, checking its layout."""
    field = _numpy(disp)
    if field.ndim not in (3, 4) or field.shape[0] != field.ndim - 1:
        raise ValueError(f"{name}: expected (3,D,H,W) or (2,H,W) in voxels, got shape {field.shape}")
    if not np.issubdtype(field.dtype, np.floating):
        raise ValueError(f"{name}: expected a floating-point field, got {field.dtype}")
    return field.astype(np.float64, copy=False)


def dice(pred_labels: np.ndarray | torch.Tensor, true_labels: np.ndarray | torch.Tensor,
         labels: Sequence[int]) -> np.ndarray:
    """Dice 2|P∩T|/(|P|+|T|) per label of ``labels``, as a float64 array of len(labels).

    ``pred_labels`` and ``true_labels`` are integer label volumes of the same shape. A label
    absent from both gives NaN.
    """
    pred, true = _numpy(pred_labels), _numpy(true_labels)
    if pred.shape != true.shape:
        raise ValueError(f"pred_labels has shape {pred.shape} but true_labels has shape {true.shape}")
    scores = np.full(len(labels), np.nan)
    for k, label in enumerate(labels):
        p, t = pred == label, true == label
        total = int(p.sum()) + int(t.sum())
        if total:
            scores[k] = 2.0 * np.logical_and(p, t).sum() / total
    return scores


def labels_present_in_both(moving_labels: np.ndarray | torch.Tensor, fixed_labels: np.ndarray | torch.Tensor,
                           labels: Sequence[int]) -> np.ndarray:
    """Boolean (len(labels),): which of ``labels`` occur in both label volumes (moving before warping)."""
    moving, fixed = _numpy(moving_labels), _numpy(fixed_labels)
    return np.isin(np.asarray(labels), np.unique(moving)) & np.isin(np.asarray(labels), np.unique(fixed))


def mean_dice_of(per_label: np.ndarray, rule: str = "either", present_in_both: np.ndarray | None = None) -> float:
    """The mean Dice of one pair from its per-label Dice (:func:`dice` of warped vs fixed labels).

    ``rule`` (one of :data:`DICE_RULES`):
    - "either": the mean over the labels present in the warped or the fixed map (NaN entries, i.e.
      labels absent from both, are skipped); NaN if there are none.
    - "both": the sum of Dice over the labels present in both the moving map (before warping) and
      the fixed map, divided by their count; ``present_in_both`` is that mask
      (:func:`labels_present_in_both`). NaN if no label is in both. This is the reference code's
      AbdomenCTCT rule: it sums the Dice of all 13 organs and divides by the number present in both
      images (an organ missing from either image scores 0 there, so the two sums are equal).
    """
    scores = np.asarray(per_label, dtype=np.float64)
    if rule == "either":
        return float(np.nanmean(scores)) if np.isfinite(scores).any() else float("nan")
    if rule != "both":
        raise ValueError(f"rule must be one of {DICE_RULES}, got {rule!r}")
    if present_in_both is None or np.shape(present_in_both) != scores.shape:
        raise ValueError(f"rule 'both' needs present_in_both, a boolean mask of shape {scores.shape}")
    present = np.asarray(present_in_both, dtype=bool)
    if not present.any():
        return float("nan")
    return float(np.nan_to_num(scores[present], nan=0.0).sum() / present.sum())


def mean_dice(warped_labels: np.ndarray | torch.Tensor, fixed_labels: np.ndarray | torch.Tensor,
              labels: Sequence[int], rule: str = "either",
              moving_labels: np.ndarray | torch.Tensor | None = None) -> float:
    """Mean Dice of warped vs fixed label volumes (D,H,W) over ``labels`` by ``rule`` (see
    :func:`mean_dice_of`); rule "both" also needs the ``moving_labels`` before warping."""
    scores = dice(warped_labels, fixed_labels, labels)
    if rule != "both":
        return mean_dice_of(scores, rule)
    if moving_labels is None:
        raise ValueError("rule 'both' needs moving_labels, the moving label volume before warping")
    return mean_dice_of(scores, rule, labels_present_in_both(moving_labels, fixed_labels, labels))


def warp_labels(labels: np.ndarray | torch.Tensor, disp: np.ndarray | torch.Tensor,
                labels_list: Sequence[int] | None = None, mode: str = "onehot",
                chunk: int = 8) -> np.ndarray:
    """Warp an integer label volume (D,H,W) by ``disp`` (3,D,H,W) in voxels: out(x) = L(x + u(x)).

    ``labels_list`` names the labels to carry (default: all values present); other values become
    background 0, which is always a class. ``mode``:
    - "onehot" (TransMorph, reference Dice): warp each class's one-hot map trilinearly and take
      the argmax (first class on ties, background first); outside the volume gives 0. Classes
      are processed ``chunk`` at a time keeping a running max, so memory stays at ``chunk``
      float32 volumes.
    - "nearest" (Learn2Reg): nearest-neighbour sampling of the label volume.
    Returns the warped labels with the input's dtype, as numpy.
    """
    if mode not in LABEL_MODES:
        raise ValueError(f"mode must be one of {LABEL_MODES}, got {mode!r}")
    if chunk < 1:
        raise ValueError(f"chunk must be >= 1, got {chunk}")
    label_volume = _numpy(labels)
    field = _field(disp)
    if label_volume.shape != field.shape[1:]:
        raise ValueError(f"labels have shape {label_volume.shape} but disp is {field.shape}: "
                         f"expected disp (3,*labels.shape)")
    if not np.issubdtype(label_volume.dtype, np.integer):
        raise ValueError(f"labels: expected an integer label volume, got {label_volume.dtype}")
    present = np.unique(label_volume)
    classes = [int(c) for c in (present if labels_list is None else labels_list) if int(c) != 0]
    classes = [0] + classes
    carried = np.isin(label_volume, classes)
    label_volume = np.where(carried, label_volume, 0)
    flow = torch.from_numpy(np.ascontiguousarray(field, dtype=np.float32))[None]
    if mode == "nearest":
        source = torch.from_numpy(label_volume.astype(np.float64))[None, None]
        warped = warp(source, flow.double(), mode="nearest")[0, 0].numpy()
        return np.rint(warped).astype(label_volume.dtype)
    best = torch.full(label_volume.shape, -1.0)
    best_index = torch.zeros(label_volume.shape, dtype=torch.long)
    volume = torch.from_numpy(label_volume)
    for start in range(0, len(classes), chunk):
        group = classes[start:start + chunk]
        onehot = torch.stack([(volume == c).float() for c in group])[None]
        warped = warp(onehot, flow)[0]
        for offset in range(len(group)):
            better = warped[offset] > best
            best = torch.where(better, warped[offset], best)
            best_index[better] = start + offset
    lookup = np.asarray(classes, dtype=label_volume.dtype)
    return lookup[best_index.numpy()]


def _det(jac: list[list[np.ndarray]]) -> np.ndarray:
    """Determinant of a 2×2 or 3×3 field of matrices given as nested lists of arrays."""
    if len(jac) == 2:
        return jac[0][0] * jac[1][1] - jac[0][1] * jac[1][0]
    return (jac[0][0] * (jac[1][1] * jac[2][2] - jac[1][2] * jac[2][1])
            - jac[0][1] * (jac[1][0] * jac[2][2] - jac[1][2] * jac[2][0])
            + jac[0][2] * (jac[1][0] * jac[2][1] - jac[1][1] * jac[2][0]))


def jacobian_determinant(disp: np.ndarray | torch.Tensor) -> np.ndarray:
    """det(∂(x+u)/∂x) of ``disp`` (3,D,H,W) in voxels, as (D,H,W) float64.

    Derivatives are ``np.gradient`` (central differences inside, one-sided at the borders).
    """
    field = _field(disp)
    ndim = field.shape[0]
    grads = [np.gradient(field[i], axis=tuple(range(ndim))) for i in range(ndim)]
    jac = [[grads[i][j] + (1.0 if i == j else 0.0) for j in range(ndim)] for i in range(ndim)]
    return _det(jac)


def folding_percent(disp: np.ndarray | torch.Tensor) -> float:
    """Percentage of voxels with det J ≤ 0 over the whole volume: 100·count(det ≤ 0)/N."""
    return folding_percent_of(jacobian_determinant(disp))


def folding_percent_of(det: np.ndarray) -> float:
    """:func:`folding_percent` from a determinant map (D,H,W) already computed by
    :func:`jacobian_determinant` (so callers that need several statistics compute it once)."""
    return float(100.0 * np.count_nonzero(det <= 0) / det.size)


def sdlogj_plain_of(det: np.ndarray) -> float:
    """std(log det) over voxels with det > 0 of a map from :func:`jacobian_determinant`; NaN if none."""
    positive = det[det > 0]
    return float(np.log(positive).std()) if positive.size else float("nan")


def _l2r_jacobian_determinant(field: np.ndarray) -> np.ndarray:
    """Learn2Reg determinant: [-0.5,0,0.5] central differences with zero padding, cropped by 2."""
    ndim = field.shape[0]
    weights = np.array([-0.5, 0.0, 0.5])
    jac = [[ndimage.correlate1d(field[i], weights, axis=j, mode="constant", cval=0.0) + (1.0 if i == j else 0.0)
            for j in range(ndim)] for i in range(ndim)]
    crop = (slice(2, -2),) * ndim
    return _det([[entry[crop] for entry in row] for row in jac])


def sdlogj(disp: np.ndarray | torch.Tensor, convention: str = "l2r") -> float:
    """Standard deviation of the log Jacobian determinant of ``disp`` (3,D,H,W) in voxels.

    "l2r" (Learn2Reg): determinant from :func:`_l2r_jacobian_determinant`, then
    std(log(clip(det + 3, 1e-9, 1e9))). "plain": std(log det) over voxels with det > 0 using
    :func:`jacobian_determinant`; NaN if there are none.
    """
    field = _field(disp)
    if convention == "l2r":
        if min(field.shape[1:]) <= 4:
            raise ValueError(f"disp: the l2r convention crops 2 voxels per border; spatial shape "
                             f"{field.shape[1:]} is too small")
        det = _l2r_jacobian_determinant(field)
        return float(np.log(np.clip(det + 3.0, 1e-9, 1e9)).std())
    if convention == "plain":
        return sdlogj_plain_of(jacobian_determinant(field))
    raise ValueError(f"convention must be 'l2r' or 'plain', got {convention!r}")


def _surface(mask: np.ndarray) -> np.ndarray:
    """Voxels of ``mask`` with a face neighbour outside it (array borders count as outside)."""
    structure = ndimage.generate_binary_structure(mask.ndim, 1)
    return mask & ~ndimage.binary_erosion(mask, structure=structure, border_value=0)


def hd95(pred_mask: np.ndarray | torch.Tensor, true_mask: np.ndarray | torch.Tensor,
         spacing: Sequence[float] = (1.0, 1.0, 1.0)) -> float:
    """95th percentile of the symmetric surface distance between two binary masks.

    Surfaces are the mask voxels with a face neighbour outside the mask. The distances from
    each surface voxel of one mask to the nearest surface voxel of the other, in both
    directions, are pooled and their 95th percentile (linear interpolation) returned: in voxels
    with unit ``spacing``, in mm with the voxel size. NaN if either mask is empty.
    """
    pred, true = _numpy(pred_mask).astype(bool), _numpy(true_mask).astype(bool)
    if pred.shape != true.shape:
        raise ValueError(f"pred_mask has shape {pred.shape} but true_mask has shape {true.shape}")
    spacing = tuple(float(s) for s in spacing)
    if len(spacing) != pred.ndim or min(spacing) <= 0:
        raise ValueError(f"spacing: expected {pred.ndim} positive voxel sizes, got {spacing}")
    if not pred.any() or not true.any():
        return float("nan")
    # Crop to the masks' bounding box plus one voxel (clipped at the array): every surface voxel and its
    # nearest counterpart lie inside, the crop's edge is outside both masks (or is the array's edge), so
    # surfaces and distances are unchanged while the distance transforms cover far fewer voxels.
    box = ndimage.find_objects((pred | true).astype(np.int8))[0]
    box = tuple(slice(max(b.start - 1, 0), min(b.stop + 1, n)) for b, n in zip(box, pred.shape))
    pred, true = pred[box], true[box]
    surface_pred, surface_true = _surface(pred), _surface(true)
    to_true = ndimage.distance_transform_edt(~surface_true, sampling=spacing)
    to_pred = ndimage.distance_transform_edt(~surface_pred, sampling=spacing)
    distances = np.concatenate([to_true[surface_pred], to_pred[surface_true]])
    return float(np.percentile(distances, 95))


def endpoint_error(disp: np.ndarray | torch.Tensor, true_disp: np.ndarray | torch.Tensor,
                   spacing: Sequence[float] | None = None, mask: np.ndarray | torch.Tensor | None = None) -> float:
    """Mean Euclidean distance between ``disp`` and ``true_disp`` (3,D,H,W) in voxels.

    With ``spacing`` (voxel size per axis) the error is in mm. ``mask`` (D,H,W) restricts the
    mean to its non-zero voxels; an empty mask is an error.
    """
    field, truth = _field(disp), _field(true_disp, "true_disp")
    if field.shape != truth.shape:
        raise ValueError(f"disp has shape {field.shape} but true_disp has shape {truth.shape}")
    ndim = field.shape[0]
    scale = np.ones(ndim) if spacing is None else np.asarray(spacing, dtype=np.float64)
    if scale.shape != (ndim,) or np.any(scale <= 0):
        raise ValueError(f"spacing: expected {ndim} positive voxel sizes, got {spacing}")
    error = np.sqrt((((field - truth) * scale.reshape(ndim, *([1] * ndim))) ** 2).sum(axis=0))
    if mask is None:
        return float(error.mean())
    region = _numpy(mask).astype(bool)
    if region.shape != error.shape:
        raise ValueError(f"mask has shape {region.shape} but the field is {field.shape}")
    if not region.any():
        raise ValueError("mask is empty: no voxel to average the end-point error over")
    return float(error[region].mean())
