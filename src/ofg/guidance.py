"""On-the-fly guidance (OFG): refine a predicted displacement with a few optimiser steps and
use the refined field as the network's regression target.

Reference semantics: starting from a detached copy of the prediction, take ``steps``
Adam(amsgrad) steps on E(φ) = NCC(fixed, moving∘φ) + reg_weight·Grad_l2(φ), with a fresh
optimiser state for every call; the model loss is MSE(φ_pred, φ_opt).
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from typing import Any, Callable

import torch
import torch.nn.functional as F
from torch import nn

from ofg import fused as fused_ops
from ofg.losses import FixedImageNCC
from ofg.spatial import _normalised_identity, grid_sample_parallel
from ofg.validation import check_displacement, check_image


@dataclass
class RefineSettings:
    """The refinement optimiser: ``steps`` Adam(amsgrad) steps at learning rate ``lr`` on the energy
    NCC(fixed, moving∘φ) + ``reg_weight``·Grad_l2(φ), NCC over cubic windows of ``window`` voxels.

    One object serves OFG training (:class:`OFGLoss`, the config's ``ofg`` section), the offline
    refinement of optimised self-training, the refinement curve and test-time refinement.
    """

    steps: int = 10
    lr: float = 0.1
    reg_weight: float = 1.0
    window: int = 9
    #: run each step as one compiled function (:mod:`ofg.fused`): the same energy and Adam update,
    #: summed in another order (float32 iterates differ by round-off); 3-D only
    fused: bool = False

    def kwargs(self) -> dict[str, Any]:
        """Keyword arguments of :func:`refine`."""
        return asdict(self)


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
    over the volume than autograd through the formulas.
    """

    def __init__(self, moving: torch.Tensor, fixed: torch.Tensor, reg_weight: float, window: int) -> None:
        spatial = tuple(moving.shape[2:])
        self.moving = moving
        self.reg_weight = reg_weight
        self.ncc = FixedImageNCC(fixed, window)
        self.identity = _normalised_identity(spatial, moving.device, moving.dtype)
        factors = [2.0 / (n - 1) if n > 1 else 0.0 for n in reversed(spatial)]
        self.scale = torch.tensor(factors, device=moving.device, dtype=moving.dtype)
        self._diffs: dict[int, torch.Tensor] = {}  # forward-difference buffers, reused every step

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
            total += torch.linalg.vector_norm(diff.flatten(1), dim=1).square_() / count
            if grad is not None:
                coefficient = 2.0 * self.reg_weight / (ndim * count)
                grad.narrow(axis, 1, n - 1).add_(diff, alpha=coefficient)
                grad.narrow(axis, 0, n - 1).sub_(diff, alpha=coefficient)
        return self.reg_weight * total / ndim

    def value(self, field: torch.Tensor) -> torch.Tensor:
        """Per-sample energy (B,) of ``field`` (B,*spatial,ndim)."""
        with torch.no_grad():
            return self.ncc.energy(self._sample(self._grid(field))) + self._diffusion(field, None)

    def value_and_grad(self, field: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-sample energy (B,) and the gradient of its sum w.r.t. ``field``."""
        with torch.enable_grad():
            grid = self._grid(field.detach()).requires_grad_(True)
            warped = self._sample(grid)
            ncc, grad_warped = self.ncc.energy_and_grad(warped)
            (grad_grid,) = torch.autograd.grad(warped, grid, grad_warped)
        with torch.no_grad():
            grad = grad_grid.mul_(self.scale)
            return ncc + self._diffusion(field, grad), grad


def refine(moving: torch.Tensor, fixed: torch.Tensor, disp: torch.Tensor, steps: int = 10, lr: float = 0.1,
           reg_weight: float = 1.0, window: int = 9,
           callback: Callable[[int, torch.Tensor, float], None] | None = None,
           fused: bool = False) -> tuple[torch.Tensor, list[float]]:
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

    ``fused`` runs each step as one compiled function (:mod:`ofg.fused`, 3-D only): the first call
    per image size compiles (tens of seconds on CPU), later calls are several times faster.
    """
    _check_inputs(moving, fixed, disp)
    if not isinstance(steps, int) or steps < 0:
        raise ValueError(f"steps must be a non-negative integer, got {steps!r}")
    if lr < 0:
        raise ValueError(f"lr must be >= 0, got {lr}")
    if reg_weight < 0:
        raise ValueError(f"reg_weight must be >= 0, got {reg_weight}")
    if fused:
        return _refine_fused(moving.detach(), fixed.detach(), disp.detach(), steps, lr, reg_weight, window, callback)
    energy = _Energy(moving.detach(), fixed.detach(), reg_weight, window)
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


def _refine_fused(moving: torch.Tensor, fixed: torch.Tensor, disp: torch.Tensor, steps: int, lr: float,
                  reg_weight: float, window: int,
                  callback: Callable[[int, torch.Tensor, float], None] | None) -> tuple[torch.Tensor, list[float]]:
    """:func:`refine` with :func:`ofg.fused.refine_step`, one sample at a time (each is refined alone)."""
    if moving.ndim != 5:
        raise ValueError(f"fused refinement is 3-D only; got images of shape {tuple(moving.shape)}")
    step_fn, energy_fn = fused_ops.compiled("refine_step"), fused_ops.compiled("energy_and_gradient")
    with torch.no_grad():
        samples = []
        for b in range(moving.shape[0]):
            i = fixed[b, 0]
            sums = fused_ops.box_sum(torch.stack([i, i * i]), window)
            mean_i = sums[0] / float(window ** 3)
            var_i = (sums[1] - sums[0] * mean_i).clamp_min(0)
            u = disp[b].clone()
            samples.append([u, torch.zeros_like(u), torch.zeros_like(u), torch.zeros_like(u),
                            fused_ops.pad_moving(moving[b, 0]), i, mean_i, var_i])
        energies: list[float] = []
        for step in range(steps + 1):
            bias1, bias2 = 1 - fused_ops.BETAS[0] ** (step + 1), 1 - fused_ops.BETAS[1] ** (step + 1)
            step_size = torch.tensor(lr / bias1, dtype=disp.dtype, device=disp.device)
            bias2_sqrt = torch.tensor(bias2 ** 0.5, dtype=disp.dtype, device=disp.device)
            values = []
            for sample in samples:
                u, m, v, v_max, padded, i, mean_i, var_i = sample
                if step == steps:
                    values.append(energy_fn(u, padded, i, mean_i, var_i, reg_weight, window)[0])
                    continue
                if callback is not None:
                    sample.append(u.clone())  # the field before this step, for the callback
                energy, sample[0], sample[1], sample[2], sample[3] = step_fn(
                    u, m, v, v_max, step_size, bias2_sqrt, padded, i, mean_i, var_i, reg_weight, window)
                values.append(energy)
            energies.append(torch.stack(values).mean().item())
            if callback is not None and step < steps:
                callback(step, torch.stack([sample.pop() for sample in samples]), energies[-1])
    phi = torch.stack([sample[0] for sample in samples])
    if callback is not None:
        callback(steps, phi, energies[-1])
    return phi, energies


class OFGLoss(nn.Module):
    """OFG guidance loss: MSE(disp_pred, refine(moving, fixed, disp_pred)).

    The refinement runs on detached inputs, so the gradient flows into ``disp_pred`` only.
    ``lr`` may be changed between epochs (see :func:`poly_lr`). After each call,
    ``last_energies`` holds the refinement energies and ``last_refine_seconds`` its wall time.
    """

    def __init__(self, steps: int = 10, lr: float = 0.1, reg_weight: float = 1.0, window: int = 9,
                 fused: bool = False) -> None:
        super().__init__()
        self.fused = fused
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
                                    lr=self.lr, reg_weight=self.reg_weight, window=self.window, fused=self.fused)
        self.last_refine_seconds = time.perf_counter() - start
        self.last_energies = energies
        return F.mse_loss(disp_pred, disp_opt)

    @classmethod
    def from_settings(cls, settings: RefineSettings) -> "OFGLoss":
        return cls(**settings.kwargs())

    def extra_repr(self) -> str:
        return f"steps={self.steps}, lr={self.lr}, reg_weight={self.reg_weight}, window={self.window}"


def poly_lr(base: float, epoch: int, max_epoch: int, power: float = 0.9) -> float:
    """Polynomial decay ``base·(1 − epoch/max_epoch)^power``, rounded to 8 decimals as the reference."""
    if max_epoch <= 0:
        raise ValueError(f"max_epoch must be positive, got {max_epoch}")
    if not 0 <= epoch <= max_epoch:
        raise ValueError(f"epoch must lie in [0, max_epoch={max_epoch}], got {epoch}")
    return round(base * (1.0 - epoch / max_epoch) ** power, 8)
