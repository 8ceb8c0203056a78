"""VoxelMorph (Balakrishnan et al., 2019): a U-Net that predicts a dense displacement.

The variant of the OFG and TransMorph reference code ("VoxelMorph-1"): every encoder level is a
single stride-2 conv; each decoder level convolves, up-samples x2 (nearest) and concatenates the
matching encoder activation (the input pair at full resolution); extra full-resolution convs
follow; all convs are 3x3x3 with LeakyReLU(0.2). No integration: the output is the displacement.

Trainable parameters (measured): paper (enc (8,32,32,32), dec (32,32,32,32,32,8,8)) 274,387;
small (enc (8,16,16,16), dec (16,16,16,16,8,8): one full-resolution conv fewer) 69,043.
Neither depends on img_size.
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn as nn

from ofg.models.common import RegistrationNet, cat_channels, check_divisible, flow_head, parse_img_size
from ofg.models.onednn import Conv3d


def _conv_lrelu(in_channels: int, out_channels: int, stride: int) -> nn.Sequential:
    conv = Conv3d(in_channels, out_channels, kernel_size=3, stride=stride, padding=1)
    return nn.Sequential(conv, nn.LeakyReLU(0.2))


class VoxelMorph(RegistrationNet):
    """VoxelMorph U-Net: pair (B,2,D,H,W) -> (warped moving, displacement (B,3,D,H,W) in voxels).

    ``encoder`` lists the channels of the stride-2 convs (the network down-samples by
    2**len(encoder), so D, H, W must be multiples of it); ``decoder`` lists len(encoder) up-path
    convs followed by any number of full-resolution convs. Fully convolutional: any input whose
    axes are multiples of the down-sampling factor is accepted.
    """

    name = "voxelmorph"
    strict_size = False

    def __init__(self, img_size: int | Sequence[int], encoder: Sequence[int] = (8, 32, 32, 32),
                 decoder: Sequence[int] = (32, 32, 32, 32, 32, 8, 8)) -> None:
        super().__init__()
        self.img_size = parse_img_size(img_size, self.name)
        encoder, decoder = tuple(encoder), tuple(decoder)
        if len(encoder) < 1 or len(decoder) < len(encoder) + 1:
            raise ValueError(
                f"voxelmorph: need at least one encoder level and len(decoder) > len(encoder), "
                f"got encoder {encoder}, decoder {decoder}"
            )
        self.size_factor = 2 ** len(encoder)
        check_divisible(self.img_size, self.size_factor, self.name,
                        f"{len(encoder)} stride-2 down-samplings")

        self.down = nn.ModuleList()
        channels = 2
        for out in encoder:
            self.down.append(_conv_lrelu(channels, out, stride=2))
            channels = out
        # Skip sources of the up path, deepest first after the bottleneck: enc[-2], ..., enc[0], input.
        skips = list(reversed(encoder[:-1])) + [2]
        self.up = nn.ModuleList()
        for out, skip in zip(decoder[: len(encoder)], skips):
            self.up.append(_conv_lrelu(channels, out, stride=1))
            channels = out + skip
        self.extra = nn.ModuleList()
        for out in decoder[len(encoder):]:
            self.extra.append(_conv_lrelu(channels, out, stride=1))
            channels = out
        self.upsample = nn.Upsample(scale_factor=2, mode="nearest")
        self.flow_head = flow_head(channels)

    def displacement(self, x: torch.Tensor) -> torch.Tensor:
        activations = [x]
        for layer in self.down:
            activations.append(layer(activations[-1]))
        y = activations.pop()
        for layer in self.up:
            y = cat_channels([self.upsample(layer(y)), activations.pop()])
        for layer in self.extra:
            y = layer(y)
        return self.flow_head(y)
