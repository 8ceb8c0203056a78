"""Swin-Transformer building blocks of TransMorph, on channels-last (B,D,H,W,C) feature maps.

Windows are one size per axis (wd, wh, ww), partitioned in raster order; maps whose sizes the
window does not divide are zero-padded at the far end inside :class:`SwinBlock` (the reference
rule). Shifted windows use a cyclic roll by half the window and an additive mask (MASK_VALUE)
between tokens from different regions of the unrolled map. Initialisation as in the reference:
PyTorch defaults, relative position tables truncated N(0, 0.02).
"""

from __future__ import annotations

import functools
from typing import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from ofg.models.common import DropPath
from ofg.models.onednn import Conv3d

PATCH = 4  # the decoder's two conv-skip levels (1/2 and full resolution) assume a stride-4 embedding
MASK_VALUE = -100.0  # additive logit for token pairs from different shifted regions (reference value)
Window = tuple[int, int, int]


def padded_size(size: Sequence[int], multiples: Sequence[int]) -> tuple[int, ...]:
    """Each of ``size`` rounded up to a multiple of the matching entry of ``multiples``."""
    return tuple(-(-int(s) // int(m)) * int(m) for s, m in zip(size, multiples))


def pad_channels_last(x: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
    """Zero-pad (B,D,H,W,C) at the far end of D, H, W to ``size`` (no copy if already that size)."""
    extra = [t - n for t, n in zip(size, x.shape[1:4])]
    if not any(extra):
        return x
    return F.pad(x, (0, 0, 0, extra[2], 0, extra[1], 0, extra[0]))


def window_partition(x: torch.Tensor, window: Window) -> torch.Tensor:
    """(B,D,H,W,C) -> (B*nW, wd*wh*ww, C), windows in raster order; sizes must divide D, H, W."""
    b, d, h, w, c = x.shape
    wd, wh, ww = window
    x = x.view(b, d // wd, wd, h // wh, wh, w // ww, ww, c).permute(0, 1, 3, 5, 2, 4, 6, 7)
    return x.reshape(-1, wd * wh * ww, c)


def window_reverse(windows: torch.Tensor, window: Window, shape: Sequence[int]) -> torch.Tensor:
    """Inverse of :func:`window_partition`: (B*nW, N, C) -> (B,D,H,W,C) for ``shape`` (B,D,H,W)."""
    b, d, h, w = shape
    wd, wh, ww = window
    x = windows.view(b, d // wd, h // wh, w // ww, wd, wh, ww, -1).permute(0, 1, 4, 2, 5, 3, 6, 7)
    return x.reshape(b, d, h, w, -1)


def relative_position_index(window: Window) -> torch.Tensor:
    """(N,N) index into the (2wd-1)(2wh-1)(2ww-1) bias table of every token pair in a window."""
    coords = torch.stack(torch.meshgrid(*[torch.arange(n) for n in window], indexing="ij")).flatten(1)
    rel = coords[:, :, None] - coords[:, None, :] + torch.tensor(window).view(3, 1, 1) - 1
    spans = [2 * n - 1 for n in window]
    return rel[0] * spans[1] * spans[2] + rel[1] * spans[2] + rel[2]


@functools.lru_cache(maxsize=16)
def shifted_window_mask(size: tuple[int, int, int], window: Window, shift: Window,
                        device: torch.device) -> torch.Tensor:
    """(nW,N,N) additive mask for attention in cyclically shifted windows on a ``size`` map.

    After a roll by -shift, a window at the far border mixes tokens from opposite sides of the
    volume; pairs from different regions get MASK_VALUE so they cannot attend to each other.
    Cached per (size, window, shift, device) and never stored in a state_dict.
    """
    regions = torch.zeros(1, *size, 1, device=device)
    label = 0
    bounds = [((0, s - w), (s - w, s - sh), (s - sh, s)) for s, w, sh in zip(size, window, shift)]
    for d0, d1 in bounds[0]:
        for h0, h1 in bounds[1]:
            for w0, w1 in bounds[2]:
                regions[:, d0:d1, h0:h1, w0:w1, :] = label
                label += 1
    labels = window_partition(regions, window).squeeze(-1)
    differ = labels[:, None, :] != labels[:, :, None]
    return torch.zeros(differ.shape, device=device).masked_fill(differ, MASK_VALUE)


class WindowAttention(nn.Module):
    """Multi-head self-attention inside windows with a learned relative position bias.

    (B*nW, N, C) -> (B*nW, N, C); ``mask`` (nW,N,N) is added to the logits of shifted windows.
    """

    def __init__(self, dim: int, window: Window, heads: int, qkv_bias: bool) -> None:
        super().__init__()
        self.heads = heads
        self.scale = (dim // heads) ** -0.5
        self.qkv = nn.Linear(dim, 3 * dim, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)
        table_size = (2 * window[0] - 1) * (2 * window[1] - 1) * (2 * window[2] - 1)
        self.bias_table = nn.Parameter(torch.empty(table_size, heads))
        nn.init.trunc_normal_(self.bias_table, std=0.02, a=-2.0, b=2.0)
        self.register_buffer("bias_index", relative_position_index(window), persistent=False)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        bw, n, c = x.shape
        q, k, v = self.qkv(x).view(bw, n, 3, self.heads, c // self.heads).permute(2, 0, 3, 1, 4)
        logits = (q * self.scale) @ k.transpose(-2, -1)
        bias = self.bias_table[self.bias_index.view(-1)].view(n, n, self.heads).permute(2, 0, 1)
        logits = logits + bias.unsqueeze(0)
        if mask is not None:
            nw = mask.shape[0]
            logits = logits.view(bw // nw, nw, self.heads, n, n) + mask.to(logits.dtype)[None, :, None]
            logits = logits.view(bw, self.heads, n, n)
        out = (logits.softmax(dim=-1) @ v).transpose(1, 2).reshape(bw, n, c)
        return self.proj(out)


class SwinBlock(nn.Module):
    """Pre-norm (shifted-)window attention and MLP, each a residual with stochastic depth.

    Operates on (B,D,H,W,C) of any D, H, W: the normalised map is zero-padded at the far end to
    window multiples for the attention and cropped back (the reference rule). The window is
    shifted by half its size only when every half is non-zero (also the reference rule).
    """

    def __init__(self, dim: int, heads: int, window: Window, shifted: bool, mlp_ratio: float,
                 qkv_bias: bool, drop_path: float) -> None:
        super().__init__()
        self.window = window
        half = tuple(w // 2 for w in window)
        self.shift: Window | None = half if shifted and min(half) > 0 else None
        self.norm1 = nn.LayerNorm(dim)
        self.attn = WindowAttention(dim, window, heads, qkv_bias)
        self.drop_path = DropPath(drop_path)
        self.norm2 = nn.LayerNorm(dim)
        hidden = int(dim * mlp_ratio)
        self.mlp = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        d, h, w = x.shape[1:4]
        y = pad_channels_last(self.norm1(x), padded_size((d, h, w), self.window))
        size = tuple(y.shape[1:4])
        mask = None
        if self.shift is not None:
            y = torch.roll(y, shifts=tuple(-s for s in self.shift), dims=(1, 2, 3))
            mask = shifted_window_mask(size, self.window, self.shift, x.device)
        y = window_reverse(self.attn(window_partition(y, self.window), mask), self.window, y.shape[:4])
        if self.shift is not None:
            y = torch.roll(y, shifts=self.shift, dims=(1, 2, 3))
        x = x + self.drop_path(y[:, :d, :h, :w])
        return x + self.drop_path(self.mlp(self.norm2(x)))


class PatchMerging(nn.Module):
    """Concatenate each 2x2x2 neighbourhood, LayerNorm, linear 8C -> 2C: (B,D,H,W,C) -> (B,D/2,H/2,W/2,2C).

    The eight neighbours are concatenated in the reference order of offsets (000, 100, 010, 001,
    110, 011, 101, 111), so that weights trained with the reference code keep their meaning.
    """

    # Raster index (4*dd + 2*dh + dw) of each offset, in the reference order.
    ORDER = (0, 4, 2, 1, 6, 3, 5, 7)

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(8 * dim)
        self.reduction = nn.Linear(8 * dim, 2 * dim, bias=False)
        self.register_buffer("order", torch.tensor(self.ORDER), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, d, h, w, c = x.shape
        x = x.view(b, d // 2, 2, h // 2, 2, w // 2, 2, c).permute(0, 1, 3, 5, 2, 4, 6, 7)
        x = x.reshape(b, d // 2, h // 2, w // 2, 8, c).index_select(4, self.order)
        return self.reduction(self.norm(x.reshape(b, d // 2, h // 2, w // 2, 8 * c)))


class SwinEncoder(nn.Module):
    """Patch embedding and Swin stages: pair (B,2,D,H,W) -> list of stage outputs (B,C_i,D_i,H_i,W_i),
    C_i = embed_dim*2**i at 1/(4*2**i) resolution."""

    def __init__(self, embed_dim: int, depths: Sequence[int], heads: Sequence[int], window: Window,
                 mlp_ratio: float, qkv_bias: bool, drop_path: float) -> None:
        super().__init__()
        self.patch_embed = Conv3d(2, embed_dim, kernel_size=PATCH, stride=PATCH)
        self.embed_norm = nn.LayerNorm(embed_dim)
        rates = torch.linspace(0.0, drop_path, sum(depths)).tolist()
        self.stages = nn.ModuleList()
        self.merges = nn.ModuleList()
        self.out_norms = nn.ModuleList()
        for i, (depth, nh) in enumerate(zip(depths, heads)):
            dim = embed_dim * 2 ** i
            first = sum(depths[:i])
            self.stages.append(nn.Sequential(*[
                SwinBlock(dim, nh, window, shifted=j % 2 == 1, mlp_ratio=mlp_ratio, qkv_bias=qkv_bias,
                          drop_path=rates[first + j]) for j in range(depth)]))
            self.out_norms.append(nn.LayerNorm(dim))
            if i < len(depths) - 1:
                self.merges.append(PatchMerging(dim))

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        x = self.embed_norm(self.patch_embed(x).permute(0, 2, 3, 4, 1))
        outputs = []
        for i, stage in enumerate(self.stages):
            x = stage(x)
            outputs.append(self.out_norms[i](x).permute(0, 4, 1, 2, 3))
            if i < len(self.merges):
                x = self.merges[i](x)
        return outputs
