"""File input/output with clear errors and atomic writes: the array formats (NIfTI, pickles).

Every reader names the file and what is wrong with it. The plain-file helpers (``DataError``, the
atomic writers, ``require_file``) live in :mod:`ofg.files`, free of numpy, and are handed on here.
"""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

import numpy as np

from ofg.files import DataError, atomic_path, require_file, sha256_file, write_json_atomic, write_text_atomic

__all__ = ["DataError", "atomic_path", "require_file", "sha256_file", "write_json_atomic", "write_text_atomic",
           "check_finite", "load_nifti", "save_nifti", "load_pickle"]


def check_finite(array: np.ndarray, path: str | Path) -> np.ndarray:
    """Raise DataError naming ``path`` if ``array`` holds NaN or Inf."""
    if np.issubdtype(array.dtype, np.floating) and not np.isfinite(array).all():
        bad = int((~np.isfinite(array)).sum())
        raise DataError(f"{path}: image holds {bad} NaN/Inf voxels")
    return array


def load_nifti(path: str | Path, dtype: type | None = np.float32) -> tuple[np.ndarray, np.ndarray]:
    """Load a NIfTI (or Analyze .img/.hdr) file; return (array, 4x4 affine).

    The array is squeezed of trailing singleton axes. ``dtype`` None keeps the stored type.
    Raises DataError naming the file when it is missing or unreadable.
    """
    import nibabel as nib

    path = require_file(path, "image file")
    try:
        img = nib.load(str(path))
        data = np.asanyarray(img.dataobj)
    except Exception as exc:  # nibabel raises many types for corrupt files
        raise DataError(f"{path}: cannot read as NIfTI/Analyze ({type(exc).__name__}: {exc})") from exc
    while data.ndim > 3 and data.shape[-1] == 1:
        data = data[..., 0]
    if dtype is not None:
        data = data.astype(dtype, copy=False)
    return data, np.asarray(img.affine, dtype=np.float64)


def save_nifti(path: str | Path, array: np.ndarray, affine: np.ndarray | None = None, *,
               descrip: str | None = None, intent: str | None = None) -> Path:
    """Write ``array`` as a (gzipped, by the name) NIfTI-1 file atomically; return the path.

    Written with a fixed header and no timestamp, so the same array gives byte-identical files.
    ``descrip`` (at most 80 ASCII characters) fills the header's description field and ``intent``
    its intent code (a nibabel intent name such as "vector"); both are left empty by default.
    """
    import gzip

    import nibabel as nib

    if descrip is not None and (len(descrip) > 80 or not descrip.isascii()):
        raise ValueError(f"NIfTI descrip must be at most 80 ASCII characters, got {len(descrip)}: {descrip!r}")
    affine = np.eye(4) if affine is None else np.asarray(affine, dtype=np.float64)
    img = nib.Nifti1Image(np.asarray(array), affine)
    img.header.set_xyzt_units("mm")
    if descrip is not None:
        img.header["descrip"] = descrip
    if intent is not None:
        img.header.set_intent(intent)
    path = Path(path)
    with atomic_path(path) as tmp:
        if path.name.endswith(".gz"):
            # gzip headers carry an mtime: pin it to 0 for reproducible bytes.
            raw = img.to_bytes()
            with open(tmp, "wb") as fh, gzip.GzipFile(fileobj=fh, mode="wb", mtime=0, filename="") as gz:
                gz.write(raw)
        else:
            nib.save(img, str(tmp))
    return path


def load_pickle(path: str | Path) -> Any:
    """Unpickle ``path`` (the TransMorph .pkl releases); raise DataError naming a corrupt file.

    Only open pickles from a source you trust: unpickling can run code.
    """
    path = require_file(path, "pickle file")
    try:
        with open(path, "rb") as fh:
            return pickle.load(fh)
    except Exception as exc:
        raise DataError(f"{path}: cannot unpickle ({type(exc).__name__}: {exc})") from exc
