"""Core benchmark: ``ncc_loss`` and ``refine`` against the naive reference formulations.

The naive versions below follow the reference code's structure (VoxelMorph ``NCC`` with five
window^3 ones-kernel convolutions; a ``SpatialTransformer`` whose sampling grid is rebuilt with
meshgrid at every step). They are the oracles of the speed-ups and live here, not in the
package, so that nothing else calls them.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F

from ofg import fused, kernels
from ofg.bench.timing import median_seconds, peak_bytes
from ofg.guidance import refine
from ofg.losses import ncc_loss


def naive_ncc_loss(fixed: torch.Tensor, warped: torch.Tensor, window: int = 9) -> torch.Tensor:
    """The VoxelMorph local NCC loss as written in the reference: five ones-kernel convolutions.

    ``fixed`` and ``warped`` are (B,1,D,H,W) or (B,1,H,W). Returns −mean(cc).
    """
    ndim = fixed.ndim - 2
    conv = F.conv3d if ndim == 3 else F.conv2d
    kernel = torch.ones([1, 1] + [window] * ndim, device=fixed.device, dtype=fixed.dtype)
    pad = window // 2
    i, j = fixed, warped
    i_sum = conv(i, kernel, padding=pad)
    j_sum = conv(j, kernel, padding=pad)
    i2_sum = conv(i * i, kernel, padding=pad)
    j2_sum = conv(j * j, kernel, padding=pad)
    ij_sum = conv(i * j, kernel, padding=pad)
    win_size = float(window ** ndim)
    u_i = i_sum / win_size
    u_j = j_sum / win_size
    cross = ij_sum - u_j * i_sum - u_i * j_sum + u_i * u_j * win_size
    var_i = i2_sum - 2 * u_i * i_sum + u_i * u_i * win_size
    var_j = j2_sum - 2 * u_j * j_sum + u_j * u_j * win_size
    cc = cross * cross / (var_i * var_j + 1e-5)
    return -torch.mean(cc)


def naive_warp(image: torch.Tensor, disp: torch.Tensor) -> torch.Tensor:
    """VoxelMorph ``SpatialTransformer`` semantics, building the voxel grid on every call."""
    shape = disp.shape[2:]
    axes = [torch.arange(0, n, device=disp.device) for n in shape]
    grid = torch.stack(torch.meshgrid(*axes, indexing="ij")).unsqueeze(0).to(disp.dtype)
    locs = grid + disp
    locs = torch.stack([2 * (locs[:, k] / (n - 1) - 0.5) for k, n in enumerate(shape)], dim=1)
    locs = locs.movedim(1, -1).flip(-1)
    return F.grid_sample(image, locs, mode="bilinear", padding_mode="zeros", align_corners=True)


def naive_diffusion_l2(disp: torch.Tensor) -> torch.Tensor:
    """Reference ``Grad3d(penalty='l2')``: mean of squared forward differences, averaged over axes."""
    terms = []
    for axis in range(2, disp.ndim):
        diff = disp.narrow(axis, 1, disp.shape[axis] - 1) - disp.narrow(axis, 0, disp.shape[axis] - 1)
        terms.append(torch.mean(diff * diff))
    return sum(terms) / len(terms)


def naive_refine(moving: torch.Tensor, fixed: torch.Tensor, disp: torch.Tensor, steps: int = 10,
                 lr: float = 0.1, reg_weight: float = 1.0, window: int = 9) -> torch.Tensor:
    """The reference refinement loop for a batch of one: grid rebuilt and conv NCC at every step."""
    phi = disp.detach().clone().requires_grad_(True)
    optimiser = torch.optim.Adam([phi], lr=lr, amsgrad=True, weight_decay=0)
    for _ in range(steps):
        warped = naive_warp(moving, phi)
        energy = naive_ncc_loss(fixed, warped, window) + reg_weight * naive_diffusion_l2(phi)
        optimiser.zero_grad()
        energy.backward()
        optimiser.step()
    return phi.detach()


def _smooth_noise(shape: tuple[int, ...], generator: torch.Generator, passes: int = 2) -> torch.Tensor:
    """A textured test image in [0,1]: uniform noise smoothed by a few 3^3 box averages."""
    image = torch.rand(shape, generator=generator)
    for _ in range(passes):
        image = F.avg_pool3d(image, 3, stride=1, padding=1, count_include_pad=False)
    image = image - image.min()
    return image / image.max()


DEFAULT_SIZES = (64, 128)


def cube_edges(sizes: list[tuple[int, int, int]] | None, default: tuple[int, ...]) -> list[int]:
    """The cube edges among ``sizes`` (this section times cubes); ``default`` when none are given."""
    if sizes is None:
        return list(default)
    edges = [shape[0] for shape in sizes if len(set(shape)) == 1]
    skipped = [shape for shape in sizes if len(set(shape)) != 1]
    if skipped:
        print(f"(sizes {skipped} are not cubes: this section times cubes only; skipped)")
    return edges


def make_inputs(size: int, device: torch.device, seed: int = 0) -> tuple[torch.Tensor, ...]:
    """moving, fixed (1,1,s,s,s) in [0,1] and a smooth displacement (1,3,s,s,s) of a few voxels."""
    generator = torch.Generator().manual_seed(seed)
    shape = (1, 1, size, size, size)
    moving = _smooth_noise(shape, generator)
    fixed = _smooth_noise(shape, generator)
    coarse = torch.randn((1, 3, 4, 4, 4), generator=generator) * 2.0
    disp = F.interpolate(coarse, size=(size,) * 3, mode="trilinear", align_corners=True)
    return moving.to(device), fixed.to(device), disp.to(device)


# ----------------------------------------------------------------------------------------------

def _ncc_fwd_bwd(loss_fn: Callable[..., torch.Tensor], fixed: torch.Tensor,
                 warped: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    leaf = warped.detach().clone().requires_grad_(True)
    loss = loss_fn(fixed, leaf)
    loss.backward()
    return loss.detach(), leaf.grad


def _row(cells: list[str], widths: list[int]) -> str:
    return "  ".join(cell.rjust(width) for cell, width in zip(cells, widths))


def _float64_check(size: int = 24) -> tuple[float, float]:
    """Max |ours - naive| in float64 at a small size: ncc loss+gradient, and the refined field."""
    moving, fixed, disp = (t.double() for t in make_inputs(size, torch.device("cpu")))
    warped = naive_warp(moving, disp)
    ours, naive = _ncc_fwd_bwd(ncc_loss, fixed, warped), _ncc_fwd_bwd(naive_ncc_loss, fixed, warped)
    ncc_diff = max((ours[0] - naive[0]).abs().item(), (ours[1] - naive[1]).abs().max().item())
    refine_diff = (refine(moving, fixed, disp, steps=10)[0] - naive_refine(moving, fixed, disp, steps=10)).abs()
    return ncc_diff, refine_diff.max().item()


def _abs_diff_stats(a: torch.Tensor, b: torch.Tensor) -> tuple[float, float]:
    """max and 99.9th percentile of |a - b| over all elements, computed in float64."""
    diff = (a.double() - b.double()).abs().flatten()
    return diff.max().item(), torch.quantile(diff[:2**24], 0.999).item()


def _accuracy_lines(size: int, moving: torch.Tensor, fixed: torch.Tensor, disp: torch.Tensor,
                    ours32: torch.Tensor, naive32: torch.Tensor) -> list[str]:
    """Refined fields (k=10) in float32 against the naive loop in float64 (~exact arithmetic)."""
    oracle = naive_refine(moving.double(), fixed.double(), disp.double(), steps=10)
    lines = []
    for name, field in (("ours float32", ours32), ("naive float32", naive32)):
        top, p999 = _abs_diff_stats(field, oracle)
        lines.append(f"{size:>5}  {name:>13} - naive float64 (refine k=10)  max|diff| {top:.1e}  "
                     f"p99.9|diff| {p999:.1e} voxels")
    return lines


def numba_cold_compile_seconds() -> float:
    """The first float32 :func:`ofg.kernels.refine` of a fresh process with an empty kernel cache: the compile."""
    code = ("import time, torch; from ofg import kernels; x = torch.rand(1, 1, 6, 6, 6); start = time.perf_counter(); "
            "kernels.refine(x, x, torch.zeros(1, 3, 6, 6, 6), 1, 0.1, 1.0, 3, None); print(time.perf_counter() - start)")
    with tempfile.TemporaryDirectory() as cache:
        done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                              env={**os.environ, "NUMBA_CACHE_DIR": cache})
    return float(done.stdout.split()[-1])


def _fused_rows(size: int, inputs: tuple[torch.Tensor, ...], naive: tuple[float, torch.Tensor, float], t_eager: float,
                device: torch.device, repeats: int, widths: list[int]) -> str:
    """Rows of the fused refinement (k=10) beside the eager one: torch.compile'd (:func:`ofg.fused.refine_compiled`,
    the CUDA path) and, on CPU, the numba kernels (:func:`ofg.kernels.refine`); returns the summary line."""
    t_naive, naive_field, m_naive = naive
    paths = {"refine compiled": fused.refine_compiled} | ({"refine numba": kernels.refine} if device.type == "cpu" else {})
    summary = f"{size:>5}  refine k=10: eager {t_eager:.4f} s"
    for name, path in paths.items():
        start = time.perf_counter()
        field = path(*inputs, 10, 0.1, 1.0, 9, None)[0]
        first = time.perf_counter() - start
        seconds, _ = median_seconds(lambda: path(*inputs, 10, 0.1, 1.0, 9, None), device, repeats)
        if path is kernels.refine:  # numpy workspaces, kept between calls: the profiler does not see them
            memory = sum(a.nbytes for s in kernels._SAMPLES[(tuple(inputs[0].shape[2:]), inputs[2].dtype)]
                         for a in vars(s).values() if isinstance(a, np.ndarray))
        else:
            memory = peak_bytes(lambda: path(*inputs, 2, 0.1, 1.0, 9, None), device)
        diff = (field - naive_field).abs().flatten().double()
        print(_row([f"{size}", name, f"{seconds:.4f}", f"{t_naive:.3f}", f"{t_naive / seconds:.1f}x",
                    f"{memory / 2**20:.1f}", f"{m_naive / 2**20:.1f}", f"{m_naive / max(memory, 1):.2f}x",
                    f"{diff.max().item():.1e}", f"{torch.quantile(diff[:2**24], 0.999).item():.1e}"], widths), flush=True)
        summary += f", {name.split()[1]} {seconds:.4f} s ({t_eager / seconds:.1f}x; first call {first:.1f} s)"
    return summary


def run(args: argparse.Namespace) -> None:
    """Print the core table for every size in ``args.sizes`` on ``args.device``."""
    device, repeats = args.device, args.repeats
    header = ["size", "operation", "ours s", "naive s", "speed-up", "ours MiB", "naive MiB", "mem ratio",
              "max|diff|", "p99.9|diff|"]
    widths = [5, 17, 8, 8, 8, 9, 9, 9, 9, 11]
    print("ncc: loss forward+backward (window 9) vs five 9^3 conv3d. refine: k=10 Adam steps vs the")
    print("reference loop (meshgrid each step + conv NCC). float32, batch 1. Peak memory: tensor bytes")
    print("allocated above the inputs (refine: over 2 steps; the step graph is freed every step).")
    print("|diff|: of loss and gradient (ncc) or of the refined field in voxels (refine).")
    print(_row(header, widths))
    mib = 2.0 ** 20
    single_runs = False
    accuracy: list[str] = []
    summaries: list[str] = []
    for size in cube_edges(args.sizes, DEFAULT_SIZES):
        moving, fixed, disp = make_inputs(size, device)
        warped = naive_warp(moving, disp)

        ours = _ncc_fwd_bwd(ncc_loss, fixed, warped)
        naive = _ncc_fwd_bwd(naive_ncc_loss, fixed, warped)
        grad_diff = (ours[1] - naive[1]).abs().flatten().double()
        diff = max((ours[0] - naive[0]).abs().item(), grad_diff.max().item())
        t_ours, _ = median_seconds(lambda: _ncc_fwd_bwd(ncc_loss, fixed, warped), device, repeats)
        t_naive, n_naive = median_seconds(lambda: _ncc_fwd_bwd(naive_ncc_loss, fixed, warped), device, repeats)
        single_runs |= n_naive == 1
        m_ours = peak_bytes(lambda: _ncc_fwd_bwd(ncc_loss, fixed, warped), device)
        m_naive = peak_bytes(lambda: _ncc_fwd_bwd(naive_ncc_loss, fixed, warped), device)
        print(_row([f"{size}", "ncc_loss fwd+bwd", f"{t_ours:.4f}", f"{t_naive:.4f}" + "*" * (n_naive == 1),
                    f"{t_naive / t_ours:.1f}x", f"{m_ours / mib:.1f}", f"{m_naive / mib:.1f}",
                    f"{m_naive / max(m_ours, 1):.2f}x", f"{diff:.1e}",
                    f"{torch.quantile(grad_diff[:2**24], 0.999).item():.1e}"], widths), flush=True)

        t_ours, _ = median_seconds(lambda: refine(moving, fixed, disp, steps=10), device, repeats)
        results: list[torch.Tensor] = []
        t_naive, n_naive = median_seconds(lambda: results.append(naive_refine(moving, fixed, disp, steps=10)),
                                          device, repeats)
        single_runs |= n_naive == 1
        ours_field = refine(moving, fixed, disp, steps=10)[0]
        field_diff = (ours_field - results[-1]).abs().flatten().double()
        m_ours = peak_bytes(lambda: refine(moving, fixed, disp, steps=2), device)
        m_naive = peak_bytes(lambda: naive_refine(moving, fixed, disp, steps=2), device)
        print(_row([f"{size}", "refine k=10", f"{t_ours:.3f}", f"{t_naive:.3f}" + "*" * (n_naive == 1),
                    f"{t_naive / t_ours:.1f}x", f"{m_ours / mib:.1f}", f"{m_naive / mib:.1f}",
                    f"{m_naive / max(m_ours, 1):.2f}x", f"{field_diff.max().item():.1e}",
                    f"{torch.quantile(field_diff[:2**24], 0.999).item():.1e}"], widths), flush=True)
        summaries.append(_fused_rows(size, (moving, fixed, disp), (t_naive, results[-1], m_naive), t_ours, device,
                                     repeats, widths))
        if size <= getattr(args, "accuracy_max_size", 64):
            # a float64 naive refinement costs minutes on a CPU at 128^3: only at small sizes by default
            accuracy += _accuracy_lines(size, moving, fixed, disp, ours_field, results[-1])
    if single_runs:
        print("* a single run, not a median (--repeats 1, or the warm-up took over 30 s)")
    print("Fused refinement (ofg.fused): the step compiled by torch.compile (the CUDA path) and, on CPU, the numba")
    print("kernels (ofg.kernels; 'ours MiB' is their workspaces, numpy, kept between calls). Side by side, speed-up")
    print("over the eager refinement and the first call (compile, or numba's load from its on-disk cache):")
    for line in summaries:
        print(line)
    if device.type == "cpu":
        print(f"numba kernels compiled from an empty cache in a fresh process: {numba_cold_compile_seconds():.1f} s")
    ncc_diff, refine_diff = _float64_check()
    print(f"float64 at 24^3, same formulas: max|diff| ncc loss+gradient {ncc_diff:.1e}, "
          f"refined field {refine_diff:.1e} voxels. The float32 field differences come from Adam's")
    print("first steps, lr*g/(|g|+eps), turning round-off in tiny gradients into steps of up to lr.")
    if accuracy:
        print("Accuracy in float32: both refinements against the naive loop run in float64 (exact to ~1e-10),")
        print("so ours is no less accurate than the reference formulation when its rows are no larger:")
        for line in accuracy:
            print(line)
