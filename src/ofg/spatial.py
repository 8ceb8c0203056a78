"""Spatial transforms on dense displacement fields.

Conventions (shared by the whole package):

- Displacements are (B,3,D,H,W) (or (B,2,H,W) in 2-D) in **voxels**. Channel i moves along
  array axis i+2. A warped image is ``I(x + u(x))``.
- Sampling is ``grid_sample`` with ``align_corners=True`` (voxel centres at -1 and 1) and zero
  padding, the convention of the VoxelMorph/TransMorph ``SpatialTransformer`` used by the
  reference implementation.
- The normalised identity grid is cached per (shape, device, dtype) and never stored in a
  ``state_dict``.
"""

from __future__ import annotations

import functools
from typing import Sequence

import torch
import torch.nn.functional as F

from ofg.validation import check_displacement, check_image_and_displacement

_MODES = ("bilinear", "nearest")


@functools.lru_cache(maxsize=32)
def _normalised_identity(shape: tuple[int, ...], device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """Identity sampling grid (1,*shape,ndim) in grid_sample order (last axis first), in [-1,1]."""
    axes = [torch.linspace(-1.0, 1.0, n, device=device, dtype=dtype) if n > 1
            else torch.zeros(1, device=device, dtype=dtype) for n in shape]
    mesh = torch.meshgrid(*axes, indexing="ij")
    return torch.stack(mesh[::-1], dim=-1).unsqueeze(0)


def _voxel_to_normalised_scale(shape: Sequence[int], device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """Per-channel factor 2/(n-1) that turns voxel displacements into grid_sample units."""
    factors = [2.0 / (n - 1) if n > 1 else 0.0 for n in shape]
    return torch.tensor(factors, device=device, dtype=dtype).view(1, len(shape), *([1] * len(shape)))


def identity_grid(shape: Sequence[int], device: torch.device | str = "cpu",
                  dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Voxel coordinates (1,ndim,*shape): channel i holds the index along axis i."""
    axes = [torch.arange(n, device=device, dtype=dtype) for n in shape]
    return torch.stack(torch.meshgrid(*axes, indexing="ij"), dim=0).unsqueeze(0)


def sampling_grid(disp: torch.Tensor) -> torch.Tensor:
    """The grid_sample grid (B,*shape,ndim) for displacement ``disp`` (B,ndim,*shape) in voxels."""
    shape = tuple(disp.shape[2:])
    identity = _normalised_identity(shape, disp.device, disp.dtype)
    scaled = disp * _voxel_to_normalised_scale(shape, disp.device, disp.dtype)
    return identity + scaled.flip(1).movedim(1, -1)


def grid_sample_parallel(image: torch.Tensor, grid: torch.Tensor, mode: str = "bilinear") -> torch.Tensor:
    """``F.grid_sample`` (zero padding, align_corners=True) of ``image`` (B,C,D,H,W) at ``grid``
    (B,D,H,W,3), with the same values, computed in parallel over slices on a multi-threaded CPU.

    The 3-D CPU kernel parallelises over the batch only, so a single pair runs on one core.
    Each output voxel depends only on its own grid point, so every slice of the grid along D is
    sampled as a batch entry of its own (the image broadcast without a copy): the arithmetic per
    voxel is unchanged and the results are bit-identical. Not used when ``image`` needs a
    gradient, which would be accumulated per slice (D times the image's memory).
    """
    slices = grid.shape[1]
    if (image.device.type != "cpu" or image.ndim != 5 or torch.get_num_threads() < 2 or slices < 2
            or (image.requires_grad and torch.is_grad_enabled())):
        return F.grid_sample(image, grid, mode=mode, padding_mode="zeros", align_corners=True)
    channels = image.shape[1]
    outputs = []
    for b in range(grid.shape[0]):
        source = image[b:b + 1].expand(slices, *image.shape[1:])
        out = F.grid_sample(source, grid[b].unsqueeze(1), mode=mode, padding_mode="zeros", align_corners=True)
        outputs.append(out.movedim(0, 2).reshape(1, channels, *grid.shape[1:4]))  # (D,C,1,H,W) → (1,C,D,H,W)
    return outputs[0] if len(outputs) == 1 else torch.cat(outputs)


def warp(image: torch.Tensor, disp: torch.Tensor, mode: str = "bilinear") -> torch.Tensor:
    """Warp ``image`` (B,C,D,H,W) by ``disp`` (B,3,D,H,W) in voxels: ``out(x) = image(x + disp(x))``.

    ``mode`` is "bilinear" (trilinear in 3-D) or "nearest". Outside the volume the image is zero.
    An image batch of 1 is broadcast over the displacement batch. Returns (B,C,D,H,W).
    """
    if mode not in _MODES:
        raise ValueError(f"mode must be one of {_MODES}, got {mode!r}")
    check_image_and_displacement(image, disp)
    if image.shape[0] != disp.shape[0]:
        image = image.expand(disp.shape[0], *image.shape[1:])
    grid = sampling_grid(disp.to(image.dtype))
    return grid_sample_parallel(image, grid, mode)


def integrate(velocity: torch.Tensor, steps: int = 7) -> torch.Tensor:
    """Integrate a stationary velocity field (B,3,D,H,W) in voxels by scaling and squaring.

    Returns the displacement of ``exp(velocity)`` after ``steps`` squarings, (B,3,D,H,W) in voxels.
    """
    check_displacement(velocity, "velocity")
    if steps < 0:
        raise ValueError(f"steps must be >= 0, got {steps}")
    disp = velocity / (2 ** steps)
    for _ in range(steps):
        disp = disp + warp(disp, disp)
    return disp


def compose(first: torch.Tensor, second: torch.Tensor) -> torch.Tensor:
    """Displacement of warping by ``first`` and then by ``second``.

    ``warp(warp(I, first), second) == warp(I, compose(first, second))`` up to interpolation:
    ``w(x) = second(x) + first(x + second(x))``. Both (B,3,D,H,W) in voxels.
    """
    check_displacement(first, "first")
    check_displacement(second, "second")
    if first.shape != second.shape:
        raise ValueError(f"cannot compose fields of shapes {tuple(first.shape)} and {tuple(second.shape)}")
    return second + warp(first, second)


def resize_displacement(disp: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
    """Resample ``disp`` (B,3,D,H,W) in voxels to spatial ``size``, rescaling the vectors too.

    With align_corners=True, voxel i of the old grid sits at i*(m-1)/(n-1) of the new one, so each
    channel is multiplied by (m-1)/(n-1) for its axis. Returns (B,3,*size) in new-grid voxels.
    """
    ndim = check_displacement(disp)
    size = tuple(int(s) for s in size)
    if len(size) != ndim:
        raise ValueError(f"size must have {ndim} entries for a {ndim}-D field, got {size}")
    mode = "trilinear" if ndim == 3 else "bilinear"
    resized = F.interpolate(disp, size=size, mode=mode, align_corners=True)
    factors = [(m - 1) / (n - 1) if n > 1 else 1.0 for m, n in zip(size, disp.shape[2:])]
    scale = torch.tensor(factors, device=disp.device, dtype=disp.dtype).view(1, ndim, *([1] * ndim))
    return resized * scale


def flip_field(disp: torch.Tensor, axes: list[int] | tuple[int, ...]) -> torch.Tensor:
    """The displacement (B,3,D,H,W) of the same warp seen through flips of spatial ``axes`` (0..2).

    If the images are flipped along axis a, the field is flipped along a and its component a
    changes sign.
    """
    if not axes:
        return disp
    out = disp.flip([a + 2 for a in axes])
    sign = torch.ones(disp.shape[1], device=disp.device, dtype=disp.dtype)
    sign[list(axes)] = -1
    return out * sign.view(1, -1, *([1] * (disp.ndim - 2)))
