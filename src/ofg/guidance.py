"""On-the-fly guidance (OFG): refine a predicted displacement with a few optimiser steps and
use the refined field as the network's regression target.

Reference semantics: starting from a detached copy of the prediction, take ``steps``
Adam(amsgrad) steps on E(φ) = NCC(fixed, moving∘φ) + reg_weight·Grad_l2(φ), with a fresh
optimiser state for every call; the model loss is MSE(φ_pred, φ_opt).

The image term may instead be MSE(fixed, moving∘φ) (``image="mse"``, the reference's early
AbdomenCTCT code) and the regulariser LKU-Net's smoothness loss (``regularizer="lku_smooth"``,
:func:`ofg.losses.lku_smoothness_loss`, the reference's LKU-Net script), applied to the field in
voxels as in the network loss (the reference's unit mix is not reproduced: :class:`RefineSettings`).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from ofg import fused as fused_ops
from ofg.losses import IMAGE_TERMS, REGULARIZERS, FixedImageMSE, FixedImageNCC
from ofg.settings import RefineSettings
from ofg.spatial import _normalised_identity, grid_sample_parallel
from ofg.validation import check_displacement, check_image


def _check_inputs(moving: torch.Tensor, fixed: torch.Tensor, disp: torch.Tensor) -> None:
    ndim = check_image(moving, "moving")
    check_image(fixed, "fixed")
    check_displacement(disp, "disp")
    layout = "(B,1,D,H,W)" if ndim == 3 else "(B,1,H,W)"
    for name, image in (("moving", moving), ("fixed", fixed)):
        if image.shape[1] != 1:
            raise ValueError(f"{name}: expected one channel {layout}, got shape {tuple(image.shape)}")
    if moving.shape != fixed.shape:
        raise ValueError(f"moving has shape {tuple(moving.shape)} but fixed has shape {tuple(fixed.shape)}")
    if disp.ndim != moving.ndim:
        raise ValueError(f"disp is {disp.ndim - 2}-D {tuple(disp.shape)} but the images are "
                         f"{ndim}-D {tuple(moving.shape)}")
    if disp.shape[0] != moving.shape[0] or disp.shape[2:] != moving.shape[2:]:
        raise ValueError(f"disp: expected shape {(moving.shape[0], ndim, *moving.shape[2:])} to match "
                         f"the images {tuple(moving.shape)}, got {tuple(disp.shape)}")


def _to_grid_layout(disp: torch.Tensor) -> torch.Tensor:
    """(B,ndim,*spatial) → (B,*spatial,ndim) with the channels reversed: grid_sample's (x,y,z) order."""
    return disp.movedim(1, -1).flip(-1).contiguous()


def _from_grid_layout(field: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`_to_grid_layout`, a contiguous (B,ndim,*spatial) copy."""
    return field.flip(-1).movedim(-1, 1).contiguous()


class _Energy:
    """The OFG energy of a field kept in grid layout (B,*spatial,ndim), and its gradient.

    Refinement optimises the field in grid_sample's layout: the sampling grid is then one
    ``identity + scale·field`` and the field gradient one product with grid_sample's grid
    gradient, with no flips or transposes per step. Adam is element-wise, so the layout does not
    change its iterates. NCC and the diffusion term are differentiated in closed form
    (:class:`ofg.losses.FixedImageNCC` and :meth:`_diffusion`), which takes far fewer passes
    over the volume than autograd through the formulas. ``image="mse"`` uses
    :class:`ofg.losses.FixedImageMSE`; ``regularizer="lku_smooth"`` weighs each (axis, channel)
    term of the diffusion sum (:func:`_lku_weights`).
    """

    def __init__(self, moving: torch.Tensor, fixed: torch.Tensor, reg_weight: float, window: int,
                 image: str = "ncc", regularizer: str = "grad_l2") -> None:
        spatial = tuple(moving.shape[2:])
        self.moving = moving
        self.reg_weight = reg_weight
        self.image = FixedImageNCC(fixed, window) if image == "ncc" else FixedImageMSE(fixed)
        self.identity = _normalised_identity(spatial, moving.device, moving.dtype)
        factors = [2.0 / (n - 1) if n > 1 else 0.0 for n in reversed(spatial)]
        self.scale = torch.tensor(factors, device=moving.device, dtype=moving.dtype)
        self._diffs: dict[int, torch.Tensor] = {}  # forward-difference buffers, reused every step
        self._weights = _lku_weights(spatial, moving.device, moving.dtype) if regularizer == "lku_smooth" else {}

    def _grid(self, field: torch.Tensor) -> torch.Tensor:
        return torch.addcmul(self.identity, field, self.scale)

    def _sample(self, grid: torch.Tensor) -> torch.Tensor:
        return grid_sample_parallel(self.moving, grid)

    def _diffusion(self, field: torch.Tensor, grad: torch.Tensor | None) -> torch.Tensor:
        """reg_weight·Grad_l2 per sample (B,); adds its gradient to ``grad`` when given.

        Each axis term is mean(d²) over the forward differences d of all channels, so voxel i
        receives c·(d[i−1] − d[i]) (d = 0 outside) with c = 2·reg_weight/(ndim·count(d)).
        """
        ndim = field.ndim - 2
        total = field.new_zeros(field.shape[0])
        for axis in range(1, 1 + ndim):
            n = field.shape[axis]
            count = field[0].numel() // n * (n - 1)
            if count == 0:  # a single-voxel axis: mean of nothing, as diffusion_terms gives
                total += float("nan")
                continue
            if axis not in self._diffs:
                shape = list(field.shape)
                shape[axis] = n - 1
                self._diffs[axis] = field.new_empty(shape)
            diff = torch.sub(field.narrow(axis, 1, n - 1), field.narrow(axis, 0, n - 1), out=self._diffs[axis])
            if axis in self._weights:  # lku_smooth: per-channel weights on this axis's differences
                weighted = diff * self._weights[axis]
                total += (weighted * diff).flatten(1).sum(dim=1) / count
                if grad is not None:
                    coefficient = 2.0 * self.reg_weight / (ndim * count)
                    grad.narrow(axis, 1, n - 1).add_(weighted, alpha=coefficient)
                    grad.narrow(axis, 0, n - 1).sub_(weighted, alpha=coefficient)
                continue
            total += torch.linalg.vector_norm(diff.flatten(1), dim=1).square_() / count
            if grad is not None:
                coefficient = 2.0 * self.reg_weight / (ndim * count)
                grad.narrow(axis, 1, n - 1).add_(diff, alpha=coefficient)
                grad.narrow(axis, 0, n - 1).sub_(diff, alpha=coefficient)
        return self.reg_weight * total / ndim

    def value(self, field: torch.Tensor) -> torch.Tensor:
        """Per-sample energy (B,) of ``field`` (B,*spatial,ndim)."""
        with torch.no_grad():
            return self.image.energy(self._sample(self._grid(field))) + self._diffusion(field, None)

    def value_and_grad(self, field: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-sample energy (B,) and the gradient of its sum w.r.t. ``field``."""
        with torch.enable_grad():
            grid = self._grid(field.detach()).requires_grad_(True)
            warped = self._sample(grid)
            similarity, grad_warped = self.image.energy_and_grad(warped)
            (grad_grid,) = torch.autograd.grad(warped, grid, grad_warped)
        with torch.no_grad():
            grad = grad_grid.mul_(self.scale)
            return similarity + self._diffusion(field, grad), grad


def _lku_weights(spatial: tuple[int, ...], device: torch.device, dtype: torch.dtype) -> dict[int, torch.Tensor]:
    """Per axis of the grid layout (1..3), the channel weights that turn the diffusion sum into
    :func:`ofg.losses.lku_smoothness_loss`: (n_a/(n_c − 1))² for the difference along array axis a of
    displacement channel c (grid channel k is array channel 2 − k)."""
    if len(spatial) != 3:
        raise ValueError(f"regularizer 'lku_smooth' (LKU-Net's smoothness loss) is 3-D, got a {len(spatial)}-D field")
    weights = {}
    for a, n_a in enumerate(spatial):
        per_channel = [(n_a / max(spatial[c] - 1, 1)) ** 2 for c in reversed(range(3))]
        weights[a + 1] = torch.tensor(per_channel, device=device, dtype=dtype)
    return weights


def refine(moving: torch.Tensor, fixed: torch.Tensor, disp: torch.Tensor, steps: int = 10, lr: float = 0.1,
           reg_weight: float = 1.0, window: int = 9, image: str = "ncc", regularizer: str = "grad_l2",
           callback: Callable[[int, torch.Tensor, float], None] | None = None,
           fused: bool = False) -> tuple[torch.Tensor, list[float]]:
    """Refine ``disp`` (B,3,D,H,W) in voxels by ``steps`` Adam(amsgrad) steps on the OFG energy.

    ``moving`` and ``fixed`` are (B,1,D,H,W) (2-D: (B,1,H,W) with (B,2,H,W) fields). Each step
    warps ``moving`` by φ and evaluates E = NCC(fixed, moving∘φ) + reg_weight·Grad_l2(φ)
    (``image`` and ``regularizer`` select the terms, see :class:`RefineSettings`).

    Every sample is refined exactly as if it were alone: the optimiser minimises the sum of the
    per-sample energies, so each sample's gradient is its solo gradient (a batch mean would
    scale it by 1/B, which Adam's eps does not ignore). The window sums of ``fixed`` are
    computed once per call, since they do not change across steps.

    Returns ``(φ_opt, energies)``: φ_opt detached, same shape/dtype/device as ``disp``;
    ``energies`` has ``steps + 1`` python floats, the batch-mean energy before each step and
    after the last. Works under ``torch.no_grad()``; no gradient reaches the inputs.

    ``callback(k, φ_k, E_k)``, if given, is called for k = 0..steps with the detached field after
    k steps and its batch-mean energy, so one refinement can be monitored step by step (the
    Adam state persists across steps, so re-running with fewer steps is not the same thing).

    ``fused`` runs each step as a few fused loops (:mod:`ofg.fused`, NCC + grad_l2, 3-D only): float32
    and float64 CPU tensors run :mod:`ofg.kernels` (numba; compiled once per dtype and cached on disk),
    other devices the step under ``torch.compile`` (the first call per image size compiles). Either is
    several times faster than the eager loop.
    """
    _check_inputs(moving, fixed, disp)
    if not isinstance(steps, int) or steps < 0:
        raise ValueError(f"steps must be a non-negative integer, got {steps!r}")
    if lr < 0:
        raise ValueError(f"lr must be >= 0, got {lr}")
    if reg_weight < 0:
        raise ValueError(f"reg_weight must be >= 0, got {reg_weight}")
    if image not in IMAGE_TERMS or regularizer not in REGULARIZERS:
        raise ValueError(f"image must be one of {IMAGE_TERMS} and regularizer one of {REGULARIZERS}, "
                         f"got {image!r} and {regularizer!r}")
    if fused:
        if (image, regularizer) != ("ncc", "grad_l2"):
            raise ValueError(f"fused refinement computes NCC + grad_l2 only, got image {image!r} and "
                             f"regularizer {regularizer!r}; use fused: false")
        return fused_ops.refine(moving.detach(), fixed.detach(), disp.detach(), steps, lr, reg_weight, window,
                                callback)
    energy = _Energy(moving.detach(), fixed.detach(), reg_weight, window, image, regularizer)
    field = _to_grid_layout(disp.detach())
    energies: list[float] = []
    with torch.no_grad():
        # foreach: the same arithmetic as the single-tensor loop (bit-identical iterates), fewer passes
        optimiser = torch.optim.Adam([field], lr=lr, amsgrad=True, weight_decay=0, foreach=True)
        for step in range(steps):
            values, field.grad = energy.value_and_grad(field)
            energies.append(values.mean().item())
            if callback is not None:
                callback(step, _from_grid_layout(field), energies[-1])
            optimiser.step()
        energies.append(energy.value(field).mean().item())
    phi = _from_grid_layout(field)
    if callback is not None:
        callback(steps, phi, energies[-1])
    return phi, energies


@dataclass(frozen=True)
class OFGInfo:
    """Diagnostics of one :class:`OFGLoss` call: ``energies``, the refinement's ``steps + 1`` batch-mean
    energies (before each step and after the last, as :func:`refine` returns them), and
    ``refine_seconds``, the wall time of the refinement in seconds."""

    energies: tuple[float, ...]
    refine_seconds: float


class OFGLoss(nn.Module):
    """OFG guidance loss: MSE(disp_pred, refine(moving, fixed, disp_pred)).

    The refinement runs on detached inputs, so the gradient flows into ``disp_pred`` only.
    ``lr`` may be changed between epochs (see :func:`poly_lr`). A call keeps no state: its
    diagnostics come back with the loss when asked (``return_info=True``, :class:`OFGInfo`),
    so one instance may be called re-entrantly or through a wrapper module.
    """

    def __init__(self, steps: int = 10, lr: float = 0.1, reg_weight: float = 1.0, window: int = 9,
                 image: str = "ncc", regularizer: str = "grad_l2", fused: bool = False) -> None:
        super().__init__()
        self.fused = fused
        self.steps = steps
        self.lr = lr
        self.reg_weight = reg_weight
        self.window = window
        self.image = image
        self.regularizer = regularizer

    def forward(self, moving: torch.Tensor, fixed: torch.Tensor, disp_pred: torch.Tensor, *,
                return_info: bool = False) -> torch.Tensor | tuple[torch.Tensor, OFGInfo]:
        """``moving``, ``fixed`` (B,1,D,H,W); ``disp_pred`` (B,3,D,H,W) in voxels → the scalar loss, or
        ``(loss, OFGInfo)`` with ``return_info`` (the same loss: one computation serves both)."""
        start = time.perf_counter()
        disp_opt, energies = refine(moving.detach(), fixed.detach(), disp_pred.detach(), steps=self.steps,
                                    lr=self.lr, reg_weight=self.reg_weight, window=self.window, image=self.image,
                                    regularizer=self.regularizer, fused=self.fused)
        seconds = time.perf_counter() - start
        loss = F.mse_loss(disp_pred, disp_opt)
        return (loss, OFGInfo(tuple(energies), seconds)) if return_info else loss

    @classmethod
    def from_settings(cls, settings: RefineSettings) -> "OFGLoss":
        return cls(**settings.kwargs())

    def extra_repr(self) -> str:
        return (f"steps={self.steps}, lr={self.lr}, reg_weight={self.reg_weight}, window={self.window}, "
                f"image={self.image}, regularizer={self.regularizer}")


def poly_lr(base: float, epoch: int, max_epoch: int, power: float = 0.9) -> float:
    """Polynomial decay ``base·(1 − epoch/max_epoch)^power``, rounded to 8 decimals as the reference."""
    if max_epoch <= 0:
        raise ValueError(f"max_epoch must be positive, got {max_epoch}")
    if not 0 <= epoch <= max_epoch:
        raise ValueError(f"epoch must lie in [0, max_epoch={max_epoch}], got {epoch}")
    return round(base * (1.0 - epoch / max_epoch) ** power, 8)
