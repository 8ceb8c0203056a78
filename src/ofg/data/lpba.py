"""LPBA40: atlas-based brain registration (moving = subject, fixed = atlas S01), 54 Dice labels.

Two layouts, detected automatically (``layout="auto"``; or force ``"preprocessed"`` / ``"loni"``):

(a) The widely shared preprocessed release (160x192x160, delineation space)::

        fixed.nii.gz                                       the atlas S01 (fixed image)
        train/S11.delineation.skullstripped.nii.gz ...     S11..S40 (30 subjects)
        test/S02.delineation.skullstripped.nii.gz ...      S02..S10 (9 subjects)
        label/S01.delineation.structure.label.nii.gz ...   labels of every subject incl. S01

    The subject ID is the file name up to the first dot; its label is
    ``label/<ID>.delineation.structure.label.nii.gz``. Spacing comes from the fixed image header.

(b) The original LONI download (``LPBA40/delineation_space/S01/...``; ``root`` may be any of
    these three folders)::

        S01/S01.delineation.skullstripped.img(.gz) + .hdr        Analyze 7.5
        S01/S01.delineation.structure.label.img(.gz) + .hdr

    Every volume is resampled to ``resample_mm`` isotropic voxels from its header voxel size
    (``scipy.ndimage.zoom``: linear for images, nearest for labels), then centre-cropped or
    zero-padded, symmetrically per axis (an odd excess goes to the end), to ``image_size``
    (default the paper's 160x192x160; ``None`` keeps the resampled size). Voxel order is the file's;
    no reorientation. Splits by subject ID as in (a): S01 is the atlas, S02..S10 test, S11..S40 train
    (whichever of them are present).

Intensities (``normalize``): the reference code reads the preprocessed files as raw arrays, with no
rescaling, so the preprocessed layout is read raw by default (``normalize=None`` -> False). The
loader does not know the release's intensity range and does not check it; min-max rescaling to
[0, 1] per volume (``normalize=True``) equals the raw read only for volumes that already span
exactly [0, 1]. The LONI layout, which the reference never reads, is rescaled by default
(``normalize=None`` -> True), since its raw Analyze values are scanner units. The local NCC of the
losses is nearly invariant to the intensity scale (only its 1e-5 guard is not).

Both: no flip augmentation (``augment_flips`` False: the reference's LPBA dataset ignores its
transforms), ``bidirectional`` False. There is no validation set in either layout: val = the test
pairs (``notes["val"]`` says so) unless a ``val/`` folder exists in the preprocessed layout.
``image_size`` see :mod:`ofg.data.realdata`.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np

from ofg.data.base import Pair, PairList
from ofg.data.labels import LPBA_LABEL_NAMES, LPBA_LABELS
from ofg.data.realdata import (
    RealDataset,
    Size,
    SizeOption,
    Volume,
    check_volume,
    integral_label,
    make_pair,
    nifti_pair_list,
    nifti_shape,
    nifti_spacing,
    require_dir,
    require_root,
    resolve_size,
)
from ofg.data.analyze import crop_or_pad, read_analyze, resample, resampled_size
from ofg.io import DataError, require_file

PAPER_SIZE: Size = (160, 192, 160)
ATLAS = "S01"
IMAGE_SUFFIX = ".delineation.skullstripped"
LABEL_SUFFIX = ".delineation.structure.label"


def subject_number(subject: str) -> int:
    """``"S11"`` -> 11; DataError for a name that is not an LPBA40 subject ID."""
    if len(subject) == 3 and subject[0] == "S" and subject[1:].isdigit():
        return int(subject[1:])
    raise DataError(f"not an LPBA40 subject ID (S01..S40): {subject!r}")


# --- (a) preprocessed NIfTI layout -------------------------------------------------------------


def _label_file(label_dir: Path, subject: str) -> Path:
    path = label_dir / f"{subject}{LABEL_SUFFIX}.nii.gz"
    if path.is_file():
        return path
    candidates = sorted(label_dir.glob(f"{subject}.*nii.gz"))
    if len(candidates) == 1:
        return candidates[0]
    raise DataError(f"label file of {subject} not found: {path}")


def _split_volumes(directory: Path, label_dir: Path, split: str) -> list[Volume]:
    files = sorted(require_dir(directory, f"LPBA {split} folder").glob("*.nii.gz"))
    if not files:
        raise DataError(f"LPBA {split} folder holds no .nii.gz files: {directory}")
    volumes = []
    for file in files:
        subject = file.name.split(".")[0]
        volumes.append(Volume(subject, file, _label_file(label_dir, subject)))
    return volumes


def _open_preprocessed(root: Path, image_size: SizeOption, normalize: bool) -> tuple[dict, dict, Size, tuple]:
    label_dir = require_dir(root / "label", "LPBA label folder")
    atlas = Volume(
        ATLAS,
        require_file(root / "fixed.nii.gz", "LPBA fixed image (atlas S01)"),
        _label_file(label_dir, ATLAS),
    )
    expected = resolve_size(image_size, PAPER_SIZE, lambda: nifti_shape(atlas.image))
    subjects = {
        split: _split_volumes(root / split, label_dir, split)
        for split in ("train", "test", "val")
        if split != "val" or (root / "val").is_dir()
    }
    subjects.setdefault("val", subjects["test"])
    splits = {
        s: nifti_pair_list([(v, atlas) for v in vols], expected, minmax=normalize)
        for s, vols in subjects.items()
    }
    notes = {s: f"{len(v)} subjects of {s}/ -> atlas S01 (fixed.nii.gz)" for s, v in subjects.items()}
    if not (root / "val").is_dir():
        notes["val"] = "no val/ folder: val = the test pairs"
    return splits, notes, expected, nifti_spacing(atlas.image)


# --- (b) original LONI Analyze layout ----------------------------------------------------------


def read_loni_subject(
    volume: Volume, size: Size | None, resample_mm: float, normalize: bool
) -> tuple[np.ndarray, np.ndarray]:
    """Read, resample, crop/pad and check one LONI subject; return (float32 image, int16 label)."""
    image, zooms = read_analyze(volume.image)
    label, label_zooms = read_analyze(volume.label)
    if label.shape != image.shape:
        raise DataError(
            f"{volume.label}: label grid {label.shape} differs from the image grid {image.shape} of {volume.image}"
        )
    label = integral_label(label, volume.label)
    image = resample(np.asarray(image, dtype=np.float32), zooms, resample_mm, order=1)
    label = resample(label, label_zooms, resample_mm, order=0)
    if size is not None:
        image, label = crop_or_pad(image, size), crop_or_pad(label, size)
    image, label = check_volume(image, label, volume.image, volume.label, size)
    if normalize:
        low, high = float(image.min()), float(image.max())
        image = (image - low) / (high - low) if high > low else np.zeros_like(image)
    return np.ascontiguousarray(image, dtype=np.float32), np.ascontiguousarray(label)


@lru_cache(maxsize=2)
def _read_loni_cached(volume: Volume, stamp: tuple, size: Size | None, resample_mm: float, normalize: bool):
    # The atlas is in every pair: read and resample it once per process.
    image, label = read_loni_subject(volume, size, resample_mm, normalize)
    image.flags.writeable = False
    label.flags.writeable = False
    return image, label


@dataclass(frozen=True)
class _LoniToAtlas:
    """Picklable loader: pair i = (subjects[i] -> atlas)."""

    subjects: tuple[Volume, ...]
    atlas: Volume
    size: Size | None
    resample_mm: float
    normalize: bool

    def __call__(self, index: int) -> Pair:
        stamp = tuple(p.stat().st_mtime_ns for p in (self.atlas.image, self.atlas.label))
        image, label = _read_loni_cached(self.atlas, stamp, self.size, self.resample_mm, self.normalize)
        moving = read_loni_subject(self.subjects[index], self.size, self.resample_mm, self.normalize)
        return make_pair(moving, (image.copy(), label.copy()))


def _loni_folder(root: Path) -> Path | None:
    for candidate in (root, root / "delineation_space", root / "LPBA40" / "delineation_space"):
        if (candidate / ATLAS).is_dir():
            return candidate
    return None


def _loni_file(folder: Path, subject: str, suffix: str) -> Path:
    for ext in (".img", ".img.gz"):
        path = folder / subject / f"{subject}{suffix}{ext}"
        if path.is_file():
            return path
    raise DataError(f"LPBA LONI file not found: {folder / subject / f'{subject}{suffix}.img(.gz)'}")


def _open_loni(
    folder: Path, image_size: SizeOption, resample_mm: float, normalize: bool
) -> tuple[dict, dict, Size]:
    subjects = sorted(
        p.name for p in folder.iterdir() if p.is_dir() and p.name.startswith("S") and p.name[1:].isdigit()
    )
    volumes = {
        s: Volume(s, _loni_file(folder, s, IMAGE_SUFFIX), _loni_file(folder, s, LABEL_SUFFIX))
        for s in subjects
    }
    atlas = volumes[ATLAS]

    def atlas_size() -> Size:
        data, zooms = read_analyze(atlas.image)
        return resampled_size(data.shape, zooms, resample_mm)

    size = resolve_size(image_size, PAPER_SIZE, atlas_size)
    groups = {
        "train": [v for s, v in volumes.items() if subject_number(s) >= 11],
        "test": [v for s, v in volumes.items() if 2 <= subject_number(s) <= 10],
    }
    for split, group in groups.items():
        if not group:
            raise DataError(
                f"{folder}: no LPBA {split} subjects ({'S11..S40' if split == 'train' else 'S02..S10'}) found"
            )
    splits = {}
    for split, group in groups.items():
        keys = tuple((v.key, ATLAS) for v in group)
        splits[split] = PairList(
            keys=keys, load=_LoniToAtlas(tuple(group), atlas, size, resample_mm, normalize)
        )
    splits["val"] = splits["test"]
    notes = {
        "train": f"{len(groups['train'])} subjects S11..S40 -> atlas S01, resampled to {resample_mm} mm and "
        f"centre-cropped/padded to {size}",
        "test": f"{len(groups['test'])} subjects S02..S10 -> atlas S01",
        "val": "no validation set in LPBA40: val = the test pairs",
    }
    return splits, notes, size


def detect_layout(root: Path) -> str:
    """``"preprocessed"`` if ``fixed.nii.gz`` exists, ``"loni"`` if an ``S01/`` folder does."""
    if (root / "fixed.nii.gz").is_file():
        return "preprocessed"
    if _loni_folder(root) is not None:
        return "loni"
    raise DataError(
        f"{root}: neither fixed.nii.gz (preprocessed layout) nor S01/ (LONI delineation-space layout) found"
    )


def open_lpba(
    root: Path,
    layout: str = "auto",
    image_size: SizeOption = "paper",
    normalize: bool | None = None,
    resample_mm: float = 1.0,
) -> RealDataset:
    """Open LPBA40 under ``root`` (see the module docstring for layouts and options).

    ``normalize`` None is the layout's default: raw for "preprocessed", min-max for "loni".
    ``resample_mm`` applies to the LONI layout only.
    """
    if not resample_mm > 0:
        raise ValueError(f"resample_mm must be positive; got {resample_mm!r}")
    root = require_root(root, "LPBA40")
    found = detect_layout(root) if layout == "auto" else layout
    if normalize is None:
        normalize = found == "loni"
    if found == "preprocessed":
        splits, notes, size, spacing = _open_preprocessed(root, image_size, normalize)
    elif found == "loni":
        folder = _loni_folder(root)
        if folder is None:
            raise DataError(f"{root}: no LONI S01/ folder found")
        splits, notes, size = _open_loni(folder, image_size, resample_mm, normalize)
        spacing = (float(resample_mm),) * 3
    else:
        raise ValueError(f"unknown LPBA layout {layout!r}; expected 'auto', 'preprocessed' or 'loni'")
    return RealDataset(
        name="lpba",
        root=root,
        layout=found,
        labels=list(LPBA_LABELS),
        label_names={k: LPBA_LABEL_NAMES[k] for k in LPBA_LABELS},
        image_size=size,
        splits=splits,
        spacing=spacing,  # type: ignore[arg-type]
        bidirectional=False,
        augment_flips=False,
        notes=notes,
    )
