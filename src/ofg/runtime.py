"""Where the work runs: device resolution, CPU threads and peak-memory measurement.

Nothing here changes numbers; these helpers only choose and observe the machine.
"""

from __future__ import annotations

import os
import platform
import resource
import sys
from functools import wraps
from pathlib import Path
from typing import Callable, TypeVar

import numpy as np
import torch

from ofg import __version__ as ofg_version

from ofg.machine import available_cores

#: dtype of the network forward under ``amp`` (losses and warps stay float32)
AMP_DTYPE = torch.bfloat16
# ITK's thread count, read when ANTsPy first runs a filter
ITK_THREADS = "ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS"


def resolve_device(name: str | torch.device) -> torch.device:
    """``auto`` → cuda when available, else cpu; a CUDA request on a machine without it is refused."""
    if isinstance(name, torch.device):
        name = str(name)
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"config key device is {name!r} but CUDA is not available on this machine "
                             "(torch.cuda.is_available() is False); use device: cpu or auto")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise ValueError(f"config key device is {name!r} but only {torch.cuda.device_count()} CUDA "
                             "device(s) exist")
    return device


def use_threads(threads: int) -> int:
    """Give torch ``threads`` CPU threads, but never more than this process may run on; return the count.

    Snakemake's ``--cores`` budget can exceed the machine (``--cores 4`` on 2 cores): more compute
    threads than cores make PyTorch's CPU kernels several times slower, so the count is capped. The
    same count goes to ITK (ANTsPy's SyN, imported later), which would otherwise take every core: one
    SyN pair used 15 s of CPU in 8.8 s wall on 2 cores while its job claimed one.
    """
    count = max(1, min(int(threads), available_cores()))
    torch.set_num_threads(count)
    os.environ[ITK_THREADS] = str(count)
    return count


F = TypeVar("F", bound=Callable)


def keeps_torch_threads(function: F) -> F:
    """``function`` with torch's CPU thread count restored after each call.

    For numba's parallel code: its OpenMP threading layer, started on its first call, sets the OpenMP
    thread count it shares with torch to ``NUMBA_NUM_THREADS`` (every core). A 1-thread training then
    ran its network on 2 threads, and beside another job it ran 20x slower.
    """
    @wraps(function)
    def kept(*args, **kwargs):
        threads = torch.get_num_threads()
        try:
            return function(*args, **kwargs)
        finally:
            if torch.get_num_threads() != threads:
                torch.set_num_threads(threads)
    return kept  # type: ignore[return-value]


def bf16_is_fast(device: torch.device) -> bool:
    """Whether ``device`` runs bfloat16 convolutions natively: CUDA with bf16 support, or a CPU whose
    oneDNN has bf16 kernels (AVX-512 BF16 or AMX). There the network's fast path pays off."""
    if device.type == "cuda":
        return bool(torch.cuda.is_bf16_supported())
    if device.type != "cpu":
        return False
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):  # a build without oneDNN
        return False


def cpu_model() -> str:
    """The CPU's model name as Linux reports it (``/proc/cpuinfo``), else :func:`platform.processor`."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


def arithmetic_path(device: torch.device, amp: bool, channels_last: bool, fused: bool | None,
                    onednn_convolutions: bool) -> dict[str, object]:
    """Which arithmetic a run's numbers come from (recorded in ``summary.json``; the report's captions say it).

    ``network``: "bfloat16 autocast" (the fast path: convolutions and matrix products in bf16) or
    "float32"; ``float32_convolutions``: on the CPU, "onednn" where :mod:`ofg.models.onednn` runs the
    network's float32 3-D convolutions (``onednn_convolutions``, its ``is_enabled()``), "pytorch" where it
    is turned off (``OFG_ONEDNN_CONV=0``), on other devices the device's own library; ``fused_refinement``: the OFG refinement's kernels (None for methods
    without one); ``cpu``, ``cpu_capability`` (ATen's vector ISA) and ``bf16_native`` (:func:`bf16_is_fast`).
    """
    if device.type == "cpu":
        convolutions = "onednn" if onednn_convolutions else "pytorch"
    else:
        convolutions = device.type
    return {"device": str(device), "network": "bfloat16 autocast" if amp else "float32",
            "channels_last": bool(channels_last), "float32_convolutions": convolutions,
            "fused_refinement": fused, "cpu": cpu_model(),
            "cpu_capability": torch.backends.cpu.get_cpu_capability(), "bf16_native": bf16_is_fast(device)}


def software_versions() -> dict[str, str]:
    """The versions a run's numbers depend on: Python, torch, numpy and this package."""
    return {"python": platform.python_version(), "torch": torch.__version__, "numpy": np.__version__,
            "ofg": ofg_version}


def synchronize(device: torch.device) -> None:
    """Wait for queued CUDA work on ``device`` (a no-op elsewhere), so wall-clock timings are honest."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def reset_peak_memory(device: torch.device) -> None:
    """Start a new peak-memory window (see :func:`peak_memory_mb`)."""
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        return
    try:  # Linux: writing 5 to clear_refs resets VmHWM (the peak resident set size) to the current RSS
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        pass


def peak_memory_mb(device: torch.device) -> tuple[float, str]:
    """(peak MiB, how it was measured) since the last :func:`reset_peak_memory`.

    CUDA: ``torch.cuda.max_memory_allocated``. CPU: the process's peak resident set size, VmHWM of
    /proc/self/status; where /proc is unavailable, ``resource.getrusage(RUSAGE_SELF).ru_maxrss``
    (the lifetime peak).
    """
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20, "cuda_max_memory_allocated"
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024, "cpu_vmhwm"
    except OSError:
        pass
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return (rss / 2**20 if sys.platform == "darwin" else rss / 1024), "cpu_ru_maxrss"
