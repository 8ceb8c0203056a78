"""Reference rows on the same test pairs: no registration, the OFG optimiser alone, and ANTs SyN.

:func:`baseline_rows` scores one method on every pair of a split. Each row has the columns of
:func:`ofg.evaluate.evaluate` (``split``, ``pair_index``, ``moving``, ``fixed``, ``label_mode``,
``dice_mean``, ``dice_<label>``, ``folding_percent``, ``sdlogj_l2r``, ``sdlogj_plain``, with
``hd95=True`` ``hd95`` and ``hd95_mm``, ``endpoint_error``, ``inference_seconds``), plus
``dice_mean_nearest`` and ``dice_mean_onehot`` (:func:`ofg.inference.both_dice`), ``method`` and
``seconds_per_pair``, the wall time to produce the field (also in ``inference_seconds``). Every
method's field is scored by :func:`ofg.inference.field_metrics`, so labels are warped exactly as
for the networks. Methods (:data:`METHODS`):

- ``before_registration``: the zero displacement; 0 seconds.
- ``instance_optimisation``: :func:`ofg.guidance.refine` from the zero field, ``settings.steps``
  Adam steps (default :data:`INSTANCE_STEPS`) on the OFG energy (:class:`RefineSettings`: lr,
  reg_weight, window); the time includes the device synchronisation.
- ``syn``: ANTsPy's ``SyNOnly`` as the reference code's ``experiment/infer_SyN.py`` runs it
  (reg_iterations (160, 80, 40), metric meansquares, ANTs' other defaults), timed around
  ``ants.registration`` only; always on the CPU. See :func:`syn_field` for the field conversion.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Mapping

import numpy as np
import pandas as pd
import torch
from tqdm.auto import tqdm

from ofg.data import open_dataset
from ofg.data.base import check_split
from ofg.extras import import_optional
from ofg.guidance import RefineSettings, refine
from ofg.inference import both_dice, check_label_mode, field_metrics, pair_tensors
from ofg.io import atomic_path
from ofg.runtime import resolve_device, synchronize

METHODS = ("before_registration", "instance_optimisation", "syn")
INSTANCE_STEPS = 100
SYN_TRANSFORM = "SyNOnly"
SYN_ITERATIONS = (160, 80, 40)
SYN_METRIC = "meansquares"
#: a field function maps (moving, fixed) (1,1,D,H,W) float32 to (displacement (1,3,D,H,W) in voxels, seconds)
FieldFunction = Callable[[torch.Tensor, torch.Tensor], tuple[torch.Tensor, float]]


def require_ants() -> Any:
    """The ``ants`` module (ANTsPy, the ``[baselines]`` extra: ITK libraries, ~90 MB, only SyN needs it,
    imported on first use); a :class:`ofg.extras.MissingExtraError` naming the extra when it is missing."""
    return import_optional("ants", "baselines", "the SyN baseline (baselines.methods: syn)")


def _ants_image(ants: Any, volume: np.ndarray) -> Any:
    """``volume`` (D,H,W) as an ANTs image whose physical space is the voxel grid: origin 0, unit
    spacing, identity direction, ANTs index i = array axis i."""
    return ants.from_numpy(np.ascontiguousarray(volume, dtype=np.float32), origin=(0.0, 0.0, 0.0),
                           spacing=(1.0, 1.0, 1.0), direction=np.eye(3))


def syn_field(moving: np.ndarray, fixed: np.ndarray, reg_iterations: tuple[int, ...] = SYN_ITERATIONS,
              metric: str = SYN_METRIC) -> tuple[np.ndarray, float]:
    """(displacement (3,D,H,W) float32 in voxels, seconds) of ANTs SyNOnly registering ``moving`` to
    ``fixed`` (both (D,H,W)), in this project's convention: warped(x) = moving(x + u(x)).

    Both images are given ANTs the voxel grid as physical space (:func:`_ants_image`), so ANTs' LPS
    physical coordinates are voxel indices along the array axes. ANTs' forward transforms map a
    fixed-image point to its moving-image point; ``ants.apply_transforms(..., compose=...)`` writes
    them (the SyN warp and any linear part) as one displacement field on the fixed grid, whose
    component i is then the displacement along array axis i in voxels. ``seconds`` times
    ``ants.registration`` alone. Its files are written to, and removed with, a temporary folder.
    """
    ants = require_ants()
    if np.shape(moving) != np.shape(fixed) or np.ndim(moving) != 3:
        raise ValueError(f"syn_field: expected two (D,H,W) volumes of one shape, got {np.shape(moving)} "
                         f"and {np.shape(fixed)}")
    fixed_image, moving_image = _ants_image(ants, fixed), _ants_image(ants, moving)
    with tempfile.TemporaryDirectory(prefix="ofg-syn-") as folder:
        start = time.perf_counter()
        result = ants.registration(fixed_image, moving_image, type_of_transform=SYN_TRANSFORM,
                                   reg_iterations=tuple(reg_iterations), syn_metric=metric,
                                   outprefix=str(Path(folder) / "syn_"))
        seconds = time.perf_counter() - start
        composed = ants.apply_transforms(fixed_image, moving_image, result["fwdtransforms"],
                                         compose=str(Path(folder) / "forward_"))
        field_image = ants.image_read(composed)
        if (field_image.components != 3 or tuple(field_image.spacing) != (1.0, 1.0, 1.0)
                or not np.allclose(field_image.direction, np.eye(3)) or tuple(field_image.shape) != np.shape(fixed)):
            raise RuntimeError(f"ANTs returned a displacement field on another grid: {field_image}")
        field = np.moveaxis(field_image.numpy(), -1, 0)
    return np.ascontiguousarray(field, dtype=np.float32), seconds


def zero_field(moving: torch.Tensor, fixed: torch.Tensor) -> tuple[torch.Tensor, float]:
    """The "before registration" field: zeros (1,3,D,H,W) on the images' device, 0 seconds."""
    return torch.zeros((1, 3, *moving.shape[2:]), device=moving.device, dtype=torch.float32), 0.0


def instance_optimisation(settings: RefineSettings | None = None) -> FieldFunction:
    """A field function refining the zero field by the OFG optimiser (``settings``; default
    :data:`INSTANCE_STEPS` steps and :class:`RefineSettings`' lr, weight and window)."""
    settings = settings if settings is not None else RefineSettings(steps=INSTANCE_STEPS)

    def run(moving: torch.Tensor, fixed: torch.Tensor) -> tuple[torch.Tensor, float]:
        start_field, _ = zero_field(moving, fixed)
        synchronize(moving.device)
        start = time.perf_counter()
        field, _ = refine(moving, fixed, start_field, **settings.kwargs())
        synchronize(moving.device)
        return field, time.perf_counter() - start

    return run


def syn(moving: torch.Tensor, fixed: torch.Tensor) -> tuple[torch.Tensor, float]:
    """The SyN field function: :func:`syn_field` on the images, the field on the images' device."""
    field, seconds = syn_field(moving[0, 0].cpu().numpy(), fixed[0, 0].cpu().numpy())
    return torch.from_numpy(field)[None].to(moving.device), seconds


def field_function(method: str, settings: RefineSettings | None = None) -> FieldFunction:
    """The field function of ``method`` (one of :data:`METHODS`)."""
    if method == "before_registration":
        return zero_field
    if method == "instance_optimisation":
        return instance_optimisation(settings)
    if method == "syn":
        require_ants()  # fail before the first pair
        return syn
    raise ValueError(f"unknown baseline {method!r}; expected one of {METHODS}")


def baseline_rows(dataset: Any, method: str, split: str = "test", *, label_mode: str = "onehot",
                  dice_rule: str = "either", hd95: bool = False, settings: RefineSettings | None = None, device: str | torch.device = "cpu",
                  max_pairs: int | None = None, progress: bool = False) -> pd.DataFrame:
    """Per-pair metrics of baseline ``method`` on the first ``max_pairs`` pairs of ``split`` (columns:
    see the module docstring, and those of :func:`ofg.evaluate.evaluate`, ``dice_rule`` included);
    ``settings`` configures instance optimisation."""
    check_split(split)
    check_label_mode(label_mode)
    make_field = field_function(method, settings)
    pairs = dataset.pairs(split)
    count = len(pairs) if max_pairs is None else min(len(pairs), max_pairs)
    labels = [int(label) for label in dataset.labels]
    spacing = tuple(float(s) for s in getattr(dataset, "spacing", (1.0, 1.0, 1.0)))
    rows = []
    for index in tqdm(range(count), desc=f"{method} {split}", disable=not progress, leave=False):
        pair = pairs[index]
        disp, seconds = make_field(*pair_tensors(pair, device))
        row: dict[str, Any] = {"method": method, "split": split, "pair_index": index, "moving": pairs.keys[index][0],
                               "fixed": pairs.keys[index][1], "label_mode": label_mode, "dice_rule": dice_rule}
        row.update(field_metrics(disp, pair.moving_label, pair.fixed_label, labels, label_mode=label_mode,
                                 dice_rule=dice_rule, hd95=hd95, spacing=spacing, ground_truth=dataset.ground_truth(split, index)))
        row.update({k: v for k, v in both_dice(disp, pair.moving_label, pair.fixed_label, labels, label_mode,
                                               dice_rule, known=row["dice_mean"]).items() if k != "dice_mean"})
        row["inference_seconds"] = row["seconds_per_pair"] = seconds
        rows.append(row)
    return pd.DataFrame(rows)


def run_baselines(params: Mapping[str, Any]) -> pd.DataFrame:
    """Every method of ``params["methods"]`` on one dataset, written to ``params["out"]`` as CSV, atomically.

    ``params``: ``dataset_name``, ``root``, ``options`` (the loader's), ``methods``, ``split``,
    ``label_mode``, ``dice_rule`` (default "either"), ``hd95``, ``settings`` (a :class:`RefineSettings` mapping for instance
    optimisation), ``device``, ``max_pairs`` (optional) and ``out``.
    """
    dataset = open_dataset(params["dataset_name"], params["root"], **params.get("options", {}))
    settings = RefineSettings(**params["settings"]) if params.get("settings") else None
    device = resolve_device(params.get("device", "cpu"))
    frames = [baseline_rows(dataset, method, params.get("split", "test"), label_mode=params["label_mode"],
                            dice_rule=params.get("dice_rule", "either"), hd95=params.get("hd95", False), settings=settings, device=device,
                            max_pairs=params.get("max_pairs"))
              for method in params["methods"]]
    table = pd.concat(frames, ignore_index=True).assign(dataset=params["dataset_name"])
    with atomic_path(params["out"]) as tmp:
        table.to_csv(tmp, index=False)
    return table
