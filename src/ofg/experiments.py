"""Experiments that are not training runs: the optimiser-only refinement curve (paper Fig. 2).

``refinement_curve`` starts from the field a network predicts before any training and follows the
Dice of the OFG optimiser's field step by step:

- ``start="untrained"``: the network's default initialisation (flow head N(0, 1e-5), so the field
  is near identity);
- ``start="random"``: every parameter re-drawn (see :func:`randomize_parameters`), so the starting
  field is a non-trivial random deformation of about ``random_rms`` voxels.
"""

from __future__ import annotations

from typing import Any, Mapping

import numpy as np
import pandas as pd
import torch
from tqdm.auto import tqdm

from ofg.data import open_dataset
from ofg.guidance import RefineSettings, refine
from ofg.inference import as_field, check_label_mode, mean_dice, pair_tensors, predict
from ofg.io import atomic_path
from ofg.models import build_model
from ofg.runtime import resolve_device

STARTS = ("untrained", "random")
COLUMNS = ["start", "pair", "moving", "fixed", "step", "dice", "energy"]


@torch.no_grad()
def randomize_parameters(model: torch.nn.Module, x: torch.Tensor, rms: float = 2.0,
                         generator: torch.Generator | None = None) -> torch.nn.Module:
    """Re-draw every parameter of ``model`` in place, then scale the flow head to a given field size.

    Tensors with two or more dimensions (conv and linear weights, position tables) are drawn
    from N(0, 2/fan_in) (He normal, fan_in = elements per output unit), so activations neither
    vanish nor explode through the network; 1-D ``weight`` tensors (norm gains) from N(1, 0.1²)
    and every other 1-D tensor (biases) from N(0, 0.1²). The flow head (``model.flow_head``) is
    then multiplied by the factor that makes the root-mean-square displacement predicted for
    ``x`` (B,2,D,H,W) equal ``rms`` voxels: a random deformation of a few voxels, not an
    arbitrary-scale field.
    """
    for name, parameter in model.named_parameters():
        if parameter.ndim >= 2:
            std = float(np.sqrt(2.0 / max(parameter[0].numel(), 1)))
            parameter.copy_(torch.randn(parameter.shape, generator=generator) * std)
        elif name.endswith("weight"):
            parameter.copy_(1.0 + 0.1 * torch.randn(parameter.shape, generator=generator))
        else:
            parameter.copy_(0.1 * torch.randn(parameter.shape, generator=generator))
    head = model.flow_head
    _, disp = model(x)
    current = float(disp.pow(2).mean().sqrt())
    if current > 0:
        head.weight.mul_(rms / current)
        if head.bias is not None:
            head.bias.mul_(rms / current)
    return model


def refinement_curve(dataset: Any, model_name: str, model_size: str = "small", *, start: str = "untrained",
                     settings: RefineSettings | None = None, n_pairs: int | None = None, split: str = "test", seed: int = 0,
                     device: str | torch.device | None = None, label_mode: str = "onehot",
                     dice_rule: str = "either", random_rms: float = 2.0, progress: bool = True) -> pd.DataFrame:
    """Dice and energy of the OFG optimiser's field after 0..k steps (``settings``), for the first
    ``n_pairs`` pairs of ``split`` (None: every pair; the claims test the gain over pairs as units).

    The network ``model_name`` (``model_size``) is built with ``torch.manual_seed(seed)``; with
    ``start="random"`` its parameters are re-drawn (calibrated on the first pair, see
    :func:`randomize_parameters`). For each of the first ``n_pairs`` pairs of ``split`` it predicts
    φ₀ once, and the row of step k (with the pair's index and its ``moving`` and ``fixed`` subject names)
    holds the mean Dice (over the dataset's labels, every class
    warped by ``label_mode``, averaged by ``dice_rule``, see :func:`ofg.inference.mean_dice`) and the
    energy (image term + reg_weight·regulariser, as ``settings`` say) of the field after k Adam steps:
    one refinement per pair, whose per-step callback scores each iterate. Returns a DataFrame with
    columns ``COLUMNS``.
    """
    settings = settings if settings is not None else RefineSettings()
    if start not in STARTS:
        raise ValueError(f"start must be one of {STARTS}, got {start!r}")
    if not isinstance(settings.steps, int) or settings.steps < 0:
        raise ValueError(f"steps must be a non-negative integer, got {settings.steps!r}")
    if n_pairs is not None and (not isinstance(n_pairs, int) or n_pairs < 1):
        raise ValueError(f"n_pairs must be a positive integer or None (every pair), got {n_pairs!r}")
    check_label_mode(label_mode)
    device = resolve_device(device) if device is not None else torch.device("cpu")
    pairs = dataset.pairs(split)
    count = len(pairs) if n_pairs is None else min(n_pairs, len(pairs))
    if count == 0:
        raise ValueError(f"split {split!r} of dataset {getattr(dataset, 'name', dataset)!r} has no pairs")
    labels = [int(label) for label in dataset.labels]
    torch.manual_seed(seed)
    model = build_model(model_name, tuple(dataset.image_size), size=model_size)
    generator = torch.Generator().manual_seed(seed)
    rows = []
    for index in tqdm(range(count), desc=f"refinement curve ({start})", disable=not progress, leave=False):
        pair, (moving_name, fixed_name) = pairs[index], pairs.keys[index]
        moving, fixed = pair_tensors(pair, "cpu")
        if start == "random" and index == 0:
            randomize_parameters(model, torch.cat([moving, fixed], dim=1), rms=random_rms, generator=generator)
        model.to(device).eval()
        moving, fixed = moving.to(device), fixed.to(device)
        disp0, _ = predict(model, moving, fixed)

        def record(k: int, disp: torch.Tensor, energy: float, index: int = index) -> None:
            dice, _, _ = mean_dice(as_field(disp), pair.moving_label, pair.fixed_label, labels, label_mode,
                                   dice_rule)
            rows.append({"start": start, "pair": index, "moving": moving_name, "fixed": fixed_name, "step": k,
                         "dice": dice, "energy": energy})

        refine(moving, fixed, disp0, callback=record, **settings.kwargs())
    return pd.DataFrame(rows, columns=COLUMNS)


def run_refinement(params: Mapping[str, Any]) -> pd.DataFrame:
    """The refinement experiment of notebook 04: :func:`refinement_curve` for every start in ``params``
    (:func:`ofg.stages.refinement_parameters`), written to ``params["out"]`` as CSV, atomically."""
    dataset = open_dataset(params["dataset_name"], params["root"], **params["options"])
    settings = RefineSettings(**params["settings"])
    frames = [refinement_curve(dataset, params["model_name"], params["model_size"], start=start, settings=settings,
                               n_pairs=params["n_pairs"], split=params["split"], seed=params["seed"],
                               device=params["device"], label_mode=params["label_mode"],
                               dice_rule=params.get("dice_rule", "either"), progress=False)
              for start in params["starts"]]
    table = pd.concat(frames, ignore_index=True)
    with atomic_path(params["out"]) as tmp:
        table.to_csv(tmp, index=False)
    return table
