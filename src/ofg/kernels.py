"""The OFG refinement step on CPU as five parallel numba loop nests (the CPU path of :mod:`ofg.fused`).

The same energy, gradient and Adam(amsgrad) update as :func:`ofg.fused.refine_step`, the specification
(float64 results agree to round-off, tests/test_kernels.py), one 3-D sample at a time: images (D,H,W)
and the field u (3,D,H,W) in voxels, channel i along axis i, float32 or float64. Every value is
computed in float64 and stored in the input dtype. Per step, each pass a ``prange`` over D:

(a) :func:`_sample`: J = moving(x + u) trilinear, zero outside (``grid_sample``, ``align_corners=True``),
    dJ/du from the same eight corners, the maps J, J², I·J, and the squared forward differences of u;
(b) :func:`_box_planes` of the three maps along W and H, per slice;
(c) :func:`_ncc_terms`: their sums along D, the NCC energy and the coefficient maps g_B, g_D, g_E
    (:class:`ofg.losses.FixedImageNCC`);
(d) :func:`_box_planes` of the coefficient maps;
(e) :func:`_update`: their sums along D, dE/dJ = S(g_B) + 2J·S(g_D) + I·S(g_E), the gradient
    dE/dJ·dJ/du + the diffusion gradient, and the Adam update into the second field buffer.

Window sums (zero-padded 'same', :func:`ofg.fused.box_sum`) are running sums in float64: their cost and
round-off do not grow with the window. Numba runs ``torch.get_num_threads()`` threads in its default
threading layer (tbb, else OpenMP, else workqueue; ``NUMBA_THREADING_LAYER`` overrides): OpenMP launches
a pass in microseconds, the workqueue in ~0.1 ms (2x a quiet k=10 refinement on 2 cores). The kernels
compile on first use and are cached on disk (``cache=True``).
"""

from __future__ import annotations

import threading
from typing import Callable

import numba
import numpy as np
import torch
from numba import njit, prange

from ofg.runtime import keeps_torch_threads

#: the dtypes the kernels take (arithmetic is float64 for both)
DTYPES = (torch.float32, torch.float64)
BETAS = (0.9, 0.999)
EPS = 1e-8
NCC_EPS = 1e-5
_JIT = {"parallel": True, "fastmath": False, "cache": True, "error_model": "numpy", "nogil": True}


@njit(**_JIT)
def _sample(padded, fixed, u, maps, d_warped):
    """(a): maps ← (J, J², I·J), d_warped ← dJ/du; returns the sums of squared forward differences of u
    along D, H, W. ``padded`` has two zero planes around each axis and the lower corner is clamped to
    [−2, n], so every corner outside the volume reads a zero."""
    D, H, W = fixed.shape
    flat = padded.ravel()
    sz, sy = (H + 4) * (W + 4), W + 4
    offsets = np.array([0, 1, sy, sy + 1, sz, sz + 1, sz + sy, sz + sy + 1])  # corner (dz,dy,dx) at 4dz+2dy+dx
    parts = np.zeros((D, 3))
    for z in prange(D):
        diffs, frac, corners, base = np.zeros((3, W)), np.empty((3, W)), np.empty((8, W)), np.empty(W, np.int64)
        for y in range(H):
            for x in range(W):  # the lower corner and the fractions, vectorised
                pz, py, px = z + np.float64(u[0, z, y, x]), y + np.float64(u[1, z, y, x]), x + np.float64(u[2, z, y, x])
                lz, ly, lx = np.floor(pz), np.floor(py), np.floor(px)
                frac[0, x], frac[1, x], frac[2, x] = pz - lz, py - ly, px - lx
                # max(−2, NaN) is −2 (Python's rule, which numba keeps): a NaN never becomes an index
                base[x] = ((np.int64(min(D + 0.0, max(-2.0, lz))) + 2) * sz
                           + (np.int64(min(H + 0.0, max(-2.0, ly))) + 2) * sy + np.int64(min(W + 0.0, max(-2.0, lx))) + 2)
            for x in range(W):  # the eight gathers, scalar
                for k in range(8):
                    corners[k, x] = flat[base[x] + offsets[k]]
            for x in range(W):  # trilinear value and derivative, vectorised
                fz, fy, fx = frac[0, x], frac[1, x], frac[2, x]
                c000, c001, c010, c011 = corners[0, x], corners[1, x], corners[2, x], corners[3, x]
                c100, c101, c110, c111 = corners[4, x], corners[5, x], corners[6, x], corners[7, x]
                c00, c01 = c000 + fx * (c001 - c000), c010 + fx * (c011 - c010)
                c10, c11 = c100 + fx * (c101 - c100), c110 + fx * (c111 - c110)
                c0, c1 = c00 + fy * (c01 - c00), c10 + fy * (c11 - c10)
                j = c0 + fz * (c1 - c0)
                dx0 = (c001 - c000) + fy * ((c011 - c010) - (c001 - c000))
                dx1 = (c101 - c100) + fy * ((c111 - c110) - (c101 - c100))
                maps[0, z, y, x], maps[1, z, y, x], maps[2, z, y, x] = j, j * j, fixed[z, y, x] * j
                d_warped[0, z, y, x] = c1 - c0
                d_warped[1, z, y, x] = (c01 - c00) + fz * ((c11 - c10) - (c01 - c00))
                d_warped[2, z, y, x] = dx0 + fz * (dx1 - dx0)
            zp, yp = min(z + 1, D - 1), min(y + 1, H - 1)  # clamped: the difference is 0 at the end
            for c in range(3):
                for x in range(W):
                    value = np.float64(u[c, z, y, x])
                    dz, dy = u[c, zp, y, x] - value, u[c, z, yp, x] - value
                    diffs[0, x], diffs[1, x] = diffs[0, x] + dz * dz, diffs[1, x] + dy * dy
                for x in range(W - 1):
                    dx = np.float64(u[c, z, y, x + 1]) - u[c, z, y, x]
                    diffs[2, x] += dx * dx
        parts[z] = diffs.sum(axis=1)
    return parts.sum(axis=0)


@njit(**_JIT)
def _box_planes(src, dst, half):
    """(b), (d): dst (3,D,H,W) ← zero-padded running sums of src over 2·half+1 voxels along W, then H."""
    _, D, H, W = src.shape
    for z in prange(D):
        rows, acc = np.empty((3, H, W)), np.empty(W)
        for y in range(H):  # the three channels' sums interleaved: three independent chains of adds
            s0 = s1 = s2 = 0.0
            for x in range(W + half):  # enters x, leaves x − 2·half − 1, is the sum at x − half
                a0 = a1 = a2 = 0.0
                if x < W:
                    a0, a1, a2 = src[0, z, y, x], src[1, z, y, x], src[2, z, y, x]
                if x > 2 * half:
                    k = x - 2 * half - 1
                    a0, a1, a2 = a0 - src[0, z, y, k], a1 - src[1, z, y, k], a2 - src[2, z, y, k]
                s0, s1, s2 = s0 + a0, s1 + a1, s2 + a2
                if x >= half:
                    rows[0, y, x - half], rows[1, y, x - half], rows[2, y, x - half] = s0, s1, s2
        for c in range(3):  # along H, vectorised over W
            acc[:] = 0.0
            for y in range(H + half):
                if y < H:
                    for x in range(W):
                        acc[x] += rows[c, y, x]
                if y > 2 * half:
                    for x in range(W):
                        acc[x] -= rows[c, y - 2 * half - 1, x]
                if y >= half:
                    for x in range(W):
                        dst[c, z, y - half, x] = acc[x]


@njit(inline="always")
def _slide_depth(src, acc, z, first, half):
    """acc (3,H,W) float64 ← the zero-padded sum of src over D slices z − half..z + half, from its value
    at z − 1 (z == first: from zero)."""
    _, D, H, W = src.shape
    if z == first:
        acc[:] = 0.0
    for k in range(max(z - half, 0) if z == first else z + half, min(z + half, D - 1) + 1):  # entering
        for c in range(3):
            for y in range(H):
                for x in range(W):
                    acc[c, y, x] += src[c, k, y, x]
    if z != first and z > half:  # leaving
        for c in range(3):
            for y in range(H):
                for x in range(W):
                    acc[c, y, x] -= src[c, z - half - 1, y, x]


@njit(**_JIT)
def _box_depth(src, dst, half, chunks):
    """dst (3,D,H,W) ← the zero-padded running sum of src along D (the fixed image's sums)."""
    _, D, H, W = src.shape
    for chunk in prange(chunks):
        acc = np.empty((3, H, W))
        first = chunk * D // chunks
        for z in range(first, (chunk + 1) * D // chunks):
            _slide_depth(src, acc, z, first, half)
            dst[:, z] = acc


@njit(**_JIT)
def _ncc_terms(planes, mean_i, var_i, coef, half, with_grad, chunks):
    """(c): −mean(cc) of the maps whose W,H sums are ``planes``, and with ``with_grad`` coef ← (g_B, g_D,
    g_E); mean_i = S(I)/n, var_i = max(S(I²) − S(I)²/n, 0). D is cut into ``chunks`` runs of slices."""
    _, D, H, W = planes.shape
    n = np.float64(2 * half + 1) ** 3
    scale = 1.0 / (D * H * W)
    parts = np.zeros(chunks)
    for chunk in prange(chunks):
        acc, total = np.empty((3, H, W)), np.zeros(W)
        first = chunk * D // chunks
        for z in range(first, (chunk + 1) * D // chunks):
            _slide_depth(planes, acc, z, first, half)
            for y in range(H):
                for x in range(W):
                    s_j, s_jj, s_ij = acc[0, y, x], acc[1, y, x], acc[2, y, x]
                    mi, vi = np.float64(mean_i[z, y, x]), np.float64(var_i[z, y, x])
                    cross = s_ij - mi * s_j
                    var_j = s_jj - s_j * s_j / n
                    ratio = cross / (vi * (var_j if var_j > 0.0 else 0.0) + NCC_EPS)
                    total[x] += cross * ratio
                    if with_grad:
                        g_d = ratio * ratio * vi * scale if var_j >= 0.0 else 0.0
                        g_e = ratio * (-2.0 * scale)
                        coef[0, z, y, x] = -(g_e * mi) - (2.0 / n) * g_d * s_j
                        coef[1, z, y, x], coef[2, z, y, x] = g_d, g_e
        parts[chunk] = total.sum()
    return -parts.sum() * scale


@njit(**_JIT)
def _update(planes, maps, fixed, d_warped, u, m, v, v_max, out, half, reg_coef, step_size, bias2_sqrt, adam,
            chunks):
    """(e): the gradient of the energy at u; with ``adam`` out ← u after one Adam(amsgrad) step (m, v,
    v_max updated in place), else out ← the gradient. ``reg_coef`` (3,): 2·reg_weight/(3·count) per axis."""
    _, D, H, W = u.shape
    b1, b2 = 1.0 - BETAS[0], BETAS[1]
    for chunk in prange(chunks):
        acc, d_e, after = np.empty((3, H, W)), np.empty(W), np.zeros(W + 1)  # after[x + 1] = u[x + 1] − u[x]
        first = chunk * D // chunks
        for z in range(first, (chunk + 1) * D // chunks):
            _slide_depth(planes, acc, z, first, half)
            zm, zp = max(z - 1, 0), min(z + 1, D - 1)
            for y in range(H):
                ym, yp = max(y - 1, 0), min(y + 1, H - 1)
                for x in range(W):
                    d_e[x] = acc[0, y, x] + 2.0 * maps[0, z, y, x] * acc[1, y, x] + fixed[z, y, x] * acc[2, y, x]
                for c in range(3):
                    for x in range(W - 1):
                        after[x + 1] = np.float64(u[c, z, y, x + 1]) - u[c, z, y, x]
                    for x in range(W):
                        value = np.float64(u[c, z, y, x])
                        reg = (reg_coef[0] * ((value - u[c, zm, y, x]) - (u[c, zp, y, x] - value))
                               + reg_coef[1] * ((value - u[c, z, ym, x]) - (u[c, z, yp, x] - value))
                               + reg_coef[2] * (after[x] - after[x + 1]))
                        g = d_e[x] * d_warped[c, z, y, x] + reg
                        if not adam:
                            out[c, z, y, x] = g
                            continue
                        mc = m[c, z, y, x] + b1 * (g - m[c, z, y, x])
                        vc = v[c, z, y, x] * b2 + (1.0 - b2) * g * g
                        vm = max(np.float64(v_max[c, z, y, x]), vc)
                        m[c, z, y, x], v[c, z, y, x], v_max[c, z, y, x] = mc, vc, vm
                        out[c, z, y, x] = value - step_size * mc / (np.sqrt(vm) / bias2_sqrt + EPS)


class Sample:
    """One sample's buffers for volumes of ``shape`` (D,H,W) and numpy ``dtype``: u and the next field,
    Adam's m, v, v_max, the maps of passes (a)–(d), all (3,D,H,W), the padded moving image and the fixed
    image's window statistics; kept between calls, since fresh memory costs page faults."""

    def __init__(self, shape: tuple[int, int, int], dtype: np.dtype) -> None:
        self.shape = tuple(shape)
        self.u, self.out, self.maps, self.planes, self.coef, self.d_warped, self.m, self.v, self.v_max = (
            np.empty((3, *shape), dtype) for _ in range(9))
        self.padded = np.zeros([n + 4 for n in shape], dtype)  # the border stays zero
        self.fixed, self.mean_i, self.var_i = (np.empty(shape, dtype) for _ in range(3))

    def load(self, moving: torch.Tensor, fixed: torch.Tensor, disp: torch.Tensor, reg_weight: float,
             window: int) -> "Sample":
        """Copy ``moving``, ``fixed`` (D,H,W) and ``disp`` (3,D,H,W), CPU tensors of this dtype; zero Adam."""
        self.half, self.chunks = window // 2, min(self.shape[0], 2 * numba.get_num_threads())
        self.padded[2:-2, 2:-2, 2:-2] = moving.detach().numpy()
        self.fixed[...], self.u[...] = fixed.detach().numpy(), disp.detach().numpy()
        for state in (self.m, self.v, self.v_max):
            state.fill(0)
        self.maps[0], self.maps[1], self.maps[2] = self.fixed, self.fixed * self.fixed, 0
        _box_planes(self.maps, self.planes, self.half)
        _box_depth(self.planes, self.coef, self.half, self.chunks)  # coef ← S(I), S(I²), 0
        np.divide(self.coef[0], float(window ** 3), out=self.mean_i)
        np.maximum(self.coef[1] - self.coef[0] * self.mean_i, 0, out=self.var_i)
        counts = [3 * self.fixed.size // n * (n - 1) for n in self.shape]  # forward differences per axis
        self.energy_scale = np.array([reg_weight / (3 * c) if c else np.nan for c in counts])
        return self

    def energy(self, with_grad: bool = False) -> float:
        """The energy of the current field (passes a–c); ``with_grad`` leaves the coefficient maps."""
        reg = _sample(self.padded, self.fixed, self.u, self.maps, self.d_warped)
        _box_planes(self.maps, self.planes, self.half)
        ncc = _ncc_terms(self.planes, self.mean_i, self.var_i, self.coef, self.half, with_grad, self.chunks)
        return ncc + float(reg @ self.energy_scale)

    def step(self, t: int, lr: float, adam: bool = True) -> float:
        """The energy before Adam step ``t`` (1-based) at ``lr``, which moves u; the field before it is
        then ``out`` (until the next step). Without ``adam``, ``out`` is the gradient and u is kept."""
        energy = self.energy(with_grad=True)
        _box_planes(self.coef, self.planes, self.half)
        _update(self.planes, self.maps, self.fixed, self.d_warped, self.u, self.m, self.v, self.v_max, self.out,
                self.half, 2.0 * self.energy_scale, lr / (1 - BETAS[0] ** t), (1 - BETAS[1] ** t) ** 0.5, adam,
                self.chunks)
        if adam:
            self.u, self.out = self.out, self.u
        return energy


_SAMPLES: dict[tuple, list[Sample]] = {}  # the idle workspaces of the latest (shape, dtype)
_SAMPLES_LOCK = threading.Lock()
KEEP_BYTES = 2**28  #: workspaces over this size are freed after the call


def _take_workspaces(shape: tuple[int, int, int], dtype: torch.dtype, batch: int) -> list[Sample]:
    """At least ``batch`` workspaces for volumes of ``shape`` (D,H,W), owned by the caller until
    :func:`_return_workspaces`: taken out of the cache, so a nested call (from a callback) or one from
    another thread finds none and makes its own instead of overwriting these."""
    with _SAMPLES_LOCK:
        work = _SAMPLES.pop((shape, dtype), [])
        _SAMPLES.clear()  # another size's workspaces: freed before these are allocated
    numpy_dtype = torch.empty((), dtype=dtype).numpy().dtype
    return work + [Sample(shape, numpy_dtype) for _ in range(batch - len(work))]


def _return_workspaces(shape: tuple[int, int, int], dtype: torch.dtype, work: list[Sample]) -> None:
    """Keep ``work`` as the cache's only entry, unless it is over :data:`KEEP_BYTES` (31 volumes a sample)."""
    with _SAMPLES_LOCK:
        _SAMPLES.clear()
        if 31 * work[0].fixed.nbytes * len(work) <= KEEP_BYTES:
            _SAMPLES[(shape, dtype)] = work


@keeps_torch_threads
def refine(moving: torch.Tensor, fixed: torch.Tensor, disp: torch.Tensor, steps: int, lr: float,
           reg_weight: float, window: int,
           callback: Callable[[int, torch.Tensor, float], None] | None) -> tuple[torch.Tensor, list[float]]:
    """:func:`ofg.fused.refine` for CPU tensors of one dtype (:data:`DTYPES`): ``moving``, ``fixed``
    (B,1,D,H,W), ``disp`` (B,3,D,H,W) in voxels → (φ, the steps + 1 batch-mean energies), calling
    ``callback(k, φ_k, E_k)`` for k = 0..steps as :func:`ofg.guidance.refine`. Numba gets torch's thread
    count; torch keeps it (see :func:`~ofg.runtime.keeps_torch_threads`). Reentrant: the workspaces a call
    uses are its own until it returns (:func:`_take_workspaces`); φ and the callback's fields are copies."""
    numba.set_num_threads(max(1, min(torch.get_num_threads(), numba.config.NUMBA_NUM_THREADS)))
    shape, batch = tuple(moving.shape[2:]), moving.shape[0]
    owned = _take_workspaces(shape, disp.dtype, batch)
    work = [sample.load(moving[b, 0], fixed[b, 0], disp[b], reg_weight, window)
            for b, sample in enumerate(owned[:batch])]
    energies: list[float] = []
    for step in range(steps):
        energies.append(float(np.mean([sample.step(step + 1, lr) for sample in work])))
        if callback is not None:
            callback(step, torch.stack([torch.from_numpy(s.out) for s in work]), energies[-1])
    energies.append(float(np.mean([sample.energy() for sample in work])))
    phi = torch.stack([torch.from_numpy(sample.u) for sample in work])
    _return_workspaces(shape, disp.dtype, owned)
    if callback is not None:
        callback(steps, phi, energies[-1])
    return phi, energies
