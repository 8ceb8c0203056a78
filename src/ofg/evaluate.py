"""Evaluation: per-pair registration metrics of a trained network, optionally after refinement.

``evaluate(model, dataset, split)`` returns one row per pair:

- ``split``, ``pair_index``, ``moving``, ``fixed``: which pair
- ``dice_mean`` and ``dice_<label>`` per label; labels are warped by ``label_mode`` "onehot"
  (trilinear one-hot + argmax, TransMorph's convention) or "nearest" (nearest-neighbour, the OFG
  reference code's), recorded in ``label_mode``; ``dice_mean`` averages by ``dice_rule``
  (:data:`ofg.metrics.DICE_RULES`), recorded in ``dice_rule``: "either" (default) over the labels
  present in the warped or the fixed map, "both" over those present in both the moving and the
  fixed map (the reference's AbdomenCTCT rule)
- ``dice_mean_nearest`` and ``dice_mean_onehot``: the mean Dice under each convention (same rule);
  the one of ``label_mode`` equals ``dice_mean``
- ``folding_percent``: 100·mean(det J ≤ 0), np.gradient convention, whole volume
- ``sdlogj_l2r`` (Learn2Reg: central differences, 2-voxel crop, log(det+3)) and ``sdlogj_plain``
  (std of log det over voxels with det > 0)
- ``hd95`` (with ``hd95=True``): mean over labels of the 95th-percentile symmetric surface distance,
  in voxels, and ``hd95_mm`` with the dataset's spacing
- ``endpoint_error``: mean |φ − φ_true| in voxels where ``dataset.ground_truth`` is known, else NaN
- ``inference_seconds``: wall time of the network forward (CUDA synchronised)
- with ``refine`` settings of k > 0 steps, the same metrics after test-time refinement, prefixed
  ``refined_``, and ``refine_seconds``.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from tqdm.auto import tqdm

from ofg.checkpoint import load_checkpoint
from ofg.data import open_dataset
from ofg.data.base import check_split
from ofg.guidance import RefineSettings, refine
from ofg.inference import (LABEL_MODES, both_dice, check_label_mode, device_of, field_metrics, pair_tensors, predict,
                           qualitative_sample)
from ofg.io import atomic_path
from ofg.metrics import DICE_RULES
from ofg.runtime import resolve_device

log = logging.getLogger("ofg.evaluate")


def evaluate(model: torch.nn.Module, dataset: Any, split: str = "test", *, label_mode: str = "onehot",
             dice_rule: str = "either", hd95: bool = False, refine_settings: RefineSettings | None = None,
             device: str | torch.device | None = None, progress: bool = True,
             max_pairs: int | None = None) -> pd.DataFrame:
    """Metrics of ``model`` on every pair of ``split`` (the first ``max_pairs``); one row per pair.

    ``model`` maps (B,2,D,H,W) to (warped, displacement (B,3,D,H,W) in voxels); it is run in
    eval mode on ``device`` (default: where its parameters are) and put back in its previous mode.
    With ``refine_settings`` of k > 0 steps each field is also scored after test-time refinement.
    Columns: see the module docstring.
    """
    check_split(split)
    check_label_mode(label_mode)
    if dice_rule not in DICE_RULES:
        raise ValueError(f"dice_rule must be one of {DICE_RULES}, got {dice_rule!r}")
    if refine_settings is not None and (not isinstance(refine_settings.steps, int) or refine_settings.steps < 0):
        raise ValueError(f"refinement steps must be a non-negative integer, got {refine_settings.steps!r}")
    device = resolve_device(device) if device is not None else device_of(model)
    pairs = dataset.pairs(split)
    count = len(pairs) if max_pairs is None else min(len(pairs), max_pairs)
    labels = [int(label) for label in dataset.labels]
    spacing = tuple(float(s) for s in getattr(dataset, "spacing", (1.0, 1.0, 1.0)))
    was_training = model.training
    model.to(device).eval()
    rows = []
    try:
        for index in tqdm(range(count), desc=f"evaluate {split}", disable=not progress, leave=False):
            pair = pairs[index]
            moving, fixed = pair_tensors(pair, device)
            disp, seconds = predict(model, moving, fixed)
            row: dict[str, Any] = {"split": split, "pair_index": index, "moving": pairs.keys[index][0],
                                   "fixed": pairs.keys[index][1], "label_mode": label_mode, "dice_rule": dice_rule}
            common = dict(label_mode=label_mode, dice_rule=dice_rule, hd95=hd95, spacing=spacing,
                          ground_truth=dataset.ground_truth(split, index))
            row.update(field_metrics(disp, pair.moving_label, pair.fixed_label, labels, **common))
            row.update({k: v for k, v in both_dice(disp, pair.moving_label, pair.fixed_label, labels, label_mode,
                                                   dice_rule, known=row["dice_mean"]).items() if k != "dice_mean"})
            row["inference_seconds"] = seconds
            if refine_settings is not None and refine_settings.steps > 0:
                start = time.perf_counter()
                refined, _ = refine(moving, fixed, disp, **refine_settings.kwargs())
                row["refine_seconds"] = time.perf_counter() - start
                after = field_metrics(refined, pair.moving_label, pair.fixed_label, labels, **common)
                row.update({f"refined_{name}": value for name, value in after.items()})
            rows.append(row)
    finally:
        model.train(was_training)
    return pd.DataFrame(rows)


def write_sample(model: torch.nn.Module, dataset: Any, split: str, out: str | Path, index: int = 0,
                 device: str | torch.device = "cpu") -> Path:
    """Write the qualitative sample of pair ``index`` of ``split`` (see
    :func:`ofg.inference.qualitative_sample`) as an ``.npz``, atomically."""
    sample = qualitative_sample(model, dataset.pairs(split)[index], device)
    with atomic_path(out, suffix=".npz") as tmp:
        with open(tmp, "wb") as handle:
            np.savez(handle, index=np.asarray(index), split=np.asarray(split), **sample)
    return Path(out)


def evaluate_checkpoint(checkpoint: str | Path, split: str = "test", out: str | Path | None = None, *,
                        sample_out: str | Path | None = None, dataset_root: str | Path | None = None,
                        device: str | torch.device | None = None, refine_steps: int = 0,
                        refine_lr: float | None = None, refine_reg_weight: float | None = None,
                        **kwargs: Any) -> pd.DataFrame:
    """Evaluate a training checkpoint on its own dataset (``dataset_root`` overrides the stored root).

    Test-time refinement (``refine_steps`` > 0) uses the run's own OFG settings (window included),
    with ``refine_lr`` / ``refine_reg_weight`` replacing its lr and weight when given. ``kwargs`` go
    to :func:`evaluate`; with ``out`` the table is also written there as CSV, and with ``sample_out``
    the qualitative sample of the first pair (CPU), both atomically.
    """
    device = resolve_device("auto" if device is None else device)
    model, config = load_checkpoint(checkpoint, device)
    root = dataset_root if dataset_root is not None else config.dataset.root
    dataset = open_dataset(config.dataset.name, root, **config.dataset.options)
    settings = dataclasses.replace(config.ofg, steps=refine_steps,  # the run's window, image term, regulariser
                                   lr=config.ofg.lr if refine_lr is None else refine_lr,
                                   reg_weight=config.ofg.reg_weight if refine_reg_weight is None else refine_reg_weight)
    table = evaluate(model, dataset, split, device=device, refine_settings=settings, **kwargs)
    table.insert(0, "checkpoint", str(checkpoint))
    table.insert(1, "method", config.method)
    table.insert(2, "model", config.model.name)
    table.insert(3, "dataset", config.dataset.name)
    if out is not None:
        with atomic_path(out) as tmp:
            table.to_csv(tmp, index=False)
    if sample_out is not None:
        write_sample(model.to("cpu"), dataset, split, sample_out, device="cpu")
    return table


def main(argv: list[str] | None = None) -> int:
    """``python -m ofg.evaluate CHECKPOINT --split test --out metrics.csv [...]``."""
    parser = argparse.ArgumentParser(prog="ofg-evaluate", description="Per-pair metrics of a trained checkpoint.")
    parser.add_argument("checkpoint", type=Path)
    parser.add_argument("--split", default="test", choices=("train", "val", "test"))
    parser.add_argument("--out", type=Path, required=True, help="metrics CSV to write")
    parser.add_argument("--sample-out", type=Path, default=None, help="also write the qualitative sample (.npz)")
    parser.add_argument("--hd95", action="store_true", help="also compute HD95 (slower)")
    parser.add_argument("--label-mode", default="onehot", choices=LABEL_MODES)
    parser.add_argument("--dice-rule", default="either", choices=DICE_RULES,
                        help="labels a pair's mean Dice averages over: either (default) or both (AbdomenCTCT's)")
    parser.add_argument("--refine", type=int, default=0, metavar="K", help="also score after K refinement steps")
    parser.add_argument("--refine-lr", type=float, default=None, help="default: the run's ofg.lr")
    parser.add_argument("--refine-reg-weight", type=float, default=None, help="default: the run's ofg.reg_weight")
    parser.add_argument("--dataset-root", type=Path, default=None, help="override the dataset root stored in the checkpoint")
    parser.add_argument("--device", default=None, help="cpu, cuda or cuda:N (default: cuda if available)")
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        table = evaluate_checkpoint(args.checkpoint, args.split, args.out, sample_out=args.sample_out,
                                    dataset_root=args.dataset_root, device=args.device, label_mode=args.label_mode,
                                    dice_rule=args.dice_rule, hd95=args.hd95, refine_steps=args.refine,
                                    refine_lr=args.refine_lr, refine_reg_weight=args.refine_reg_weight,
                                    progress=not args.no_progress)
    except ValueError as exc:
        print(f"ofg-evaluate: error: {exc}", file=sys.stderr)
        return 1
    log.info("%d pairs, mean Dice %.4f (%s labels, rule %s) -> %s", len(table), table["dice_mean"].mean(),
             args.label_mode, args.dice_rule, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
