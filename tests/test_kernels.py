"""ofg.kernels: the numba refinement against ofg.fused's step (its specification) and the eager refinement."""

from __future__ import annotations

import subprocess
import sys

import numba
import numpy as np
import pytest
import torch
from test_fused import pair as fused_pair

from ofg import fused, kernels
from ofg.guidance import refine


def pair(size=(12, 14, 10), **options):
    """test_fused's random pair, at a size whose axes all differ from test_fused's default."""
    return fused_pair(size, **options)


def spec_energy_and_gradient(moving, fixed, disp, reg_weight, window):
    """ofg.fused's eager functions for one sample (D,H,W), (D,H,W), (3,D,H,W)."""
    sums = fused.box_sum(torch.stack([fixed, fixed * fixed]), window)
    mean_i = sums[0] / float(window ** 3)
    var_i = (sums[1] - sums[0] * mean_i).clamp_min(0)
    return fused.energy_and_gradient(disp, fused.pad_moving(moving), fixed, mean_i, var_i, reg_weight, window)


@pytest.mark.parametrize("window", [3, 5, 9, 13])  # 13 is wider than the 10- and 12-voxel axes
@pytest.mark.parametrize("scale", [0.3, 4.0])      # 4 voxels: many samples fall outside the volume
def test_one_step_energy_and_gradient_equal_the_specification_in_float64(window, scale):
    moving, fixed, disp = pair(scale=scale)
    sample = kernels.Sample((12, 14, 10), np.float64).load(moving[0, 0], fixed[0, 0], disp[0], 0.7, window)
    energy = sample.step(1, 0.1, adam=False)
    expected, expected_grad = spec_energy_and_gradient(moving[0, 0], fixed[0, 0], disp[0], 0.7, window)
    assert energy == pytest.approx(expected.item(), rel=1e-12)
    assert np.abs(sample.out - expected_grad.numpy()).max() <= 1e-12 * expected_grad.abs().max().item()
    assert torch.equal(torch.from_numpy(sample.u), disp[0])  # the gradient pass leaves the field alone
    assert sample.energy() == pytest.approx(expected.item(), rel=1e-12)


def test_window_sums_equal_the_zero_padded_box_sum():
    x = torch.rand(3, 9, 7, 11, dtype=torch.float64) - 0.3
    for window in (1, 3, 7, 15):
        planes, out = np.empty((3, 9, 7, 11)), np.empty((3, 9, 7, 11))
        kernels._box_planes(x.numpy(), planes, window // 2)
        kernels._box_depth(planes, out, window // 2, 3)
        expected = fused.box_sum(x, window).numpy()
        assert np.abs(out - expected).max() <= 1e-13 * np.abs(expected).max()


def test_refinement_equals_the_eager_refinement_in_float64():
    moving, fixed, disp = pair(batch=2)
    seen = []
    expected, expected_energies = refine(moving, fixed, disp, steps=5, lr=0.1, reg_weight=0.5, window=5)
    got, energies = refine(moving, fixed, disp, steps=5, lr=0.1, reg_weight=0.5, window=5, fused=True,
                           callback=lambda k, phi, e: seen.append((k, phi, e)))
    assert got.dtype == torch.float64 and got.shape == disp.shape
    assert (got - expected).abs().max().item() <= 1e-9 * expected.abs().max().item()
    assert np.allclose(energies, expected_energies, rtol=1e-9, atol=0) and len(energies) == 6
    assert [k for k, _, _ in seen] == list(range(6)) and [e for _, _, e in seen] == energies
    assert torch.equal(seen[0][1], disp) and torch.equal(seen[-1][1], got)


def test_callback_fields_are_the_eager_iterates():
    moving, fixed, disp = pair()
    eager, numba_fields = [], []
    refine(moving, fixed, disp, steps=3, callback=lambda k, phi, e: eager.append(phi))
    refine(moving, fixed, disp, steps=3, fused=True, callback=lambda k, phi, e: numba_fields.append(phi))
    assert len(numba_fields) == 4 and all(phi.shape == disp.shape for phi in numba_fields)
    for a, b in zip(eager, numba_fields):
        assert (a - b).abs().max().item() < 1e-10


def test_batch_of_two_equals_two_separate_calls():
    moving, fixed, disp = pair(batch=2, dtype=torch.float32)
    both, energies = kernels.refine(moving, fixed, disp, 4, 0.1, 1.0, 5, None)
    singles = [kernels.refine(moving[b:b + 1], fixed[b:b + 1], disp[b:b + 1], 4, 0.1, 1.0, 5, None) for b in (0, 1)]
    assert torch.equal(both, torch.cat([phi for phi, _ in singles]))
    assert np.allclose(energies, np.mean([e for _, e in singles], axis=0), rtol=1e-12)


def test_float32_is_within_round_off_of_float64():
    """Every value is computed in float64 and rounded on storage: closer to float64 than the eager float32 loop."""
    moving, fixed, disp = pair(size=(16, 16, 16), scale=0.5)
    exact, exact_energies = kernels.refine(moving, fixed, disp, 10, 0.1, 1.0, 9, None)
    got, energies = kernels.refine(moving.float(), fixed.float(), disp.float(), 10, 0.1, 1.0, 9, None)
    assert got.dtype == torch.float32
    assert np.allclose(energies, exact_energies, rtol=1e-6)
    diff = (got.double() - exact).abs().flatten()
    assert diff.max().item() < 1e-3 and torch.quantile(diff, 0.999).item() < 1e-5


def test_non_contiguous_inputs_and_workspaces_reused_across_shapes():
    moving, fixed, disp = pair(batch=2)
    expected, expected_energies = kernels.refine(moving, fixed, disp, 3, 0.1, 1.0, 5, None)
    kernels.refine(*pair(size=(8, 9, 7)), 2, 0.1, 1.0, 3, None)  # another shape replaces the workspaces
    strided = [t.transpose(2, 4).contiguous().transpose(2, 4) for t in (moving, fixed, disp)]
    assert not strided[2].is_contiguous()
    got, energies = kernels.refine(*strided, 3, 0.1, 1.0, 5, None)
    assert torch.equal(got, expected) and energies == expected_energies
    one, _ = kernels.refine(moving[1:], fixed[1:], disp[1:], 3, 0.1, 1.0, 5, None)  # fewer samples than kept
    assert torch.equal(one, expected[1:])
    assert disp.data_ptr() != got.data_ptr() and torch.equal(disp, pair(batch=2)[2])  # inputs untouched


def test_numba_uses_torch_thread_count(monkeypatch):
    monkeypatch.setattr(torch, "get_num_threads", lambda: 1)
    kernels.refine(*pair(), 1, 0.1, 1.0, 3, None)
    assert numba.get_num_threads() == 1


def test_torch_keeps_its_thread_count_after_numba_starts_its_threads():
    """In a fresh process, where numba's threading layer starts on this first call (its OpenMP layer
    sets the OpenMP thread count it shares with torch to every core)."""
    code = ("import torch; torch.set_num_threads(1); from ofg import kernels; "
            "z = torch.zeros(1, 1, 8, 8, 8); kernels.refine(z, z + 1, torch.zeros(1, 3, 8, 8, 8), 1, 0.1, 1.0, 3, None); "
            "print(torch.get_num_threads())")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.split() == ["1"]


def test_dispatch_cpu_dtypes_to_the_kernels_and_others_to_the_compiled_step(monkeypatch):
    calls = []
    monkeypatch.setattr(kernels, "refine", lambda *args: calls.append("kernels") or (args[2], []))
    monkeypatch.setattr(fused, "refine_compiled", lambda *args: calls.append("compiled") or (args[2], []))
    moving, fixed, disp = pair()
    fused.refine(moving, fixed, disp, 1, 0.1, 1.0, 3, None)
    fused.refine(moving.float(), fixed.float(), disp.float(), 1, 0.1, 1.0, 3, None)
    fused.refine(moving.bfloat16(), fixed.bfloat16(), disp.bfloat16(), 1, 0.1, 1.0, 3, None)
    fused.refine(moving.float(), fixed.float(), disp, 1, 0.1, 1.0, 3, None)  # mixed dtypes
    assert calls == ["kernels", "kernels", "compiled", "compiled"]


def test_non_finite_displacements_give_nan_energies_not_a_crash():
    """A NaN or infinite displacement must never become a memory index; the energies turn NaN as eagerly."""
    moving, fixed, disp = pair()
    disp[0, 0, 3, 4, 5], disp[0, 1, 2, 2, 2], disp[0, 2, 1, 1, 1] = float("nan"), float("inf"), -1e30
    _, energies = refine(moving, fixed, disp, steps=2, fused=True)
    _, expected = refine(moving, fixed, disp, steps=2)
    assert np.isnan(energies).all() and np.isnan(expected).all()


def test_even_windows_are_refused():
    moving, fixed, disp = pair()
    with pytest.raises(ValueError, match="odd"):
        refine(moving, fixed, disp, steps=1, window=4, fused=True)


def test_workspaces_are_kept_only_when_small(monkeypatch):
    kernels.refine(*pair(), 1, 0.1, 1.0, 3, None)
    assert kernels._SAMPLES  # 31 volumes of 12·14·10 float64 voxels: kept for the next call
    monkeypatch.setattr(kernels, "KEEP_BYTES", 31 * 12 * 14 * 10 * 8 - 1)
    expected, _ = kernels.refine(*pair(), 1, 0.1, 1.0, 3, None)
    assert not kernels._SAMPLES
    assert torch.equal(kernels.refine(*pair(), 1, 0.1, 1.0, 3, None)[0], expected)
