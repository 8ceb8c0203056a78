"""Similarity and regularisation losses with the reference (VoxelMorph) semantics."""

from __future__ import annotations

import torch

from ofg.names import IMAGE_TERMS, REGULARIZERS  # config loss.image, loss.regularizer
from ofg.validation import check_displacement, check_same_shape

_PENALTIES = ("l2", "l1")


def _box_sum(volume: torch.Tensor, window: int,
             scratch: tuple[torch.Tensor, torch.Tensor] | None = None) -> torch.Tensor:
    """Zero-padded 'same' box sum along every spatial axis by shifted in-place additions.

    Per axis this adds the ``window - 1`` neighbours of each voxel that lie inside the volume,
    which is exactly a zero-padded convolution with a ones kernel, without a padded copy.
    Shifted adds beat both a 1-D conv and avg_pool on CPU and keep the summation exact
    (see ``python -m ofg.bench``). ``scratch``, two contiguous tensors shaped like ``volume``
    and distinct from it, are used in turn as the per-axis accumulators, so repeated calls
    allocate nothing; the result is then one of them (valid until they are reused).
    """
    half = window // 2
    out = volume
    for index, axis in enumerate(range(2, volume.ndim)):
        n = out.shape[axis]
        if scratch is None:
            acc = out.clone(memory_format=torch.contiguous_format)
        else:
            acc = scratch[index % 2].copy_(out)
        for k in range(1, min(half, n - 1) + 1):
            acc.narrow(axis, 0, n - k).add_(out.narrow(axis, k, n - k))
            acc.narrow(axis, k, n - k).add_(out.narrow(axis, 0, n - k))
        out = acc
    return out


class _WindowSum(torch.autograd.Function):
    """Box sum with a hand-written backward: a zero-padded box sum is self-adjoint."""

    @staticmethod
    def forward(ctx, volume: torch.Tensor, window: int) -> torch.Tensor:  # type: ignore[override]
        ctx.window = window
        return _box_sum(volume, window)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):  # type: ignore[override]
        return _box_sum(grad, ctx.window), None


def _check_window(window: int) -> None:
    if not isinstance(window, int) or window < 1 or window % 2 == 0:
        raise ValueError(f"window must be a positive odd integer, got {window!r}")


def window_sum(volume: torch.Tensor, window: int) -> torch.Tensor:
    """Zero-padded 'same' box sum over a window^ndim neighbourhood.

    ``volume`` is (N,C,*spatial) with 2 or 3 spatial axes; each channel is summed separately.
    Equal to a convolution with a ones kernel of size window^ndim and padding window//2,
    at about ndim*window additions per voxel instead of window^ndim multiply-adds.
    """
    _check_window(window)
    if volume.ndim not in (4, 5):
        raise ValueError(f"volume: expected (N,C,H,W) or (N,C,D,H,W), got shape {tuple(volume.shape)}")
    return _WindowSum.apply(volume, window)


def fixed_window_sums(fixed: torch.Tensor, window: int = 9) -> torch.Tensor:
    """Window sums S(I), S(I^2) of a fixed image (B,C,*spatial), stacked as (B*C,2,*spatial).

    They do not depend on the warped image, so an optimiser that warps only the moving image
    can compute them once and pass them to :func:`local_ncc` via ``fixed_sums``.
    """
    _check_window(window)
    batch, channels = fixed.shape[:2]
    i = fixed.reshape(batch * channels, 1, *fixed.shape[2:])
    with torch.no_grad():
        return window_sum(torch.cat([i, i * i], dim=1), window)


def local_ncc(fixed: torch.Tensor, warped: torch.Tensor, window: int = 9, eps: float = 1e-5,
              fixed_sums: torch.Tensor | None = None) -> torch.Tensor:
    """Voxelwise squared local correlation cc (B,C,*spatial), the VoxelMorph formula.

    With window sums S over n = window^ndim voxels (zero padding),
    ``cross = S(IJ) - S(I)S(J)/n`` and ``var_I = S(I^2) - S(I)^2/n``, algebraically identical to
    the reference's mean-based expressions; ``cc = cross^2 / (var_I var_J + eps)``.
    Variances are clamped at 0 so that round-off on flat regions can never make cc negative or
    blow it up. ``fixed_sums`` optionally gives precomputed :func:`fixed_window_sums` of
    ``fixed`` (no gradient flows into ``fixed`` then).
    """
    check_same_shape(fixed, warped, "fixed", "warped")
    _check_window(window)
    batch, channels = fixed.shape[:2]
    spatial = fixed.shape[2:]
    n = float(window ** len(spatial))
    i = fixed.reshape(batch * channels, 1, *spatial)
    j = warped.reshape(batch * channels, 1, *spatial)
    if fixed_sums is None:
        sums = window_sum(torch.cat([i, j, i * i, j * j, i * j], dim=1), window)
        s_i, s_j, s_ii, s_jj, s_ij = sums.unbind(1)
    else:
        expected = (batch * channels, 2, *spatial)
        if tuple(fixed_sums.shape) != expected:
            raise ValueError(f"fixed_sums: expected shape {expected}, got {tuple(fixed_sums.shape)}")
        s_i, s_ii = fixed_sums.unbind(1)
        s_j, s_jj, s_ij = window_sum(torch.cat([j, j * j, i * j], dim=1), window).unbind(1)
    cross = s_ij - s_i * s_j / n
    var_i = (s_ii - s_i * s_i / n).clamp_min(0)
    var_j = (s_jj - s_j * s_j / n).clamp_min(0)
    cc = cross * cross / (var_i * var_j + eps)
    return cc.reshape(batch, channels, *spatial)


def ncc_loss(fixed: torch.Tensor, warped: torch.Tensor, window: int = 9) -> torch.Tensor:
    """Negative mean local squared NCC, a scalar in [-1, 0]; -1 for identical textured images.

    ``fixed`` and ``warped`` are (B,C,D,H,W) or (B,C,H,W) with equal shapes; the loss is symmetric
    in the two. Matches the reference formula to round-off.
    """
    return -local_ncc(fixed, warped, window).mean()


def diffusion_terms(disp: torch.Tensor, penalty: str = "l2") -> torch.Tensor:
    """Per-sample diffusion penalty (B,) of ``disp`` (B,ndim,*spatial) in voxels.

    Sample b gets the mean over axes of mean(d^2) ("l2") or mean(|d|) ("l1") of its forward
    differences d; :func:`diffusion_loss` is the batch mean of these.
    """
    if penalty not in _PENALTIES:
        raise ValueError(f"penalty must be one of {_PENALTIES}, got {penalty!r}")
    ndim = check_displacement(disp)
    terms = []
    for axis in range(2, 2 + ndim):
        diff = torch.diff(disp, dim=axis)
        per_voxel = diff * diff if penalty == "l2" else diff.abs()
        terms.append(per_voxel.flatten(1).mean(dim=1))
    return torch.stack(terms, dim=1).mean(dim=1)


def diffusion_loss(disp: torch.Tensor, penalty: str = "l2") -> torch.Tensor:
    """Mean forward-difference penalty of ``disp`` (B,3,D,H,W) in voxels, averaged over axes.

    For each spatial axis, d = disp[..., 1:, ...] - disp[..., :-1, ...]; the axis term is
    mean(d^2) ("l2") or mean(|d|) ("l1") over batch, channels and voxels, and the loss is the
    mean of the axis terms.
    """
    # every sample has the same number of voxels, so the batch mean of the per-sample terms is
    # the mean over batch, channels and voxels
    return diffusion_terms(disp, penalty).mean()


def lku_smoothness_loss(disp: torch.Tensor) -> torch.Tensor:
    """LKU-Net's own smoothness loss (the reference's ``smoothloss``) of ``disp`` (B,3,D,H,W) in voxels.

    The reference applies it to LKU-Net's field f in normalised grid units (align_corners=True:
    f_i = 2·u_i/(n_i - 1) for the voxel displacement u along axis i of size n_i): along each axis a,
    the forward differences of all three channels are scaled by n_a/2, squared and averaged; the
    loss is the mean of the three axis terms. In voxels the axis-a difference of channel i is thus
    scaled by n_a/(n_i - 1), which is close to 1 for a cube, where the loss approaches Grad_l2.
    """
    ndim = check_displacement(disp)
    if ndim != 3:
        raise ValueError(f"disp: LKU-Net's smoothness loss is 3-D, got a {ndim}-D field {tuple(disp.shape)}")
    spatial = disp.shape[2:]
    to_normalised = torch.tensor([2.0 / max(n - 1, 1) for n in spatial], dtype=disp.dtype, device=disp.device)
    field = disp * to_normalised.view(1, 3, 1, 1, 1)
    terms = [(torch.diff(field, dim=2 + a) * (spatial[a] / 2)).square().mean() for a in range(3)]
    return sum(terms) / 3.0


class FixedImageNCC:
    """Local squared NCC against one fixed image, with its gradient in closed form.

    For optimisers that warp only the moving image (OFG refinement): the window sums of the
    fixed image I are computed once, and every evaluation needs the window sums of J, J², IJ
    (one box sum of a reused 3-channel buffer) plus, for the gradient, the window sums of three
    coefficient maps. With A=S(I), B=S(J), D=S(J²), E=S(IJ), cross = E − AB/n,
    v_I = max(S(I²) − A²/n, 0), v_J = max(D − B²/n, 0), den = v_I v_J + eps and the per-sample
    energy −mean_x(cross²/den), the partial derivatives per window centre x are

        g_E = −(2/N)·cross/den,   g_D = (1/N)·(cross/den)²·v_I  (0 where D − B²/n < 0),
        g_B = −g_E·A/n − 2·g_D·B/n,

    and, the zero-padded box sum being self-adjoint, dE/dJ = S(g_B) + 2J·S(g_D) + I·S(g_E).
    This is exactly the autograd gradient of :func:`local_ncc` (the clamp passes no gradient
    where the raw variance is negative), at a fraction of autograd's element-wise passes.

    ``fixed`` is (B,1,*spatial) with 2 or 3 spatial axes; ``warped`` must match it.
    """

    def __init__(self, fixed: torch.Tensor, window: int = 9, eps: float = 1e-5) -> None:
        _check_window(window)
        if fixed.ndim not in (4, 5) or fixed.shape[1] != 1:
            raise ValueError(f"fixed: expected (B,1,H,W) or (B,1,D,H,W), got shape {tuple(fixed.shape)}")
        self.fixed = fixed.detach()
        self.window = window
        self.eps = eps
        self._n = float(window ** (fixed.ndim - 2))
        self._voxels = float(fixed[0].numel())
        with torch.no_grad():
            sums = fixed_window_sums(self.fixed, window)
            self._mean_i = sums[:, :1] / self._n  # A/n, (B,1,*spatial)
            self._var_i = torch.addcmul(sums[:, 1:], sums[:, :1], self._mean_i, value=-1).clamp_min_(0)
        # the three maps to be box-summed are written into one buffer: no cat, no fresh allocation
        self._maps = torch.empty((fixed.shape[0], 3, *fixed.shape[2:]), dtype=fixed.dtype, device=fixed.device)
        self._scratch = (torch.empty_like(self._maps), torch.empty_like(self._maps))

    def _check(self, warped: torch.Tensor) -> None:
        if warped.shape != self.fixed.shape:
            raise ValueError(f"warped: expected shape {tuple(self.fixed.shape)}, got {tuple(warped.shape)}")

    def _forward(self, warped: torch.Tensor) -> tuple[torch.Tensor, ...]:
        maps, i = self._maps, self.fixed
        maps[:, :1].copy_(warped)
        torch.mul(warped, warped, out=maps[:, 1:2])
        torch.mul(i, warped, out=maps[:, 2:])
        sums = _box_sum(maps, self.window, self._scratch)
        s_j, s_jj, s_ij = sums[:, :1], sums[:, 1:2], sums[:, 2:]
        cross = torch.addcmul(s_ij, self._mean_i, s_j, value=-1)
        var_j_raw = torch.addcmul(s_jj, s_j, s_j, value=-1.0 / self._n)
        den = torch.mul(self._var_i, var_j_raw.clamp_min(0)).add_(self.eps)
        ratio = cross / den
        energy = -(cross * ratio).flatten(1).sum(dim=1) / self._voxels
        return energy, s_j, var_j_raw, ratio

    def energy(self, warped: torch.Tensor) -> torch.Tensor:
        """Per-sample energy −mean(cc), shape (B,); no gradient is tracked."""
        self._check(warped)
        with torch.no_grad():
            return self._forward(warped.detach())[0]

    def energy_and_grad(self, warped: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-sample energy (B,) and the gradient of its sum w.r.t. ``warped`` (B,1,*spatial)."""
        self._check(warped)
        with torch.no_grad():
            warped = warped.detach()
            energy, s_j, var_j_raw, ratio = self._forward(warped)
            maps, scale = self._maps, 1.0 / self._voxels
            g_d = maps[:, 1:2]
            torch.mul(ratio, ratio, out=g_d).mul_(self._var_i).mul_(scale).masked_fill_(var_j_raw < 0, 0)
            g_e = torch.mul(ratio, -2.0 * scale, out=maps[:, 2:])
            # g_B = −g_E·A/n − 2·g_D·B/n
            torch.mul(g_e, self._mean_i, out=maps[:, :1]).neg_().addcmul_(g_d, s_j, value=-2.0 / self._n)
            sums = _box_sum(maps, self.window, self._scratch)
            grad = torch.addcmul(sums[:, :1], warped, sums[:, 1:2], value=2.0).addcmul_(self.fixed, sums[:, 2:])
        return energy, grad


class FixedImageMSE:
    """Mean squared intensity difference against one fixed image, with its gradient in closed form.

    The MSE image term of the OFG energy (``loss.image: mse``), with :class:`FixedImageNCC`'s
    interface: per sample, energy = mean over its voxels of (J − I)² (``F.mse_loss`` of one sample)
    and dE/dJ = 2(J − I)/N, N the voxels of one image. ``fixed`` is (B,1,*spatial), 2 or 3 spatial
    axes; ``warped`` must match it.
    """

    def __init__(self, fixed: torch.Tensor) -> None:
        if fixed.ndim not in (4, 5) or fixed.shape[1] != 1:
            raise ValueError(f"fixed: expected (B,1,H,W) or (B,1,D,H,W), got shape {tuple(fixed.shape)}")
        self.fixed = fixed.detach()
        self._voxels = float(fixed[0].numel())

    def _difference(self, warped: torch.Tensor) -> torch.Tensor:
        if warped.shape != self.fixed.shape:
            raise ValueError(f"warped: expected shape {tuple(self.fixed.shape)}, got {tuple(warped.shape)}")
        return warped.detach() - self.fixed

    def energy(self, warped: torch.Tensor) -> torch.Tensor:
        """Per-sample energy mean((J − I)²), shape (B,); no gradient is tracked."""
        with torch.no_grad():
            diff = self._difference(warped)
            return diff.square().flatten(1).sum(dim=1) / self._voxels

    def energy_and_grad(self, warped: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-sample energy (B,) and the gradient of its sum w.r.t. ``warped`` (B,1,*spatial)."""
        with torch.no_grad():
            diff = self._difference(warped)
            energy = diff.square().flatten(1).sum(dim=1) / self._voxels
            return energy, diff.mul_(2.0 / self._voxels)
