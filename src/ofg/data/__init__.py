"""Datasets: the embedded default cohorts and loaders for the paper's real datasets.

``open_dataset(name, root, **options)`` is the single entry point; see :mod:`ofg.data.base` for the
interface every dataset implements.
"""

from __future__ import annotations

import importlib
from pathlib import Path

from ofg.data.base import SPLITS, Pair, PairList, RegistrationDataset
from ofg.data.realdata import check_image_size
from ofg.data.torch_dataset import PairDataset
from ofg.names import EMBEDDED, REAL

# name -> "module:function"; modules are imported lazily so that one loader's optional
# dependency never breaks another.
DATASETS: dict[str, str] = {
    "ixi": "ofg.data.ixi:open_ixi",
    "oasis": "ofg.data.oasis:open_oasis",
    "lpba": "ofg.data.lpba:open_lpba",
    "abdomen": "ofg.data.abdomen:open_abdomen",
    "embedded-brain": "ofg.data.cohort:open_embedded_brain",
    "embedded-ct": "ofg.data.cohort:open_embedded_ct",
}


def open_dataset(name: str, root: str | Path, **options) -> RegistrationDataset:
    """Open dataset ``name`` stored under ``root``; ``options`` go to that dataset's loader."""
    if name not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}; valid names: {', '.join(sorted(DATASETS))}")
    module_name, function_name = DATASETS[name].split(":")
    opener = getattr(importlib.import_module(module_name), function_name)
    return opener(Path(root), **options)


__all__ = [
    "DATASETS", "EMBEDDED", "REAL", "SPLITS", "Pair", "PairDataset", "PairList", "RegistrationDataset", "check_image_size",
    "open_dataset",
]
