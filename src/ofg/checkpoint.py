"""Training checkpoints: atomic save, checked load, and the RNG state needed for exact resume.

A checkpoint is a ``torch.save``d dict holding only tensors, numbers, strings, lists, tuples and
dicts, so it loads with ``torch.load(weights_only=True)`` (no pickled code runs). Keys:

- ``format`` ("ofg-checkpoint"), ``version`` (1)
- ``model``: the network's state_dict (of the un-compiled module)
- ``optimizer``: the optimiser's state_dict (absent in weights-only exports)
- ``epoch``: the number of completed epochs; training resumes at this epoch index
- ``best_score``, ``best_epoch``: best validation Dice so far and its epoch (NaN/-1 if none)
- ``config``: the resolved run config as a plain dict
- ``image_size``: (D,H,W) the model was built for
- ``rng``: torch (CPU and CUDA), numpy and python RNG states at the end of the epoch
- ``data_order``: {"seed", "next_epoch"}; the pair order of epoch e is a function of (seed, e)
"""

from __future__ import annotations

import random
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ofg.config import RunConfig
from ofg.io import DataError, atomic_path, require_file
from ofg.models import build_model

FORMAT = "ofg-checkpoint"
VERSION = 1
REQUIRED_KEYS = ("format", "version", "model", "epoch", "config", "image_size")


def capture_rng_state() -> dict[str, Any]:
    """The torch (CPU and every initialised CUDA device), numpy-global and python RNG states."""
    np_state = np.random.get_state()
    version, internal, gauss = random.getstate()
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": {
            "bit_generator": np_state[0],
            "keys": torch.from_numpy(np.asarray(np_state[1], dtype=np.int64)),
            "pos": int(np_state[2]),
            "has_gauss": int(np_state[3]),
            "cached_gaussian": float(np_state[4]),
        },
        "python": {"version": version, "internal": list(internal), "gauss": gauss},
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng_state(state: dict[str, Any]) -> None:
    """Inverse of :func:`capture_rng_state`; the states may lie on any device (``read_checkpoint``'s
    ``map_location``). CUDA states are restored when as many devices are visible as were saved; otherwise
    a RuntimeWarning says the resumed run is not bitwise exact."""
    torch.set_rng_state(state["torch"].cpu())
    np_state = state["numpy"]
    np.random.set_state((np_state["bit_generator"], np_state["keys"].cpu().numpy().astype(np.uint32),
                         np_state["pos"], np_state["has_gauss"], np_state["cached_gaussian"]))
    py = state["python"]
    random.setstate((py["version"], tuple(py["internal"]), py["gauss"]))
    if "cuda" in state and torch.cuda.is_available():
        cuda_states = [s.cpu() for s in state["cuda"]]
        if len(cuda_states) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all(cuda_states)
        else:
            warnings.warn(f"the checkpoint holds the CUDA RNG states of {len(cuda_states)} device(s) but "
                          f"{torch.cuda.device_count()} are visible: they are not restored, so this resumed run "
                          "is not a bitwise continuation", RuntimeWarning, stacklevel=2)


def save_checkpoint(path: str | Path, payload: dict[str, Any]) -> Path:
    """Write ``payload`` (see the module docstring) atomically: a kill never leaves half a file."""
    payload = {"format": FORMAT, "version": VERSION, **payload}
    missing = [k for k in REQUIRED_KEYS if k not in payload]
    if missing:
        raise ValueError(f"checkpoint payload lacks key(s) {missing}")
    with atomic_path(path, suffix=".pt") as tmp:
        torch.save(payload, tmp)
    return Path(path)


def read_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load a checkpoint written by :func:`save_checkpoint`; DataError names a missing or foreign file."""
    path = require_file(path, "checkpoint")
    try:
        payload = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # torch raises several types for truncated or foreign files
        raise DataError(f"{path}: cannot read as an ofg checkpoint ({type(exc).__name__}: {exc})") from exc
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise DataError(f"{path}: not an ofg checkpoint (expected a dict with format={FORMAT!r}; "
                        "write checkpoints with ofg.train)")
    if payload.get("version") != VERSION:
        raise DataError(f"{path}: checkpoint version {payload.get('version')!r}, this code reads {VERSION}")
    missing = [k for k in REQUIRED_KEYS if k not in payload]
    if missing:
        raise DataError(f"{path}: checkpoint lacks key(s) {missing}")
    return payload


def unwrap_model(model: torch.nn.Module) -> torch.nn.Module:
    """The original module behind a ``torch.compile`` wrapper (whose state_dict keys are prefixed)."""
    return getattr(model, "_orig_mod", model)


def build_from_checkpoint(payload: dict[str, Any], path: str | Path = "checkpoint",
                          device: str | torch.device = "cpu") -> torch.nn.Module:
    """Rebuild the network described by ``payload`` and load its weights; returns it in eval mode.

    Raises DataError naming ``path`` if the stored weights do not fit the stored architecture.
    """
    config = RunConfig.from_dict(payload["config"])
    image_size = tuple(int(s) for s in payload["image_size"])
    model = build_model(config.model.name, image_size, size=config.model.size, **config.model.overrides)
    try:
        model.load_state_dict(payload["model"])
    except RuntimeError as exc:
        raise DataError(f"{path}: weights do not fit model {config.model.name!r} (size {config.model.size!r}, "
                        f"image size {image_size}): {exc}") from exc
    return model.to(device).eval()


def load_checkpoint(path: str | Path, device: str | torch.device | None = None) -> tuple[torch.nn.Module, RunConfig]:
    """(network in eval mode with the checkpoint's weights, its run config). Device default: cpu."""
    payload = read_checkpoint(path)
    model = build_from_checkpoint(payload, path, device if device is not None else "cpu")
    return model, RunConfig.from_dict(payload["config"])
