"""Reading a Learn2Reg ``<Task>_dataset.json`` (OASIS 2021, AbdomenCTCT 2022 releases).

The schema (fields this module uses)::

    {"name": "OASIS", "tensorImageShape": {"0": [160, 224, 192]}, ...,
     "training": [{"image": "./imagesTr/OASIS_0001_0000.nii.gz",
                   "label": "./labelsTr/OASIS_0001_0000.nii.gz",
                   "mask":  "./masksTr/OASIS_0001_0000.nii.gz"}, ...],
     "registration_val":  [{"fixed": "./imagesTr/OASIS_0395_0000.nii.gz",
                            "moving": "./imagesTr/OASIS_0396_0000.nii.gz"}, ...],
     "registration_test": [{"fixed": "./imagesTs/...", "moving": "./imagesTs/..."}, ...]}

Paths are relative to the folder holding the JSON. A pair entry names images only; its label is
the training entry's ``label`` for that image, else the same file name in the matching ``labels*``
folder (``imagesTr`` -> ``labelsTr``, ``imagesTs`` -> ``labelsTs``).

Splits built from it (every loader using this module documents the same rule):
- val: the ``registration_val`` pairs, moving and fixed as listed;
- test: the ``registration_test`` pairs when every image and label they name exists; the public
  releases withhold the test labels, so otherwise test = the val pairs (``test_is_val`` True);
- train: the ``training`` subjects that appear in no val or test pair, as all unordered pairs
  (i < j, sorted by key) of distinct subjects. These datasets are trained in both directions, so
  each unordered pair stands for both x->y and y->x.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from ofg.data.base import PairList
from ofg.data.realdata import (Size, SizeOption, Volume, nifti_pair_list, nifti_shape, nifti_spacing, permute_shape,
                               resolve_size, unordered_pairs)
from ofg.io import DataError, require_file


@dataclass(frozen=True)
class Learn2RegSplits:
    """Subjects and pairs read from a Learn2Reg dataset JSON."""

    train_subjects: tuple[Volume, ...]
    val_pairs: tuple[tuple[Volume, Volume], ...]
    test_pairs: tuple[tuple[Volume, Volume], ...]
    test_is_val: bool
    json_path: Path

    def train_pairs(self) -> tuple[tuple[Volume, Volume], ...]:
        """All unordered pairs (moving = earlier key, fixed = later key) of the train subjects."""
        subjects = self.train_subjects
        return tuple((subjects[i], subjects[j]) for i, j in unordered_pairs(len(subjects)))


def subject_key(relative: str) -> str:
    """``./imagesTr/OASIS_0001_0000.nii.gz`` -> ``OASIS_0001`` (drops the modality/time suffix)."""
    stem = Path(relative).name.split(".")[0]
    head, _, tail = stem.rpartition("_")
    return head if head and tail.isdigit() and len(tail) == 4 else stem


def _resolve(root: Path, relative: str) -> Path:
    return root / Path(relative.removeprefix("./"))


def _label_relative(image_relative: str) -> str:
    path = Path(image_relative.removeprefix("./"))
    folder = path.parts[0] if len(path.parts) > 1 else ""
    if not folder.startswith("images"):
        return str(path.parent / "labels" / path.name)
    return str(Path("labels" + folder[len("images") :], *path.parts[1:]))


def read_dataset_json(path: Path) -> dict:
    """Parse a Learn2Reg dataset JSON; DataError naming the file when missing or malformed."""
    path = require_file(path, "Learn2Reg dataset JSON")
    try:
        content = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DataError(f"{path}: cannot parse as JSON ({type(exc).__name__}: {exc})") from exc
    if not isinstance(content, dict):
        raise DataError(f"{path}: expected a JSON object at the top level")
    for key in ("training", "registration_val"):
        if not isinstance(content.get(key), list):
            raise DataError(f"{path}: missing the list {key!r} of the Learn2Reg schema")
    return content


def read_learn2reg(root: Path, json_name: str) -> Learn2RegSplits:
    """Read ``root/json_name`` and check that every training and val file it names exists.

    Raises DataError naming the JSON entry and the missing file.
    """
    json_path = root / json_name
    content = read_dataset_json(json_path)
    labels_by_image: dict[str, str] = {}
    subjects: dict[str, Volume] = {}

    def volume(image_rel: str, where: str, strict: bool = True) -> Volume | None:
        label_rel = labels_by_image.get(image_rel.removeprefix("./"), _label_relative(image_rel))
        image, label = _resolve(root, image_rel), _resolve(root, label_rel)
        for path, what in ((image, "image"), (label, "label")):
            if not path.is_file():
                if strict:
                    raise DataError(f"{json_path}: entry {where} points to a missing {what} file: {path}")
                return None
        return Volume(subject_key(image_rel), image, label)

    for i, entry in enumerate(content["training"]):
        if not isinstance(entry, dict) or not isinstance(entry.get("image"), str):
            raise DataError(f"{json_path}: entry training[{i}] has no 'image' path")
        if isinstance(entry.get("label"), str):
            labels_by_image[entry["image"].removeprefix("./")] = entry["label"].removeprefix("./")
        subject = volume(entry["image"], f"training[{i}]")
        subjects[subject.key] = subject  # type: ignore[union-attr]

    def pairs(key: str, strict: bool) -> list[tuple[Volume, Volume]] | None:
        found = []
        for i, entry in enumerate(content.get(key) or []):
            if not isinstance(entry, dict) or not all(
                isinstance(entry.get(k), str) for k in ("fixed", "moving")
            ):
                raise DataError(f"{json_path}: entry {key}[{i}] needs 'fixed' and 'moving' paths")
            moving = volume(entry["moving"], f"{key}[{i}].moving", strict)
            fixed = volume(entry["fixed"], f"{key}[{i}].fixed", strict)
            if moving is None or fixed is None:
                return None
            found.append((moving, fixed))
        return found

    val = pairs("registration_val", strict=True) or []
    if not val:
        raise DataError(f"{json_path}: 'registration_val' lists no pairs")
    test = pairs("registration_test", strict=False)
    test_is_val = not test
    test = val if test_is_val else test
    held_out = {v.key for pair in (*val, *test) for v in pair}  # type: ignore[union-attr]
    train = tuple(subjects[k] for k in sorted(subjects) if k not in held_out)
    if len(train) < 2:
        raise DataError(f"{json_path}: fewer than two training subjects remain outside the val/test pairs")
    return Learn2RegSplits(train, tuple(val), tuple(test), test_is_val, json_path)  # type: ignore[arg-type]


def learn2reg_pair_splits(layout: Learn2RegSplits, paper_size: Size, image_size: SizeOption,
                          axes: tuple[int, int, int] | None, scale: float = 1.0
                          ) -> tuple[dict[str, PairList], dict[str, str], Size, tuple[float, float, float]]:
    """The train/val/test pair lists of a Learn2Reg release, their notes, the image size and spacing.

    ``paper_size`` is the release's size in file order; images are divided by ``scale``
    (AbdomenCTCT: HU/500) and permuted by ``axes``.
    """
    first = layout.train_subjects[0].image
    expected = resolve_size(image_size, permute_shape(paper_size, axes), lambda: nifti_shape(first, axes))
    train = layout.train_pairs()
    splits = {
        "train": nifti_pair_list(train, expected, axes, scale=scale),
        "val": nifti_pair_list(layout.val_pairs, expected, axes, scale=scale),
        "test": nifti_pair_list(layout.test_pairs, expected, axes, scale=scale),
    }
    notes = {
        "train": f"all {len(train)} unordered pairs of {len(layout.train_subjects)} training subjects "
        "outside the val/test pairs (each trained both ways)",
        "val": f"{len(layout.val_pairs)} registration_val pairs",
        "test": ("registration_val pairs (no labelled registration_test)" if layout.test_is_val
                 else "registration_test pairs"),
    }
    return splits, notes, expected, nifti_spacing(first, axes)
