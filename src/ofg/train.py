"""Training engine: four methods, the reference schedules, exact checkpoint/resume, logs.

``train(config, out_dir)`` (or ``python -m ofg.train CONFIG.yaml --out DIR``) trains one network
with one of the methods of :data:`ofg.config.METHODS` (batch 1):

- ``unsupervised``: L = ncc_weight·NCC(fixed, moving∘φ) + w·Grad_l2(φ), w = 1 by default.
- ``ofg``: L = mse_weight·MSE(φ, refine(φ)) + w·Grad_l2(φ), w = 0.02 by default; the refinement
  (:class:`ofg.guidance.OFGLoss`) takes ``ofg.steps`` Adam steps at lr ``poly_lr(ofg.lr, epoch)``.
- ``self_training``: L = mse_weight·MSE(φ, φ_teacher) + w·Grad_l2(φ), w = 0.02 by default, where
  φ_teacher is predicted once per training pair (and direction) by the ``teacher`` checkpoint and
  cached on disk under ``DIR/teacher_fields/``.
- ``opt_self_training``: the same, with each cached teacher field first refined once, offline, by
  :func:`ofg.guidance.refine` with the OFG settings at the base lr ``ofg.lr`` (a separate cache).

The network optimiser is Adam(amsgrad) at ``poly_lr(lr, epoch, epochs)`` (set at each epoch start).
With ``bidirectional`` every pair trains moving→fixed and then fixed→moving, each with its own
optimiser step; an "iteration" is one optimiser step. With ``augment_flips`` the train pairs get
the random flips of :class:`ofg.data.torch_dataset.PairDataset`.

Outputs in DIR: ``config.yaml`` (resolved), ``checkpoints/last.pt`` (every epoch),
``checkpoints/best.pt`` (best validation Dice), ``history.csv``, ``train.log`` and, once finished,
``summary.json``. Pair order and flips of epoch e are functions of (seed, e) alone, and
last.pt holds every RNG state, so a killed run re-started with the same command resumes at the
start of the interrupted epoch and ends (on CPU) with bitwise the weights of an uninterrupted run.
"""

from __future__ import annotations

import argparse
import copy
import logging
import math
import random
import re
import resource
import shutil
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from ofg.checkpoint import (build_from_checkpoint, capture_rng_state, read_checkpoint, restore_rng_state,
                            save_checkpoint, unwrap_model)
from ofg.config import RunConfig, coerce, differing_keys, resolve
from ofg.guidance import OFGLoss, poly_lr, refine
from ofg.io import DataError, atomic_path, sha256_file, write_json_atomic
from ofg.losses import diffusion_loss, ncc_loss
from ofg.spatial import warp

log = logging.getLogger("ofg.train")

#: config keys that may change between a run and its resumption (they do not change the numbers)
RUNTIME_KEYS = ("num_workers",)
AMP_DTYPE = torch.bfloat16


class TrainingDiverged(RuntimeError):
    """The loss became NaN/Inf; the message names the epoch and the pair. last.pt is left intact."""


# ---------------------------------------------------------------------------------------------
# set-up helpers


def resolve_device(name: str) -> torch.device:
    """``auto`` → cuda when available, else cpu; a CUDA request on a machine without it is refused."""
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


def check_model_name(name: str) -> None:
    """Raise a ValueError listing the valid model names if ``name`` is not one."""
    from ofg.models import MODEL_NAMES

    if name not in MODEL_NAMES:
        raise ValueError(f"unknown model {name!r} (config key model.name); valid models: {', '.join(MODEL_NAMES)}")


def build_network(config: RunConfig, image_size: tuple[int, int, int]) -> torch.nn.Module:
    """The configured network for ``image_size``; size errors are the models' own ValueErrors."""
    from ofg.models import build_model

    check_model_name(config.model.name)
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


def flip_field(disp: torch.Tensor, axes: list[int] | tuple[int, ...]) -> torch.Tensor:
    """The displacement (B,3,D,H,W) of the same warp seen through flips of spatial ``axes`` (0..2).

    If the images are flipped along axis a, the field is flipped along a and its component a
    changes sign.
    """
    if not axes:
        return disp
    out = disp.flip([a + 2 for a in axes])
    sign = torch.ones(disp.shape[1], device=disp.device, dtype=disp.dtype)
    sign[list(axes)] = -1
    return out * sign.view(1, -1, *([1] * (disp.ndim - 2)))


# ---------------------------------------------------------------------------------------------
# peak memory


def _reset_peak_memory(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        return
    try:  # Linux: writing 5 to clear_refs resets VmHWM (the peak resident set size) to the current RSS
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        pass


def peak_memory_mb(device: torch.device) -> tuple[float, str]:
    """(peak MiB, how it was measured) since the last reset.

    CUDA: ``torch.cuda.max_memory_allocated``. CPU: the process's peak resident set size, VmHWM of
    /proc/self/status (reset at every epoch start through /proc/self/clear_refs); where /proc is
    unavailable, ``resource.getrusage(RUSAGE_SELF).ru_maxrss`` (the lifetime peak).
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


# ---------------------------------------------------------------------------------------------
# teacher fields (self-training)


class TeacherFields:
    """Pseudo ground-truth fields of a teacher network, predicted once per pair and cached on disk.

    One file per training direction, ``cache_dir/<key>.pt`` holding a float32 (1,3,D,H,W) tensor
    in voxels for the un-flipped pair. The cache directory is named after the teacher file's
    SHA-256 (and, for refined fields, after the refinement settings), so a different teacher
    never reuses stale fields.
    """

    def __init__(self, teacher: torch.nn.Module, cache_dir: Path, device: torch.device,
                 refine_settings: dict[str, Any] | None = None) -> None:
        self.teacher = teacher
        self.cache_dir = cache_dir
        self.device = device
        self.refine_settings = refine_settings
        self.predictions = 0  # teacher forward passes in this process

    def path(self, key: str) -> Path:
        return self.cache_dir / (re.sub(r"[^A-Za-z0-9._-]+", "_", key) + ".pt")

    def predict(self, moving: torch.Tensor, fixed: torch.Tensor) -> torch.Tensor:
        """The teacher's field (1,3,D,H,W) for moving→fixed, refined if so configured."""
        self.predictions += 1
        with torch.no_grad():
            _, disp = self.teacher(torch.cat([moving, fixed], dim=1))
        disp = disp.float()
        if self.refine_settings is not None:
            disp, _ = refine(moving, fixed, disp, **self.refine_settings)
        return disp.detach()

    def get(self, key: str, moving: torch.Tensor, fixed: torch.Tensor) -> torch.Tensor:
        """The cached field of ``key``; predicted (and cached atomically) on first use."""
        path = self.path(key)
        if path.is_file():
            try:
                return torch.load(path, map_location=self.device, weights_only=True)
            except Exception as exc:
                raise DataError(f"{path}: unreadable cached teacher field ({exc}); delete it to recompute") from exc
        disp = self.predict(moving, fixed)
        with atomic_path(path, suffix=".pt") as tmp:
            torch.save(disp.cpu().contiguous(), tmp)
        return disp


def load_teacher(config: RunConfig, image_size: tuple[int, int, int], out_dir: Path,
                 device: torch.device) -> TeacherFields:
    """Load the teacher checkpoint and check it matches the student's architecture and image size."""
    path = Path(config.teacher)
    if not path.is_file():
        raise DataError(f"teacher checkpoint not found: {path} (config key teacher, needed by method "
                        f"{config.method!r})")
    payload = read_checkpoint(path)
    teacher_config = RunConfig.from_dict(payload["config"])
    ours = (config.model.name, config.model.size, config.model.overrides)
    theirs = (teacher_config.model.name, teacher_config.model.size, teacher_config.model.overrides)
    if ours != theirs:
        raise DataError(f"{path}: teacher is model {theirs[0]!r} (size {theirs[1]!r}, overrides {theirs[2]}) but "
                        f"this run trains {ours[0]!r} (size {ours[1]!r}, overrides {ours[2]}); self-training "
                        "needs a teacher of the same architecture")
    teacher_size = tuple(int(s) for s in payload["image_size"])
    if teacher_size != tuple(image_size):
        raise DataError(f"{path}: teacher was trained on images of size {teacher_size}, this dataset has "
                        f"{tuple(image_size)}")
    teacher = build_from_checkpoint(payload, path, device)
    for parameter in teacher.parameters():
        parameter.requires_grad_(False)
    cache_dir = out_dir / "teacher_fields" / sha256_file(path)[:16]
    settings = None
    if config.method == "opt_self_training":
        settings = {"steps": config.ofg.steps, "lr": config.ofg.lr, "reg_weight": config.ofg.reg_weight,
                    "window": config.ofg.window}
        cache_dir = cache_dir / f"refined_k{settings['steps']}_lr{settings['lr']:g}_w{settings['reg_weight']:g}"
    else:
        cache_dir = cache_dir / "plain"
    log.info("teacher %s (%s); fields cached in %s", path, teacher_config.model.name, cache_dir)
    return TeacherFields(teacher, cache_dir, device, settings)


# ---------------------------------------------------------------------------------------------
# one optimiser step


@dataclass
class StepContext:
    """What one optimiser step needs beyond the batch."""

    config: RunConfig
    model: torch.nn.Module
    optimizer: torch.optim.Optimizer
    device: torch.device
    criterion: OFGLoss | None = None
    teacher: TeacherFields | None = None


def _forward(ctx: StepContext, moving: torch.Tensor, fixed: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Network forward; under ``amp`` only the network runs in bfloat16, the warp is redone in float32."""
    x = torch.cat([moving, fixed], dim=1)
    if not ctx.config.amp:
        return ctx.model(x)
    with torch.autocast(device_type=ctx.device.type, dtype=AMP_DTYPE):
        _, disp = ctx.model(x)
    disp = disp.float()
    return warp(moving, disp), disp


def compute_loss(ctx: StepContext, moving: torch.Tensor, fixed: torch.Tensor, key: str,
                 flips: tuple[int, ...] = ()) -> tuple[torch.Tensor, dict[str, float], float]:
    """The method's loss for one direction: (total, unweighted terms, seconds spent making the target).

    The seconds are the OFG refinement's for ``ofg``, and for the self-training methods those of
    fetching the teacher's field (predicted, and refined, on first use; read from the cache after).
    """
    config = ctx.config
    warped, disp = _forward(ctx, moving, fixed)
    reg = diffusion_loss(disp, "l2")
    terms: dict[str, torch.Tensor | float] = {"diffusion": reg}
    refine_seconds = 0.0
    if config.method == "unsupervised":
        terms["ncc"] = ncc_loss(fixed, warped, window=config.ofg.window)
        total = config.loss.ncc_weight * terms["ncc"]
    elif config.method == "ofg":
        terms["mse"] = ctx.criterion(moving, fixed, disp)
        refine_seconds = ctx.criterion.last_refine_seconds
        energies = ctx.criterion.last_energies
        terms["energy_before"], terms["energy_after"] = energies[0], energies[-1]
        total = config.loss.mse_weight * terms["mse"]
    else:
        # The cache holds un-flipped fields (one teacher pass per pair): undo the flips on the
        # images for the teacher, apply them to its field.
        source_m = moving.flip([a + 2 for a in flips]) if flips else moving
        source_f = fixed.flip([a + 2 for a in flips]) if flips else fixed
        start = time.perf_counter()
        target = flip_field(ctx.teacher.get(key, source_m, source_f), flips)
        refine_seconds = time.perf_counter() - start  # teacher prediction (+ offline refinement) or cache read
        terms["mse"] = F.mse_loss(disp, target)
        total = config.loss.mse_weight * terms["mse"]
    total = total + config.diffusion_weight * reg
    values = {name: float(v.detach()) if torch.is_tensor(v) else float(v) for name, v in terms.items()}
    return total, values, refine_seconds


def train_step(ctx: StepContext, moving: torch.Tensor, fixed: torch.Tensor, key: str, epoch: int,
               flips: tuple[int, ...] = ()) -> tuple[float, dict[str, float], float]:
    """One optimiser step on moving→fixed; raises TrainingDiverged on a non-finite loss."""
    ctx.optimizer.zero_grad(set_to_none=True)
    loss, terms, refine_seconds = compute_loss(ctx, moving, fixed, key, flips)
    value = float(loss.detach())
    if not math.isfinite(value):
        raise TrainingDiverged(f"loss is {value} at epoch {epoch} on pair {key} (terms {terms}); training "
                               "stopped, the last good checkpoint is kept")
    loss.backward()
    ctx.optimizer.step()
    return value, terms, refine_seconds


# ---------------------------------------------------------------------------------------------
# the output folder


def _prepare_out_dir(out: Path, config: RunConfig, restart: bool) -> str:
    """Return "finished", "resume" or "fresh"; refuse a different config unless ``restart``."""
    config_path = out / "config.yaml"
    if config_path.is_file() and not restart:
        stored = RunConfig.load(config_path)
        diff = differing_keys(stored, config, ignore=RUNTIME_KEYS)
        if diff:
            details = "; ".join(f"{k}: {_lookup(stored, k)!r} -> {_lookup(config, k)!r}" for k in diff)
            raise ValueError(f"{out} holds a run with a different config (differing keys: {details}). "
                             "Use another output folder, or restart=True / --restart to discard it.")
        if (out / "summary.json").is_file():
            return "finished"
        return "resume" if (out / "checkpoints" / "last.pt").is_file() else "fresh"
    if restart:
        for name in ("checkpoints", "teacher_fields"):
            shutil.rmtree(out / name, ignore_errors=True)
        for name in ("history.csv", "summary.json", "train.log"):
            (out / name).unlink(missing_ok=True)
    out.mkdir(parents=True, exist_ok=True)
    config.save(config_path)
    return "fresh"


def _lookup(config: RunConfig, dotted: str) -> Any:
    value: Any = config.to_dict()
    for part in dotted.split("."):
        value = value.get(part) if isinstance(value, dict) else None
    return value


# ---------------------------------------------------------------------------------------------
# the loop


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
        "model": unwrap_model(model).state_dict(),
        "optimizer": optimizer.state_dict(),
        "epoch": state.epoch,
        "best_score": state.best_score,
        "best_epoch": state.best_epoch,
        "seconds": state.seconds,
        "history": copy.deepcopy(state.history),
        "config": config.to_dict(),
        "image_size": list(image_size),
        "rng": capture_rng_state(),
        "data_order": {"seed": config.seed, "next_epoch": state.epoch},
    }


def _all_finite(model: torch.nn.Module) -> bool:
    return all(bool(torch.isfinite(p).all()) for p in model.parameters())


def _write_history(out: Path, history: list[dict[str, Any]]) -> None:
    with atomic_path(out / "history.csv") as tmp:
        pd.DataFrame(history).to_csv(tmp, index=False)


def _pair_dataset(dataset: Any, config: RunConfig):
    from ofg.data.torch_dataset import PairDataset

    return PairDataset(dataset.pairs("train"), flips=bool(config.augment_flips), seed=config.seed)


def _run_epoch(ctx: StepContext, dataset: Any, pair_dataset: Any, epoch: int, progress: bool,
               stop_check: Callable[[int], None] | None) -> dict[str, Any]:
    config, device = ctx.config, ctx.device
    keys = dataset.pairs("train").keys
    order = epoch_order(config.seed, epoch, len(keys), config.iterations_per_epoch)
    pair_dataset.set_epoch(epoch)
    loader = torch.utils.data.DataLoader(pair_dataset, batch_size=1, sampler=order,
                                         num_workers=config.num_workers)
    sums: dict[str, float] = {}
    steps, step_seconds, refine_seconds = 0, 0.0, 0.0
    directions = 2 if config.bidirectional else 1
    bar = tqdm(total=len(order) * directions, desc=f"epoch {epoch + 1}/{config.epochs}", disable=not progress,
               leave=False, dynamic_ncols=True)
    with bar:
        for batch in loader:
            index = int(batch["index"])
            moving = batch["moving"].to(device, non_blocking=True)
            fixed = batch["fixed"].to(device, non_blocking=True)
            flips = pair_dataset.flip_axes(index)  # a pure function of (seed, epoch, index)
            sides = [(moving, fixed, pair_key(keys[index]))]
            if config.bidirectional:
                sides.append((fixed, moving, pair_key(keys[index], reverse=True)))
            for source, target, key in sides:
                start = time.perf_counter()
                loss, terms, refine_time = train_step(ctx, source, target, key, epoch, flips)
                if device.type == "cuda":
                    torch.cuda.synchronize(device)
                step_seconds += time.perf_counter() - start
                refine_seconds += refine_time
                steps += 1
                for name, value in {"loss": loss, **{f"loss_{k}": v for k, v in terms.items()}}.items():
                    sums[name] = sums.get(name, 0.0) + value
                bar.set_postfix({name: f"{value / steps:.4g}" for name, value in sums.items()}, refresh=False)
                bar.update(1)
                if stop_check is not None:
                    stop_check(steps)
    row = {name: value / max(steps, 1) for name, value in sums.items()}
    row["iterations"] = steps
    row["seconds_per_iteration"] = step_seconds / max(steps, 1)
    per_iteration = refine_seconds / max(steps, 1)
    row["ofg_seconds_per_iteration"] = per_iteration if config.method == "ofg" else float("nan")
    row["teacher_seconds_per_iteration"] = (per_iteration if config.method in ("self_training", "opt_self_training")
                                            else float("nan"))
    return row


def _validate(model: torch.nn.Module, dataset: Any, config: RunConfig, device: torch.device,
              progress: bool) -> tuple[float, float]:
    """Mean Dice (one-hot label warping) and mean %|J|<=0 over the first ``val_pairs`` val pairs."""
    from ofg.evaluate import validation_scores

    if len(dataset.pairs("val")) == 0:
        return float("nan"), float("nan")
    model.eval()
    try:
        return validation_scores(model, dataset, "val", max_pairs=config.val_pairs, device=device,
                                 progress=progress)
    finally:
        model.train()


def train(config: RunConfig | dict | str | Path, out_dir: str | Path, *, restart: bool = False,
          progress: bool = True, stop_after_epochs: int | None = None,
          _step_callback: Callable[[int], None] | None = None) -> Path:
    """Train (or resume, or skip if finished) the run ``config`` in ``out_dir``; return ``out_dir``.

    ``stop_after_epochs`` returns after that many epochs of this call, as a kill after the
    checkpoint would (for tests); ``_step_callback(step)`` is called after every optimiser step
    and may raise to simulate a kill mid-epoch.
    """
    config = coerce(config)
    out = Path(out_dir)
    device = resolve_device(config.device)
    check_model_name(config.model.name)
    from ofg.data import open_dataset

    dataset = open_dataset(config.dataset.name, config.dataset.root, **config.dataset.options)
    config = resolve(config, dataset)
    if len(dataset.pairs("train")) == 0:
        raise ValueError(f"dataset {config.dataset.name!r} at {config.dataset.root} has no train pairs")
    status = _prepare_out_dir(out, config, restart)
    handler = logging.FileHandler(out / "train.log")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
    log.addHandler(handler)
    if log.level == logging.NOTSET or log.level > logging.INFO:
        log.setLevel(logging.INFO)
    try:
        if status == "finished":
            log.info("%s: run already finished (summary.json present); nothing to do", out)
            return out
        return _train(config, dataset, out, device, status, progress, stop_after_epochs, _step_callback)
    finally:
        log.removeHandler(handler)
        handler.close()


def _train(config: RunConfig, dataset: Any, out: Path, device: torch.device, status: str, progress: bool,
           stop_after_epochs: int | None, step_callback: Callable[[int], None] | None) -> Path:
    image_size = tuple(int(s) for s in dataset.image_size)
    torch.manual_seed(config.seed)
    np.random.seed(config.seed)
    random.seed(config.seed)
    model = build_network(config, image_size).to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr, amsgrad=True, weight_decay=0)
    state = _State()
    last_path, best_path = out / "checkpoints" / "last.pt", out / "checkpoints" / "best.pt"
    if status == "resume":
        payload = read_checkpoint(last_path, map_location=device)
        unwrap_model(model).load_state_dict(payload["model"])
        optimizer.load_state_dict(payload["optimizer"])
        state = _State(payload["epoch"], payload["best_score"], payload["best_epoch"], payload["seconds"],
                       list(payload["history"]))
        log.info("resuming %s at epoch %d of %d", out, state.epoch, config.epochs)
    else:
        log.info("starting %s: method %s, model %s (%s), dataset %s, %d epochs on %s", out, config.method,
                 config.model.name, config.model.size, config.dataset.name, config.epochs, device)
    net = torch.compile(model) if config.compile else model
    ctx = StepContext(config, net, optimizer, device)
    if config.method == "ofg":
        ctx.criterion = OFGLoss(config.ofg.steps, config.ofg.lr, config.ofg.reg_weight, config.ofg.window)
    elif config.method in ("self_training", "opt_self_training"):
        ctx.teacher = load_teacher(config, image_size, out, device)
    pair_dataset = _pair_dataset(dataset, config)
    if status == "resume":
        # Last, after every set-up step that may draw random numbers (building the teacher, ...).
        restore_rng_state(payload["rng"])
    model.train()
    epochs_this_call = 0
    while state.epoch < config.epochs:
        epoch = state.epoch
        start = time.perf_counter()
        lr = poly_lr(config.lr, epoch, config.epochs)
        for group in optimizer.param_groups:
            group["lr"] = lr
        ofg_lr = poly_lr(config.ofg.lr, epoch, config.epochs)
        if ctx.criterion is not None:
            ctx.criterion.lr = ofg_lr
        _reset_peak_memory(device)
        try:
            row = _run_epoch(ctx, dataset, pair_dataset, epoch, progress, step_callback)
        except TrainingDiverged as exc:
            log.error("%s", exc)
            raise
        val_dice, val_folding = _validate(model, dataset, config, device, progress)
        memory, memory_source = peak_memory_mb(device)
        if not _all_finite(model):
            message = (f"non-finite weights after epoch {epoch}; training stopped, the last good checkpoint "
                       f"({last_path}) is kept")
            log.error(message)
            raise TrainingDiverged(message)
        state.seconds += time.perf_counter() - start
        row = {"epoch": epoch, **row, "val_dice": val_dice, "val_folding_percent": val_folding, "lr": lr,
               "ofg_lr": ofg_lr if config.method == "ofg" else float("nan"),
               "peak_memory_mb": memory, "peak_memory_source": memory_source,
               "epoch_seconds": time.perf_counter() - start}
        state.history.append(row)
        state.epoch = epoch + 1
        improved = math.isfinite(val_dice) and not (val_dice <= state.best_score)
        if improved:
            state.best_score, state.best_epoch = val_dice, epoch
        payload = _payload(model, optimizer, state, config, image_size)
        if improved or (not math.isfinite(val_dice) and state.epoch == config.epochs):
            save_checkpoint(best_path, payload)  # no validation pairs: best is the final model
        save_checkpoint(last_path, payload)
        _write_history(out, state.history)
        log.info("epoch %d (%d/%d): loss %.5g, val dice %.4f, folding %.3f%%, %.3f s/it, peak %.0f MiB (%s)",
                 epoch, epoch + 1, config.epochs, row.get("loss", float("nan")), val_dice, val_folding,
                 row["seconds_per_iteration"], memory, memory_source)
        epochs_this_call += 1
        if stop_after_epochs is not None and epochs_this_call >= stop_after_epochs and state.epoch < config.epochs:
            log.info("stopping after %d epoch(s) as asked (stop_after_epochs)", epochs_this_call)
            return out
    write_json_atomic(out / "summary.json", {
        "epochs": config.epochs, "final_epoch": config.epochs - 1, "best_val_dice": state.best_score,
        "best_epoch": state.best_epoch, "total_seconds": state.seconds, "method": config.method,
        "model": config.model.name, "dataset": config.dataset.name,
        "final_val_dice": state.history[-1]["val_dice"] if state.history else float("nan"),
    })
    log.info("finished %s: best val dice %.4f at epoch %d, %.1f s", out, state.best_score, state.best_epoch,
             state.seconds)
    return out


# ---------------------------------------------------------------------------------------------
# command line


def main(argv: list[str] | None = None) -> int:
    """``python -m ofg.train CONFIG.yaml --out DIR [--restart] [--no-progress]``."""
    parser = argparse.ArgumentParser(prog="ofg-train", description="Train a registration network (see ofg.train).")
    parser.add_argument("config", type=Path, help="run config YAML (see ofg.config)")
    parser.add_argument("--out", type=Path, required=True, help="output folder (resumed if it holds this run)")
    parser.add_argument("--restart", action="store_true", help="discard an existing run in --out and start over")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        train(args.config, args.out, restart=args.restart, progress=not args.no_progress)
    except (ValueError, TrainingDiverged) as exc:  # DataError is a ValueError
        print(f"ofg-train: error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
