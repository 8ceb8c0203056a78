"""ofg.models.onednn: float32 3-D convolutions on oneDNN at batch 1 (values, gradients, dispatch, switches).

Every convolution shape of the four small networks at the embedded sizes (48x64x48, 64x64x48; collected
with forward hooks) is checked against :func:`oracle`, the convolution's direct definition in float64, two
ways: (1) on small-integer data every partial sum is an integer below 2**24, so float32 sums in any order
are exact and output and gradients must equal the oracle bit for bit (this checks the slab bookkeeping);
(2) on random data a float32 sum of K products, in any order, is off by at most gamma_K * sum|products|,
gamma_K = K*u/(1 - K*u), u = 2**-24 (Higham, Accuracy and Stability of Numerical Algorithms, 2nd ed.,
eq. 3.5), checked element by element, for our path and for plain F.conv3d alike (this would catch
reduced-precision arithmetic, which (1) cannot).
"""

from __future__ import annotations

import copy
import functools
import itertools
import os
import re
import subprocess
import sys

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.profiler import ProfilerActivity, profile

from ofg.losses import diffusion_loss, ncc_loss
from ofg.models import MODEL_NAMES, build_model, init_flow_head_, onednn
from ofg.models.common import FLOW_INIT_STD, cat_channels
from ofg.models.onednn import Conv3d, conv3d, padded_backward, slab_backward

SIZES = ((48, 64, 48), (64, 64, 48))
U = 2.0 ** -24

pytestmark = pytest.mark.skipif(not torch.backends.mkldnn.is_available(), reason="torch built without oneDNN")


@functools.lru_cache(maxsize=None)
def network_conv_shapes(name: str) -> tuple[tuple, ...]:
    """The distinct (input shape, weight shape, bias, stride, padding, dilation) of the Conv3d layers of the
    small ``name`` at both embedded sizes, from one forward pass each with hooks (groups are all 1)."""
    shapes: dict[tuple, None] = {}

    def hook(module: nn.Conv3d, inputs: tuple[torch.Tensor, ...], _output: torch.Tensor) -> None:
        assert module.groups == 1 and module.padding_mode == "zeros"
        shapes[(tuple(inputs[0].shape), tuple(module.weight.shape), module.bias is not None, module.stride,
                module.padding, module.dilation)] = None

    for size in SIZES:
        torch.manual_seed(0)
        model = build_model(name, size, size="small")
        for module in model.modules():
            if isinstance(module, nn.Conv3d):
                module.register_forward_hook(hook)
        with torch.no_grad():
            model(torch.rand(1, 2, *size))
    return tuple(shapes)


def oracle(x: torch.Tensor, w: torch.Tensor, b: torch.Tensor | None, grad_out: torch.Tensor, stride, padding,
           dilation) -> tuple[torch.Tensor, ...]:
    """(y, grad x, grad w, grad b) of conv3d (groups 1) in float64 from its definition, one kernel offset at a
    time: y[n,o,i] = b[o] + sum_{c,k} w[o,c,k] xpad[n,c,s*i + d*k]; the gradients by the same index map."""
    x, w, grad_out = x.double(), w.double(), grad_out.double()
    pads = [p for p in reversed(padding) for _ in range(2)]
    xp = F.pad(x, pads)
    y, grad_xp, grad_w = torch.zeros_like(grad_out), torch.zeros_like(xp), torch.zeros_like(w)
    for k in itertools.product(*(range(n) for n in w.shape[2:])):
        index = (slice(None), slice(None)) + tuple(
            slice(kk * d, kk * d + s * (n - 1) + 1, s) for kk, d, s, n in zip(k, dilation, stride, grad_out.shape[2:]))
        patch, wk = xp[index], w[(slice(None), slice(None)) + k]
        y += torch.einsum("oc,ncdhw->nodhw", wk, patch)
        grad_w[(slice(None), slice(None)) + k] = torch.einsum("nodhw,ncdhw->oc", grad_out, patch)
        grad_xp[index] += torch.einsum("oc,nodhw->ncdhw", wk, grad_out)
    if b is not None:
        y += b.double().view(1, -1, 1, 1, 1)
    grad_x = grad_xp[(slice(None), slice(None)) + tuple(slice(p, p + n) for p, n in zip(padding, x.shape[2:]))]
    return y, grad_x, grad_w, (grad_out.sum((0, 2, 3, 4)) if b is not None else None)


def float32_conv(fn, x: torch.Tensor, w: torch.Tensor, b: torch.Tensor | None, grad_out: torch.Tensor, stride,
                 padding, dilation) -> tuple[torch.Tensor, ...]:
    """(y, grad x, grad w, grad b) of ``fn`` (conv3d's signature) by autograd, float32."""
    leaves = [t.float().requires_grad_() for t in (x, w)] + ([b.float().requires_grad_()] if b is not None else [])
    y = fn(leaves[0], leaves[1], leaves[2] if b is not None else None, stride, padding, dilation)
    grads = torch.autograd.grad(y, leaves, grad_out.float())
    return (y.detach(), *grads) + ((None,) if b is None else ())


def _inputs(shape: tuple, generator: torch.Generator, integers: bool) -> tuple[torch.Tensor, ...]:
    """x, w, b (or None), grad_out of a layer shape: integers in [-2, 2], or uniform in [-1, 1]."""
    x_shape, w_shape, bias, stride, padding, dilation = shape
    out = [1, w_shape[0]] + [(n + 2 * p - d * (k - 1) - 1) // s + 1
                             for n, k, s, p, d in zip(x_shape[2:], w_shape[2:], stride, padding, dilation)]

    def draw(size):
        if integers:
            return torch.randint(-2, 3, size, generator=generator).float()
        return torch.rand(size, generator=generator) * 2 - 1

    return draw(x_shape), draw(w_shape), draw((w_shape[0],)) if bias else None, draw(out)


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_every_conv3d_of_the_networks_is_the_onednn_conv(name):
    model = build_model(name, 32, size="small")
    convs = [m for m in model.modules() if isinstance(m, nn.Conv3d)]
    assert convs and all(isinstance(m, Conv3d) for m in convs)


def test_state_dict_is_that_of_nn_conv3d():
    torch.manual_seed(0)
    plain, ours = nn.Conv3d(4, 6, 3, padding=1), Conv3d(4, 6, 3, padding=1)
    assert list(ours.state_dict()) == list(plain.state_dict())
    ours.load_state_dict(plain.state_dict())  # an old checkpoint's layer loads unchanged
    assert torch.equal(ours.weight, plain.weight) and torch.equal(ours.bias, plain.bias)


@pytest.mark.parametrize("depth,kernel,stride,padding,dilation", [
    (d, k, s, p, dil) for d, k, s, p, dil in itertools.product((3, 4, 7, 12), (1, 3, 5), (1, 2), (0, 1, 2), (1, 2))
    if (d + 2 * p - dil * (k - 1) - 1) // s + 1 >= 2])
@pytest.mark.parametrize("groups", [1, 2])
@pytest.mark.parametrize("backward,batch", [(slab_backward, 1), (padded_backward, 1), (padded_backward, 2)])
def test_backward_is_convolution_backward_in_float64(backward, batch, depth, kernel, stride, padding, dilation, groups):
    """The bookkeeping of the two D-slabs (odd output depths, strides, dilations, groups) and of the explicit
    D padding, without rounding."""
    generator = torch.Generator().manual_seed(depth * 100 + kernel)
    x = torch.randn(batch, 4, depth, 11, 10, generator=generator, dtype=torch.float64)
    w = torch.randn(6, 4 // groups, kernel, kernel, kernel, generator=generator, dtype=torch.float64)
    args = ([stride] * 3, [padding] * 3, [dilation] * 3)
    grad_out = torch.randn_like(F.conv3d(x, w, None, *args, groups))
    expected = torch.ops.aten.convolution_backward(grad_out, x, w, [6], *args, False, [0] * 3, groups, [True] * 3)
    got = backward(grad_out, x, w, True, *args, groups, [True] * 3)
    for e, g in zip(expected, got):
        torch.testing.assert_close(g, e, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("pad_depth", [True, False], ids=["depth-padded", "pytorch-padded"])
@pytest.mark.parametrize("name", MODEL_NAMES)
def test_network_convs_equal_conv3d_on_integer_data(name, pad_depth, monkeypatch):
    """Bit for bit the oracle's and plain F.conv3d's values and gradients, every layer shape, with the
    backward's explicit D padding and without (both CPU kinds' choices, onednn.PAD_DEPTH)."""
    monkeypatch.setattr(onednn, "PAD_DEPTH", pad_depth)
    generator = torch.Generator().manual_seed(1)
    for shape in network_conv_shapes(name):
        x, w, b, grad_out = _inputs(shape, generator, integers=True)
        with onednn.enabled(True):
            ours = float32_conv(conv3d, x, w, b, grad_out, *shape[3:])
        plain = float32_conv(F.conv3d, x, w, b, grad_out, *shape[3:])
        exact = oracle(x, w, b, grad_out, *shape[3:])
        for what, o, p, e in zip(("y", "grad x", "grad w", "grad b"), ours, plain, exact):
            if e is not None:
                assert torch.equal(o.double(), e) and torch.equal(p, o), f"{name} layer {shape}: {what} differs"


@pytest.mark.slow
@pytest.mark.parametrize("name", MODEL_NAMES)
def test_network_convs_are_within_float32_rounding(name):
    """Random data: our and plain F.conv3d's errors against the oracle within gamma_K * sum|terms|, every layer shape."""
    generator = torch.Generator().manual_seed(2)
    for shape in network_conv_shapes(name):
        x, w, b, grad_out = _inputs(shape, generator, integers=False)
        args = shape[3:]
        exact = oracle(x, w, b, grad_out, *args)
        magnitude = oracle(x.abs(), w.abs(), None if b is None else b.abs(), grad_out.abs(), *args)
        kvol, voxels = w[0, 0].numel(), grad_out[0, 0].numel()
        terms = (w.shape[1] * kvol + (b is not None), w.shape[0] * kvol, voxels, voxels)  # K per y, gx, gw, gb
        with onednn.enabled(True):
            ours = float32_conv(conv3d, x, w, b, grad_out, *args)
        plain = float32_conv(F.conv3d, x, w, b, grad_out, *args)
        for what, k, e, m, o, p in zip(("y", "grad x", "grad w", "grad b"), terms, exact, magnitude, ours, plain):
            if e is None:
                continue
            bound = (k * U / (1 - k * U) + 2.0 ** -50) * m
            assert ((p.double() - e).abs() <= bound).all(), f"plain F.conv3d: {name} {shape} {what}"
            worst = ((o.double() - e).abs() / bound.clamp_min(1e-300)).max().item()
            assert worst <= 1, f"{name} layer {shape}: {what} error {worst:.2f} x the bound"


@pytest.mark.parametrize("pad_depth", [True, False])
@pytest.mark.parametrize("groups,stride,dilation,depth", [(2, 1, 1, 9), (4, 2, 1, 9), (1, 1, 2, 9), (2, 2, 2, 10)])
def test_groups_strides_dilations_equal_conv3d_on_integer_data(groups, stride, dilation, depth, pad_depth, monkeypatch):
    """Options the networks do not use, bit for bit F.conv3d's values and gradients on integer data."""
    monkeypatch.setattr(onednn, "PAD_DEPTH", pad_depth)
    generator = torch.Generator().manual_seed(3)
    x, w, b = (torch.randint(-2, 3, size, generator=generator).float()
               for size in ((1, 8, depth, 12, 10), (8, 8 // groups, 3, 3, 3), (8,)))
    args = ((stride,) * 3, (dilation,) * 3, (dilation,) * 3, groups)
    grad_out = torch.randint(-2, 3, F.conv3d(x, w, b, *args).shape, generator=generator).float()

    def run(fn):
        leaves = [t.clone().requires_grad_() for t in (x, w, b)]
        y = fn(*leaves, *args)
        return (y.detach(), *torch.autograd.grad(y, leaves, grad_out))

    ours = run(conv3d)
    for o, p in zip(ours, run(F.conv3d)):
        assert torch.equal(o, p)


def _conv_events(model: nn.Module, x: torch.Tensor, capfd) -> tuple[set[str], str]:
    """(aten op names, oneDNN verbose output) of one forward and backward of ``model`` on ``x``."""
    capfd.readouterr()
    with profile(activities=[ProfilerActivity.CPU]) as prof, torch.backends.mkldnn.verbose(
            torch.backends.mkldnn.VERBOSE_ON):
        model(x)[1].square().sum().backward()
    return {event.key for event in prof.key_averages()}, capfd.readouterr().out


def test_batch_one_runs_forward_and_backward_on_onednn(capfd):
    """VoxelMorph-small at 48x64x48, batch 1: without the path 8 of its 11 convs run slow_conv3d and only
    the 3 full-resolution ones reach oneDNN's backward; with it every conv runs oneDNN both ways, its weight
    gradients without padding along D (what oneDNN's AVX2 kernel needs, see ofg.models.onednn) except, on
    AVX-512, those of the 3 layers PyTorch sends to oneDNN itself."""
    torch.manual_seed(0)
    model = build_model("voxelmorph", (48, 64, 48), size="small")
    n_convs = sum(isinstance(m, nn.Conv3d) for m in model.modules())
    x = torch.rand(1, 2, 48, 64, 48)
    for flag in (True, False):
        with onednn.enabled(flag):
            model(x)[1].sum().backward()  # warm-up: oneDNN's one-off start-up lines
            ops, verbose = _conv_events(model, x, capfd)
        slow = {op for op in ops if "slow_conv" in op}
        lines = [line for line in verbose.splitlines() if ",exec,cpu,convolution," in line]
        weights = sum(",backward_weights," in line for line in lines)
        data = sum(",backward_data," in line for line in lines)
        if flag:
            assert not slow and weights == n_convs and data == n_convs - 1, (slow, weights, data)
            padded = [bool(re.search(r"kd\d+sd\d+dd\d+pd0_", line)) for line in lines if ",backward_weights," in line]
            assert sum(padded) == (n_convs if onednn.PAD_DEPTH else n_convs - 3), padded  # 8 slab layers at least
        else:
            assert slow and weights == 3 and data == 3, (slow, weights, data)


@pytest.mark.parametrize("flow_std", [FLOW_INIT_STD, 0.1], ids=["at-init", "displacing"])
def test_voxelmorph_loss_gradients_match_with_and_without_the_path(flow_std):
    """Loss and every parameter gradient of one NCC + diffusion step of VoxelMorph-small at 48x64x48, float32
    with and without the path (relative norm difference <= 1e-3 per parameter; a lost slab row or overlap
    would be ~1/24), and against float64 where float32 itself is accurate. At initialisation (flow head
    N(0, 1e-5), displacements of ~1e-5 voxels) it is not: the warp's float32 grid, identity + u, rounds u
    by ~10 % and every float32 gradient is 5-13 % off float64 on both paths alike. With a flow head
    N(0, 0.1) (displacements of a fraction of a voxel, as in training) both are within 1e-3 of float64
    (measured: <= 1.2e-5; LeakyReLU kinks flipped by rounding make part of that)."""
    torch.manual_seed(0)
    model = build_model("voxelmorph", (48, 64, 48), size="small")
    init_flow_head_(model.flow_head, flow_std)
    x = torch.rand(1, 2, 48, 64, 48, generator=torch.Generator().manual_seed(0))

    def loss_and_grads(net: nn.Module, pair: torch.Tensor) -> tuple[float, dict[str, torch.Tensor]]:
        net.zero_grad(set_to_none=True)
        warped, disp = net(pair)
        loss = ncc_loss(pair[:, 1:], warped) + diffusion_loss(disp)
        loss.backward()
        return loss.item(), {k: p.grad.double() for k, p in net.named_parameters()}

    exact = loss_and_grads(copy.deepcopy(model).double(), x.double())
    runs = {}
    for flag in (True, False):
        with onednn.enabled(flag):
            runs[flag] = loss_and_grads(model, x)
        assert abs(runs[flag][0] - exact[0]) <= 1e-6 * abs(exact[0])
    for key, grad in runs[True][1].items():
        scale = exact[1][key].norm()
        assert (grad - runs[False][1][key]).norm() <= 1e-3 * scale, f"{key}: on and off differ"
        for flag in (True, False) if flow_std > FLOW_INIT_STD else ():
            error = (runs[flag][1][key] - exact[1][key]).norm() / scale
            assert error <= 1e-3, f"path {'on' if flag else 'off'}: {key} relative error {error:.1e} to float64"


def test_everything_else_is_plain_conv3d():
    x, w, b = torch.randn(1, 4, 6, 7, 5), torch.randn(6, 4, 3, 3, 3), torch.randn(6)
    args = ((1, 1, 1), (1, 1, 1), (1, 1, 1))
    assert onednn.takes_onednn_path(x, w)
    for case, data in {"float64": (x.double(), w.double(), b.double()), "batch 2": (x.expand(2, -1, -1, -1, -1), w, b),
                       "depth 1": (x[:, :, :1], w, b)}.items():
        y = conv3d(*data, *args) if case != "depth 1" else conv3d(*data, (2, 1, 1), (1, 1, 1))  # output depth 1
        assert "OneDNN" not in type(y.grad_fn).__name__, case
    with onednn.enabled(False):
        assert not onednn.takes_onednn_path(x, w) and torch.equal(conv3d(x, w, b, *args), F.conv3d(x, w, b, *args))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert not onednn.takes_onednn_path(x, w) and conv3d(x, w, b, *args).dtype == torch.bfloat16
    circular = Conv3d(4, 6, 3, padding=1, padding_mode="circular")
    assert torch.equal(circular(x), nn.Conv3d.forward(circular, x))


def test_compiles_to_plain_conv3d_without_graph_break():
    layer = Conv3d(2, 4, 3, padding=1)
    x = torch.rand(1, 2, 6, 8, 6)
    compiled = torch.compile(layer, fullgraph=True)  # a graph break would raise
    torch.testing.assert_close(compiled(x), F.conv3d(x, layer.weight, layer.bias, padding=1))


def test_outputs_channels_last_and_the_displacement_contiguous():
    layer = Conv3d(2, 4, 3, padding=1)
    assert layer(torch.rand(1, 2, 8, 8, 8)).is_contiguous(memory_format=torch.channels_last_3d)
    _, disp = build_model("voxelmorph", 32, size="small")(torch.rand(1, 2, 32, 32, 32))
    assert disp.is_contiguous()


def test_cat_channels_is_torch_cat_with_gradients_in_the_inputs_layouts():
    channels_last = torch.randn(1, 3, 4, 5, 6).contiguous(memory_format=torch.channels_last_3d).requires_grad_()
    contiguous = torch.randn(1, 2, 4, 5, 6, requires_grad=True)
    frozen = torch.randn(1, 1, 4, 5, 6)
    grad = torch.randn(1, 6, 4, 5, 6).contiguous(memory_format=torch.channels_last_3d)
    ours = cat_channels([channels_last, contiguous, frozen])
    assert torch.equal(ours, torch.cat([channels_last, contiguous, frozen], 1))
    got = torch.autograd.grad(ours, [channels_last, contiguous], grad)
    assert torch.equal(got[0], grad[:, :3]) and torch.equal(got[1], grad[:, 3:5])
    assert got[0].is_contiguous(memory_format=torch.channels_last_3d) and got[1].is_contiguous()


def test_environment_variable_turns_it_off():
    code = "from ofg.models import onednn; print(onednn.is_enabled())"
    for value, expected in (("0", "False"), ("1", "True")):
        env = {**os.environ, onednn.ENV_VAR: value}
        out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True).stdout
        assert out.strip() == expected
