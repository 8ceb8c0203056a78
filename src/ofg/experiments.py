"""Experiments that are not training runs: the optimiser-only refinement curve (paper Fig. 2).

``refinement_curve`` starts from the field a network predicts before any training and follows the
Dice of the OFG optimiser's field step by step:

- ``start="untrained"``: the network's default initialisation (flow head N(0, 1e-5), so the field
  is near identity);
- ``start="random"``: every parameter re-drawn (see :func:`randomize_parameters`), so the starting
  field is a non-trivial random deformation of about ``random_rms`` voxels.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import torch
from tqdm.auto import tqdm

from ofg import metrics
from ofg.guidance import refine
from ofg.models import build_model

STARTS = ("untrained", "random")
COLUMNS = ["start", "pair", "step", "dice", "energy"]


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
                     steps: int = 10, lr: float = 0.1, reg_weight: float = 1.0, n_pairs: int = 5,
                     split: str = "test", seed: int = 0, device: str | torch.device | None = None,
                     label_mode: str = "onehot", window: int = 9, random_rms: float = 2.0,
                     progress: bool = True) -> pd.DataFrame:
    """Dice and energy of the OFG optimiser's field after 0..``steps`` steps, for ``n_pairs`` pairs.

    The network ``model_name`` (``model_size``) is built with ``torch.manual_seed(seed)``; with
    ``start="random"`` its parameters are re-drawn (calibrated on the first pair, see
    :func:`randomize_parameters`). For each of the first ``n_pairs`` pairs of ``split`` it predicts
    φ₀ once, and the row of step k holds the mean Dice (over the dataset's labels, label warping
    ``label_mode``) and the energy NCC + reg_weight·Grad of the field after k Adam steps.

    One refinement of ``steps`` steps runs per pair; its per-step callback scores each iterate.
    Labels are warped with all their classes (one-hot, or nearest) and Dice is taken over the
    dataset's labels. Returns a DataFrame with columns ``COLUMNS``.
    """
    if start not in STARTS:
        raise ValueError(f"start must be one of {STARTS}, got {start!r}")
    if not isinstance(steps, int) or steps < 0:
        raise ValueError(f"steps must be a non-negative integer, got {steps!r}")
    if not isinstance(n_pairs, int) or n_pairs < 1:
        raise ValueError(f"n_pairs must be a positive integer, got {n_pairs!r}")
    device = torch.device(device) if device is not None else torch.device("cpu")
    pairs = dataset.pairs(split)
    count = min(n_pairs, len(pairs))
    if count == 0:
        raise ValueError(f"split {split!r} of dataset {getattr(dataset, 'name', dataset)!r} has no pairs")
    labels = [int(label) for label in dataset.labels]
    torch.manual_seed(seed)
    model = build_model(model_name, tuple(dataset.image_size), size=model_size)
    generator = torch.Generator().manual_seed(seed)
    rows = []
    for index in tqdm(range(count), desc=f"refinement curve ({start})", disable=not progress, leave=False):
        pair = pairs[index]
        moving = torch.from_numpy(np.ascontiguousarray(pair.moving, dtype=np.float32))[None, None]
        fixed = torch.from_numpy(np.ascontiguousarray(pair.fixed, dtype=np.float32))[None, None]
        x = torch.cat([moving, fixed], dim=1)
        if start == "random" and index == 0:
            randomize_parameters(model, x, rms=random_rms, generator=generator)
        model.to(device).eval()
        moving, fixed = moving.to(device), fixed.to(device)
        with torch.no_grad():
            _, disp0 = model(x.to(device))
        def record(k: int, disp: torch.Tensor, energy: float, index: int = index) -> None:
            field = disp[0].cpu().double().numpy()
            warped = metrics.warp_labels(pair.moving_label, field, None, mode=label_mode)
            scores = metrics.dice(warped, pair.fixed_label, labels)
            rows.append({"start": start, "pair": index, "step": k,
                         "dice": float(np.nanmean(scores)) if np.isfinite(scores).any() else float("nan"),
                         "energy": energy})

        refine(moving, fixed, disp0.float(), steps=steps, lr=lr, reg_weight=reg_weight, window=window,
               callback=record)
    return pd.DataFrame(rows, columns=COLUMNS)
