"""Timing and memory helpers of the benchmarks: median wall time after a warm-up, peak tensor memory."""

from __future__ import annotations

import contextlib
import os
import statistics
import sys
import time
from typing import Callable, Iterator

import torch


@contextlib.contextmanager
def _quiet_stderr() -> Iterator[None]:
    """Silence the profiler's native start/stop lines, which are written straight to fd 2."""
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "w") as devnull:
            os.dup2(devnull.fileno(), 2)
            yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def median_seconds(fn: Callable[[], object], device: torch.device, repeats: int,
                   slow_seconds: float = 30.0) -> tuple[float, int]:
    """Median wall time of ``fn`` over ``repeats`` runs after one warm-up run; also the run count.

    When the warm-up alone takes longer than ``slow_seconds`` (the naive formulations at 128^3 on
    a CPU), that run is the only sample: its one-off start-up cost is negligible at that scale.
    """
    _sync(device)
    start = time.perf_counter()
    fn()
    _sync(device)
    first = time.perf_counter() - start
    if first > slow_seconds:
        return first, 1
    times = []
    for _ in range(repeats):
        _sync(device)
        start = time.perf_counter()
        fn()
        _sync(device)
        times.append(time.perf_counter() - start)
    return statistics.median(times), repeats


def peak_bytes(fn: Callable[[], object], device: torch.device) -> int:
    """Peak memory allocated by tensors while ``fn`` runs, above what was allocated before.

    CUDA: ``torch.cuda.max_memory_allocated``. CPU: the running sum of the profiler's
    allocation/free records (``profile_memory=True``), so only tensor memory counts.
    """
    if device.type == "cuda":
        _sync(device)
        base = torch.cuda.memory_allocated(device)
        torch.cuda.reset_peak_memory_stats(device)
        fn()
        _sync(device)
        return torch.cuda.max_memory_allocated(device) - base
    from torch.profiler import ProfilerActivity, profile
    with _quiet_stderr(), profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        fn()
    records = sorted((event.start_ns(), event.nbytes()) for event in prof.profiler.kineto_results.events()
                     if event.name() == "[memory]")
    current = peak = 0
    for _, nbytes in records:
        current += nbytes
        peak = max(peak, current)
    return peak
