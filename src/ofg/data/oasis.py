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

    Train = the Train subjects (see ``train_pairs``). Spacing is 1 mm (pickles carry no header).

Both: ``bidirectional`` is True (the reference trains x->y and y->x per pair; each train pair
stands for both directions), ``augment_flips`` False. ``image_size`` see :mod:`ofg.data.realdata`.

Train pairs (``train_pairs``, :mod:`ofg.data.pairing`), over the training subjects (Train/ files,
or the JSON's training subjects outside the val/test pairs), of which ``max_train`` are first drawn
as the reference does (sorted names, ``random.Random(seed).sample``, sorted):
- ``"all"`` (default): every unordered pair, the same list every epoch; ``max_train`` None = all
  subjects.
- ``"reference"``: the reference code's epochs: ``max_train`` subjects (None = 200, with
  ``seed`` 42 the reference's sample; all of them if fewer exist), each paired every epoch with a
  random other one and trained both ways, 400 steps per epoch. Epoch e's pairs are
  ``dataset.epoch_pairs("train", e)``; ``pairs("train")`` is epoch 0's.
"""

from __future__ import annotations

import dataclasses
import functools
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from ofg.data.base import Pair, PairList
from ofg.data.labels import OASIS_LABEL_NAMES, OASIS_LABELS
from ofg.data.learn2reg import Learn2RegSplits, learn2reg_pair_splits, read_learn2reg
from ofg.data.pairing import REFERENCE_TRAIN_SUBJECTS, ReferenceEpochs, check_pairing, reference_note
from ofg.data.realdata import (
    RealDataset,
    Size,
    SizeOption,
    Volume,
    check_axes,
    check_volume,
    integral_label,
    make_pair,
    nifti_pair_list,
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


def _subject_pair_list(subjects: tuple[Path, ...], expected: Size,
                       index_pairs: tuple[tuple[int, int], ...]) -> PairList:
    keys = tuple((subjects[a].stem, subjects[b].stem) for a, b in index_pairs)
    return PairList(keys=keys, load=_SubjectPairs(subjects, index_pairs, expected))


def _volume_pair_list(volumes: tuple[Volume, ...], expected: Size, axes: tuple[int, int, int] | None,
                      index_pairs: tuple[tuple[int, int], ...]) -> PairList:
    return nifti_pair_list([(volumes[a], volumes[b]) for a, b in index_pairs], expected, axes)


def _train_count(max_train: int | None, pairing: str) -> int | None:
    return REFERENCE_TRAIN_SUBJECTS if max_train is None and pairing == "reference" else max_train


def _open_pkl(
    root: Path, image_size: SizeOption, max_train: int | None, seed: int, pairing: str
) -> tuple[dict, dict, Size, ReferenceEpochs | None]:
    train_files = _pickles(root / "Train", "train")
    val_files = _pickles(root / "Val", "val")
    test_dir = root / "Test"
    test_files = _pickles(test_dir, "test") if test_dir.exists() else val_files
    expected = resolve_size(image_size, PKL_SIZE, lambda: read_subject_pickle(train_files[0], None)[0].shape)
    names = sample_subjects([f.name for f in train_files], _train_count(max_train, pairing), seed)
    subjects = tuple(root / "Train" / n for n in names)
    if len(subjects) < 2:
        raise DataError(f"OASIS train folder needs at least two subjects: {root / 'Train'}")
    make_list = functools.partial(_subject_pair_list, subjects, expected)
    epochs = ReferenceEpochs(len(subjects), seed, make_list) if pairing == "reference" else None
    train = epochs(0) if epochs else make_list(tuple(unordered_pairs(len(subjects))))
    splits = {"train": train, "val": _pair_files_list(val_files, expected),
              "test": _pair_files_list(test_files, expected)}
    notes = {
        "train": (reference_note(len(subjects), len(train_files), seed, "Train/") if epochs else
                  f"all {len(train)} unordered pairs of {len(subjects)} Train/ subjects (each trained both ways)"),
        "val": f"{len(val_files)} Val/ pairs, moving = x, fixed = y",
        "test": "Test/ pairs" if test_dir.exists() else "no Test/ folder: test = the Val/ pairs",
    }
    return splits, notes, expected, epochs


def _sampled(layout: Learn2RegSplits, count: int | None, seed: int) -> Learn2RegSplits:
    keys = set(sample_subjects([v.key for v in layout.train_subjects], count, seed))
    return dataclasses.replace(layout, train_subjects=tuple(v for v in layout.train_subjects if v.key in keys))


def _open_nifti(
    root: Path, image_size: SizeOption, axes: tuple[int, int, int] | None, max_train: int | None, seed: int,
    pairing: str,
) -> tuple[dict, dict, Size, tuple, ReferenceEpochs | None]:
    found = read_learn2reg(root, JSON_NAME)
    layout = _sampled(found, _train_count(max_train, pairing), seed)
    splits, notes, expected, spacing = learn2reg_pair_splits(layout, NIFTI_SIZE, image_size, axes)
    epochs = None
    if pairing == "reference":
        make_list = functools.partial(_volume_pair_list, layout.train_subjects, expected, axes)
        epochs = ReferenceEpochs(len(layout.train_subjects), seed, make_list)
        splits["train"] = epochs(0)
        notes["train"] = reference_note(len(layout.train_subjects), len(found.train_subjects), seed,
                                        "training (outside the val/test pairs)")
    return splits, notes, expected, spacing, epochs


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
    train_pairs: str = "all",
) -> RealDataset:
    """Open OASIS under ``root`` (see the module docstring for layouts and options).

    ``axes`` applies to the NIfTI layout only; ``max_train``, ``seed`` and ``train_pairs`` to both.
    """
    root = require_root(root, "OASIS")
    pairing = check_pairing(train_pairs)
    found = detect_layout(root) if layout == "auto" else layout
    if found == "nifti":
        splits, notes, expected, spacing, epochs = _open_nifti(root, image_size, check_axes(axes), max_train,
                                                               seed, pairing)
    elif found == "pkl":
        if axes is not None:
            raise ValueError("axes applies to the NIfTI layout only")
        splits, notes, expected, epochs = _open_pkl(root, image_size, max_train, seed, pairing)
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
        train_pairing=pairing,
        train_epochs=epochs,
    )
