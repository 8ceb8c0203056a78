"""TransMorph (Chen et al., 2022): a Swin-Transformer encoder with a convolutional decoder.

Encoder: a stride-4 patch embedding (conv + LayerNorm), then len(depths) Swin stages whose blocks
alternate regular and half-shifted window attention with a learned relative position bias; patch
merging (LayerNorm over 2x2x2 neighbours, linear 8C -> 2C) between stages; a LayerNorm on every
stage output. Decoder: trilinear x2 up-sampling blocks fed by the transformer stage outputs, then
by two conv skips (an avg-pooled half-resolution conv and a full-resolution conv of the pair);
instance norm and LeakyReLU. No absolute or sinusoidal position embedding. Initialisation as in
the reference: PyTorch defaults, relative position tables truncated N(0, 0.02), flow head N(0, 1e-5).

Trainable parameters (measured): paper (embed 96, depths (2,2,4,2), heads (4,4,8,8), window
(5,6,7)) 46,771,251; small (embed 24, depths (1,1,2,1), heads (2,2,4,4), reg_head_chan 8, window
derived from img_size) 2,232,475 at 32^3 (window 1), 2,232,891 at 64^3 (window 2), 2,234,459 at 96^3
(window 3). The count depends on the window (relative position tables), not otherwise on img_size.
"""

from __future__ import annotations

import functools
from typing import Sequence

import torch
import torch.nn as nn

from ofg.models.common import (DropPath, RegistrationNet, UpBlock, check_divisible, conv_norm_act,
                               flow_head, parse_img_size)

PATCH = 4  # the decoder's two conv-skip levels (1/2 and full resolution) assume a stride-4 embedding
MASK_VALUE = -100.0  # additive logit for token pairs from different shifted regions (reference value)
Window = tuple[int, int, int]


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

    Operates on (B,D,H,W,C). The window is shifted by half its size only when every half is
    non-zero (the reference rule).
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
        y = self.norm1(x)
        mask = None
        if self.shift is not None:
            y = torch.roll(y, shifts=tuple(-s for s in self.shift), dims=(1, 2, 3))
            mask = shifted_window_mask(tuple(x.shape[1:4]), self.window, self.shift, x.device)
        y = window_reverse(self.attn(window_partition(y, self.window), mask), self.window, x.shape[:4])
        if self.shift is not None:
            y = torch.roll(y, shifts=self.shift, dims=(1, 2, 3))
        x = x + self.drop_path(y)
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
        self.patch_embed = nn.Conv3d(2, embed_dim, kernel_size=PATCH, stride=PATCH)
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


def valid_windows(img_size: Sequence[int], levels: int) -> list[list[int]]:
    """Per axis, the window sizes that divide the feature map at every stage (the divisors of the
    deepest map, img_size / (4 * 2**(levels-1)))."""
    bottom = [s // (PATCH * 2 ** (levels - 1)) for s in img_size]
    return [[w for w in range(1, n + 1) if n % w == 0] for n in bottom]


def derive_window(img_size: Sequence[int], levels: int, max_window: int = 7) -> Window:
    """The largest valid window per axis that is at most ``max_window`` (the paper's largest)."""
    return tuple(max(w for w in ws if w <= max_window) for ws in valid_windows(img_size, levels))


class TransMorph(RegistrationNet):
    """TransMorph: pair (B,2,D,H,W) -> (warped moving, displacement (B,3,D,H,W) in voxels).

    D, H, W must be multiples of 4*2**(len(depths)-1) (32 for four stages), and ``window`` (one size
    per axis, shared by all stages) must divide every stage's feature map; ``window=None`` picks the
    largest valid window <= 7 per axis. ``heads[i]`` must divide ``embed_dim*2**i``.
    The input must have exactly ``img_size`` (the windows were chosen for it).
    """

    name = "transmorph"

    def __init__(self, img_size: int | Sequence[int], embed_dim: int = 96,
                 depths: Sequence[int] = (2, 2, 4, 2), heads: Sequence[int] = (4, 4, 8, 8),
                 window: Sequence[int] | None = (5, 6, 7), mlp_ratio: float = 4.0, qkv_bias: bool = False,
                 drop_path: float = 0.3, reg_head_chan: int = 16) -> None:
        super().__init__()
        self.img_size = parse_img_size(img_size, self.name)
        depths, heads = tuple(depths), tuple(heads)
        if len(depths) < 2 or len(depths) != len(heads):
            raise ValueError(f"transmorph: depths and heads need equal lengths >= 2, got {depths}, {heads}")
        for i, nh in enumerate(heads):
            if (embed_dim * 2 ** i) % nh or embed_dim % 2:
                raise ValueError(
                    f"transmorph: embed_dim must be even and heads[{i}]={nh} must divide "
                    f"embed_dim*2**{i}={embed_dim * 2 ** i}")
        levels = len(depths)
        self.size_factor = PATCH * 2 ** (levels - 1)
        check_divisible(self.img_size, self.size_factor, self.name,
                        f"stride-{PATCH} patch embedding and {levels - 1} patch mergings")
        window = derive_window(self.img_size, levels) if window is None else tuple(int(w) for w in window)
        allowed = valid_windows(self.img_size, levels)
        if len(window) != 3 or any(w not in ok for w, ok in zip(window, allowed)):
            raise ValueError(
                f"transmorph: window {window} does not divide the feature maps of every stage for "
                f"img_size {self.img_size}; valid sizes per axis (D, H, W): {allowed}")
        self.window = window

        self.encoder = SwinEncoder(embed_dim, depths, heads, window, mlp_ratio, qkv_bias, drop_path)
        dims = [embed_dim * 2 ** i for i in range(levels)]
        act = functools.partial(nn.LeakyReLU, inplace=True)
        self.decoder = nn.ModuleList(
            UpBlock(dims[i + 1], dims[i], dims[i], "instance", act)
            for i in reversed(range(levels - 1)))
        half = embed_dim // 2
        self.up_half = UpBlock(dims[0], half, half, "instance", act)
        self.up_full = UpBlock(half, reg_head_chan, reg_head_chan, "instance", act)
        self.skip_half = conv_norm_act(2, half, "instance", act())
        self.skip_full = conv_norm_act(2, reg_head_chan, "instance", act())
        self.pool = nn.AvgPool3d(3, stride=2, padding=1)
        self.flow_head = flow_head(reg_head_chan)

    def displacement(self, x: torch.Tensor) -> torch.Tensor:
        skip_full = self.skip_full(x)
        skip_half = self.skip_half(self.pool(x))
        features = self.encoder(x)
        y = features[-1]
        for block, skip in zip(self.decoder, reversed(features[:-1])):
            y = block(y, skip)
        y = self.up_full(self.up_half(y, skip_half), skip_full)
        return self.flow_head(y)
