"""ViT-V-Net (Chen et al., 2021): a convolutional encoder, a ViT over patches, a V-Net-style decoder.

Encoder: double 3x3x3 conv + ReLU at full resolution, then two (max-pool, double conv) levels to
1/4 resolution; further max-pools of the 1/4 map give the coarser skips. A patch embedding
(conv, kernel = stride = ``patch``) turns the 1/4 map into a grid of img_size/(4*patch) tokens
with a learned position embedding (so the network is tied to img_size), followed by pre-norm
transformer blocks. Decoder: a conv to ``head_channels``, then log2(patch)+2 blocks of trilinear
x2 up-sampling, skip concatenation and two conv-BatchNorm-ReLU layers back to full resolution.

Trainable parameters (measured): paper (encoder (16,32,32), patch 8, hidden 252, 12 layers,
12 heads, mlp 3072, decoder (96,48,32,32,16)) at 160x192x224 (5x6x7 tokens) 31,560,079; small
(encoder (8,16,16), patch 4, hidden 96, 4 layers, 4 heads, mlp 384, head 64, decoder
(32,16,16,8)) 892,171 at 32^3, 897,547 at 64^3 (4^3 tokens), 912,139 at 96^3. The position
embedding holds hidden * tokens of them.
"""

from __future__ import annotations

import math
from typing import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from ofg.models.common import (RegistrationNet, UpBlock, check_divisible, conv_norm_act, flow_head,
                               parse_img_size)
from ofg.models.onednn import Conv3d


def double_conv(in_channels: int, out_channels: int) -> nn.Sequential:
    """Two 3x3x3 convs (with bias) each followed by ReLU."""
    return nn.Sequential(
        Conv3d(in_channels, out_channels, 3, padding=1), nn.ReLU(inplace=True),
        Conv3d(out_channels, out_channels, 3, padding=1), nn.ReLU(inplace=True))


class SelfAttention(nn.Module):
    """Multi-head self-attention over tokens (B,N,C) -> (B,N,C), separate q, k, v projections."""

    def __init__(self, hidden: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.query = nn.Linear(hidden, hidden)
        self.key = nn.Linear(hidden, hidden)
        self.value = nn.Linear(hidden, hidden)
        self.out = nn.Linear(hidden, hidden)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, c = x.shape
        q, k, v = (proj(x).view(b, n, self.heads, c // self.heads).transpose(1, 2)
                   for proj in (self.query, self.key, self.value))
        out = F.scaled_dot_product_attention(q, k, v)
        return self.out(out.transpose(1, 2).reshape(b, n, c))


class TransformerBlock(nn.Module):
    """Pre-norm attention and GELU MLP (with dropout), both residual; LayerNorm eps 1e-6."""

    def __init__(self, hidden: int, heads: int, mlp_dim: int, dropout: float) -> None:
        super().__init__()
        self.attn_norm = nn.LayerNorm(hidden, eps=1e-6)
        self.attn = SelfAttention(hidden, heads)
        self.mlp_norm = nn.LayerNorm(hidden, eps=1e-6)
        fc1, fc2 = nn.Linear(hidden, mlp_dim), nn.Linear(mlp_dim, hidden)
        for fc in (fc1, fc2):  # the ViT MLP initialisation of the reference
            nn.init.xavier_uniform_(fc.weight)
            nn.init.normal_(fc.bias, std=1e-6)
        self.mlp = nn.Sequential(fc1, nn.GELU(), nn.Dropout(dropout), fc2, nn.Dropout(dropout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.attn_norm(x))
        return x + self.mlp(self.mlp_norm(x))


class ViTVNet(RegistrationNet):
    """ViT-V-Net: pair (B,2,D,H,W) -> (warped moving, displacement (B,3,D,H,W) in voxels).

    D, H, W must be multiples of 4*patch (the token grid is img_size/(4*patch)) and give at least two
    tokens (the head's BatchNorm cannot train on one value per channel at batch size 1), ``patch`` a
    power of two >= 2, ``decoder`` of length log2(patch)+2 and ``heads`` a divisor of ``hidden``. The
    input must have exactly ``img_size`` (the position embedding has one entry per token).
    """

    name = "vitvnet"

    def __init__(self, img_size: int | Sequence[int], encoder: Sequence[int] = (16, 32, 32),
                 patch: int = 8, hidden: int = 252, layers: int = 12, heads: int = 12,
                 mlp_dim: int = 3072, dropout: float = 0.1, head_channels: int = 512,
                 decoder: Sequence[int] = (96, 48, 32, 32, 16)) -> None:
        super().__init__()
        self.img_size = parse_img_size(img_size, self.name)
        encoder, decoder = tuple(encoder), tuple(decoder)
        if patch < 2 or patch & (patch - 1):
            raise ValueError(f"vitvnet: patch must be a power of two >= 2, got {patch}")
        ups = int(math.log2(patch)) + 2  # from 1/(4*patch) back to full resolution
        if len(encoder) != 3 or len(decoder) != ups:
            raise ValueError(
                f"vitvnet: need 3 encoder channels and log2(patch)+2={ups} decoder channels, "
                f"got encoder {encoder}, decoder {decoder}")
        if hidden % heads:
            raise ValueError(f"vitvnet: heads={heads} must divide hidden={hidden}")
        self.size_factor = 4 * patch
        check_divisible(self.img_size, self.size_factor, self.name,
                        f"two 2x down-samplings then {patch}^3 patches")
        self.grid = tuple(s // self.size_factor for s in self.img_size)
        if math.prod(self.grid) < 2:
            raise ValueError(
                f"vitvnet: img_size {self.img_size} is not supported: it makes a single {patch}^3 patch of the "
                f"1/4 map (token grid {self.grid}), on which the head's BatchNorm cannot train at batch size 1; "
                f"one axis at least must be {2 * self.size_factor} (e.g. {(2 * self.size_factor, *self.img_size[1:])})")
        self.extra_pools = ups - 3

        self.inc = double_conv(2, encoder[0])
        self.down1 = nn.Sequential(nn.MaxPool3d(2), double_conv(encoder[0], encoder[1]))
        self.down2 = nn.Sequential(nn.MaxPool3d(2), double_conv(encoder[1], encoder[2]))
        self.patch_embed = Conv3d(encoder[2], hidden, kernel_size=patch, stride=patch)
        self.position = nn.Parameter(torch.zeros(1, math.prod(self.grid), hidden))
        self.embed_dropout = nn.Dropout(dropout)
        self.blocks = nn.Sequential(*[TransformerBlock(hidden, heads, mlp_dim, dropout) for _ in range(layers)])
        self.norm = nn.LayerNorm(hidden, eps=1e-6)
        self.head = conv_norm_act(hidden, head_channels, "batch", nn.ReLU(inplace=True))
        # Skips, coarsest first: pooled copies of the 1/4 map, the 1/4 map, 1/2, full resolution.
        skips = (encoder[2],) * (self.extra_pools + 1) + (encoder[1], encoder[0])
        ins = (head_channels,) + decoder[:-1]
        self.decoder = nn.ModuleList(
            UpBlock(i, s, o, "batch", nn.ReLU) for i, s, o in zip(ins, skips, decoder))
        self.flow_head = flow_head(decoder[-1])

    def displacement(self, x: torch.Tensor) -> torch.Tensor:
        full = self.inc(x)
        half = self.down1(full)
        quarter = self.down2(half)
        skips = [full, half, quarter]
        for _ in range(self.extra_pools):
            skips.append(F.max_pool3d(skips[-1], 2))
        tokens = self.patch_embed(quarter).flatten(2).transpose(1, 2)
        tokens = self.norm(self.blocks(self.embed_dropout(tokens + self.position)))
        y = tokens.transpose(1, 2).reshape(x.shape[0], -1, *self.grid)
        y = self.head(y)
        for block, skip in zip(self.decoder, reversed(skips)):
            y = block(y, skip)
        return self.flow_head(y)
