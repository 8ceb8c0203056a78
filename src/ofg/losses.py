"""Similarity and regularisation losses with the reference (VoxelMorph) semantics."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ofg.validation import check_displacement, check_same_shape

_PENALTIES = ("l2", "l1")


def window_sum(volume: torch.Tensor, window: int) -> torch.Tensor:
    """Zero-padded 'same' box sum over a window^ndim neighbourhood, computed separably.

    ``volume`` is (N,1,*spatial). Equivalent to a convolution with a ones kernel of size
    window^ndim and padding window//2, at ndim*window instead of window^ndim multiply-adds.
    """
    ndim = volume.ndim - 2
    conv = F.conv3d if ndim == 3 else F.conv2d
    pad = window // 2
    out = volume
    for axis in range(ndim):
        kernel_shape = [1, 1] + [window if a == axis else 1 for a in range(ndim)]
        kernel = torch.ones(kernel_shape, device=volume.device, dtype=volume.dtype)
        padding = [pad if a == axis else 0 for a in range(ndim)]
        out = conv(out, kernel, padding=padding)
    return out


def local_ncc(fixed: torch.Tensor, warped: torch.Tensor, window: int = 9, eps: float = 1e-5) -> torch.Tensor:
    """Voxelwise squared local correlation cc (B,C,*spatial), the VoxelMorph formula.

    With window sums S over n = window^ndim voxels (zero padding),
    ``cross = S(IJ) - S(I)S(J)/n`` and ``var_I = S(I^2) - S(I)^2/n``, algebraically identical to
    the reference's mean-based expressions; ``cc = cross^2 / (var_I var_J + eps)``.
    Variances are clamped at 0 so that round-off on flat regions can never make cc negative or
    blow it up.
    """
    check_same_shape(fixed, warped, "fixed", "warped")
    if window < 1 or window % 2 == 0:
        raise ValueError(f"window must be a positive odd integer, got {window}")
    batch, channels = fixed.shape[:2]
    spatial = fixed.shape[2:]
    n = float(window ** len(spatial))
    i = fixed.reshape(batch * channels, 1, *spatial)
    j = warped.reshape(batch * channels, 1, *spatial)
    stacked = torch.cat([i, j, i * i, j * j, i * j], dim=1)
    sums = window_sum(stacked.reshape(-1, 1, *spatial), window).reshape(batch * channels, 5, *spatial)
    s_i, s_j, s_ii, s_jj, s_ij = sums.unbind(1)
    cross = s_ij - s_i * s_j / n
    var_i = (s_ii - s_i * s_i / n).clamp_min(0)
    var_j = (s_jj - s_j * s_j / n).clamp_min(0)
    cc = cross * cross / (var_i * var_j + eps)
    return cc.reshape(batch, channels, *spatial)


def ncc_loss(fixed: torch.Tensor, warped: torch.Tensor, window: int = 9) -> torch.Tensor:
    """Negative mean local squared NCC, a scalar in [-1, 0]; -1 for identical textured images.

    ``fixed`` and ``warped`` are (B,C,D,H,W) or (B,C,H,W) with equal shapes; the loss is symmetric
    in the two. Matches the reference formula (see PAPER.md) to round-off.
    """
    return -local_ncc(fixed, warped, window).mean()


def diffusion_loss(disp: torch.Tensor, penalty: str = "l2") -> torch.Tensor:
    """Mean forward-difference penalty of ``disp`` (B,3,D,H,W) in voxels, averaged over axes.

    For each spatial axis, d = disp[..., 1:, ...] - disp[..., :-1, ...]; the axis term is
    mean(d^2) ("l2") or mean(|d|) ("l1"), and the loss is the mean of the axis terms.
    """
    if penalty not in _PENALTIES:
        raise ValueError(f"penalty must be one of {_PENALTIES}, got {penalty!r}")
    ndim = check_displacement(disp)
    terms = []
    for axis in range(2, 2 + ndim):
        diff = torch.diff(disp, dim=axis)
        terms.append((diff * diff).mean() if penalty == "l2" else diff.abs().mean())
    return torch.stack(terms).mean()
