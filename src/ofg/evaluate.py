"""Evaluation: per-pair registration metrics of a trained network, optionally after refinement.

``evaluate(model, dataset, split)`` returns one row per pair (conventions in PAPER.md):

- ``split``, ``pair_index``, ``moving``, ``fixed``: which pair
- ``dice_mean`` (mean over the labels present in either image) and ``dice_<label>`` per label;
  labels are warped by ``label_mode`` "onehot" (trilinear one-hot + argmax, TransMorph and the
  reference code) or "nearest" (Learn2Reg), recorded in ``label_mode``
- ``folding_percent``: 100·mean(det J ≤ 0), np.gradient convention, whole volume
- ``sdlogj_l2r`` (Learn2Reg: central differences, 2-voxel crop, log(det+3)) and ``sdlogj_plain``
  (std of log det over voxels with det > 0)
- ``hd95`` (with ``hd95=True``): mean over labels of the 95th-percentile symmetric surface distance,
  in voxels, and ``hd95_mm`` with the dataset's spacing
- ``endpoint_error``: mean |φ − φ_true| in voxels where ``dataset.ground_truth`` is known, else NaN
- ``inference_seconds``: wall time of the network forward (CUDA synchronised)
- with ``refine_steps > 0`` the same metrics after test-time refinement, prefixed ``refined_``,
  and ``refine_seconds``.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from tqdm.auto import tqdm

from ofg import metrics
from ofg.checkpoint import build_from_checkpoint, read_checkpoint
from ofg.config import RunConfig
from ofg.data.base import check_split
from ofg.guidance import refine
from ofg.io import atomic_path

log = logging.getLogger("ofg.evaluate")

LABEL_MODES = ("onehot", "nearest")


def _device_of(model: torch.nn.Module) -> torch.device:
    parameter = next(model.parameters(), None)
    return parameter.device if parameter is not None else torch.device("cpu")


def _as_tensor(array: np.ndarray, device: torch.device) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(array))[None, None].to(device)


def _predict(model: torch.nn.Module, moving: torch.Tensor, fixed: torch.Tensor) -> tuple[torch.Tensor, float]:
    """(displacement (1,3,D,H,W) float32, seconds) of one forward pass without gradients."""
    sync = moving.device.type == "cuda"
    if sync:
        torch.cuda.synchronize(moving.device)
    start = time.perf_counter()
    with torch.no_grad():
        _, disp = model(torch.cat([moving, fixed], dim=1))
    if sync:
        torch.cuda.synchronize(moving.device)
    return disp.float(), time.perf_counter() - start


def field_metrics(disp: torch.Tensor, moving_label: np.ndarray, fixed_label: np.ndarray, labels: list[int],
                  *, label_mode: str = "onehot", hd95: bool = False, spacing: tuple[float, ...] = (1.0, 1.0, 1.0),
                  ground_truth: np.ndarray | None = None, full: bool = True) -> dict[str, float]:
    """The metrics of one field ``disp`` (1,3,D,H,W) in voxels between integer label maps (D,H,W).

    ``full=False`` computes only Dice and folding (the per-epoch validation).
    """
    field = disp.detach().reshape(disp.shape[-4:]).cpu().double().numpy()
    # All classes are warped (TransMorph's one-hot convention); Dice is then taken over ``labels``.
    warped = metrics.warp_labels(moving_label, field, None, mode=label_mode)
    per_label = np.asarray(metrics.dice(warped, fixed_label, labels), dtype=np.float64)
    row: dict[str, float] = {"dice_mean": float(np.nanmean(per_label)) if np.isfinite(per_label).any()
                             else float("nan")}
    row.update({f"dice_{label}": float(v) for label, v in zip(labels, per_label)})
    det = metrics.jacobian_determinant(field)  # once: folding and the plain SDlogJ both use it
    row["folding_percent"] = metrics.folding_percent_of(det)
    if not full:
        return row
    row["sdlogj_l2r"] = float(metrics.sdlogj(field, convention="l2r"))
    row["sdlogj_plain"] = metrics.sdlogj_plain_of(det)
    if hd95:
        pred, true = warped, np.asarray(fixed_label)
        vox, mm = [], []
        for label in labels:
            if not ((pred == label).any() and (true == label).any()):
                continue  # HD95 is undefined unless the structure is in both images
            vox.append(metrics.hd95(pred == label, true == label, spacing=(1.0, 1.0, 1.0)))
            mm.append(metrics.hd95(pred == label, true == label, spacing=tuple(spacing)))
        row["hd95"] = float(np.mean(vox)) if vox else float("nan")
        row["hd95_mm"] = float(np.mean(mm)) if mm else float("nan")
    row["endpoint_error"] = (float(metrics.endpoint_error(field, np.asarray(ground_truth, dtype=np.float64)))
                             if ground_truth is not None else float("nan"))
    return row


def evaluate(model: torch.nn.Module, dataset: Any, split: str = "test", *, label_mode: str = "onehot",
             hd95: bool = False, refine_steps: int = 0, refine_lr: float = 0.1, refine_reg_weight: float = 1.0,
             device: str | torch.device | None = None, progress: bool = True, max_pairs: int | None = None,
             window: int = 9) -> pd.DataFrame:
    """Metrics of ``model`` on every pair of ``split`` (the first ``max_pairs``); one row per pair.

    ``model`` maps (B,2,D,H,W) to (warped, displacement (B,3,D,H,W) in voxels); it is run in
    eval mode on ``device`` (default: where its parameters are) and put back in its previous mode.
    Columns: see the module docstring.
    """
    check_split(split)
    if label_mode not in LABEL_MODES:
        raise ValueError(f"label_mode must be one of {LABEL_MODES}, got {label_mode!r}")
    if not isinstance(refine_steps, int) or refine_steps < 0:
        raise ValueError(f"refine_steps must be a non-negative integer, got {refine_steps!r}")
    device = torch.device(device) if device is not None else _device_of(model)
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
            moving, fixed = _as_tensor(pair.moving, device).float(), _as_tensor(pair.fixed, device).float()
            disp, seconds = _predict(model, moving, fixed)
            truth = dataset.ground_truth(split, index)
            row: dict[str, Any] = {"split": split, "pair_index": index, "moving": pairs.keys[index][0],
                                   "fixed": pairs.keys[index][1], "label_mode": label_mode}
            common = dict(label_mode=label_mode, hd95=hd95, spacing=spacing, ground_truth=truth)
            row.update(field_metrics(disp, pair.moving_label, pair.fixed_label, labels, **common))
            row["inference_seconds"] = seconds
            if refine_steps > 0:
                start = time.perf_counter()
                refined, _ = refine(moving, fixed, disp, steps=refine_steps, lr=refine_lr,
                                    reg_weight=refine_reg_weight, window=window)
                row["refine_seconds"] = time.perf_counter() - start
                after = field_metrics(refined, pair.moving_label, pair.fixed_label, labels, **common)
                row.update({f"refined_{name}": value for name, value in after.items()})
            rows.append(row)
    finally:
        model.train(was_training)
    return pd.DataFrame(rows)


def validation_scores(model: torch.nn.Module, dataset: Any, split: str = "val", *, max_pairs: int | None = None,
                      device: str | torch.device | None = None, progress: bool = False) -> tuple[float, float]:
    """(mean Dice with one-hot label warping, mean %|J|≤0) over the first ``max_pairs`` pairs of ``split``."""
    check_split(split)
    device = torch.device(device) if device is not None else _device_of(model)
    pairs = dataset.pairs(split)
    count = len(pairs) if max_pairs is None else min(len(pairs), max_pairs)
    labels = [int(label) for label in dataset.labels]
    dice, folding = [], []
    was_training = model.training
    model.eval()
    try:
        for index in tqdm(range(count), desc=f"validate {split}", disable=not progress, leave=False):
            pair = pairs[index]
            moving, fixed = _as_tensor(pair.moving, device).float(), _as_tensor(pair.fixed, device).float()
            disp, _ = _predict(model, moving, fixed)
            row = field_metrics(disp, pair.moving_label, pair.fixed_label, labels, full=False)
            dice.append(row["dice_mean"])
            folding.append(row["folding_percent"])
    finally:
        model.train(was_training)
    if not dice:
        return float("nan"), float("nan")
    return float(np.nanmean(dice)) if np.isfinite(dice).any() else float("nan"), float(np.mean(folding))


def load_checkpoint(path: str | Path, device: str | torch.device | None = None) -> tuple[torch.nn.Module, RunConfig]:
    """(network in eval mode with the checkpoint's weights, its run config). Device default: cpu."""
    payload = read_checkpoint(path)
    model = build_from_checkpoint(payload, path, device if device is not None else "cpu")
    return model, RunConfig.from_dict(payload["config"])


def evaluate_checkpoint(checkpoint: str | Path, split: str = "test", out: str | Path | None = None, *,
                        dataset_root: str | Path | None = None, device: str | torch.device | None = None,
                        **kwargs: Any) -> pd.DataFrame:
    """Evaluate a training checkpoint on its own dataset (``dataset_root`` overrides the stored root).

    ``kwargs`` go to :func:`evaluate`; with ``out`` the table is also written there as CSV, atomically.
    """
    from ofg.data import open_dataset
    from ofg.train import resolve_device

    device = resolve_device("auto") if device is None else torch.device(device)
    model, config = load_checkpoint(checkpoint, device)
    root = dataset_root if dataset_root is not None else config.dataset.root
    dataset = open_dataset(config.dataset.name, root, **config.dataset.options)
    kwargs.setdefault("window", config.ofg.window)
    table = evaluate(model, dataset, split, device=device, **kwargs)
    table.insert(0, "checkpoint", str(checkpoint))
    table.insert(1, "method", config.method)
    table.insert(2, "model", config.model.name)
    table.insert(3, "dataset", config.dataset.name)
    if out is not None:
        with atomic_path(out) as tmp:
            table.to_csv(tmp, index=False)
    return table


def main(argv: list[str] | None = None) -> int:
    """``python -m ofg.evaluate CHECKPOINT --split test --out metrics.csv [...]``."""
    parser = argparse.ArgumentParser(prog="ofg-evaluate", description="Per-pair metrics of a trained checkpoint.")
    parser.add_argument("checkpoint", type=Path)
    parser.add_argument("--split", default="test", choices=("train", "val", "test"))
    parser.add_argument("--out", type=Path, required=True, help="metrics CSV to write")
    parser.add_argument("--hd95", action="store_true", help="also compute HD95 (slower)")
    parser.add_argument("--label-mode", default="onehot", choices=LABEL_MODES)
    parser.add_argument("--refine", type=int, default=0, metavar="K", help="also score after K refinement steps")
    parser.add_argument("--refine-lr", type=float, default=0.1)
    parser.add_argument("--refine-reg-weight", type=float, default=1.0)
    parser.add_argument("--dataset-root", type=Path, default=None, help="override the dataset root stored in the checkpoint")
    parser.add_argument("--device", default=None, help="cpu, cuda or cuda:N (default: cuda if available)")
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        from ofg.train import resolve_device

        device = resolve_device(args.device or "auto")
        table = evaluate_checkpoint(args.checkpoint, args.split, args.out, dataset_root=args.dataset_root,
                                    device=device, label_mode=args.label_mode, hd95=args.hd95,
                                    refine_steps=args.refine, refine_lr=args.refine_lr,
                                    refine_reg_weight=args.refine_reg_weight, progress=not args.no_progress)
    except ValueError as exc:
        print(f"ofg-evaluate: error: {exc}", file=sys.stderr)
        return 1
    log.info("%d pairs, mean Dice %.4f (%s labels) -> %s", len(table), table["dice_mean"].mean(), args.label_mode,
             args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
