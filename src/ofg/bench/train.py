"""Training benchmark: one iteration of OFG (k=10) against one unsupervised iteration.

An iteration is one call of :class:`ofg.train.Step` (forward, loss, backward, Adam step), the
code path of real training, for a small VoxelMorph at 64^3 and batch 1. Reported: the median
wall time over ``repeats`` iterations after one warm-up, its ratio OFG/unsupervised (target
<= 1.25x), and the peak memory of an iteration and its ratio (target <= 1.5x).

Peak memory: on CUDA ``torch.cuda.max_memory_allocated`` of one iteration. On CPU each method is
measured in a fresh subprocess (so that neither inherits the other's heap): the peak resident set
size (VmHWM) over warm-up and timed iterations minus the resident size after set-up (model, images
and optimiser built, before the first iteration), i.e. the extra memory training needs.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

from ofg.config import RunConfig
from ofg.objectives import build_objective
from ofg.train import Step, build_network

SIZE = 64
METHODS = ("unsupervised", "ofg")
TIME_TARGET = 1.25
MEMORY_TARGET = 1.5


def _rss_mb(field: str) -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    raise OSError(f"{field} not in /proc/self/status")


def _images(size: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """A smooth random image pair (1,1,size^3) on ``device``; fixed is a shifted copy of moving."""
    generator = torch.Generator().manual_seed(0)
    noise = torch.rand(1, 1, size, size, size, generator=generator)
    moving = torch.nn.functional.avg_pool3d(noise, 5, stride=1, padding=2)
    fixed = torch.roll(moving, shifts=(1, 2, -1), dims=(2, 3, 4))
    return moving.to(device), fixed.to(device)


def measure(method: str, size: int, device: torch.device, repeats: int, steps: int = 10) -> dict[str, float]:
    """Median seconds per iteration and peak memory (MiB) of ``method`` (see the module docstring)."""
    config = RunConfig.from_dict({"method": method, "model": {"name": "voxelmorph", "size": "small"},
                                  "ofg": {"steps": steps}, "epochs": 1})
    torch.manual_seed(0)
    model = build_network(config, (size, size, size)).to(device).train()
    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr, amsgrad=True)
    objective = build_objective(config, (size, size, size), Path("unused"), device)
    step = Step(config, model, optimizer, objective)
    moving, fixed = _images(size, device)
    cuda = device.type == "cuda"
    if cuda:
        torch.cuda.synchronize(device)
        baseline = torch.cuda.memory_allocated(device)
        torch.cuda.reset_peak_memory_stats(device)
    else:
        Path("/proc/self/clear_refs").write_text("5")  # reset VmHWM to the current RSS
        baseline = _rss_mb("VmRSS")
    times, refine_times = [], []
    for i in range(repeats + 1):
        start = time.perf_counter()
        _, _, target_seconds = step(moving, fixed, "bench", epoch=0)
        if cuda:
            torch.cuda.synchronize(device)
        if i > 0:
            times.append(time.perf_counter() - start)
            refine_times.append(target_seconds)
    if cuda:
        peak = (torch.cuda.max_memory_allocated(device) - baseline) / 2**20
        total = torch.cuda.max_memory_allocated(device) / 2**20
    else:
        total = _rss_mb("VmHWM")
        peak = total - baseline
    return {"seconds": statistics.median(times), "refine_seconds": statistics.median(refine_times),
            "peak_mb": peak, "total_peak_mb": total}


def _measure_in_subprocess(method: str, size: int, repeats: int) -> dict[str, float]:
    threads = torch.get_num_threads()
    code = (f"import json, sys, torch; torch.set_num_threads({threads}); from ofg.bench.train import measure; "
            f"print(json.dumps(measure({method!r}, {size}, torch.device('cpu'), {repeats})))")
    # the fresh process must use the thread count the user chose with --threads
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False, env=env)
    if done.returncode != 0:
        raise RuntimeError(f"benchmark subprocess for {method} failed:\n{done.stderr}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def run(args: argparse.Namespace) -> dict[str, dict[str, float]]:
    """Print (and return) the timing and memory table; ``args.device``, ``args.repeats``."""
    device = torch.device(args.device)
    size = SIZE
    results = {}
    for method in METHODS:
        if device.type == "cpu":
            results[method] = _measure_in_subprocess(method, size, args.repeats)
        else:
            results[method] = measure(method, size, device, args.repeats)
    base, ofg = results["unsupervised"], results["ofg"]
    print(f"one training iteration, VoxelMorph small at {size}^3, batch 1, on {device} "
          f"(median of {args.repeats} after a warm-up)")
    print(f"{'method':<14}{'s/it':>10}{'it/s':>9}{'refine s':>10}{'peak MiB':>10}{'total MiB':>11}")
    for method, r in results.items():
        print(f"{method:<14}{r['seconds']:>10.4f}{1 / r['seconds']:>9.2f}{r['refine_seconds']:>10.4f}"
              f"{r['peak_mb']:>10.1f}{r['total_peak_mb']:>11.1f}")
    time_ratio = ofg["seconds"] / base["seconds"]
    memory_ratio = ofg["peak_mb"] / base["peak_mb"] if base["peak_mb"] > 0 else float("nan")
    memory_kind = ("cuda max_memory_allocated" if device.type == "cuda"
                   else "peak RSS above the post-set-up RSS, fresh process per method")
    print(f"OFG(k=10)/unsupervised time ratio {time_ratio:.2f}x (target <= {TIME_TARGET}x: "
          f"{'met' if time_ratio <= TIME_TARGET else 'MISSED'})")
    print(f"OFG(k=10)/unsupervised peak memory ratio {memory_ratio:.2f}x (target <= {MEMORY_TARGET}x: "
          f"{'met' if memory_ratio <= MEMORY_TARGET else 'MISSED'}; {memory_kind})")
    results["ratios"] = {"time": time_ratio, "memory": memory_ratio}
    return results
