"""LKU-Net (Jia et al., 2022): a U-Net whose encoder levels use large-kernel blocks.

With c = ``start_channel``: two 3x3x3 convs at full resolution (c), then four levels, each a
stride-2 conv (2c, 4c, 8c, 8c) followed by a large-kernel block (the sum of parallel 3^3,
``kernel``^3 and 1^3 convs and the identity, then PReLU). The decoder up-samples with stride-2
transposed convs, concatenates the encoder level and applies two 3x3x3 convs; every conv is
followed by PReLU. The head is a 3x3x3 conv without bias followed by Softsign, so the raw output
lies in (-1, 1) in normalised grid units (a displacement of 1 spans half the volume). It is
returned in voxels: channel i is scaled by (n_i - 1)/2, which warps exactly as the reference's
normalised field. ``int_steps`` > 0 integrates that field by scaling and squaring (the reference's
diffeomorphic variant); the default 0 returns the displacement directly.

The reference also builds a second, unused output conv (for the inverse direction, commented out
in its forward); it is counted in the published parameter number, so ``inverse_head=True`` keeps it
(it never receives gradients).

Under autocast, a large-kernel conv whose input is shorter than its kernel along some axis (the
deepest level of a small volume: 3x4x3 at 48x64x48 against a 5^3 kernel) runs in float32
(:class:`LargeKernelConv`): PyTorch 2.13's CPU bfloat16 conv weight gradient is wrong there
(measured: wrong in every trial at kernel 5 on 3x4x3, non-finite in a third of them), which made the
small LKU-Net's training loss NaN within 60 iterations on the fast path.

Trainable parameters (measured): paper (start channel 8, with the unused head) 2,087,638
(2,086,342 without it); small (start channel 4, no unused head) 522,302. Independent of img_size.
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from ofg.models.common import RegistrationNet, cat_channels, check_divisible, flow_head, parse_img_size
from ofg.models.onednn import Conv3d
from ofg.spatial import integrate


def conv_prelu(in_channels: int, out_channels: int, stride: int = 1) -> nn.Sequential:
    """3x3x3 conv (with bias) and PReLU."""
    return nn.Sequential(Conv3d(in_channels, out_channels, 3, stride=stride, padding=1), nn.PReLU())


class LargeKernelBlock(nn.Module):
    """PReLU(conv3(x) + convK(x) + conv1(x) + x), channels preserved: (B,C,D,H,W) -> (B,C,D,H,W)."""

    def __init__(self, channels: int, kernel: int = 5) -> None:
        super().__init__()
        if kernel < 1 or kernel % 2 == 0:
            raise ValueError(f"lkunet: kernel must be a positive odd integer, got {kernel}")
        self.regular = Conv3d(channels, channels, 3, padding=1)
        self.large = LargeKernelConv(channels, channels, kernel, padding=kernel // 2)
        self.point = Conv3d(channels, channels, 1)
        self.act = nn.PReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.regular(x) + self.large(x) + self.point(x) + x)


class LargeKernelConv(Conv3d):
    """A same-padded Conv3d that leaves autocast (runs in float32) when an input axis is shorter than
    its kernel: (B,C,D,H,W) -> (B,C',D,H,W), float32 in that case, else autocast's dtype as usual.

    That layer is tiny (it only happens at the coarsest level), so the float32 costs nothing measurable.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shorter = any(n < k for n, k in zip(x.shape[2:], self.kernel_size))
        if shorter and torch.is_autocast_enabled(x.device.type):
            with torch.autocast(device_type=x.device.type, enabled=False):
                return super().forward(x.float())
        return super().forward(x)


def up_prelu(channels: int) -> nn.Sequential:
    """Stride-2 2x2x2 transposed conv (with bias) and PReLU: doubles each spatial size."""
    return nn.Sequential(nn.ConvTranspose3d(channels, channels, 2, stride=2), nn.PReLU())


class LKUNet(RegistrationNet):
    """LKU-Net: pair (B,2,D,H,W) -> (warped moving, displacement (B,3,D,H,W) in voxels).

    Fully convolutional with four stride-2 levels: any input whose axes are multiples of 16.
    """

    name = "lkunet"
    size_factor = 16
    strict_size = False

    def __init__(self, img_size: int | Sequence[int], start_channel: int = 8, kernel: int = 5,
                 inverse_head: bool = True, int_steps: int = 0) -> None:
        super().__init__()
        self.img_size = parse_img_size(img_size, self.name)
        check_divisible(self.img_size, self.size_factor, self.name, "four stride-2 down-samplings")
        if start_channel < 1:
            raise ValueError(f"lkunet: start_channel must be >= 1, got {start_channel}")
        if int_steps < 0:
            raise ValueError(f"lkunet: int_steps must be >= 0, got {int_steps}")
        self.int_steps = int_steps
        c = start_channel
        self.stem = nn.Sequential(conv_prelu(2, c), conv_prelu(c, c))
        widths = (2 * c, 4 * c, 8 * c, 8 * c)
        self.down = nn.ModuleList()
        previous = c
        for width in widths:
            self.down.append(nn.Sequential(conv_prelu(previous, width, stride=2), LargeKernelBlock(width, kernel)))
            previous = width
        # Decoder levels, deepest first: (channels in, skip channels, conv1 out, conv2 out).
        levels = ((8 * c, 8 * c, 8 * c, 4 * c), (4 * c, 4 * c, 4 * c, 2 * c),
                  (2 * c, 2 * c, 4 * c, 2 * c), (2 * c, c, 2 * c, 2 * c))
        self.up = nn.ModuleList(up_prelu(cin) for cin, _, _, _ in levels)
        self.fuse = nn.ModuleList(
            nn.Sequential(conv_prelu(cin + skip, mid), conv_prelu(mid, out)) for cin, skip, mid, out in levels)
        self.flow_head = flow_head(2 * c, bias=False)
        self.inverse_head = flow_head(2 * c, bias=False) if inverse_head else None

    def displacement(self, x: torch.Tensor) -> torch.Tensor:
        features = [self.stem(x)]
        for level in self.down:
            features.append(level(features[-1]))
        y = features.pop()
        for up, fuse in zip(self.up, self.fuse):
            y = fuse(cat_channels([up(y), features.pop()]))
        normalised = F.softsign(self.flow_head(y))
        scale = torch.tensor([(n - 1) / 2 for n in x.shape[2:]], device=x.device, dtype=normalised.dtype)
        disp = normalised * scale.view(1, 3, 1, 1, 1)
        return integrate(disp, self.int_steps) if self.int_steps else disp
