"""Synthetic subjects from one real anatomy: resampling, random diffeomorphisms, intensity changes.

Every function is deterministic given its ``numpy.random.Generator``. Conventions follow
:mod:`ofg.spatial`: a displacement is (3,D,H,W) in voxels, channel i along array axis i, and a
warped volume is ``V(x + u(x))``. Affines are 4×4 voxel → world (mm) matrices, as in NIfTI.
"""

from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass
from typing import Iterator, Sequence

import numpy as np
import scipy.fft
from scipy import ndimage


# ----------------------------------------------------------------------------------------------
# Grids and resampling
# ----------------------------------------------------------------------------------------------

def voxel_sizes(affine: np.ndarray) -> np.ndarray:
    """Voxel size (3,) in mm: the lengths of the affine's first three columns."""
    return np.sqrt((np.asarray(affine, dtype=np.float64)[:3, :3] ** 2).sum(axis=0))


def block_average(volume: np.ndarray, affine: np.ndarray, resolution: float) -> tuple[np.ndarray, np.ndarray]:
    """Average non-overlapping blocks of ``volume`` down to at most ``resolution`` mm per voxel.

    The block size along each axis is floor(resolution / voxel size) (at least 1); the trailing
    remainder of each axis is dropped. This is the anti-aliasing step before sampling a fine image on
    a coarse grid. Returns (float32 volume, its affine: block centres).
    """
    factors = [max(1, int(math.floor(resolution / size + 1e-6))) for size in voxel_sizes(affine)]
    if factors == [1, 1, 1]:
        return np.asarray(volume, dtype=np.float32), np.asarray(affine, dtype=np.float64)
    averaged = _block_mean(np.asarray(volume), factors)
    step = np.eye(4)
    step[:3, :3] = np.diag(factors)
    step[:3, 3] = [(k - 1) / 2 for k in factors]
    return averaged, np.asarray(affine, dtype=np.float64) @ step


def _block_mean(volume: np.ndarray, factors: Sequence[int]) -> np.ndarray:
    """Means of (k0,k1,k2) blocks, float32; works on the transposed view of Fortran-ordered arrays
    (as NIfTI data come) so that the block reshape never copies the volume."""
    if not volume.flags.c_contiguous and volume.flags.f_contiguous:
        return _block_mean(volume.T, factors[::-1]).T
    n = [s // k for s, k in zip(volume.shape, factors)]
    cropped = volume[: n[0] * factors[0], : n[1] * factors[1], : n[2] * factors[2]]
    blocks = cropped.reshape(n[0], factors[0], n[1], factors[1], n[2], factors[2])
    return blocks.mean(axis=(1, 3, 5), dtype=np.float64).astype(np.float32)


def grid_affine(shape: Sequence[int], resolution: float, center: Sequence[float]) -> np.ndarray:
    """RAS affine of an isotropic grid of ``shape`` voxels of ``resolution`` mm centred on ``center`` (mm)."""
    affine = np.diag([resolution, resolution, resolution, 1.0])
    affine[:3, 3] = np.asarray(center, dtype=np.float64) - resolution * (np.asarray(shape) - 1) / 2
    return affine


def translation(voxels: float) -> np.ndarray:
    """4×4 matrix that shifts voxel indices by ``voxels`` along every axis (for padded grids)."""
    shift = np.eye(4)
    shift[:3, 3] = voxels
    return shift


def bounding_box_center(mask: np.ndarray, affine: np.ndarray) -> np.ndarray:
    """World (mm) centre of the bounding box of the non-zero voxels of ``mask``."""
    mask = np.asarray(mask, dtype=bool)
    if not mask.any():
        raise ValueError("mask is empty: cannot centre a grid on it")
    middle = [1.0] * 4
    for axis in range(3):
        hits = np.flatnonzero(mask.any(axis=tuple(a for a in range(3) if a != axis)))
        middle[axis] = (hits[0] + hits[-1]) / 2
    return (np.asarray(affine, dtype=np.float64) @ middle)[:3]


def clamp_center(center: np.ndarray, shape: Sequence[int], resolution: float, src_shape: Sequence[int],
                 src_affine: np.ndarray) -> np.ndarray:
    """Shift ``center`` so that a grid of ``shape``×``resolution`` stays inside the source volume.

    Along an axis where the grid is longer than the source, the grid is centred on the source.
    """
    corners = np.array([[i, j, k, 1.0] for i in (0, src_shape[0] - 1) for j in (0, src_shape[1] - 1)
                        for k in (0, src_shape[2] - 1)]) @ np.asarray(src_affine).T
    lo, hi = corners[:, :3].min(axis=0), corners[:, :3].max(axis=0)
    half = resolution * (np.asarray(shape) - 1) / 2
    inside = 2 * half <= hi - lo
    return np.where(inside, np.clip(center, lo + half, hi - half), (lo + hi) / 2)


def resample(volume: np.ndarray, src_affine: np.ndarray, dst_affine: np.ndarray, shape: Sequence[int],
             disp: np.ndarray | None = None, order: int = 1, cval: float = 0.0) -> np.ndarray:
    """Sample ``volume`` (on ``src_affine``) at the world points of grid voxels ``x + disp(x)``.

    ``disp`` (3,*shape) in voxels of the destination grid, or None for the identity. ``order`` 1 is
    trilinear (images), 0 nearest (labels; keeps the input dtype). Outside the source the value is
    ``cval`` (interpolated towards it across the border, as grid_sample's zero padding). Returns
    ``shape``.
    """
    points = np.indices(tuple(shape), dtype=np.float64)
    if disp is not None:
        points += disp
    to_src = np.linalg.solve(np.asarray(src_affine, dtype=np.float64), np.asarray(dst_affine, dtype=np.float64))
    coords = np.einsum("ij,j...->i...", to_src[:3, :3], points) + to_src[:3, 3].reshape(3, 1, 1, 1)
    out = volume.dtype if order == 0 else np.float32
    return ndimage.map_coordinates(volume, coords, order=order, mode="grid-constant", cval=cval,
                                   output=out, prefilter=False)


def relabel(labels: np.ndarray, table: dict[int, int]) -> np.ndarray:
    """Map label IDs through ``table`` (old → new); IDs not in it become 0. Returns int16."""
    labels = np.asarray(labels)
    if labels.size and labels.min() < 0:
        raise ValueError("relabel expects non-negative label IDs")
    lut = np.zeros(max(int(labels.max(initial=0)), *table) + 1, dtype=np.int16)
    for old, new in table.items():
        lut[old] = new
    return lut[labels]


def to_channels_last(disp: np.ndarray) -> np.ndarray:
    """(3,D,H,W) → (D,H,W,3) float32, the layout the displacement files are stored in."""
    return np.ascontiguousarray(np.moveaxis(np.asarray(disp, dtype=np.float32), 0, -1))


def to_channels_first(disp: np.ndarray) -> np.ndarray:
    """(D,H,W,3) → (3,D,H,W) float32."""
    if disp.ndim != 4 or disp.shape[-1] != 3:
        raise ValueError(f"expected a (D,H,W,3) displacement, got shape {disp.shape}")
    return np.ascontiguousarray(np.moveaxis(np.asarray(disp, dtype=np.float32), -1, 0))


# ----------------------------------------------------------------------------------------------
# Random deformations
# ----------------------------------------------------------------------------------------------

def smooth_noise(rng: np.random.Generator, shape: Sequence[int], sigma: float) -> np.ndarray:
    """White gaussian noise of ``shape`` smoothed by a Gaussian of ``sigma`` voxels (periodic, via FFT).

    The FFT makes the cost independent of ``sigma``. Returns float64.
    """
    noise = rng.standard_normal(tuple(shape))
    spectrum = scipy.fft.rfftn(noise)
    spectrum = ndimage.fourier_gaussian(spectrum, sigma, n=noise.shape[-1])
    return scipy.fft.irfftn(spectrum, s=noise.shape)


def random_velocity(rng: np.random.Generator, shape: Sequence[int], sigma: float, magnitude: float) -> np.ndarray:
    """Smooth random velocity (3,*shape) in voxels whose largest vector has length ``magnitude``."""
    velocity = np.stack([smooth_noise(rng, shape, sigma) for _ in range(3)])
    peak = np.sqrt((velocity ** 2).sum(axis=0)).max()
    return velocity * (magnitude / peak) if peak > 0 else velocity


def random_affine(rng: np.random.Generator, translation: float, rotation_deg: float = 3.0, scaling: float = 0.03,
                  shear: float = 0.02) -> tuple[np.ndarray, np.ndarray]:
    """A small random affine in voxel space: (matrix (3,3), translation (3,) voxels).

    Rotations about each axis are uniform in ±``rotation_deg``, log-scales in ±``scaling``, shears in
    ±``shear`` and translations in ±``translation`` voxels. The determinant is always positive.
    """
    angles = np.deg2rad(rng.uniform(-rotation_deg, rotation_deg, 3))
    rotation = np.eye(3)
    for axis, angle in enumerate(angles):
        a, b = [i for i in range(3) if i != axis]
        step = np.eye(3)
        step[a, a] = step[b, b] = math.cos(angle)
        step[a, b], step[b, a] = -math.sin(angle), math.sin(angle)
        rotation = step @ rotation
    scale = np.diag(np.exp(rng.uniform(-scaling, scaling, 3)))
    shearing = np.eye(3)
    shearing[np.triu_indices(3, 1)] = rng.uniform(-shear, shear, 3)
    offset = rng.uniform(-translation, translation, 3)
    return rotation @ scale @ shearing, offset


def exp_velocity(velocity: np.ndarray, steps: int = 7) -> np.ndarray:
    """Displacement of exp(``velocity``) (3,*shape) by scaling and squaring (:func:`ofg.spatial.integrate`), float32."""
    import torch

    from ofg.spatial import integrate

    field = torch.from_numpy(np.ascontiguousarray(velocity, dtype=np.float32)).unsqueeze(0)
    with torch.no_grad(), _single_thread_if_small(field.numel()):
        return integrate(field, steps=steps)[0].numpy()


@contextlib.contextmanager
def _single_thread_if_small(numel: int, limit: int = 1 << 22) -> Iterator[None]:
    """Run torch single-threaded for small fields: threads gain nothing there, and on a busy
    machine their contention made integration several times slower. Results do not depend on it."""
    import torch

    if numel > limit:
        yield
        return
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def _sample_field(field: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Trilinear samples of ``field`` (3,*grid) at voxel ``points`` (3,*shape), edge-extended. float64."""
    return np.stack([ndimage.map_coordinates(c, points, order=1, mode="nearest", output=np.float64)
                     for c in field])


@dataclass(frozen=True)
class SubjectTransform:
    """A subject's true transform on the output grid, as displacements in voxels.

    ``forward`` (3,D,H,W) float32 is u with subject(x) = source(x + u(x)). ``inverse`` (if computed) is
    w on the grid padded by ``margin`` voxels on every side, (3,D+2m,H+2m,W+2m): voxel j of it is grid
    point y = j − m, and y + w(y) = φ⁻¹(y). The margin covers every x + u(x), so composing with the
    inverse never reads beyond the stored field.
    """

    forward: np.ndarray
    inverse: np.ndarray | None
    margin: int = 0


def random_transform(rng: np.random.Generator, shape: Sequence[int], sigma: float, magnitude: float,
                     inverse: bool = False, steps: int = 7) -> SubjectTransform:
    """A random smooth diffeomorphism φ = exp(v) ∘ A on a grid of ``shape``, as displacements.

    A is a small random affine about the grid centre (translation up to magnitude/2 voxels); v is
    smooth noise (Gaussian ``sigma`` voxels) whose largest vector is ``magnitude`` voxels, so
    φ(x) = A(x) + d(A(x)) with d = exp(v) by scaling and squaring. ``magnitude`` 0 gives the identity.
    v is integrated on a grid padded beyond every point read afterwards (by more than the largest
    displacement), so the integrator's zero padding never reaches the result. With ``inverse``,
    φ⁻¹(y) = A⁻¹(y + d⁻(y)), d⁻ = exp(−v) by the same integrator and A⁻¹ exact, on the padded grid
    of :class:`SubjectTransform`.
    """
    shape = tuple(int(s) for s in shape)
    if magnitude == 0:
        zero = np.zeros((3, *shape), dtype=np.float32)
        return SubjectTransform(zero, np.zeros((3, *[s + 2 for s in shape]), np.float32) if inverse else None,
                                margin=1 if inverse else 0)
    matrix, offset = random_affine(rng, translation=magnitude / 2)
    center = (np.asarray(shape, dtype=np.float64) - 1) / 2
    # |A(x) − x| over the grid is at most ‖M − I‖·(corner distance) + |t|; |u| adds |d| <= magnitude.
    affine_reach = np.linalg.norm(matrix - np.eye(3), 2) * np.linalg.norm(center) + np.linalg.norm(offset)
    margin = int(math.ceil(affine_reach + magnitude)) + 1 if inverse else 0
    pad = max(int(math.ceil(affine_reach)), margin) + int(math.ceil(2 * magnitude)) + 2
    velocity = random_velocity(rng, tuple(s + 2 * pad for s in shape), sigma, magnitude)

    grid = np.indices(shape, dtype=np.float64)
    c = center.reshape(3, 1, 1, 1)
    affine_points = np.einsum("ij,j...->i...", matrix, grid - c) + c + offset.reshape(3, 1, 1, 1)
    ahead = exp_velocity(velocity, steps)
    forward = affine_points + _sample_field(ahead, affine_points + pad) - grid
    if not inverse:
        return SubjectTransform(forward.astype(np.float32), None)

    back = exp_velocity(-velocity, steps)
    inner = (slice(None),) + tuple(slice(pad - margin, pad + s + margin) for s in shape)
    ys = np.indices([s + 2 * margin for s in shape], dtype=np.float64) - margin
    moved = ys + back[inner]
    undone = np.einsum("ij,j...->i...", np.linalg.inv(matrix), moved - c - offset.reshape(3, 1, 1, 1)) + c
    return SubjectTransform(forward.astype(np.float32), (undone - ys).astype(np.float32), margin)


def compose_with_inverse(inverse: np.ndarray, margin: int, forward: np.ndarray) -> np.ndarray:
    """Pair displacement ``w(x + u(x)) + u(x)`` from one subject's padded inverse and another's forward.

    ``inverse`` (3,*(shape+2·margin)) as in :class:`SubjectTransform` (subject a), ``forward``
    (3,*shape) (subject b). The result v satisfies a(x + v(x)) ≈ b(x): the true displacement that
    registers moving a onto fixed b, (3,*shape) float32 voxels.
    """
    points = np.indices(forward.shape[1:], dtype=np.float64) + forward
    return (forward + _sample_field(inverse, points + margin)).astype(np.float32)


# ----------------------------------------------------------------------------------------------
# Intensity changes
# ----------------------------------------------------------------------------------------------

def bias_field(rng: np.random.Generator, shape: Sequence[int], resolution: float, strength: float = 0.1,
               sigma_mm: float = 60.0) -> np.ndarray:
    """A smooth multiplicative field exp(b), b zero-mean smooth noise of standard deviation ``strength``.

    The smoothing is ``sigma_mm``, but at most a quarter of the grid: a periodic Gaussian wider than
    that leaves only the constant term, which the zero mean removes. float32.
    """
    b = smooth_noise(rng, shape, min(sigma_mm / resolution, min(shape) / 4))
    b -= b.mean()
    b *= strength / max(float(b.std()), 1e-12)
    return np.exp(b).astype(np.float32)


def augment_mr(image: np.ndarray, rng: np.random.Generator, resolution: float, gamma_range: float = 0.15,
               bias_strength: float = 0.1, noise: float = 0.02) -> np.ndarray:
    """Gamma, then a bias field, then Rician noise inside the head, clipped to [0, 1]. float32.

    ``image`` is in [0, 1]; γ = exp(U(±``gamma_range``)); ``noise`` is the Rician σ in image units.
    Voxels that are 0 (outside the skull-stripped brain) stay 0, as in skull-stripped data.
    """
    inside = image > 0
    gamma = math.exp(rng.uniform(-gamma_range, gamma_range))
    out = np.clip(image, 0, None) ** gamma * bias_field(rng, image.shape, resolution, bias_strength)
    real = out + noise * rng.standard_normal(image.shape)
    imag = noise * rng.standard_normal(image.shape)
    out = np.where(inside, np.sqrt(real ** 2 + imag ** 2), 0.0)
    return np.clip(out, 0.0, 1.0).astype(np.float32)


def add_gaussian_noise(image: np.ndarray, rng: np.random.Generator, sigma: float) -> np.ndarray:
    """``image`` plus white gaussian noise of standard deviation ``sigma`` (image units). float32."""
    return (image + sigma * rng.standard_normal(image.shape)).astype(np.float32)
