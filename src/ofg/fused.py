"""The OFG refinement step as one function, for the compiler to fuse: energy, gradient and Adam update.

:func:`ofg.guidance.refine` spends its time in a dozen passes over the volume per step (sampling, the
sampler's grid gradient, two window sums of three maps, the diffusion term, Adam). Written as one
functional step, ``torch.compile`` generates a handful of fused loops instead, which reads each volume
a few times per step. The arithmetic is the same as the eager path (it agrees to round-off in float64,
see the tests), only its order differs:

- trilinear sampling of the moving image at x + u(x) (zero outside, as ``grid_sample`` with
  ``align_corners=True``) and, from the same eight corners, the exact derivative of the sampled value
  with respect to u (what ``grid_sample``'s backward computes);
- local squared NCC against the fixed image with its closed-form gradient
  (:class:`ofg.losses.FixedImageNCC` documents the formula), window sums as zero-padded shifted sums;
- reg_weight·Grad_l2: the mean of squared forward differences over all channels, per axis, averaged
  over the axes, and its gradient;
- Adam(amsgrad) with PyTorch's update rule (betas 0.9, 0.999, eps 1e-8).

One sample at a time: images (D,H,W), the field u (3,D,H,W) in voxels, channel i along axis i.

These functions specify the step. :func:`refine` runs it where the tensors live: float32/float64 CPU
tensors go to :mod:`ofg.kernels` (the same step as five parallel numba loop nests, compiled once and
cached on disk), everything else (CUDA) to :func:`refine_compiled`, this module's step under
``torch.compile``.
"""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F

from ofg import kernels
from ofg.kernels import BETAS, EPS, NCC_EPS


def box_sum(x: torch.Tensor, window: int) -> torch.Tensor:
    """Zero-padded 'same' box sum of ``x`` (C,D,H,W) over ``window``³ voxels, axis by axis."""
    half = window // 2
    for axis in (1, 2, 3):
        n = x.shape[axis]
        pad = [0] * 6
        pad[2 * (3 - axis)] = pad[2 * (3 - axis) + 1] = half
        padded = F.pad(x, pad)
        x = sum(padded.narrow(axis, k, n) for k in range(window))
    return x


def sample_with_gradient(padded: torch.Tensor, u: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(I(x + u(x)) (D,H,W), its derivative w.r.t. u (3,D,H,W)), trilinear, zero outside.

    ``padded`` is the moving image (D,H,W) padded with one zero plane before and two after each axis
    (:func:`pad_moving`), so every clamped corner index outside the volume reads a zero.
    """
    size = [n - 3 for n in padded.shape]
    axes = [torch.arange(n, device=u.device, dtype=u.dtype) for n in size]
    base = torch.meshgrid(*axes, indexing="ij")
    lower, frac = [], []
    for axis in range(3):
        position = base[axis] + u[axis]
        floor = position.floor()
        frac.append(position - floor)
        lower.append(floor.long())

    def corner(dz: int, dy: int, dx: int) -> torch.Tensor:
        index = [(lower[a] + d + 1).clamp(0, size[a] + 2) for a, d in enumerate((dz, dy, dx))]
        return padded[index[0], index[1], index[2]]

    fz, fy, fx = frac
    c000, c001, c010, c011 = corner(0, 0, 0), corner(0, 0, 1), corner(0, 1, 0), corner(0, 1, 1)
    c100, c101, c110, c111 = corner(1, 0, 0), corner(1, 0, 1), corner(1, 1, 0), corner(1, 1, 1)
    c00, c01 = c000 + fx * (c001 - c000), c010 + fx * (c011 - c010)
    c10, c11 = c100 + fx * (c101 - c100), c110 + fx * (c111 - c110)
    c0, c1 = c00 + fy * (c01 - c00), c10 + fy * (c11 - c10)
    value = c0 + fz * (c1 - c0)
    d_y = (c01 - c00) + fz * ((c11 - c10) - (c01 - c00))
    dx0 = (c001 - c000) + fy * ((c011 - c010) - (c001 - c000))
    dx1 = (c101 - c100) + fy * ((c111 - c110) - (c101 - c100))
    return value, torch.stack([c1 - c0, d_y, dx0 + fz * (dx1 - dx0)])


def pad_moving(moving: torch.Tensor) -> torch.Tensor:
    """The moving image (D,H,W) with the zero border :func:`sample_with_gradient` reads."""
    return F.pad(moving, (1, 2, 1, 2, 1, 2))


def ncc_with_gradient(warped: torch.Tensor, fixed: torch.Tensor, mean_i: torch.Tensor, var_i: torch.Tensor,
                      window: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(−mean(cc), its gradient w.r.t. ``warped``) for images (D,H,W); ``mean_i``, ``var_i``: the fixed
    image's window mean S(I)/n and variance max(S(I²) − S(I)²/n, 0)."""
    n = float(window ** 3)
    scale = 1.0 / warped.numel()
    sums = box_sum(torch.stack([warped, warped * warped, fixed * warped]), window)
    s_j, s_jj, s_ij = sums[0], sums[1], sums[2]
    cross = s_ij - mean_i * s_j
    var_j_raw = s_jj - s_j * s_j / n
    ratio = cross / (var_i * var_j_raw.clamp_min(0) + NCC_EPS)
    energy = -(cross * ratio).sum() * scale
    g_d = torch.where(var_j_raw < 0, torch.zeros_like(ratio), ratio * ratio * var_i * scale)
    g_e = ratio * (-2.0 * scale)
    g_b = -(g_e * mean_i) - (2.0 / n) * g_d * s_j
    back = box_sum(torch.stack([g_b, g_d, g_e]), window)
    return energy, back[0] + 2.0 * warped * back[1] + fixed * back[2]


def diffusion_with_gradient(u: torch.Tensor, reg_weight: float) -> tuple[torch.Tensor, torch.Tensor]:
    """(reg_weight·Grad_l2(u), its gradient) of a field (3,D,H,W): per axis the mean of squared forward
    differences over every channel, averaged over the three axes."""
    energy = u.new_zeros(())
    grad = torch.zeros_like(u)
    for axis in (1, 2, 3):
        n = u.shape[axis]
        diff = u.narrow(axis, 1, n - 1) - u.narrow(axis, 0, n - 1)
        count = diff.numel()
        energy = energy + (diff * diff).sum() / count
        pad = [0] * 6
        pad[2 * (3 - axis)] = 1
        before = F.pad(diff, pad)          # d[i−1] at i (0 at the first plane)
        pad[2 * (3 - axis)], pad[2 * (3 - axis) + 1] = 0, 1
        after = F.pad(diff, pad)           # d[i] at i (0 at the last plane)
        grad = grad + (2.0 * reg_weight / (3 * count)) * (before - after)
    return reg_weight * energy / 3, grad


def energy_and_gradient(u: torch.Tensor, padded: torch.Tensor, fixed: torch.Tensor, mean_i: torch.Tensor,
                        var_i: torch.Tensor, reg_weight: float, window: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The OFG energy NCC + reg_weight·Grad_l2 of ``u`` (3,D,H,W) and its gradient."""
    warped, d_warped = sample_with_gradient(padded, u)
    ncc, g_warped = ncc_with_gradient(warped, fixed, mean_i, var_i, window)
    reg, g_reg = diffusion_with_gradient(u, reg_weight)
    return ncc + reg, g_warped * d_warped + g_reg


def adam_step(u: torch.Tensor, grad: torch.Tensor, m: torch.Tensor, v: torch.Tensor, v_max: torch.Tensor,
              step_size: torch.Tensor, bias2_sqrt: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """One Adam(amsgrad) update as PyTorch computes it; ``step_size`` = lr/(1−β1^t) and
    ``bias2_sqrt`` = sqrt(1−β2^t) are 0-d tensors, so a compiled step serves every t."""
    m = m + (1 - BETAS[0]) * (grad - m)
    v = v * BETAS[1] + (1 - BETAS[1]) * grad * grad
    v_max = torch.maximum(v_max, v)
    u = u - step_size * m / (v_max.sqrt() / bias2_sqrt + EPS)
    return u, m, v, v_max


def refine_step(u: torch.Tensor, m: torch.Tensor, v: torch.Tensor, v_max: torch.Tensor, step_size: torch.Tensor,
                bias2_sqrt: torch.Tensor, padded: torch.Tensor, fixed: torch.Tensor, mean_i: torch.Tensor,
                var_i: torch.Tensor, reg_weight: float, window: int) -> tuple[torch.Tensor, ...]:
    """(energy before the step, u, m, v, v_max after it): one step of the refinement."""
    energy, grad = energy_and_gradient(u, padded, fixed, mean_i, var_i, reg_weight, window)
    return (energy, *adam_step(u, grad, m, v, v_max, step_size, bias2_sqrt))


_COMPILED: dict[str, Callable] = {}


def compiled(name: str) -> Callable:
    """``refine_step`` or ``energy_and_gradient`` compiled once per process (torch.compile's code
    generation: C++ on CPU, Triton on CUDA; the first call of each shape compiles for tens of seconds)."""
    if name not in _COMPILED:
        function = {"refine_step": refine_step, "energy_and_gradient": energy_and_gradient}[name]
        _COMPILED[name] = torch.compile(function, dynamic=False)
    return _COMPILED[name]


def refine(moving: torch.Tensor, fixed: torch.Tensor, disp: torch.Tensor, steps: int, lr: float,
           reg_weight: float, window: int,
           callback: Callable[[int, torch.Tensor, float], None] | None) -> tuple[torch.Tensor, list[float]]:
    """:func:`ofg.guidance.refine` with this step, one sample at a time (each is refined alone, as in
    the eager refinement); same arguments and returns. CPU tensors of one dtype, float32 or float64,
    run :func:`ofg.kernels.refine`; others :func:`refine_compiled`."""
    if moving.ndim != 5:
        raise ValueError(f"fused refinement is 3-D only; got images of shape {tuple(moving.shape)}")
    if not isinstance(window, int) or window < 1 or window % 2 == 0:
        raise ValueError(f"window must be a positive odd integer, got {window!r}")
    tensors = (moving, fixed, disp)
    if all(t.device.type == "cpu" and t.dtype == disp.dtype for t in tensors) and disp.dtype in kernels.DTYPES:
        return kernels.refine(moving, fixed, disp, steps, lr, reg_weight, window, callback)
    return refine_compiled(moving, fixed, disp, steps, lr, reg_weight, window, callback)


def refine_compiled(moving: torch.Tensor, fixed: torch.Tensor, disp: torch.Tensor, steps: int, lr: float,
                    reg_weight: float, window: int,
                    callback: Callable[[int, torch.Tensor, float], None] | None) -> tuple[torch.Tensor, list[float]]:
    """:func:`refine` with :func:`refine_step` under ``torch.compile`` (any device; the CUDA path)."""
    step_fn, energy_fn = compiled("refine_step"), compiled("energy_and_gradient")
    with torch.no_grad():
        samples = []
        for b in range(moving.shape[0]):
            i = fixed[b, 0]
            sums = box_sum(torch.stack([i, i * i]), window)
            mean_i = sums[0] / float(window ** 3)
            var_i = (sums[1] - sums[0] * mean_i).clamp_min(0)
            u = disp[b].clone()
            samples.append([u, torch.zeros_like(u), torch.zeros_like(u), torch.zeros_like(u),
                            pad_moving(moving[b, 0]), i, mean_i, var_i])
        energies: list[float] = []
        for step in range(steps + 1):
            bias1, bias2 = 1 - BETAS[0] ** (step + 1), 1 - BETAS[1] ** (step + 1)
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
