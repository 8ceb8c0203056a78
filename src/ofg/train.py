"""The training loop: one network, one method objective, exact checkpoint/resume, logs.

``train(config, out_dir)`` (or ``python -m ofg.train CONFIG.yaml --out DIR``) trains one network with
the objective of ``config.method`` (see :mod:`ofg.objectives`), batch 1. The network optimiser is
Adam(amsgrad) at ``poly_lr(lr, epoch, epochs)`` (set at each epoch start). With ``bidirectional``
every pair trains moving→fixed and then fixed→moving, each with its own optimiser step; an
"iteration" is one optimiser step. Epoch e trains ``dataset.epoch_pairs("train", e)`` (the same pairs
every epoch, or new ones: :mod:`ofg.data.pairing`), with ``augment_flips`` the random flips of
:class:`ofg.data.torch_dataset.PairDataset`.

Outputs in DIR (names in :class:`ofg.layout.RunFolder`): the resolved config, ``checkpoints/last.pt``
(every epoch), ``checkpoints/best.pt`` (best validation Dice), ``history.csv`` (with the guidance gap,
:mod:`ofg.gap`), ``train.log`` and, once finished, ``summary.json``. Pairs, order and flips of epoch e
are functions of (seed, e) alone, and last.pt holds every RNG state, so a killed run re-started with
the same command resumes at the start of the interrupted epoch and ends (on CPU) with bitwise the
weights of an uninterrupted run. Whether a folder is resumed, skipped or started over is
:mod:`ofg.resume`'s policy.
"""

from __future__ import annotations

import argparse
import copy
import logging
import math
import random
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pandas as pd
import torch
from tqdm.auto import tqdm

from ofg.checkpoint import capture_rng_state, read_checkpoint, restore_rng_state, save_checkpoint, unwrap_model
from ofg.config import RunConfig, coerce, resolve
from ofg.data import open_dataset
from ofg.data.torch_dataset import PairDataset
from ofg.gap import epoch_gap
from ofg.guidance import poly_lr
from ofg.inference import forward, validation_scores
from ofg.io import atomic_path, write_json_atomic
from ofg.layout import RunFolder
from ofg.models import build_model, onednn
from ofg.names import REFINING_METHODS
from ofg.objectives import Objective, build_objective
from ofg.resume import IF_STALE, prepare_run_folder
from ofg.runtime import (arithmetic_path, bf16_is_fast, peak_memory_mb, reset_peak_memory, resolve_device,
                         software_versions, synchronize)

log = logging.getLogger("ofg.train")


class TrainingDiverged(RuntimeError):
    """The loss became NaN/Inf; the message names the epoch and the pair. last.pt is left intact."""


def build_network(config: RunConfig, image_size: tuple[int, int, int]) -> torch.nn.Module:
    """The configured network for ``image_size``; size errors are the models' own ValueErrors."""
    return build_model(config.model.name, image_size, size=config.model.size, **config.model.overrides)


def pair_key(keys: tuple[str, str], reverse: bool = False) -> str:
    """Readable name of one training direction, e.g. ``atlas->subj01``."""
    moving, fixed = (keys[1], keys[0]) if reverse else keys
    return f"{moving}->{fixed}"


def epoch_order(seed: int, epoch: int, n_pairs: int, cap: int | None) -> list[int]:
    """The train pair indices of ``epoch``: a permutation drawn from ``default_rng((seed, epoch))``.

    It depends on nothing else, so a resumed run visits the pairs in the same order.
    """
    order = np.random.default_rng((seed, epoch)).permutation(n_pairs)
    return [int(i) for i in (order if cap is None else order[:cap])]


@dataclass
class Step:
    """What one optimiser step needs beyond the batch."""

    config: RunConfig
    model: torch.nn.Module
    optimizer: torch.optim.Optimizer
    objective: Objective

    def __call__(self, moving: torch.Tensor, fixed: torch.Tensor, key: str, epoch: int,
                 flips: tuple[int, ...] = ()) -> tuple[float, dict[str, float], float]:
        """One optimiser step on moving→fixed: (loss, terms, target seconds); TrainingDiverged on NaN/Inf."""
        self.optimizer.zero_grad(set_to_none=True)
        warped, disp = forward(self.model, moving, fixed, amp=self.config.amp, channels_last=self.config.channels_last)
        loss, terms, seconds = self.objective(moving, fixed, warped, disp, key, flips)
        value = float(loss.detach())
        if not math.isfinite(value):
            raise TrainingDiverged(f"loss is {value} at epoch {epoch} on pair {key} (terms {terms}); training "
                                   "stopped, the last good checkpoint is kept")
        loss.backward()
        self.optimizer.step()
        return value, terms, seconds


@dataclass
class _State:
    epoch: int = 0                      # next epoch to run
    best_score: float = float("nan")
    best_epoch: int = -1
    seconds: float = 0.0                # training wall time over all sessions
    history: list[dict[str, Any]] = field(default_factory=list)


def _payload(model: torch.nn.Module, optimizer: torch.optim.Optimizer, state: _State, config: RunConfig,
             image_size: tuple[int, int, int]) -> dict[str, Any]:
    return {
        "model": unwrap_model(model).state_dict(), "optimizer": optimizer.state_dict(), "epoch": state.epoch,
        "best_score": state.best_score, "best_epoch": state.best_epoch, "seconds": state.seconds,
        "history": copy.deepcopy(state.history), "config": config.to_dict(), "image_size": list(image_size),
        "rng": capture_rng_state(), "data_order": {"seed": config.seed, "next_epoch": state.epoch},
    }


def _run_epoch(step: Step, dataset: Any, epoch: int, device: torch.device, progress: bool,
               stop_check: Callable[[int], None] | None) -> dict[str, Any]:
    config = step.config
    pairs = PairDataset(dataset.epoch_pairs("train", epoch), flips=bool(config.augment_flips), seed=config.seed)
    keys, order = pairs.pairs.keys, epoch_order(config.seed, epoch, len(pairs), config.iterations_per_epoch)
    pairs.set_epoch(epoch)
    loader = torch.utils.data.DataLoader(pairs, batch_size=1, sampler=order, num_workers=config.num_workers)
    sums: dict[str, float] = {}
    steps, step_seconds, target_seconds = 0, 0.0, 0.0
    bar = tqdm(total=len(order) * (2 if config.bidirectional else 1), desc=f"epoch {epoch + 1}/{config.epochs}",
               disable=not progress, leave=False, dynamic_ncols=True)
    with bar:
        for batch in loader:
            index = int(batch["index"])
            moving = batch["moving"].to(device, non_blocking=True)
            fixed = batch["fixed"].to(device, non_blocking=True)
            flips = pairs.flip_axes(index)  # a pure function of (seed, epoch, index)
            sides = [(moving, fixed, pair_key(keys[index]))]
            if config.bidirectional:
                sides.append((fixed, moving, pair_key(keys[index], reverse=True)))
            for source, target, key in sides:
                start = time.perf_counter()
                loss, terms, seconds = step(source, target, key, epoch, flips)
                synchronize(device)
                step_seconds += time.perf_counter() - start
                target_seconds += seconds
                steps += 1
                for name, value in {"loss": loss, **{f"loss_{k}": v for k, v in terms.items()}}.items():
                    sums[name] = sums.get(name, 0.0) + value
                bar.set_postfix({name: f"{value / steps:.4g}" for name, value in sums.items()}, refresh=False)
                bar.update(1)
                if stop_check is not None:
                    stop_check(steps)
    row = {name: value / max(steps, 1) for name, value in sums.items()}
    row.update(iterations=steps, seconds_per_iteration=step_seconds / max(steps, 1))
    for column in ("ofg_seconds_per_iteration", "teacher_seconds_per_iteration"):
        row[column] = target_seconds / max(steps, 1) if column == step.objective.timing_column else float("nan")
    return row


def train(config: RunConfig | dict | str | Path, out_dir: str | Path, *, restart: bool = False,
          if_stale: str = "error", progress: bool = True, stop_after_epochs: int | None = None,
          _step_callback: Callable[[int], None] | None = None) -> Path:
    """Train, resume or skip (if finished) the run ``config`` in ``out_dir``; return ``out_dir``.

    ``restart`` discards the folder first; ``if_stale`` is what to do with a folder whose run the
    config cannot continue (see :mod:`ofg.resume`). ``stop_after_epochs`` returns after that many
    epochs of this call, as a kill after the checkpoint would (for tests); ``_step_callback(step)``
    is called after every optimiser step and may raise to simulate a kill mid-epoch.
    """
    config = coerce(config)
    folder = RunFolder(out_dir)
    device = resolve_device(config.device)
    dataset = open_dataset(config.dataset.name, config.dataset.root, **config.dataset.options)
    config = resolve(config, dataset, bf16_is_fast(device))
    if len(dataset.pairs("train")) == 0:
        raise ValueError(f"dataset {config.dataset.name!r} at {config.dataset.root} has no train pairs")
    status = prepare_run_folder(folder, config, restart=restart, if_stale=if_stale)
    handler = logging.FileHandler(folder.log)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
    log.addHandler(handler)
    if log.level == logging.NOTSET or log.level > logging.INFO:
        log.setLevel(logging.INFO)
    try:
        if status == "finished":
            log.info("%s: run already finished (summary.json present); nothing to do", folder.path)
            return folder.path
        _train(config, dataset, folder, device, status, progress, stop_after_epochs, _step_callback)
        return folder.path
    finally:
        log.removeHandler(handler)
        handler.close()


def _train(config: RunConfig, dataset: Any, folder: RunFolder, device: torch.device, status: str, progress: bool,
           stop_after_epochs: int | None, step_callback: Callable[[int], None] | None) -> None:
    image_size = tuple(int(s) for s in dataset.image_size)
    torch.manual_seed(config.seed)
    np.random.seed(config.seed)
    random.seed(config.seed)
    model = build_network(config, image_size).to(device)
    if config.channels_last:
        model = model.to(memory_format=torch.channels_last_3d)
    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr, amsgrad=True, weight_decay=0)
    state = _State()
    if status == "resume":
        payload = read_checkpoint(folder.last, map_location=device)
        unwrap_model(model).load_state_dict(payload["model"])
        optimizer.load_state_dict(payload["optimizer"])
        state = _State(payload["epoch"], payload["best_score"], payload["best_epoch"], payload["seconds"],
                       list(payload["history"]))
        log.info("resuming %s at epoch %d of %d", folder.path, state.epoch, config.epochs)
    else:
        log.info("starting %s: method %s, model %s (%s), dataset %s, %d epochs on %s", folder.path, config.method,
                 config.model.name, config.model.size, config.dataset.name, config.epochs, device)
    net = torch.compile(model) if config.compile else model
    objective = build_objective(config, image_size, folder.teacher_fields, device)
    step = Step(config, net, optimizer, objective)
    if status == "resume":
        # Last, after every set-up step that may draw random numbers (building the teacher, ...).
        restore_rng_state(payload["rng"])
    model.train()
    epochs_this_call = 0
    while state.epoch < config.epochs:
        _run_one_epoch(step, model, dataset, state, folder, image_size, device, progress, step_callback)
        epochs_this_call += 1
        if stop_after_epochs is not None and epochs_this_call >= stop_after_epochs and state.epoch < config.epochs:
            log.info("stopping after %d epoch(s) as asked (stop_after_epochs)", epochs_this_call)
            return
    write_json_atomic(folder.summary, {
        "epochs": config.epochs, "final_epoch": config.epochs - 1, "best_val_dice": state.best_score,
        "best_epoch": state.best_epoch, "total_seconds": state.seconds, "method": config.method,
        "model": config.model.name, "dataset": config.dataset.name,
        "final_val_dice": state.history[-1]["val_dice"] if state.history else float("nan"),
        "versions": software_versions(),
        "arithmetic": arithmetic_path(device, config.amp, config.channels_last,
                                      config.ofg.fused if config.method in REFINING_METHODS else None,
                                      onednn.is_enabled()),
    })
    log.info("finished %s: best val dice %.4f at epoch %d, %.1f s", folder.path, state.best_score, state.best_epoch,
             state.seconds)


def _run_one_epoch(step: Step, model: torch.nn.Module, dataset: Any, state: _State, folder: RunFolder,
                   image_size: tuple[int, int, int], device: torch.device, progress: bool,
                   step_callback: Callable[[int], None] | None) -> None:
    """Train epoch ``state.epoch``, validate, checkpoint and log; update ``state`` in place."""
    config, epoch, start = step.config, state.epoch, time.perf_counter()
    lr = poly_lr(config.lr, epoch, config.epochs)
    for group in step.optimizer.param_groups:
        group["lr"] = lr
    method_lr = step.objective.start_epoch(epoch, config.epochs)
    reset_peak_memory(device)
    try:
        row = _run_epoch(step, dataset, epoch, device, progress, step_callback)
    except TrainingDiverged as exc:
        log.error("%s", exc)
        raise
    val_dice, val_folding = float("nan"), float("nan")
    if len(dataset.pairs("val")) > 0:
        val_dice, val_folding = validation_scores(model, dataset, "val", max_pairs=config.val_pairs, device=device,
                                                  label_mode=config.val_label_mode, dice_rule=config.val_dice_rule,
                                                  progress=progress)
    memory, memory_source = peak_memory_mb(device)
    if not all(bool(torch.isfinite(p).all()) for p in model.parameters()):
        message = (f"non-finite weights after epoch {epoch}; training stopped, the last good checkpoint "
                   f"({folder.last}) is kept")
        log.error(message)
        raise TrainingDiverged(message)
    state.seconds += time.perf_counter() - start
    row = {"epoch": epoch, **row, "val_dice": val_dice, "val_folding_percent": val_folding, "lr": lr,
           "ofg_lr": method_lr, "peak_memory_mb": memory, "peak_memory_source": memory_source,
           "epoch_seconds": time.perf_counter() - start}
    row.update(epoch_gap(config, model, dataset, epoch, device))  # not timed above; keeps every RNG state
    state.history.append(row)
    state.epoch = epoch + 1
    improved = math.isfinite(val_dice) and not (val_dice <= state.best_score)
    if improved:
        state.best_score, state.best_epoch = val_dice, epoch
    payload = _payload(model, step.optimizer, state, config, image_size)
    if improved or (not math.isfinite(val_dice) and state.epoch == config.epochs):
        save_checkpoint(folder.best, payload)  # no validation pairs: best is the final model
    save_checkpoint(folder.last, payload)
    with atomic_path(folder.history) as tmp:
        pd.DataFrame(state.history).to_csv(tmp, index=False)
    log.info("epoch %d (%d/%d): loss %.5g, val dice %.4f, folding %.3f%%, %.3f s/it, peak %.0f MiB (%s)",
             epoch, epoch + 1, config.epochs, row.get("loss", float("nan")), val_dice, val_folding,
             row["seconds_per_iteration"], memory, memory_source)


def main(argv: list[str] | None = None) -> int:
    """``python -m ofg.train CONFIG.yaml --out DIR [--restart] [--if-stale error|restart] [--no-progress]``."""
    parser = argparse.ArgumentParser(prog="ofg-train", description="Train a registration network (see ofg.train).")
    parser.add_argument("config", type=Path, help="run config YAML (see ofg.config)")
    parser.add_argument("--out", type=Path, required=True, help="output folder (resumed if it holds this run)")
    parser.add_argument("--restart", action="store_true", help="discard an existing run in --out and start over")
    parser.add_argument("--if-stale", choices=IF_STALE, default="error",
                        help="a folder whose config, teacher or cohort changed: refuse (default) or start over")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        train(args.config, args.out, restart=args.restart, if_stale=args.if_stale, progress=not args.no_progress)
    except (ValueError, TrainingDiverged) as exc:  # DataError is a ValueError
        print(f"ofg-train: error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
