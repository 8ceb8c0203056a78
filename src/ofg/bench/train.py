"""Training benchmark: one iteration of OFG (k=10) against one unsupervised iteration, on both paths.

An iteration is one call of :class:`ofg.train.Step` (forward, loss, backward, Adam step), the code
path of real training, for a small VoxelMorph, batch 1, at each size (default: the embedded cohorts'
48×64×48 brain and 64×64×48 CT). OFG is timed twice: with the eager refinement (``ofg``) and with
``ofg.fused: true`` (``ofg-fused``: the numba kernels on CPU, ``torch.compile`` on CUDA; the one-off
compile falls in the warm-up). Each size is timed on the paths chosen with ``--paths`` (default ``float32``,
``float32-onednn``, ``fast``), one after the other:

- ``float32``: plain PyTorch, everything in float32, contiguous memory (:mod:`ofg.models.onednn` off);
- ``float32-onednn``: the same with the network's convolutions on oneDNN (:mod:`ofg.models.onednn`,
  channels-last layers), what ``amp: false`` training runs on a CPU; on CUDA the same as ``float32``;
- ``fast``: the network in channels-last (``channels_last_3d``) under bfloat16 autocast; the losses,
  the warp and the OFG refinement stay float32 (config keys ``amp`` and ``channels_last``);
- ``compiled`` / ``fast+compiled``: the same with the network under ``torch.compile`` (config key
  ``compile``), chosen with ``--paths``.

Every path after a first ``float32`` is also reported as its time ratio to plain float32 (target for
``float32-onednn`` on a CPU without native bf16: <= 0.5x).

``--model`` / ``--model-size`` pick another network, e.g. the paper-size check of TransMorph + OFG at
160×192×224 on a GPU: ``python -m ofg.bench --only train --device cuda --model transmorph --model-size
paper --sizes 160x192x224 --paths float32,fast,compiled,fast+compiled``.

Reported: the median wall time over ``repeats`` iterations after one warm-up and the median CPU time of
the process (all threads; on a shared machine steadier than wall time at 1 thread, ``--threads 1``), the
refinement's part, the OFG/unsupervised ratio per path (target ≤ 1.25×), each path's speed-up over
float32 per method (wall and CPU time), and the peak memory of an iteration and its ratio (target ≤ 1.5×). Peak memory: on CUDA
``torch.cuda.max_memory_allocated``; on CPU each measurement runs in a fresh subprocess (neither
inherits the other's heap): the peak resident set size (VmHWM) over the iterations minus the resident
size after set-up, i.e. the extra memory training needs. For ``ofg-fused`` on CPU the set-up includes
one tiny refinement, which loads the numba kernels (about 70 MB of LLVM code and state, once per
process); their workspaces for the benchmarked size are allocated in the warm-up and counted.
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

from ofg import kernels
from ofg.bench import PATHS
from ofg.bench.breakdown import format_breakdown, profile
from ofg.config import RunConfig
from ofg.models import onednn
from ofg.objectives import build_objective
from ofg.runtime import bf16_is_fast, synchronize
from ofg.train import Step, build_network

SHAPES = ((48, 64, 48), (64, 64, 48))
#: ofg-fused: OFG with ``ofg.fused: true`` (numba kernels on CPU, torch.compile on CUDA)
METHODS = ("unsupervised", "ofg", "ofg-fused")
TIME_TARGET = 1.25
MEMORY_TARGET = 1.5


def _rss_mb(field: str) -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    raise OSError(f"{field} not in /proc/self/status")


def _images(shape: tuple[int, int, int], device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """A smooth random image pair (1,1,D,H,W) on ``device``; fixed is a shifted copy of moving."""
    generator = torch.Generator().manual_seed(0)
    noise = torch.rand(1, 1, *shape, generator=generator)
    moving = torch.nn.functional.avg_pool3d(noise, 5, stride=1, padding=2)
    fixed = torch.roll(moving, shifts=(1, 2, -1), dims=(2, 3, 4))
    return moving.to(device), fixed.to(device)


def measure(method: str, shape: int | tuple[int, int, int], device: torch.device, repeats: int, steps: int = 10,
            path: str = "float32", model_name: str = "voxelmorph", model_size: str = "small",
            breakdown: bool = False) -> dict[str, float]:
    """Median seconds per iteration and peak memory (MiB) of ``method`` on ``path`` (module docstring);
    with ``breakdown``, also the iteration's phases and top operators (:func:`ofg.bench.breakdown.profile`)."""
    with onednn.enabled(path != "float32"):
        return _measure(method, shape, device, repeats, steps, path, model_name, model_size, breakdown)


def _measure(method: str, shape: int | tuple[int, int, int], device: torch.device, repeats: int, steps: int,
             path: str, model_name: str, model_size: str, breakdown: bool = False) -> dict[str, float]:
    shape = (shape,) * 3 if isinstance(shape, int) else tuple(shape)
    fast = path.startswith("fast")
    config = RunConfig.from_dict({"method": method.removesuffix("-fused"),
                                  "model": {"name": model_name, "size": model_size},
                                  "ofg": {"steps": steps, "fused": method.endswith("-fused")}, "epochs": 1,
                                  "amp": fast, "channels_last": fast, "compile": path.endswith("compiled")})
    torch.manual_seed(0)
    model = build_network(config, shape).to(device).train()
    if fast:
        model = model.to(memory_format=torch.channels_last_3d)
    if config.compile:
        model = torch.compile(model)
    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr, amsgrad=True)
    step = Step(config, model, optimizer, build_objective(config, shape, Path("unused"), device))
    moving, fixed = _images(shape, device)
    if config.ofg.fused and device.type == "cpu":  # set-up: load the numba kernels (~70 MB of LLVM, once)
        kernels.refine(moving[..., :4, :4, :4], fixed[..., :4, :4, :4], torch.zeros(1, 3, 4, 4, 4), 1, 0.1, 1.0, 3, None)
    cuda = device.type == "cuda"
    if cuda:
        torch.cuda.synchronize(device)
        baseline = torch.cuda.memory_allocated(device)
        torch.cuda.reset_peak_memory_stats(device)
    else:
        Path("/proc/self/clear_refs").write_text("5")  # reset VmHWM to the current RSS
        baseline = _rss_mb("VmRSS")
    times, cpu_times, refine_times = [], [], []
    for i in range(repeats + 1):
        start, cpu_start = time.perf_counter(), time.process_time()
        _, _, target_seconds = step(moving, fixed, "bench", epoch=0)
        synchronize(device)
        if i > 0:
            times.append(time.perf_counter() - start)
            cpu_times.append(time.process_time() - cpu_start)
            refine_times.append(target_seconds)
    if cuda:
        peak = (torch.cuda.max_memory_allocated(device) - baseline) / 2**20
        total = torch.cuda.max_memory_allocated(device) / 2**20
    else:
        total = _rss_mb("VmHWM")
        peak = total - baseline
    result = {"seconds": statistics.median(times), "cpu_seconds": statistics.median(cpu_times),
              "refine_seconds": statistics.median(refine_times), "peak_mb": peak, "total_peak_mb": total}
    if breakdown:
        result["breakdown"] = profile(step, moving, fixed, device, repeats)
    return result


def _measure_in_subprocess(method: str, shape: tuple[int, int, int], repeats: int, path: str, model_name: str,
                           model_size: str, breakdown: bool = False) -> dict[str, float]:
    threads = torch.get_num_threads()
    code = (f"import json, sys, torch; torch.set_num_threads({threads}); from ofg.bench.train import measure; "
            f"print(json.dumps(measure({method!r}, {tuple(shape)!r}, torch.device('cpu'), {repeats}, "
            f"path={path!r}, model_name={model_name!r}, model_size={model_size!r}, breakdown={breakdown!r})))")
    # the fresh process must use the thread count the user chose with --threads
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False, env=env)
    if done.returncode != 0:
        raise RuntimeError(f"benchmark subprocess for {method} ({path}) failed:\n{done.stderr}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def _verdict(value: float, target: float) -> str:
    return "met" if value <= target else "MISSED"


def run(args: argparse.Namespace) -> dict[str, dict[str, float]]:
    """Print (and return) the table per size and path; ``args.device``, ``args.repeats``, ``args.sizes``."""
    device = torch.device(args.device)
    shapes = [tuple(s) for s in args.sizes] if args.sizes else list(SHAPES)
    paths, model = list(getattr(args, "paths", PATHS[:2])), getattr(args, "model", "voxelmorph")
    model_size, breakdown = getattr(args, "model_size", "small"), getattr(args, "breakdown", False)
    print(f"one training iteration, {model} ({model_size}), batch 1, on {device} (median of {args.repeats} after "
          f"a warm-up); bf16 native here: {bf16_is_fast(device)}")
    print(f"{'size':<10}{'path':<15}{'method':<14}{'s/it':>9}{'cpu s/it':>9}{'refine s':>10}{'peak MiB':>10}"
          f"{'total MiB':>11}")
    results: dict[str, dict[str, float]] = {}
    for shape in shapes:
        label = "x".join(map(str, shape))
        for path in paths:
            for method in METHODS:
                r = (_measure_in_subprocess(method, shape, args.repeats, path, model, model_size, breakdown)
                     if device.type == "cpu" else measure(method, shape, device, args.repeats, path=path,
                                                          model_name=model, model_size=model_size,
                                                          breakdown=breakdown))
                results[f"{label}/{path}/{method}"] = r
                print(f"{label:<10}{path:<15}{method:<14}{r['seconds']:>9.4f}{r['cpu_seconds']:>9.4f}{r['refine_seconds']:>10.4f}"
                      f"{r['peak_mb']:>10.1f}{r['total_peak_mb']:>11.1f}")
                if breakdown:
                    print(format_breakdown(r["breakdown"]))
        for path, method in ((path, method) for path in paths for method in METHODS[1:]):
            base, ofg = results[f"{label}/{path}/unsupervised"], results[f"{label}/{path}/{method}"]
            time_ratio = ofg["seconds"] / base["seconds"]
            memory_ratio = ofg["peak_mb"] / base["peak_mb"] if base["peak_mb"] > 0 else float("nan")
            key = f"{label}/{path}/ratios" + ("" if method == "ofg" else "-fused")
            cpu_ratio = ofg["cpu_seconds"] / base["cpu_seconds"]
            results[key] = {"time": time_ratio, "cpu_time": cpu_ratio, "memory": memory_ratio}
            name = "OFG(k=10)" if method == "ofg" else "OFG(k=10, fused)"
            print(f"{label} {path}: {name}/unsupervised time {time_ratio:.2f}x (target <= {TIME_TARGET}x: "
                  f"{_verdict(time_ratio, TIME_TARGET)}; CPU time {cpu_ratio:.2f}x), peak memory {memory_ratio:.2f}x (target <= "
                  f"{MEMORY_TARGET}x: {_verdict(memory_ratio, MEMORY_TARGET)})")
        for path in paths[1:] if paths[0] == "float32" else []:
            for method in METHODS:
                base, this = results[f"{label}/float32/{method}"], results[f"{label}/{path}/{method}"]
                speedup, cpu_ratio = base["seconds"] / this["seconds"], this["cpu_seconds"] / base["cpu_seconds"]
                this["vs_float32"], this["cpu_vs_float32"] = 1 / speedup, cpu_ratio
                print(f"{label} {method}: {path} {speedup:.2f}x faster than float32 (time ratio {1 / speedup:.2f}x, "
                      f"CPU-time ratio {cpu_ratio:.2f}x)")
    return results
