"""The guidance gap: the network's prediction against its k-step refined target, measured during training.

After every epoch of an OFG or unsupervised run, :func:`epoch_gap` takes the validation pairs that
:func:`ofg.inference.validation_scores` scores (the first ``config.val_pairs`` of split "val", all when
null), predicts φ_pre with the same forward pass, refines it with the refinement OFG training uses that
epoch (``config.ofg``: steps, window, reg weight, image term, regulariser, fused or not, at the
learning rate ``poly_lr(ofg.lr, epoch, epochs)`` that :class:`ofg.objectives.OnTheFlyGuidance` sets)
and scores both fields. For an OFG run φ_opt is the regression target of that epoch's steps; for an
unsupervised run it is the target OFG would have given its prediction, never used for training.

History columns (:data:`GAP_COLUMNS`), each the mean over the validation pairs:

- ``gap_lr``: the refinement learning rate of the epoch; ``gap_steps``: its number of steps k;
- ``gap_dice_{prediction,target}``: mean Dice, labels warped by ``val_label_mode``, averaged by
  ``val_dice_rule`` (as the validation: ``gap_dice_prediction`` equals ``val_dice``), pairs whose Dice
  is NaN skipped;
- ``gap_folding_{prediction,target}``: % of voxels with det J ≤ 0;
- ``gap_energy_{prediction,target}``: the refinement energy (image term + reg_weight·regulariser,
  the energies :func:`ofg.guidance.refine` reports before its first step and after its last);
- ``gap_epe_{prediction,target}``: mean end-point error |φ − φ_true| in voxels over the pairs whose true
  field is known (``dataset.ground_truth``: the embedded cohorts), NaN where none is;
- ``gap_seconds``: wall time of the measurement (not counted in ``epoch_seconds``).

Every column is NaN when the measurement is off (``guidance_gap: false``), for the self-training
methods (their target is the teacher's field, not a refinement of their prediction) and when the
dataset has no validation pairs. The measurement leaves training untouched: the network runs in eval
mode without gradients and is put back in its mode, and every RNG state (torch CPU and CUDA, numpy,
python) is restored afterwards, so the weights of a run are bitwise those of a run without it.
"""

from __future__ import annotations

import dataclasses
import math
import time
from typing import Any

import numpy as np
import torch

from ofg.checkpoint import capture_rng_state, restore_rng_state
from ofg.config import RunConfig
from ofg.guidance import poly_lr, refine
from ofg.inference import as_field, field_metrics, pair_tensors, predict
from ofg.metrics import endpoint_error
from ofg.names import GAP_QUANTITIES, GAP_ROLES, gap_column
from ofg.settings import RefineSettings

#: the methods whose runs measure the gap
GAP_METHODS = ("unsupervised", "ofg")
#: every column the measurement adds to history.csv (per field and quantity: :func:`ofg.names.gap_column`)
GAP_COLUMNS = ("gap_lr", "gap_steps", *(gap_column(q, r) for q in GAP_QUANTITIES for r in GAP_ROLES), "gap_seconds")


def gap_settings(config: RunConfig, epoch: int) -> RefineSettings:
    """``config.ofg`` at the learning rate of ``epoch``: ``poly_lr(ofg.lr, epoch, epochs)``, what the OFG
    objective refines with in that epoch."""
    return dataclasses.replace(config.ofg, lr=poly_lr(config.ofg.lr, epoch, config.epochs))


def field_scores(disp: torch.Tensor, pair: Any, labels: list[int], truth: np.ndarray | None, label_mode: str,
                 dice_rule: str) -> dict[str, float]:
    """Dice, folding % and end-point error (voxels; NaN without ``truth`` (3,D,H,W)) of ``disp`` (1,3,D,H,W)."""
    row = field_metrics(disp, pair.moving_label, pair.fixed_label, labels, label_mode=label_mode,
                        dice_rule=dice_rule, full=False)
    epe = endpoint_error(as_field(disp), np.asarray(truth, dtype=np.float64)) if truth is not None else math.nan
    return {"dice": row["dice_mean"], "folding": row["folding_percent"], "epe": epe}


def _mean(values: list[float]) -> float:
    """Mean over the non-NaN values, as the validation averages Dice; NaN when there is none."""
    array = np.asarray(values, dtype=np.float64)
    return float(np.nanmean(array)) if np.isfinite(array).any() else math.nan


def guidance_gap(model: torch.nn.Module, dataset: Any, settings: RefineSettings, *, split: str = "val",
                 max_pairs: int | None = None, device: torch.device | str = "cpu", label_mode: str = "onehot",
                 dice_rule: str = "either") -> dict[str, float]:
    """The gap columns (:data:`GAP_COLUMNS` but ``gap_seconds``) over the first ``max_pairs`` pairs of ``split``:
    the prediction of ``model`` (eval mode, no gradients; put back in its mode) and its refinement by
    ``settings``. Every value is NaN when ``split`` has no pairs."""
    pairs = dataset.pairs(split)
    count = len(pairs) if max_pairs is None else min(len(pairs), max_pairs)
    labels = [int(label) for label in dataset.labels]
    values: dict[str, list[float]] = {gap_column(q, r): [] for q in GAP_QUANTITIES for r in GAP_ROLES}
    was_training = model.training
    model.eval()
    try:
        for index in range(count):
            pair = pairs[index]
            moving, fixed = pair_tensors(pair, device)
            disp, _ = predict(model, moving, fixed)
            target, energies = refine(moving, fixed, disp, **settings.kwargs())
            truth = dataset.ground_truth(split, index)
            for role, field, energy in (("prediction", disp, energies[0]), ("target", target, energies[-1])):
                scores = {**field_scores(field, pair, labels, truth, label_mode, dice_rule), "energy": energy}
                for quantity, value in scores.items():
                    values[gap_column(quantity, role)].append(float(value))
    finally:
        model.train(was_training)
    return {"gap_lr": float(settings.lr), "gap_steps": float(settings.steps),
            **{name: _mean(v) for name, v in values.items()}}


def epoch_gap(config: RunConfig, model: torch.nn.Module, dataset: Any, epoch: int,
              device: torch.device | str) -> dict[str, float]:
    """The history columns :data:`GAP_COLUMNS` of ``epoch`` for the run ``config`` (module docstring);
    all NaN where the gap is not measured. Every RNG state is as it was before the call."""
    nan_row = dict.fromkeys(GAP_COLUMNS, math.nan)
    if not config.guidance_gap or config.method not in GAP_METHODS or len(dataset.pairs("val")) == 0:
        return nan_row
    start, rng = time.perf_counter(), capture_rng_state()
    try:
        row = guidance_gap(model, dataset, gap_settings(config, epoch), max_pairs=config.val_pairs, device=device,
                           label_mode=config.val_label_mode, dice_rule=config.val_dice_rule)
    finally:
        restore_rng_state(rng)
    return {**nan_row, **row, "gap_seconds": time.perf_counter() - start}
