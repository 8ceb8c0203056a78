"""OASIS (Learn2Reg 2021 task 3): inter-subject brain registration, labels 1..35.

Two layouts, detected automatically (``layout="auto"``; or force ``"nifti"`` / ``"pkl"``):

(a) Learn2Reg NIfTI release::

        OASIS_dataset.json
        imagesTr/OASIS_0001_0000.nii.gz     160x224x192, intensities in [0, 1]
        labelsTr/OASIS_0001_0000.nii.gz     labels 0..35

    Splits follow :mod:`ofg.data.learn2reg`: val = ``registration_val`` (19 consecutive pairs
    0395->0396 ...); test = ``registration_test`` if its labels exist, else (public release) the val
    pairs; train = all unordered pairs of the remaining training subjects. Arrays are in the file's
    voxel order (160, 224, 192); ``axes=(0, 2, 1)`` transposes every volume to (160, 192, 224), the
    order of the pkl release and of the paper's model size. Spacing comes from the NIfTI header.

(b) TransMorph's pkl release::

        Train/*.pkl   (image, label) per subject, 160x192x224
        Val/*.pkl     (x, y, x_seg, y_seg) per pair: moving = x, fixed = y (the reference code
                      registers x to y)
        Test/*.pkl    optional, same format as Val/; without it test = the Val pairs

    Train = all unordered pairs of the Train subjects (optionally ``max_train`` of them, drawn as
    the reference does with ``seed``; the reference code draws 200 with seed 42 and pairs each with
    a random partner every epoch). Spacing is 1 mm (pickles carry no header).

Both: ``bidirectional`` is True (the reference trains x->y and y->x per pair; each unordered train
pair stands for both directions), ``augment_flips`` False. ``image_size`` see
:mod:`ofg.data.realdata`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from ofg.data.base import Pair, PairList
from ofg.data.labels import OASIS_LABEL_NAMES, OASIS_LABELS
from ofg.data.learn2reg import learn2reg_pair_splits, read_learn2reg
from ofg.data.realdata import (
    RealDataset,
    Size,
    SizeOption,
    check_axes,
    check_volume,
    integral_label,
    make_pair,
    require_dir,
    require_root,
    resolve_size,
    sample_subjects,
    unordered_pairs,
)
from ofg.io import DataError, load_pickle

PKL_SIZE: Size = (160, 192, 224)
NIFTI_SIZE: Size = (160, 224, 192)
JSON_NAME = "OASIS_dataset.json"


def _volume(
    image: np.ndarray, label: np.ndarray, path: Path, expected: Size | None
) -> tuple[np.ndarray, np.ndarray]:
    image, label = check_volume(np.asarray(image), np.asarray(label), path, path, expected)
    return image, integral_label(label, path)


def read_subject_pickle(path: Path, expected: Size | None) -> tuple[np.ndarray, np.ndarray]:
    """A Train/ pickle: (image, label) -> (float32 image, int16 label)."""
    content = load_pickle(path)
    if not isinstance(content, (tuple, list)) or len(content) != 2:
        raise DataError(f"{path}: expected a pickled (image, label) pair, found {type(content).__name__}")
    return _volume(content[0], content[1], path, expected)


def read_pair_pickle(path: Path, expected: Size | None) -> Pair:
    """A Val/ or Test/ pickle: (x, y, x_seg, y_seg) -> Pair(moving=x, fixed=y)."""
    content = load_pickle(path)
    if not isinstance(content, (tuple, list)) or len(content) != 4:
        raise DataError(
            f"{path}: expected a pickled (x, y, x_seg, y_seg) tuple, found {type(content).__name__}"
        )
    x, y, x_seg, y_seg = content
    return make_pair(_volume(x, x_seg, path, expected), _volume(y, y_seg, path, expected))


@dataclass(frozen=True)
class _SubjectPairs:
    """Picklable loader: pair i = (subjects[a], subjects[b]) for the i-th unordered index pair."""

    subjects: tuple[Path, ...]
    index_pairs: tuple[tuple[int, int], ...]
    expected: Size

    def __call__(self, index: int) -> Pair:
        a, b = self.index_pairs[index]
        return make_pair(
            read_subject_pickle(self.subjects[a], self.expected),
            read_subject_pickle(self.subjects[b], self.expected),
        )


@dataclass(frozen=True)
class _PairFiles:
    """Picklable loader: pair i = the pair stored in files[i]."""

    files: tuple[Path, ...]
    expected: Size

    def __call__(self, index: int) -> Pair:
        return read_pair_pickle(self.files[index], self.expected)


def _pickles(directory: Path, split: str) -> list[Path]:
    files = sorted(require_dir(directory, f"OASIS {split} folder").glob("*.pkl"))
    if not files:
        raise DataError(f"OASIS {split} folder holds no .pkl files: {directory}")
    return files


def _pair_files_list(files: Sequence[Path], expected: Size) -> PairList:
    keys = tuple((f"{f.stem}/x", f"{f.stem}/y") for f in files)
    return PairList(keys=keys, load=_PairFiles(tuple(files), expected))


def _open_pkl(
    root: Path, image_size: SizeOption, max_train: int | None, seed: int
) -> tuple[dict, dict, Size]:
    train_files = _pickles(root / "Train", "train")
    val_files = _pickles(root / "Val", "val")
    test_dir = root / "Test"
    test_files = _pickles(test_dir, "test") if test_dir.exists() else val_files
    expected = resolve_size(image_size, PKL_SIZE, lambda: read_subject_pickle(train_files[0], None)[0].shape)
    names = sample_subjects([f.name for f in train_files], max_train, seed)
    subjects = tuple(root / "Train" / n for n in names)
    index_pairs = tuple(unordered_pairs(len(subjects)))
    if not index_pairs:
        raise DataError(f"OASIS train folder needs at least two subjects: {root / 'Train'}")
    keys = tuple((subjects[a].stem, subjects[b].stem) for a, b in index_pairs)
    splits = {
        "train": PairList(keys=keys, load=_SubjectPairs(subjects, index_pairs, expected)),
        "val": _pair_files_list(val_files, expected),
        "test": _pair_files_list(test_files, expected),
    }
    notes = {
        "train": f"all {len(keys)} unordered pairs of {len(subjects)} Train/ subjects (each trained both ways)",
        "val": f"{len(val_files)} Val/ pairs, moving = x, fixed = y",
        "test": "Test/ pairs" if test_dir.exists() else "no Test/ folder: test = the Val/ pairs",
    }
    return splits, notes, expected


def _open_nifti(
    root: Path, image_size: SizeOption, axes: tuple[int, int, int] | None
) -> tuple[dict, dict, Size, tuple]:
    return learn2reg_pair_splits(read_learn2reg(root, JSON_NAME), NIFTI_SIZE, image_size, axes)


def detect_layout(root: Path) -> str:
    """``"nifti"`` if ``OASIS_dataset.json`` exists, ``"pkl"`` if ``Train/`` does; else DataError."""
    if (root / JSON_NAME).is_file():
        return "nifti"
    if (root / "Train").is_dir():
        return "pkl"
    raise DataError(f"{root}: neither {JSON_NAME} (Learn2Reg NIfTI layout) nor Train/ (pkl layout) found")


def open_oasis(
    root: Path,
    layout: str = "auto",
    image_size: SizeOption = "paper",
    axes: Sequence[int] | None = None,
    max_train: int | None = None,
    seed: int = 42,
) -> RealDataset:
    """Open OASIS under ``root`` (see the module docstring for layouts and options).

    ``axes`` applies to the NIfTI layout only; ``max_train``/``seed`` to the pkl layout only.
    """
    root = require_root(root, "OASIS")
    found = detect_layout(root) if layout == "auto" else layout
    if found == "nifti":
        if max_train is not None:
            raise ValueError(
                "max_train applies to the pkl layout only; the NIfTI layout uses the JSON's training list"
            )
        splits, notes, expected, spacing = _open_nifti(root, image_size, check_axes(axes))
    elif found == "pkl":
        if axes is not None:
            raise ValueError("axes applies to the NIfTI layout only")
        splits, notes, expected = _open_pkl(root, image_size, max_train, seed)
        spacing = (1.0, 1.0, 1.0)
    else:
        raise ValueError(f"unknown OASIS layout {layout!r}; expected 'auto', 'nifti' or 'pkl'")
    return RealDataset(
        name="oasis",
        root=root,
        layout="learn2reg-nifti" if found == "nifti" else "transmorph-pkl",
        labels=list(OASIS_LABELS),
        label_names=dict(OASIS_LABEL_NAMES),
        image_size=expected,
        splits=splits,
        spacing=spacing,
        bidirectional=True,
        augment_flips=False,
        notes=notes,
    )
