"""TransMorph (Chen et al., 2022): a Swin-Transformer encoder with a convolutional decoder.

Encoder: a stride-4 patch embedding (conv + LayerNorm), then len(depths) Swin stages whose blocks
alternate regular and half-shifted window attention with a learned relative position bias; patch
merging (LayerNorm over 2x2x2 neighbours, linear 8C -> 2C) between stages; a LayerNorm on every
stage output. Decoder: trilinear x2 up-sampling blocks fed by the transformer stage outputs, then
by two conv skips (an avg-pooled half-resolution conv and a full-resolution conv of the pair);
instance norm and LeakyReLU. No absolute or sinusoidal position embedding. Initialisation as in
the reference: PyTorch defaults, relative position tables truncated N(0, 0.02), flow head N(0, 1e-5).

Any size runs, by two zero paddings at the far end of each axis:
- every Swin block pads its normalised feature map to multiples of the window, attends (the
  shifted-window mask is built for the padded map) and crops back: the reference's rule, which
  lets the window (5,6,7) run on AbdomenCTCT's 192x160x256 and (5,6,5) on LPBA40's 160x192x160;
- the pair is padded to a multiple of 4*2**(len(depths)-1) (32 for four stages) before the
  network and the displacement is cropped back (the reference requires that multiple instead).
Neither changes the parameters.

Trainable parameters (measured): paper (embed 96, depths (2,2,4,2), heads (4,4,8,8), window
(5,6,7)) 46,771,251; with window (5,6,5) (LPBA40) 46,745,907; small (embed 24, depths (1,1,2,1),
heads (2,2,4,4), reg_head_chan 8, window derived from img_size) 2,232,475 at 32^3 (window 1),
2,232,891 at 64^3 (window 2), 2,234,459 at 96^3 (window 3). The count depends on the window
(relative position tables), not otherwise on img_size.
"""

from __future__ import annotations

import functools
from typing import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from ofg.models.common import RegistrationNet, UpBlock, conv_norm_act, flow_head, parse_img_size
from ofg.models.swin import PATCH, SwinEncoder, Window, padded_size


def valid_windows(img_size: Sequence[int], levels: int) -> list[list[int]]:
    """Per axis, the window sizes that need no padding at any stage: the divisors of the deepest
    map, img_size / (4 * 2**(levels-1)), for an ``img_size`` that is a multiple of that factor."""
    bottom = [s // (PATCH * 2 ** (levels - 1)) for s in img_size]
    return [[w for w in range(1, n + 1) if n % w == 0] for n in bottom]


def derive_window(img_size: Sequence[int], levels: int, max_window: int = 7) -> Window:
    """Per axis, the largest window <= ``max_window`` (the paper's largest) that needs no padding
    for ``img_size`` padded to the network's multiple."""
    padded = padded_size(img_size, (PATCH * 2 ** (levels - 1),) * 3)
    return tuple(max(w for w in ws if w <= max_window) for ws in valid_windows(padded, levels))


def check_window(window: Sequence[int]) -> Window:
    """``window`` as three positive ints (D, H, W); ValueError otherwise."""
    try:
        out = tuple(int(w) for w in window)
    except (TypeError, ValueError):
        raise ValueError(f"transmorph: window must be 3 positive ints (D, H, W), got {window!r}") from None
    if len(out) != 3 or min(out) < 1 or any(o != w for o, w in zip(out, window)):
        raise ValueError(f"transmorph: window must be 3 positive ints (D, H, W), got {tuple(window)!r}")
    return out  # type: ignore[return-value]


class TransMorph(RegistrationNet):
    """TransMorph: pair (B,2,D,H,W) -> (warped moving, displacement (B,3,D,H,W) in voxels).

    Any D, H, W run (see the module docstring for the two paddings). ``window`` is one size per
    axis shared by all stages, any positive ints; ``window=None`` picks, per axis, the largest
    window <= 7 that needs no padding. ``heads[i]`` must divide ``embed_dim*2**i``. The input must
    have exactly ``img_size`` (the configuration, e.g. the derived window, was chosen for it).
    ``pad_multiple`` (32 for four stages) is the multiple the pair is padded to.
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
        self.pad_multiple = PATCH * 2 ** (levels - 1)
        self.window = derive_window(self.img_size, levels) if window is None else check_window(window)

        self.encoder = SwinEncoder(embed_dim, depths, heads, self.window, mlp_ratio, qkv_bias, drop_path)
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
        """(B,2,D,H,W) -> (B,3,D,H,W): the pair is zero-padded at the far end to multiples of
        ``pad_multiple`` and the displacement cropped back to D, H, W."""
        d, h, w = x.shape[2:]
        pd, ph, pw = (p - n for p, n in zip(padded_size((d, h, w), (self.pad_multiple,) * 3), (d, h, w)))
        if pd or ph or pw:
            x = F.pad(x, (0, pw, 0, ph, 0, pd))
        return self._padded_displacement(x)[:, :, :d, :h, :w]

    def _padded_displacement(self, x: torch.Tensor) -> torch.Tensor:
        skip_full = self.skip_full(x)
        skip_half = self.skip_half(self.pool(x))
        features = self.encoder(x)
        y = features[-1]
        for block, skip in zip(self.decoder, reversed(features[:-1])):
            y = block(y, skip)
        y = self.up_full(self.up_half(y, skip_half), skip_full)
        return self.flow_head(y)
