"""Read a prepared embedded cohort folder (see :mod:`ofg.data.embedded`) as a RegistrationDataset.

``open_embedded_brain(root, label_set="ixi")`` and ``open_embedded_ct(root)`` are registered in
:data:`ofg.data.DATASETS` as ``embedded-brain`` and ``embedded-ct``. Nothing but the manifest, the
CSVs and the image headers is read at open time; volumes load when a pair is indexed.

A cohort's image size is its manifest's ``shape`` (chosen when it was prepared). The ``image_size``
option, as the real-data loaders' (:mod:`ofg.data.realdata`), states the size expected: ``None``
(default) takes the manifest's; ``(D, H, W)`` must equal it, else a DataError names the manifest.
There is no paper size of an embedded cohort, so ``"paper"`` is refused.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from ofg.data.base import SPLITS, Pair, PairList, RegistrationDataset, check_split
from ofg.data.embedded import FORMAT_VERSION
from ofg.data.synthesis import compose_with_inverse, to_channels_first
from ofg.io import DataError, load_nifti, require_file, sha256_file

_LABEL_SETS = {"brain": ("ixi", "lpba"), "ct": ("abdomen",)}


def read_manifest(root: str | Path, kind: str | None = None) -> dict[str, Any]:
    """The manifest of the cohort in ``root``; DataError (saying how to prepare it) if absent or wrong."""
    root = Path(root)
    dataset = f"embedded-{kind}" if kind else "embedded-brain (or embedded-ct)"
    how = f"run `python -m ofg.data prepare {dataset} --out {root}` to create it"
    if not root.is_dir():
        raise DataError(f"cohort folder not found: {root}; {how}")
    path = root / "manifest.json"
    if not path.is_file():
        raise DataError(f"{path} not found: {root} holds no complete embedded cohort; {how}")
    try:
        manifest = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise DataError(f"{path}: unreadable manifest ({exc}); {how}") from exc
    if manifest.get("format_version") != FORMAT_VERSION:
        raise DataError(f"{path}: format_version {manifest.get('format_version')!r}, expected "
                        f"{FORMAT_VERSION}; {how}")
    if kind is not None and manifest.get("kind") != kind:
        raise DataError(f"{path}: this is an {manifest.get('dataset')!r} cohort, not embedded-{kind}")
    return manifest


def verify_files(root: str | Path) -> None:
    """Raise DataError naming the first file whose sha256 differs from the manifest's (or is missing)."""
    root = Path(root)
    for rel, expected in read_manifest(root)["files"].items():
        path = require_file(root / rel, "cohort file")
        actual = sha256_file(path)
        if actual != expected:
            raise DataError(f"{path}: sha256 {actual} differs from the manifest's {expected}")


def _read_csv(path: Path, columns: list[str]):
    import pandas as pd

    require_file(path, "cohort table")
    table = pd.read_csv(path, dtype=str)
    if list(table.columns) != columns:
        raise DataError(f"{path}: expected columns {columns}, got {list(table.columns)}")
    return table


def _header_shape(path: Path) -> tuple[int, ...]:
    import nibabel as nib

    require_file(path, "cohort image")
    try:
        return tuple(int(s) for s in nib.load(str(path)).shape)
    except Exception as exc:
        raise DataError(f"{path}: cannot read the NIfTI header ({type(exc).__name__}: {exc})") from exc


class EmbeddedCohort(RegistrationDataset):
    """A prepared embedded cohort: lazy pairs and known true displacements.

    ``ground_truth(split, i)`` is (3,D,H,W) float32 voxels v with moving(x + v(x)) ≈ fixed(x).
    """

    def __init__(self, root: str | Path, kind: str, label_set: str | None = None,
                 image_size: Sequence[int] | None = None) -> None:
        self.root = Path(root)
        self.manifest = read_manifest(self.root, kind)
        self.kind = kind
        self.name = self.manifest["dataset"]
        label_set = _LABEL_SETS[kind][0] if label_set is None else label_set
        if label_set not in _LABEL_SETS[kind]:
            raise ValueError(f"label_set must be one of {_LABEL_SETS[kind]} for embedded-{kind}, got {label_set!r}")
        entry = self.manifest["label_sets"][label_set]
        self.label_set = label_set
        self.label_folder: str = entry["folder"]
        self.labels = [int(e["id"]) for e in entry["labels"]]
        self.label_names = {int(e["id"]): e["name"] for e in entry["labels"]}
        self.image_size = tuple(int(s) for s in self.manifest["shape"])  # type: ignore[assignment]
        check_manifest_size(self.root / "manifest.json", self.image_size, image_size)
        self.spacing = tuple(float(s) for s in self.manifest["spacing"])  # type: ignore[assignment]
        self.bidirectional = kind == "ct"
        self.augment_flips = kind == "brain"
        self.reference: str = self.manifest["reference"]
        self.caveat: str = self.manifest["caveat"]
        self._splits = _read_csv(self.root / "splits.csv", ["subject", "split"])
        pairs = _read_csv(self.root / "pairs.csv", ["split", "moving", "fixed"])
        self._keys = {split: tuple(zip(rows["moving"], rows["fixed"]))
                      for split, rows in ((s, pairs[pairs["split"] == s]) for s in SPLITS)}
        self._check_shapes()
        self._cache: dict[tuple[str, str], np.ndarray] = {}

    def _check_shapes(self) -> None:
        names = {self.reference, *self._splits["subject"]}
        for folder in ("images", self.label_folder):
            for name in sorted(names):
                path = self.root / folder / f"{name}.nii.gz"
                shape = _header_shape(path)
                if shape != self.image_size:
                    raise DataError(f"{path}: shape {shape} differs from the manifest's image size "
                                    f"{self.image_size}")

    def _volume(self, folder: str, name: str) -> np.ndarray:
        key = (folder, name)
        if key in self._cache:  # the reference appears in every brain pair
            return self._cache[key].copy()
        dtype = np.float32 if folder == "images" else None
        data = load_nifti(self.root / folder / f"{name}.nii.gz", dtype=dtype)[0]
        if folder != "images":
            data = data.astype(np.int16)
        if name == self.reference:
            self._cache[key] = data
            return data.copy()
        return data

    def pairs(self, split: str) -> PairList:
        keys = self._keys[check_split(split)]

        def load(index: int) -> Pair:
            moving, fixed = keys[index]
            return Pair(self._volume("images", moving), self._volume("images", fixed),
                        self._volume(self.label_folder, moving), self._volume(self.label_folder, fixed))

        return PairList(keys=keys, load=load)

    def _field(self, folder: str, name: str) -> np.ndarray:
        path = self.root / folder / f"{name}.nii.gz"
        field = to_channels_first(load_nifti(path)[0])
        return field

    def _forward(self, name: str) -> np.ndarray:
        field = self._field("displacements", name)
        if field.shape[1:] != self.image_size:
            raise DataError(f"{self.root / 'displacements' / name}.nii.gz: shape {field.shape[1:]} differs "
                            f"from the image size {self.image_size}")
        return field

    def _inverse(self, name: str) -> tuple[np.ndarray, int]:
        path = self.root / "displacements_inverse" / f"{name}.nii.gz"
        field = self._field("displacements_inverse", name)
        margins = {(a - b) / 2 for a, b in zip(field.shape[1:], self.image_size)}
        if len(margins) != 1 or not float(next(iter(margins))).is_integer() or next(iter(margins)) < 0:
            raise DataError(f"{path}: shape {field.shape[1:]} is not the image size {self.image_size} "
                            "padded equally on every side")
        return field, int(next(iter(margins)))

    def ground_truth(self, split: str, index: int) -> np.ndarray:
        """True displacement (3,D,H,W) float32 in voxels that warps the moving image onto the fixed one."""
        keys = self._keys[check_split(split)]
        moving, fixed = keys[index]
        if moving == self.reference:
            return self._forward(fixed)
        inverse, margin = self._inverse(moving)
        if fixed == self.reference:
            return np.ascontiguousarray(inverse[(slice(None),) + (slice(margin, -margin or None),) * 3])
        return compose_with_inverse(inverse, margin, self._forward(fixed))


def check_manifest_size(manifest: Path, actual: Sequence[int], expected: Sequence[int] | str | None) -> None:
    """Raise unless the expected ``image_size`` option (None, or (D, H, W)) admits the manifest's ``actual``
    shape: ValueError for a malformed option, DataError naming ``manifest`` for another size."""
    if expected is None:
        return
    if isinstance(expected, str) or len(expected) != 3:
        raise ValueError(f"image_size of an embedded cohort must be None (the manifest's size) or (D, H, W); "
                         f"got {expected!r}")
    if tuple(int(s) for s in expected) != tuple(actual):
        raise DataError(f"{manifest}: the cohort's images are {tuple(actual)} (the manifest's shape), not the "
                        f"expected image_size {tuple(int(s) for s in expected)}; prepare the cohort at that size "
                        "or set image_size to None (null in the workflow config) to take the manifest's")


def open_embedded_brain(root: str | Path, label_set: str = "ixi",
                        image_size: Sequence[int] | None = None) -> EmbeddedCohort:
    """The embedded brain cohort (atlas-to-subject, like IXI) prepared in ``root``.

    ``label_set`` "ixi": the IBSR map (FreeSurfer aseg IDs), Dice over the IXI VOIs present (28);
    "lpba": the LPBA40 map, Dice over its 54 protocol labels. ``image_size``: see the module docstring.
    """
    return EmbeddedCohort(root, "brain", label_set, image_size)


def open_embedded_ct(root: str | Path, image_size: Sequence[int] | None = None) -> EmbeddedCohort:
    """The embedded abdominal CT cohort (inter-subject, both directions, like AbdomenCTCT) in ``root``;
    ``image_size``: see the module docstring."""
    return EmbeddedCohort(root, "ct", image_size=image_size)


__all__ = ["EmbeddedCohort", "open_embedded_brain", "open_embedded_ct", "read_manifest", "verify_files"]
