"""Where one training iteration goes: its phases timed one by one, and the operators with the most CPU time.

The phases replay :class:`ofg.train.Step` on the same objects, with a device synchronisation after
each: "network + warp" (the network's forward and the warp of the moving image), "loss" (the
objective; for OFG it includes the refinement of the target, also reported alone as "of which
target"), "backward" (autograd through loss, warp and network) and "optimiser" (Adam's step). The
operators come from ``torch.profiler`` over the same iterations: each operator's self CPU time per
iteration (all threads) and its share of the profiled CPU time. Work outside PyTorch's operators
(the numba kernels of the fused refinement) is in the phases but not among the operators.
"""

from __future__ import annotations

import statistics
import time
from typing import Any

import torch

from ofg.inference import forward
from ofg.runtime import synchronize

PHASES = ("network + warp", "loss", "of which target", "backward", "optimiser")


def timed_step(step: Any, moving: torch.Tensor, fixed: torch.Tensor, device: torch.device) -> dict[str, float]:
    """One optimiser step of ``step`` (an :class:`ofg.train.Step`) on moving→fixed; seconds per phase."""
    seconds: dict[str, float] = {}
    start = time.perf_counter()
    step.optimizer.zero_grad(set_to_none=True)
    warped, disp = forward(step.model, moving, fixed, amp=step.config.amp, channels_last=step.config.channels_last)
    synchronize(device)
    seconds["network + warp"], start = time.perf_counter() - start, time.perf_counter()
    loss, _, target_seconds = step.objective(moving, fixed, warped, disp, "bench", ())
    synchronize(device)
    seconds["loss"], seconds["of which target"] = time.perf_counter() - start, target_seconds
    start = time.perf_counter()
    loss.backward()
    synchronize(device)
    seconds["backward"], start = time.perf_counter() - start, time.perf_counter()
    step.optimizer.step()
    synchronize(device)
    seconds["optimiser"] = time.perf_counter() - start
    return seconds


def profile(step: Any, moving: torch.Tensor, fixed: torch.Tensor, device: torch.device, repeats: int,
            top: int = 8) -> dict[str, Any]:
    """Median seconds per phase over ``repeats`` steps, then the ``top`` operators by self CPU time over
    ``repeats`` profiled steps: ``{"phases": {phase: s}, "operators": [[name, s per iteration, share]]}``."""
    runs = [timed_step(step, moving, fixed, device) for _ in range(repeats)]
    phases = {phase: statistics.median(run[phase] for run in runs) for phase in PHASES}
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        for _ in range(repeats):
            timed_step(step, moving, fixed, device)
    events = [e for e in prof.key_averages() if e.self_cpu_time_total > 0]
    total = sum(e.self_cpu_time_total for e in events)
    ranked = sorted(events, key=lambda e: e.self_cpu_time_total, reverse=True)[:top]
    operators = [[e.key, e.self_cpu_time_total / 1e6 / repeats, e.self_cpu_time_total / total] for e in ranked]
    return {"phases": phases, "operators": operators}


def format_breakdown(breakdown: dict[str, Any]) -> str:
    """The breakdown as indented lines: phases in ms with their share of the step, then the operators."""
    phases = breakdown["phases"]
    step = sum(v for k, v in phases.items() if k != "of which target")
    lines = ["    phases: " + ", ".join(f"{k} {1e3 * v:.1f} ms ({v / step:.0%})" for k, v in phases.items())]
    lines += [f"    {name:<40}{1e3 * seconds:>8.1f} ms/it {share:>5.0%} of op CPU time"
              for name, seconds, share in breakdown["operators"]]
    return "\n".join(lines)
