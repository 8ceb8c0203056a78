"""Controlled timing of the main comparison: inference seconds per pair and seconds per training iteration.

The training histories time each run while it shares the machine with another job, so their seconds
measure the machine as much as the method. This job runs alone (the workflow gives it every core's
claim, and it computes on the trainings' thread count) and measures, for every seed's trained networks
of the main comparison (``unsupervised`` and OFG with the main k), in ``repeats`` rounds after one
warm-up round, the methods interleaved and their order alternating from round to round:

- ``inference``: seconds per test pair of one forward pass (:func:`ofg.inference.predict`, what the
  evaluation times), the mean over the test pairs of the round;
- ``iteration``: seconds per training iteration (:class:`ofg.train.Step`: forward, the method's loss
  with OFG's refinement, backward, Adam step; the run's own resolved config: amp, channels-last,
  fused refinement), the mean over ``iterations`` train pairs of the round, from the trained weights
  (a copy: nothing is written back).

Output: one CSV per (dataset, model), columns :data:`COLUMNS`, one row per (kind, method, seed, round).
OFG and the unsupervised baseline are the same network at inference, so their inference cost is equal
by construction; the row measures it as a check.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import pandas as pd
import torch

from ofg.checkpoint import build_from_checkpoint, read_checkpoint
from ofg.config import RunConfig
from ofg.data import open_dataset
from ofg.inference import pair_tensors, predict
from ofg.io import atomic_path
from ofg.objectives import build_objective
from ofg.runtime import resolve_device, synchronize, use_threads
from ofg.train import Step

COLUMNS = ["kind", "method", "run", "seed", "repeat", "seconds"]
KINDS = ("inference", "iteration")


def _network(payload: Mapping[str, Any], path: str, device: torch.device) -> tuple[torch.nn.Module, RunConfig]:
    config = RunConfig.from_dict(payload["config"])
    model = build_from_checkpoint(dict(payload), path, device)
    if config.channels_last:
        model = model.to(memory_format=torch.channels_last_3d)
    return model, config


def inference_timer(checkpoint: str, pairs: Sequence[Any], device: torch.device) -> Callable[[], float]:
    """A function that times one forward pass per pair of ``pairs`` and returns the mean seconds."""
    model, _ = _network(read_checkpoint(checkpoint, map_location=device), checkpoint, device)
    tensors = [pair_tensors(pair, device) for pair in pairs]

    def run() -> float:
        return sum(predict(model, moving, fixed)[1] for moving, fixed in tensors) / len(tensors)

    return run


def iteration_timer(checkpoint: str, pairs: Sequence[Any], device: torch.device,
                    teacher_cache: Path) -> Callable[[], float]:
    """A function that runs one training iteration per pair of ``pairs`` and returns the mean seconds."""
    payload = read_checkpoint(checkpoint, map_location=device)
    model, config = _network(payload, checkpoint, device)
    image_size = tuple(int(s) for s in payload["image_size"])
    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr, amsgrad=True, weight_decay=0)
    objective = build_objective(config, image_size, teacher_cache, device)
    objective.start_epoch(0, config.epochs)  # OFG's optimiser at its first epoch's learning rate
    step = Step(config, model.train(), optimizer, objective)
    tensors = [pair_tensors(pair, device) for pair in pairs]

    def run() -> float:
        synchronize(device)
        start = time.perf_counter()
        for index, (moving, fixed) in enumerate(tensors):
            step(moving, fixed, f"timing-{index}", epoch=0)
        synchronize(device)
        return (time.perf_counter() - start) / len(tensors)

    return run


def interleaved(timers: Mapping[tuple[str, str, str, int], Callable[[], float]], repeats: int) -> pd.DataFrame:
    """Run every timer once as a warm-up, then ``repeats`` rounds of all of them, the order reversed
    every other round; ``timers`` maps (kind, method, run, seed) to a timer. Returns :data:`COLUMNS`."""
    keys = list(timers)
    for key in keys:
        timers[key]()
    rows = []
    for repeat in range(repeats):
        for key in keys if repeat % 2 == 0 else reversed(keys):
            rows.append(dict(zip(COLUMNS, (*key, repeat, timers[key]()))))
    return pd.DataFrame(rows, columns=COLUMNS).sort_values(COLUMNS[:5], ignore_index=True)


def run_timing(params: Mapping[str, Any]) -> pd.DataFrame:
    """The timing job of notebook 07 (:func:`ofg.stages.timing_parameters`): every run of ``params["runs"]``
    (records with ``method``, ``run``, ``seed``, ``checkpoint``), written to ``params["out"]``."""
    device = resolve_device(params["device"])
    use_threads(params["threads"])
    first = RunConfig.from_dict(read_checkpoint(params["runs"][0]["checkpoint"])["config"])
    dataset = open_dataset(first.dataset.name, first.dataset.root, **first.dataset.options)
    test = list(dataset.pairs(params["split"]))
    train_pairs = dataset.pairs("train")
    train = [train_pairs[i % len(train_pairs)] for i in range(params["iterations"])]
    timers: dict[tuple[str, str, str, int], Callable[[], float]] = {}
    for run in params["runs"]:
        key = (run["method"], run["run"], int(run["seed"]))
        timers[("inference", *key)] = inference_timer(run["checkpoint"], test, device)
        timers[("iteration", *key)] = iteration_timer(run["checkpoint"], train, device, Path(params["teacher_cache"]))
    table = interleaved(timers, params["repeats"])
    with atomic_path(params["out"]) as tmp:
        table.to_csv(tmp, index=False)
    return table
