"""Benchmark of the registration networks: time of one unsupervised training iteration.

One iteration = forward, loss ``ncc_loss(fixed, warped) + diffusion_loss(disp)`` (the paper's
unsupervised baseline, weight 1), backward and an Adam step, batch 1. The small variants run at
64^3 on any device; on CUDA the paper-size variants also run at 160x192x224 and report peak GPU
memory. Called as ``run(args)`` by ``python -m ofg.bench``; ``args`` needs ``.device`` and
``.repeats``.
"""

from __future__ import annotations

import statistics
import time
from typing import Any

import torch

from ofg.losses import diffusion_loss, ncc_loss
from ofg.models import MODEL_NAMES, PAPER_IMG_SIZE, build_model, count_parameters

SMALL_IMG_SIZE = (64, 64, 64)


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_training_iteration(name: str, size: str, img_size: tuple[int, int, int], device: torch.device,
                            repeats: int, seed: int = 0) -> dict[str, Any]:
    """Median wall time (s) of ``repeats`` training iterations after one warm-up, the median CPU time
    of this process (all threads; on a shared machine it is steadier than wall time) and peak GPU memory."""
    if repeats < 1:
        raise ValueError(f"repeats must be >= 1, got {repeats}")
    torch.manual_seed(seed)
    model = build_model(name, img_size, size=size).to(device).train()
    params = count_parameters(model)
    optimiser = torch.optim.Adam(model.parameters(), lr=1e-4, amsgrad=True)
    generator = torch.Generator().manual_seed(seed)
    x = torch.rand((1, 2, *img_size), generator=generator).to(device)

    def step() -> None:
        warped, disp = model(x)
        loss = ncc_loss(x[:, 1:], warped) + diffusion_loss(disp)
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        optimiser.step()

    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    step()  # warm-up: allocator, kernels selection, Adam state
    times, cpu_times = [], []
    for _ in range(repeats):
        _synchronize(device)
        start, cpu_start = time.perf_counter(), time.process_time()
        step()
        _synchronize(device)
        times.append(time.perf_counter() - start)
        cpu_times.append(time.process_time() - cpu_start)
    peak = torch.cuda.max_memory_allocated(device) / 2 ** 30 if device.type == "cuda" else float("nan")
    del model, optimiser
    return {"model": name, "size": size, "img_size": "x".join(map(str, img_size)),
            "params": params,
            "seconds_median": statistics.median(times), "seconds_min": min(times),
            "cpu_seconds_median": statistics.median(cpu_times), "peak_gib": peak}


def run(args: Any) -> list[dict[str, Any]]:
    """Print and return one row per (model, size) benchmarked on ``args.device``."""
    device = torch.device(args.device)
    plan = [(name, "small", SMALL_IMG_SIZE) for name in MODEL_NAMES]  # fixed sizes: --sizes is for core and train
    if device.type == "cuda":
        plan += [(name, "paper", PAPER_IMG_SIZE) for name in MODEL_NAMES]
    rows = []
    print(f"training iteration (forward + NCC/diffusion loss + backward + Adam step), batch 1, {device}, "
          f"median of {args.repeats}")
    print(f"{'model':<11} {'size':<6} {'image':<12} {'params':>11} {'s/iter':>8} {'cpu s/iter':>10} {'peak GiB':>9}")
    for name, size, img_size in plan:
        row = time_training_iteration(name, size, img_size, device, args.repeats)
        rows.append(row)
        print(f"{name:<11} {size:<6} {row['img_size']:<12} {row['params']:>11,} "
              f"{row['seconds_median']:>8.3f} {row['cpu_seconds_median']:>10.3f} {row['peak_gib']:>9.2f}")
        if device.type == "cuda":
            torch.cuda.empty_cache()
    return rows
