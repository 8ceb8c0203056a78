"""Inference: the one network forward pass everybody uses, and the metrics of one predicted field.

Conventions: images (1,1,D,H,W) float32; displacements (1,3,D,H,W) in voxels, channel i along array
axis i+2, warped = I(x + u(x)); label maps (D,H,W) integers. A network maps the channel concatenation
(moving, fixed) (B,2,D,H,W) to (warped moving image, displacement).
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from ofg import metrics
from ofg.data.base import check_split
from ofg.runtime import AMP_DTYPE, resolve_device, synchronize
from ofg.spatial import warp

LABEL_MODES = metrics.LABEL_MODES


def check_label_mode(label_mode: str) -> str:
    if label_mode not in LABEL_MODES:
        raise ValueError(f"label_mode must be one of {LABEL_MODES}, got {label_mode!r}")
    return label_mode


def device_of(model: torch.nn.Module) -> torch.device:
    """Where the parameters of ``model`` live (cpu for a parameter-free module)."""
    parameter = next(model.parameters(), None)
    return parameter.device if parameter is not None else torch.device("cpu")


def forward(model: torch.nn.Module, moving: torch.Tensor, fixed: torch.Tensor, amp: bool = False,
            channels_last: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """(warped (B,1,D,H,W), displacement (B,3,D,H,W)) of ``model`` for moving→fixed, with gradients.

    The fast path: under ``amp`` only the network runs in bfloat16 autocast; with ``channels_last``
    its input is laid out channels-last (for a network converted with
    ``model.to(memory_format=torch.channels_last_3d)``). Either way the field comes back float32 and
    contiguous and the warp is redone in float32, so every loss sees what the float32 path gives it.
    """
    x = torch.cat([moving, fixed], dim=1)
    if not (amp or channels_last):
        return model(x)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last_3d)
    with torch.autocast(device_type=moving.device.type, dtype=AMP_DTYPE, enabled=amp):
        _, disp = model(x)
    disp = disp.float().contiguous()
    return warp(moving, disp), disp


def predict(model: torch.nn.Module, moving: torch.Tensor, fixed: torch.Tensor) -> tuple[torch.Tensor, float]:
    """(displacement (1,3,D,H,W) float32, seconds) of one forward pass without gradients."""
    synchronize(moving.device)
    start = time.perf_counter()
    with torch.no_grad():
        _, disp = forward(model, moving, fixed)
    synchronize(moving.device)
    return disp.float(), time.perf_counter() - start


def as_tensor(array: np.ndarray, device: torch.device | str) -> torch.Tensor:
    """A (D,H,W) array as a float32 (1,1,D,H,W) tensor on ``device``."""
    return torch.from_numpy(np.ascontiguousarray(array))[None, None].to(device).float()


def pair_tensors(pair: Any, device: torch.device | str) -> tuple[torch.Tensor, torch.Tensor]:
    """(moving, fixed) images of a :class:`ofg.data.base.Pair` as (1,1,D,H,W) float32 tensors."""
    return as_tensor(pair.moving, device), as_tensor(pair.fixed, device)


def as_field(disp: torch.Tensor) -> np.ndarray:
    """A (1,3,D,H,W) displacement tensor as a float64 (3,D,H,W) numpy array (the metrics' input)."""
    return disp.detach().reshape(disp.shape[-4:]).cpu().double().numpy()


def mean_dice(field: np.ndarray, moving_label: np.ndarray, fixed_label: np.ndarray, labels: list[int],
              label_mode: str = "onehot", rule: str = "either") -> tuple[float, np.ndarray, np.ndarray]:
    """(mean Dice, per-label Dice, warped labels) of ``field`` (3,D,H,W) in voxels.

    Every class of the moving label map is warped (``label_mode`` "onehot": trilinear one-hot and
    argmax, TransMorph's convention; "nearest": nearest-neighbour, the OFG reference code's); Dice
    is then taken over ``labels`` and averaged by ``rule`` (:func:`ofg.metrics.mean_dice_of`):
    "either" skips labels absent from both the warped and the fixed map (NaN), "both" averages over
    the labels present in both the moving and the fixed map.
    """
    warped = metrics.warp_labels(moving_label, field, None, mode=check_label_mode(label_mode))
    per_label = np.asarray(metrics.dice(warped, fixed_label, labels), dtype=np.float64)
    present = metrics.labels_present_in_both(moving_label, fixed_label, labels) if rule == "both" else None
    return metrics.mean_dice_of(per_label, rule, present), per_label, warped


def both_dice(disp: torch.Tensor, moving_label: np.ndarray, fixed_label: np.ndarray, labels: list[int],
              label_mode: str = "nearest", rule: str = "either", known: float | None = None) -> dict[str, float]:
    """Mean Dice of ``disp`` (1,3,D,H,W) in voxels under both label-warping conventions.

    Keys: ``dice_mean`` (the configured ``label_mode``), ``dice_mean_nearest`` (the OFG reference
    code's) and ``dice_mean_onehot`` (TransMorph's); each as :func:`mean_dice` computes it with
    ``rule``. ``known``, when given, is the configured mode's mean Dice already computed (not redone).
    """
    check_label_mode(label_mode)
    field = as_field(disp)
    means = {mode: known if (mode == label_mode and known is not None)
             else mean_dice(field, moving_label, fixed_label, labels, mode, rule)[0] for mode in LABEL_MODES}
    return {"dice_mean": means[label_mode], **{f"dice_mean_{mode}": means[mode] for mode in LABEL_MODES}}


def field_metrics(disp: torch.Tensor, moving_label: np.ndarray, fixed_label: np.ndarray, labels: list[int],
                  *, label_mode: str = "onehot", dice_rule: str = "either", hd95: bool = False,
                  spacing: tuple[float, ...] = (1.0, 1.0, 1.0), ground_truth: np.ndarray | None = None,
                  full: bool = True) -> dict[str, float]:
    """The metrics of one field ``disp`` (1,3,D,H,W) in voxels between integer label maps (D,H,W).

    ``dice_mean`` averages the per-label Dice by ``dice_rule`` (:func:`mean_dice`). ``full=False``
    computes only Dice and folding (the per-epoch validation). Columns: see :mod:`ofg.evaluate`.
    """
    field = as_field(disp)
    dice_mean, per_label, warped = mean_dice(field, moving_label, fixed_label, labels, label_mode, dice_rule)
    row: dict[str, float] = {"dice_mean": dice_mean}
    row.update({f"dice_{label}": float(v) for label, v in zip(labels, per_label)})
    det = metrics.jacobian_determinant(field)  # once: folding and the plain SDlogJ both use it
    row["folding_percent"] = metrics.folding_percent_of(det)
    if not full:
        return row
    row["sdlogj_l2r"] = float(metrics.sdlogj(field, convention="l2r"))
    row["sdlogj_plain"] = metrics.sdlogj_plain_of(det)
    if hd95:
        row.update(_hd95(warped, np.asarray(fixed_label), labels, spacing))
    row["endpoint_error"] = (float(metrics.endpoint_error(field, np.asarray(ground_truth, dtype=np.float64)))
                             if ground_truth is not None else float("nan"))
    return row


def _hd95(pred: np.ndarray, true: np.ndarray, labels: list[int], spacing: tuple[float, ...]) -> dict[str, float]:
    """Mean HD95 over the labels present in both maps, in voxels and in mm."""
    vox, mm = [], []
    for label in labels:
        if not ((pred == label).any() and (true == label).any()):
            continue  # HD95 is undefined unless the structure is in both images
        vox.append(metrics.hd95(pred == label, true == label, spacing=(1.0, 1.0, 1.0)))
        isotropic = len(set(spacing)) == 1  # distances, hence their percentile, scale with the voxel size
        mm.append(vox[-1] * spacing[0] if isotropic else metrics.hd95(pred == label, true == label, spacing=tuple(spacing)))
    return {"hd95": float(np.mean(vox)) if vox else float("nan"),
            "hd95_mm": float(np.mean(mm)) if mm else float("nan")}


def validation_scores(model: torch.nn.Module, dataset: Any, split: str = "val", *, max_pairs: int | None = None,
                      device: str | torch.device | None = None, label_mode: str = "onehot",
                      dice_rule: str = "either", progress: bool = False) -> tuple[float, float]:
    """(mean Dice, mean %|J|≤0) over the first ``max_pairs`` pairs of ``split``; (NaN, NaN) if none.
    Labels are warped by ``label_mode``, each pair's Dice averaged by ``dice_rule`` (:func:`mean_dice`).

    ``model`` runs in eval mode and is put back in its previous mode.
    """
    check_split(split)
    device = resolve_device(device) if device is not None else device_of(model)
    pairs = dataset.pairs(split)
    count = len(pairs) if max_pairs is None else min(len(pairs), max_pairs)
    labels = [int(label) for label in dataset.labels]
    dice, folding = [], []
    was_training = model.training
    model.eval()
    try:
        for index in tqdm(range(count), desc=f"validate {split}", disable=not progress, leave=False):
            pair = pairs[index]
            disp, _ = predict(model, *pair_tensors(pair, device))
            row = field_metrics(disp, pair.moving_label, pair.fixed_label, labels, label_mode=label_mode,
                                dice_rule=dice_rule, full=False)
            dice.append(row["dice_mean"])
            folding.append(row["folding_percent"])
    finally:
        model.train(was_training)
    if not dice:
        return float("nan"), float("nan")
    return float(np.nanmean(dice)) if np.isfinite(dice).any() else float("nan"), float(np.mean(folding))


def qualitative_sample(model: torch.nn.Module, pair: Any, device: torch.device | str) -> dict[str, np.ndarray]:
    """The middle slice of axis 0 of one pair for the qualitative figure (float32 numpy arrays).

    Keys: ``moving``, ``fixed``, ``warped`` (H,W); ``displacement`` (2,H,W), the in-plane components
    (axes 1 and 2) in voxels; ``jacobian`` (H,W), det of the full 3-D Jacobian on that slice;
    ``folding_percent`` (scalar), 100·mean(det ≤ 0) over the whole volume; ``slice`` (scalar).
    """
    moving, fixed = pair_tensors(pair, device)
    with torch.no_grad():
        warped, disp = forward(model, moving, fixed)
    field = disp[0].cpu().numpy()
    det = np.asarray(metrics.jacobian_determinant(field))
    z = field.shape[1] // 2
    return {"moving": np.asarray(pair.moving)[z], "fixed": np.asarray(pair.fixed)[z],
            "warped": warped[0, 0].cpu().numpy()[z], "displacement": field[1:, z], "jacobian": det[z],
            "folding_percent": np.asarray(100 * np.mean(det <= 0)), "slice": np.asarray(z)}
