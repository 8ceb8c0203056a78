"""Float32 3-D convolutions on oneDNN at batch 1 on the CPU, forward and backward.

PyTorch's CPU dispatch (``ConvParams::use_mkldnn`` in ATen's Convolution.cpp) sends a float32
convolution to oneDNN only when, for a 3x3x3 kernel, the batch is > 1, groups > 1 or
N·C·D·H > 20,480. At batch 1 most layers of a small 3-D U-Net miss that threshold and run the im2col
``slow_conv3d``, forward and backward (24->16 channels at 24x32x24: 119 ms against 12 ms for both
directions, 1 thread, AVX-512); the bfloat16 path (autocast) always goes to oneDNN. :class:`Conv3d`
(an ``nn.Conv3d``, same parameters and state dict) computes the same convolution on oneDNN instead,
for an input x (N,C,D,H,W) float32 on the CPU, outside autocast and ``torch.compile``, zero padding:

- x and the weight are laid out channels-last (``channels_last_3d``), so oneDNN runs its NDHWC
  kernels without reordering to its blocked layout (2-4x faster backward at 8 channels); the output
  is channels-last (the next layer takes it as it is; :class:`ofg.models.common.RegistrationNet`
  feeds its input channels-last and returns the displacement contiguous);
- :class:`_OneDNNConv3dFunction`: the forward is ``aten.mkldnn_convolution`` (the op ``F.conv3d``
  reaches when PyTorch picks oneDNN); the backward is ``aten.convolution_backward`` of x zero-padded
  along D with padding 0 along D (:func:`padded_backward`) where PyTorch sends that to oneDNN,
  else (batch 1) of x cut along D into two overlapping slabs as a batch of 2 (:func:`slab_backward`,
  :func:`slab_plan`), which it does; the input gradient is summed back over the overlap. The
  explicit D padding also matters on its own: oneDNN 3.12's AVX2 weight-gradient kernel declines
  channels-last problems padded along D and falls back to a gemm 2-3x slower (18->8 channels at
  48x64x48: 108 ms against 40 ms). Where ATen runs AVX-512 kernels (:data:`PAD_DEPTH` False) the
  layers PyTorch already sends to oneDNN keep its own path (``F.conv3d``, channels-last).

Each output value is the same float32 sum as ``F.conv3d``'s, in another order: results agree to
float32 rounding, and bit for bit on small-integer data (tests/test_onednn.py). Anything else
(another device or dtype, autocast, padding modes other than zeros, a batch-1 output of depth 1 that
PyTorch would not send to oneDNN) is ``F.conv3d`` unchanged. On by default; ``OFG_ONEDNN_CONV=0``
in the environment, :func:`set_enabled` or the :func:`enabled` context manager turn it off (every
convolution is then plain ``F.conv3d``).
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from typing import Iterator, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.autograd.function import once_differentiable

CHANNELS_LAST = torch.channels_last_3d
#: whether the backward pads D explicitly where PyTorch sends a problem to oneDNN at batch N (module
#: docstring): not where ATen runs AVX-512 kernels, whose oneDNN weight-gradient kernel takes D padding and
#: the copy only costs (VoxelMorph-small iteration +6-7 % with it there, -20-25 % with it on AVX2)
PAD_DEPTH = torch.backends.cpu.get_cpu_capability() != "AVX512"
ENV_VAR = "OFG_ONEDNN_CONV"
_state = {"enabled": os.environ.get(ENV_VAR, "1").strip().lower() not in ("0", "false", "no", "off")}


def is_enabled() -> bool:
    """Whether :class:`Conv3d` may take the oneDNN path (default True; ``OFG_ONEDNN_CONV=0`` turns it off)."""
    return _state["enabled"]


def set_enabled(flag: bool) -> bool:
    """Turn the oneDNN path on or off for the whole process; returns the previous setting."""
    previous, _state["enabled"] = _state["enabled"], bool(flag)
    return previous


@contextlib.contextmanager
def enabled(flag: bool) -> Iterator[None]:
    """Run a block with the oneDNN path on (``True``) or off (``False``), then restore the setting."""
    previous = set_enabled(flag)
    try:
        yield
    finally:
        set_enabled(previous)


@dataclass(frozen=True)
class SlabPlan:
    """How a convolution along D is cut into two slabs of equal size (all lengths in rows along D).

    The input, zero-padded by ``front`` rows before and ``back`` after, gives slab 0 at padded rows
    [0, in_rows) and slab 1 at [start1, start1 + in_rows); each makes ``rows`` output rows, output
    rows [0, rows) and [rows, 2·rows). When ``out_rows`` is odd the last row of slab 1 lies past the
    output and is dropped (its gradient is zero).
    """

    out_rows: int
    rows: int
    in_rows: int
    start1: int
    front: int
    back: int


def slab_plan(depth: int, kernel: int, stride: int, padding: int, dilation: int) -> SlabPlan:
    """The :class:`SlabPlan` of a convolution along an axis of ``depth`` input rows (needs >= 2 output rows)."""
    out_rows = (depth + 2 * padding - dilation * (kernel - 1) - 1) // stride + 1
    if out_rows < 2:
        raise ValueError(f"need at least 2 output rows to cut into slabs, got {out_rows}")
    rows = (out_rows + 1) // 2
    in_rows = (rows - 1) * stride + dilation * (kernel - 1) + 1
    start1 = rows * stride
    return SlabPlan(out_rows, rows, in_rows, start1, padding, max(0, start1 + in_rows - depth - padding))


def _slabs(x: torch.Tensor, plan: SlabPlan) -> torch.Tensor:
    """x (1,C,D,H,W) -> the two slabs (2,C,in_rows,H,W), channels-last."""
    padded = F.pad(x, (0, 0, 0, 0, plan.front, plan.back))
    pair = (padded[:, :, :plan.in_rows], padded[:, :, plan.start1:plan.start1 + plan.in_rows])
    return torch.cat(pair, 0).contiguous(memory_format=CHANNELS_LAST)


def _as_slab_batch(grad: torch.Tensor, plan: SlabPlan) -> torch.Tensor:
    """grad (1,C,out_rows,H,W) -> (2,C,rows,H,W): rows [0, rows) and [rows, 2·rows) (zero past the end).

    In channels-last memory (D,H,W,C) the two halves along D are the two samples: a view, no copy."""
    if 2 * plan.rows != plan.out_rows:
        grad = F.pad(grad, (0, 0, 0, 0, 0, 2 * plan.rows - plan.out_rows))
    grad = grad.contiguous(memory_format=CHANNELS_LAST)
    _, c, _, h, w = grad.shape
    return grad.permute(0, 2, 3, 4, 1).reshape(2, plan.rows, h, w, c).permute(0, 4, 1, 2, 3)


def _sum_slabs(grad_slabs: torch.Tensor, depth: int, plan: SlabPlan) -> torch.Tensor:
    """Gradient of the two slabs (2,C,in_rows,H,W) -> gradient of x (1,C,depth,H,W), summed over the overlap."""
    _, c, _, h, w = grad_slabs.shape
    padded = grad_slabs.new_zeros((1, plan.front + depth + plan.back, h, w, c)).permute(0, 4, 1, 2, 3)
    padded[:, :, :plan.in_rows] += grad_slabs[:1]
    padded[:, :, plan.start1:plan.start1 + plan.in_rows] += grad_slabs[1:]
    return padded[:, :, plan.front:plan.front + depth]


def slab_backward(grad_out: torch.Tensor, x: torch.Tensor, weight: torch.Tensor, bias: bool,
                  stride: Sequence[int], padding: Sequence[int], dilation: Sequence[int], groups: int,
                  mask: Sequence[bool]) -> tuple[torch.Tensor | None, torch.Tensor | None, torch.Tensor | None]:
    """(grad x, grad weight, grad bias) of conv3d(x (1,C,D,H,W), weight) from ``grad_out`` (1,C',D',H',W').

    ``aten.convolution_backward`` of the two D-slabs as a batch of 2 (oneDNN for float32 on the CPU;
    any dtype works). ``mask`` says which of the three are wanted; the others are None.
    """
    plan = slab_plan(x.shape[2], weight.shape[2], stride[0], padding[0], dilation[0])
    grads = torch.ops.aten.convolution_backward(
        _as_slab_batch(grad_out, plan), _slabs(x, plan), weight, [weight.shape[0]] if bias else None,
        list(stride), [0, padding[1], padding[2]], list(dilation), False, [0, 0, 0], groups,
        [mask[0], mask[1], mask[2] and bias])
    grad_x = _sum_slabs(grads[0], x.shape[2], plan) if mask[0] else None
    return grad_x, grads[1] if mask[1] else None, grads[2] if mask[2] and bias else None


def padded_backward(grad_out: torch.Tensor, x: torch.Tensor, weight: torch.Tensor, bias: bool,
                    stride: Sequence[int], padding: Sequence[int], dilation: Sequence[int], groups: int,
                    mask: Sequence[bool]) -> tuple[torch.Tensor | None, torch.Tensor | None, torch.Tensor | None]:
    """:func:`slab_backward`'s result for x (N,C,D,H,W) of any batch, without slabs: ``aten.convolution_backward``
    of x zero-padded along D (padding 0 along D), for the problems PyTorch sends to oneDNN at batch N."""
    front = padding[0]
    grads = torch.ops.aten.convolution_backward(
        grad_out.contiguous(memory_format=CHANNELS_LAST), _pad_depth(x, front, front), weight,
        [weight.shape[0]] if bias else None, list(stride), [0, padding[1], padding[2]], list(dilation), False,
        [0, 0, 0], groups, [mask[0], mask[1], mask[2] and bias])
    grad_x = grads[0][:, :, front:front + x.shape[2]] if mask[0] else None
    return grad_x, grads[1] if mask[1] else None, grads[2] if mask[2] and bias else None


def _pad_depth(x: torch.Tensor, front: int, back: int) -> torch.Tensor:
    """x (N,C,D,H,W) with ``front`` and ``back`` zero rows along D, channels-last."""
    return F.pad(x, (0, 0, 0, 0, front, back)).contiguous(memory_format=CHANNELS_LAST)


class _OneDNNConv3dFunction(torch.autograd.Function):
    """conv3d of x (N,C,D,H,W) float32: forward ``aten.mkldnn_convolution``, backward :func:`padded_backward`
    where PyTorch sends the D-padded problem to oneDNN (``padded``), else :func:`slab_backward` (batch 1)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, stride: list[int],
                padding: list[int], dilation: list[int], groups: int, padded: bool) -> torch.Tensor:
        ctx.save_for_backward(x, weight)
        ctx.conv = (bias is not None, stride, padding, dilation, groups, padded)
        return torch.ops.aten.mkldnn_convolution(x, weight, bias, padding, stride, dilation, groups)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_out: torch.Tensor):
        x, weight = ctx.saved_tensors
        bias, stride, padding, dilation, groups, padded = ctx.conv
        backward = padded_backward if padded else slab_backward
        grads = backward(grad_out, x, weight, bias, stride, padding, dilation, groups, ctx.needs_input_grad[:3])
        return (*grads, None, None, None, None, None)


def takes_onednn_path(x: torch.Tensor, weight: torch.Tensor) -> bool:
    """Whether :func:`conv3d` computes conv3d(x, weight) on its oneDNN path (the module docstring).

    Under ``torch.compile`` it is False before anything else is looked at (dynamo does not trace
    ``torch.backends.mkldnn.is_available``), so the traced network is plain ``F.conv3d``."""
    if torch.compiler.is_compiling() or not is_enabled():
        return False
    return (x.device.type == "cpu" and x.dtype == torch.float32 and weight.dtype == torch.float32 and x.dim() == 5
            and not x.is_mkldnn and torch.backends.mkldnn.is_available() and torch.backends.mkldnn.enabled
            and not torch.is_autocast_enabled("cpu"))


def channels_last_input(x: torch.Tensor) -> torch.Tensor:
    """A network input x (N,C,D,H,W) laid out channels-last where the oneDNN path applies to it, else x.

    The layers' outputs are channels-last there; an input in the same layout keeps concatenations
    with it (U-Net skips of the input pair) channels-last instead of converting at every layer.
    """
    return x.contiguous(memory_format=CHANNELS_LAST) if takes_onednn_path(x, x) else x


def _pytorch_picks_onednn(x: torch.Tensor, weight: torch.Tensor, padding: list[int], stride: list[int],
                          dilation: list[int], groups: int, pad_depth: bool) -> bool:
    """Whether PyTorch's dispatch sends conv3d(x, weight) to oneDNN; with ``pad_depth``, that of x
    zero-padded along D (padding 0 along D). It looks at shapes only: a zero-size tensor expanded to
    the padded shape stands in for the copy."""
    n, c, d, h, w = x.shape
    front = padding[0] if pad_depth else 0
    probe = x.new_zeros(()).expand(n, c, d + 2 * front, h, w)
    try:
        backend = torch._C._select_conv_backend(probe, weight, None, stride, [padding[0] - front] + padding[1:],
                                                dilation, False, [0, 0, 0], groups)
    except (AttributeError, RuntimeError, TypeError):  # a torch without this helper: assume it does not
        return False
    return backend == torch._C._ConvBackend.Mkldnn


def conv3d(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None, stride: Sequence[int] = (1, 1, 1),
           padding: Sequence[int] = (0, 0, 0), dilation: Sequence[int] = (1, 1, 1), groups: int = 1) -> torch.Tensor:
    """``F.conv3d`` (zero padding; stride, padding, dilation as 3 ints each) on oneDNN where it applies.

    x (N,C,D,H,W), weight (C',C/groups,kD,kH,kW) -> (N,C',D',H',W'). On the oneDNN path (see
    :func:`takes_onednn_path`) the output is channels-last; elsewhere it is ``F.conv3d``'s.
    """
    stride, padding, dilation = list(stride), list(padding), list(dilation)
    if not takes_onednn_path(x, weight):
        return F.conv3d(x, weight, bias, stride, padding, dilation, groups)
    laid_out = (x.contiguous(memory_format=CHANNELS_LAST), weight.contiguous(memory_format=CHANNELS_LAST))
    if not PAD_DEPTH and _pytorch_picks_onednn(x, weight, padding, stride, dilation, groups, pad_depth=False):
        return F.conv3d(*laid_out, bias, stride, padding, dilation, groups)  # PyTorch's own oneDNN path
    padded = PAD_DEPTH and _pytorch_picks_onednn(x, weight, padding, stride, dilation, groups, pad_depth=True)
    out_depth = (x.shape[2] + 2 * padding[0] - dilation[0] * (weight.shape[2] - 1) - 1) // stride[0] + 1
    if not padded and (x.shape[0] > 1 or out_depth < 2):  # no slabs to cut (the layer is tiny anyway)
        return F.conv3d(x, weight, bias, stride, padding, dilation, groups)
    return _OneDNNConv3dFunction.apply(*laid_out, bias, stride, padding, dilation, groups, padded)


class Conv3d(nn.Conv3d):
    """``nn.Conv3d`` whose zero-padded convolutions go through :func:`conv3d` (oneDNN on CPU float32).

    Same constructor, parameters and state dict as ``nn.Conv3d``; (N,C,D,H,W) -> (N,C',D',H',W').
    """

    def _conv_forward(self, input: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
        if self.padding_mode != "zeros" or isinstance(self.padding, str):
            return super()._conv_forward(input, weight, bias)
        return conv3d(input, weight, bias, self.stride, self.padding, self.dilation, self.groups)
