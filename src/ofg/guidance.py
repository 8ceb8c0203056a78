"""On-the-fly guidance (OFG): refine a predicted displacement with a few optimiser steps and
use the refined field as the network's regression target.

Reference semantics (PAPER.md): starting from a detached copy of the prediction, take ``steps``
Adam(amsgrad) steps on E(φ) = NCC(fixed, moving∘φ) + reg_weight·Grad_l2(φ), with a fresh
optimiser state for every call; the model loss is MSE(φ_pred, φ_opt).
"""

from __future__ import annotations

import time
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from ofg.losses import diffusion_terms, fixed_window_sums, local_ncc
from ofg.spatial import warp
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


def _per_sample_energy(moving: torch.Tensor, fixed: torch.Tensor, phi: torch.Tensor, fixed_sums: torch.Tensor,
                       reg_weight: float, window: int) -> torch.Tensor:
    """E_b = -mean(cc_b) + reg_weight·Grad_l2(φ_b) for every sample b, shape (B,)."""
    warped = warp(moving, phi)
    cc = local_ncc(fixed, warped, window, fixed_sums=fixed_sums)
    return -cc.flatten(1).mean(dim=1) + reg_weight * diffusion_terms(phi, "l2")


def refine(moving: torch.Tensor, fixed: torch.Tensor, disp: torch.Tensor, steps: int = 10, lr: float = 0.1,
           reg_weight: float = 1.0, window: int = 9,
           callback: Callable[[int, torch.Tensor, float], None] | None = None) -> tuple[torch.Tensor, list[float]]:
    """Refine ``disp`` (B,3,D,H,W) in voxels by ``steps`` Adam(amsgrad) steps on the OFG energy.

    ``moving`` and ``fixed`` are (B,1,D,H,W) (2-D: (B,1,H,W) with (B,2,H,W) fields). Each step
    warps ``moving`` by φ and evaluates E = NCC(fixed, moving∘φ) + reg_weight·Grad_l2(φ).

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
    """
    _check_inputs(moving, fixed, disp)
    if not isinstance(steps, int) or steps < 0:
        raise ValueError(f"steps must be a non-negative integer, got {steps!r}")
    if lr < 0:
        raise ValueError(f"lr must be >= 0, got {lr}")
    if reg_weight < 0:
        raise ValueError(f"reg_weight must be >= 0, got {reg_weight}")
    moving = moving.detach()
    fixed = fixed.detach()
    phi = disp.detach().clone()
    fixed_sums = fixed_window_sums(fixed, window)
    energies: list[float] = []
    with torch.enable_grad():
        phi.requires_grad_(True)
        optimiser = torch.optim.Adam([phi], lr=lr, amsgrad=True, weight_decay=0)
        for step in range(steps):
            optimiser.zero_grad(set_to_none=True)
            energy = _per_sample_energy(moving, fixed, phi, fixed_sums, reg_weight, window)
            energies.append(energy.detach().mean().item())
            if callback is not None:
                callback(step, phi.detach(), energies[-1])
            energy.sum().backward()
            optimiser.step()
    phi = phi.detach()
    with torch.no_grad():
        final = _per_sample_energy(moving, fixed, phi, fixed_sums, reg_weight, window)
    energies.append(final.mean().item())
    if callback is not None:
        callback(steps, phi, energies[-1])
    return phi, energies


class OFGLoss(nn.Module):
    """OFG guidance loss: MSE(disp_pred, refine(moving, fixed, disp_pred)).

    The refinement runs on detached inputs, so the gradient flows into ``disp_pred`` only.
    ``lr`` may be changed between epochs (see :func:`poly_lr`). After each call,
    ``last_energies`` holds the refinement energies and ``last_refine_seconds`` its wall time.
    """

    def __init__(self, steps: int = 10, lr: float = 0.1, reg_weight: float = 1.0, window: int = 9) -> None:
        super().__init__()
        self.steps = steps
        self.lr = lr
        self.reg_weight = reg_weight
        self.window = window
        self.last_energies: list[float] = []
        self.last_refine_seconds: float = 0.0

    def forward(self, moving: torch.Tensor, fixed: torch.Tensor, disp_pred: torch.Tensor) -> torch.Tensor:
        """``moving``, ``fixed`` (B,1,D,H,W); ``disp_pred`` (B,3,D,H,W) in voxels → scalar loss."""
        start = time.perf_counter()
        disp_opt, energies = refine(moving.detach(), fixed.detach(), disp_pred.detach(), steps=self.steps,
                                    lr=self.lr, reg_weight=self.reg_weight, window=self.window)
        self.last_refine_seconds = time.perf_counter() - start
        self.last_energies = energies
        return F.mse_loss(disp_pred, disp_opt)

    def extra_repr(self) -> str:
        return f"steps={self.steps}, lr={self.lr}, reg_weight={self.reg_weight}, window={self.window}"


def poly_lr(base: float, epoch: int, max_epoch: int, power: float = 0.9) -> float:
    """Polynomial decay ``base·(1 − epoch/max_epoch)^power``, rounded to 8 decimals as the reference."""
    if max_epoch <= 0:
        raise ValueError(f"max_epoch must be positive, got {max_epoch}")
    if not 0 <= epoch <= max_epoch:
        raise ValueError(f"epoch must lie in [0, max_epoch={max_epoch}], got {epoch}")
    return round(base * (1.0 - epoch / max_epoch) ** power, 8)
