"""Test helpers for data folders: a fingerprint of a file tree and a raw NIfTI read."""

from __future__ import annotations

import hashlib
from pathlib import Path

import nibabel as nib
import numpy as np


def tree_state(root: Path) -> dict[str, tuple[str, int]]:
    """sha256 and mtime of every file under ``root``: equal before and after means nothing was written."""
    return {
        str(p.relative_to(root)): (hashlib.sha256(p.read_bytes()).hexdigest(), p.stat().st_mtime_ns)
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def nii(path: Path) -> np.ndarray:
    """The stored array of a NIfTI file, read by nibabel alone (an oracle for the loaders)."""
    return np.asarray(nib.load(str(path)).dataobj)
