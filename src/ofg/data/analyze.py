"""Volumes of the LONI Analyze layout: reading Analyze 7.5 files, resampling to a grid, cropping or padding.

Arrays are in stored voxel order (D,H,W); voxel sizes (zooms) in mm.
"""

from __future__ import annotations

import gzip
import io
from pathlib import Path

import nibabel as nib
import numpy as np
from scipy.ndimage import zoom

from ofg.data.realdata import Size
from ofg.io import DataError, require_file


def read_analyze(path: Path) -> tuple[np.ndarray, tuple[float, float, float]]:
    """Read an Analyze 7.5 volume (``.img`` or gzipped ``.img.gz``, with its ``.hdr``/``.hdr.gz``).

    Returns (array in stored voxel order, squeezed to 3-D; voxel size in mm). nibabel cannot pair a
    gzipped image with a plain header, which is how the LONI download ships them, so the two files
    are read separately here.
    """
    path = require_file(path, "LPBA Analyze image")
    stem = path.name[: -len(".img.gz")] if path.name.endswith(".img.gz") else path.name[: -len(".img")]
    headers = [path.with_name(stem + ".hdr"), path.with_name(stem + ".hdr.gz")]
    header_path = next((h for h in headers if h.is_file()), None)
    if header_path is None:
        raise DataError(f"{path}: Analyze header not found (expected {headers[0]})")
    try:
        header_bytes = header_path.read_bytes()
        if header_path.name.endswith(".gz"):
            header_bytes = gzip.decompress(header_bytes)
        header = nib.AnalyzeHeader.from_fileobj(io.BytesIO(header_bytes))
        image_bytes = path.read_bytes()
        if path.name.endswith(".gz"):
            image_bytes = gzip.decompress(image_bytes)
        data = np.asarray(header.data_from_fileobj(io.BytesIO(image_bytes)))
        zooms = tuple(float(z) for z in header.get_zooms()[:3])
    except Exception as exc:
        raise DataError(f"{path}: cannot read as Analyze ({type(exc).__name__}: {exc})") from exc
    while data.ndim > 3 and data.shape[-1] == 1:
        data = data[..., 0]
    if data.ndim != 3:
        raise DataError(f"{path}: expected a 3-D volume, found shape {data.shape}")
    return data, zooms  # type: ignore[return-value]


def crop_or_pad(array: np.ndarray, size: Size) -> np.ndarray:
    """Centre-crop or zero-pad ``array`` to ``size``, per axis; an odd excess goes to the end."""
    out = array
    for axis, target in enumerate(size):
        excess = out.shape[axis] - target
        if excess > 0:
            out = np.take(out, np.arange(excess // 2, excess // 2 + target), axis=axis)
        elif excess < 0:
            pad = [(0, 0)] * out.ndim
            pad[axis] = (-excess // 2, -excess - (-excess // 2))
            out = np.pad(out, pad)
    return out


def resampled_size(shape: tuple[int, ...], zooms: tuple[float, ...], resample_mm: float) -> Size:
    return tuple(int(round(n * z / resample_mm)) for n, z in zip(shape, zooms))  # type: ignore[return-value]


def resample(array: np.ndarray, zooms: tuple[float, ...], resample_mm: float, order: int) -> np.ndarray:
    target = resampled_size(array.shape, zooms, resample_mm)
    if target == tuple(array.shape):
        return array
    factors = [t / n for t, n in zip(target, array.shape)]
    # grid_mode=True scales voxel extents (not centre spacing), so the field of view is kept.
    return zoom(array, factors, order=order, mode="nearest", grid_mode=True)
