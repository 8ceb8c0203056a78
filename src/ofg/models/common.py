"""Building blocks shared by the registration networks.

Every network maps a pair ``x`` (B,2,D,H,W) — moving image on channel 0, fixed on channel 1 — to
``(warped_moving, displacement)``; the displacement is (B,3,D,H,W) in voxels (the
:mod:`ofg.spatial` convention) and the warp is :func:`ofg.spatial.warp`.
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn as nn

from ofg.models.onednn import CHANNELS_LAST, Conv3d, channels_last_input
from ofg.spatial import warp

FLOW_INIT_STD = 1e-5


def parse_img_size(img_size: int | Sequence[int], model: str) -> tuple[int, int, int]:
    """``img_size`` as a tuple of three positive ints (an int means a cube)."""
    if isinstance(img_size, int) and not isinstance(img_size, bool):
        img_size = (img_size,) * 3
    try:
        size = tuple(int(s) for s in img_size)
    except TypeError:
        raise ValueError(f"{model}: img_size must be an int or 3 ints (D,H,W), got {img_size!r}") from None
    if len(size) != 3 or any(s != v for s, v in zip(size, img_size)) or min(size) < 1:
        raise ValueError(f"{model}: img_size must be 3 positive ints (D,H,W), got {tuple(img_size)!r}")
    return size


def check_divisible(img_size: Sequence[int], factor: int, model: str, why: str) -> None:
    """Raise a ValueError unless every axis of ``img_size`` is a multiple of ``factor``."""
    if any(s % factor for s in img_size):
        raise ValueError(
            f"{model}: img_size {tuple(img_size)} is not supported: every axis must be a multiple of "
            f"{factor} ({why}); e.g. {tuple(max(factor, round(s / factor) * factor) for s in img_size)}"
        )


def init_flow_head_(conv: nn.Conv3d, std: float = FLOW_INIT_STD) -> nn.Conv3d:
    """Re-initialise a flow head in place: weights N(0, std), bias zero (near-identity output)."""
    with torch.no_grad():
        conv.weight.normal_(0.0, std)
        if conv.bias is not None:
            conv.bias.zero_()
    return conv


def flow_head(in_channels: int, bias: bool = True) -> nn.Conv3d:
    """The 3x3x3 convolution that outputs the 3 displacement channels, initialised near zero."""
    return init_flow_head_(Conv3d(in_channels, 3, kernel_size=3, padding=1, bias=bias))


class _CatChannels(torch.autograd.Function):
    """``torch.cat(tensors, 1)`` whose backward hands each input its gradient in that input's layout."""

    @staticmethod
    def forward(ctx, *tensors: torch.Tensor) -> torch.Tensor:
        ctx.sizes = [t.shape[1] for t in tensors]
        ctx.formats = [CHANNELS_LAST if t.is_contiguous(memory_format=CHANNELS_LAST) and not t.is_contiguous()
                       else torch.contiguous_format for t in tensors]
        return torch.cat(tensors, 1)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        parts = grad.split(ctx.sizes, 1)
        return tuple(part.contiguous(memory_format=layout) if needed else None
                     for part, layout, needed in zip(parts, ctx.formats, ctx.needs_input_grad))


def cat_channels(tensors: Sequence[torch.Tensor]) -> torch.Tensor:
    """``torch.cat(tensors, dim=1)`` of (B,C_i,*spatial) tensors, the same values and gradients.

    The gradient of each input comes back laid out like that input: a channel slice of a channels-last
    gradient (:mod:`ofg.models.onednn`) is strided, and the up-sampling before the skip concatenation
    took 6x longer in its backward on it (16 of 18 channels at 48x64x48: 22 ms) than on a copy (3.5 ms
    + 5.6 ms for the copy).
    """
    return _CatChannels.apply(*tensors)


def conv_norm_act(in_channels: int, out_channels: int, norm: str, act: nn.Module) -> nn.Sequential:
    """3x3x3 conv without bias, then InstanceNorm3d (no affine) or BatchNorm3d, then ``act``."""
    norms = {"instance": nn.InstanceNorm3d, "batch": nn.BatchNorm3d}
    if norm not in norms:
        raise ValueError(f"norm must be one of {tuple(norms)}, got {norm!r}")
    conv = Conv3d(in_channels, out_channels, kernel_size=3, padding=1, bias=False)
    return nn.Sequential(conv, norms[norm](out_channels), act)


class UpBlock(nn.Module):
    """Trilinear x2 up-sampling, concatenation with a skip, two conv-norm-activation layers.

    The decoder block of TransMorph (instance norm, LeakyReLU 0.01) and ViT-V-Net (batch norm,
    ReLU). (B,in,D,H,W) + skip (B,skip,2D,2H,2W) -> (B,out,2D,2H,2W).
    """

    def __init__(self, in_channels: int, skip_channels: int, out_channels: int, norm: str,
                 act: type[nn.Module]) -> None:
        super().__init__()
        self.up = nn.Upsample(scale_factor=2, mode="trilinear", align_corners=False)
        self.conv1 = conv_norm_act(in_channels + skip_channels, out_channels, norm, act())
        self.conv2 = conv_norm_act(out_channels, out_channels, norm, act())

    def forward(self, x: torch.Tensor, skip: torch.Tensor | None = None) -> torch.Tensor:
        x = self.up(x)
        if skip is not None:
            x = cat_channels([x, skip])
        return self.conv2(self.conv1(x))


class DropPath(nn.Module):
    """Stochastic depth: in training, zero a whole residual branch per sample with probability p
    and rescale the survivors by 1/(1-p); the identity in eval mode."""

    def __init__(self, p: float = 0.0) -> None:
        super().__init__()
        if not 0.0 <= p < 1.0:
            raise ValueError(f"drop path probability must be in [0, 1), got {p}")
        self.p = p

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0.0:
            return x
        keep = 1.0 - self.p
        mask = x.new_empty((x.shape[0],) + (1,) * (x.ndim - 1)).bernoulli_(keep)
        return x * mask / keep

    def extra_repr(self) -> str:
        return f"p={self.p}"


def count_parameters(model: nn.Module) -> int:
    """Number of trainable parameters (those with requires_grad)."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


class RegistrationNet(nn.Module):
    """Base of the four networks: input checks, displacement prediction, warp of the moving image.

    Subclasses set ``img_size``, ``flow_head`` and ``size_factor`` and implement
    :meth:`displacement`. ``strict_size`` says whether the input must have exactly ``img_size``
    (the network depends on it) or only a spatial size divisible by ``size_factor``.
    """

    name = "model"
    size_factor = 1
    strict_size = True
    img_size: tuple[int, int, int]
    flow_head: nn.Conv3d

    def check_input(self, x: torch.Tensor) -> None:
        """Raise a ValueError unless ``x`` is a (B,2,D,H,W) floating pair this network can take."""
        if not isinstance(x, torch.Tensor):
            raise ValueError(f"{self.name}: expected a torch.Tensor, got {type(x).__name__}")
        if x.ndim != 5 or x.shape[1] != 2:
            raise ValueError(
                f"{self.name}: expected x of shape (B,2,D,H,W) (moving and fixed on channels), "
                f"got {tuple(x.shape)}"
            )
        if not x.is_floating_point():
            raise ValueError(f"{self.name}: expected a floating-point input, got {x.dtype}")
        spatial = tuple(x.shape[2:])
        if self.strict_size and spatial != self.img_size:
            raise ValueError(
                f"{self.name}: input spatial size {spatial} differs from the img_size {self.img_size} "
                "this network was built for; build it with the input's size"
            )
        if any(s % self.size_factor for s in spatial):
            raise ValueError(
                f"{self.name}: input spatial size {spatial} is not supported: every axis must be a "
                f"multiple of {self.size_factor}"
            )

    def displacement(self, x: torch.Tensor) -> torch.Tensor:
        """Predict the displacement (B,3,D,H,W) in voxels from a checked pair (B,2,D,H,W)."""
        raise NotImplementedError

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """x (B,2,D,H,W) -> (moving warped by the displacement (B,1,D,H,W), displacement (B,3,D,H,W) in voxels).

        Where the float32 oneDNN path applies (:mod:`ofg.models.onednn`) the layers run channels-last;
        the displacement is returned contiguous either way.
        """
        self.check_input(x)
        disp = self.displacement(channels_last_input(x)).contiguous()
        return warp(x[:, :1], disp), disp
