"""IXI, TransMorph's preprocessed release: atlas-to-subject registration.

Layout read (``root``)::

    atlas.pkl            (image, label) of the atlas
    Train/*.pkl          403 subjects, each (image, label)
    Val/*.pkl            58 subjects
    Test/*.pkl           115 subjects

Each pickle holds a tuple (image, label) of 160x192x224 arrays; the image is float in [0, 1] and the
label holds FreeSurfer aseg IDs. Semantics (reference protocol):

- every pair is moving = atlas, fixed = subject; keys are ``("atlas", "<file stem>")``;
- labels are mapped through :data:`ofg.data.labels.IXI_FREESURFER_TABLE` to indices 0..45 (IDs not
  in the table become 0), so ``dataset.labels`` are the 30 VOI *indices* of that 46-index space;
- spacing is 1 mm (the pickles carry no header; the release is FreeSurfer-conformed);
- ``augment_flips`` is True (random flips on all three axes are the reference's only augmentation).

Options: ``max_train`` / ``max_val`` (None = all) draw that many subjects as the reference does
(sort the paths, ``random.seed(seed); random.sample(paths, k)``, sort): the reference code trains on
``max_train=200`` and validates on ``max_val=20`` with ``seed=42``. ``test_subset`` (one of
:data:`TEST_SUBSETS`) picks the test subjects: ``"all"`` = the 115 subjects of Test/ (TransMorph's
table), ``"reference20"`` = 20 of them drawn the same way with ``seed`` (the reference's
``infer.py``, which samples 20 subjects with seed 42 from the folder it is given); the test note
names the choice. ``image_size`` see :mod:`ofg.data.realdata`. Only open pickles from a source you
trust: unpickling can run code.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np

from ofg.data.base import Pair, PairList
from ofg.data.labels import IXI_INDEX_NAMES, IXI_VOI_INDICES, map_freesurfer_to_ixi
from ofg.data.realdata import (
    RealDataset,
    Size,
    SizeOption,
    check_volume,
    integral_label,
    make_pair,
    require_dir,
    require_root,
    resolve_size,
    sample_subjects,
)
from ofg.io import DataError, load_pickle, require_file

PAPER_SIZE: Size = (160, 192, 224)
SPLIT_FOLDERS = {"train": "Train", "val": "Val", "test": "Test"}
#: test subject choices -> how many subjects are sampled (None = all)
TEST_SUBSETS = {"all": None, "reference20": 20}


def read_ixi_pickle(path: Path, expected: Size | None) -> tuple[np.ndarray, np.ndarray]:
    """Read one IXI pickle; return (float32 image, int16 label in the 46-index space)."""
    content = load_pickle(path)
    if not isinstance(content, (tuple, list)) or len(content) != 2:
        raise DataError(f"{path}: expected a pickled (image, label) pair, found {type(content).__name__}")
    image, label = check_volume(np.asarray(content[0]), np.asarray(content[1]), path, path, expected)
    return image, map_freesurfer_to_ixi(integral_label(label, path, dtype=np.int32))


@lru_cache(maxsize=2)
def _read_atlas_cached(path: Path, stamp: tuple[int, int], expected: Size) -> tuple[np.ndarray, np.ndarray]:
    # The atlas is in every pair: unpickle it once per process (``stamp`` = mtime, size, so an
    # edited file is read again).
    image, label = read_ixi_pickle(path, expected)
    image.flags.writeable = False
    label.flags.writeable = False
    return image, label


def _read_atlas(path: Path, expected: Size) -> tuple[np.ndarray, np.ndarray]:
    stat = path.stat()
    image, label = _read_atlas_cached(path, (stat.st_mtime_ns, stat.st_size), expected)
    return image.copy(), label.copy()


@dataclass(frozen=True)
class _AtlasToSubject:
    """Picklable loader: pair i = (atlas, subjects[i])."""

    atlas: Path
    subjects: tuple[Path, ...]
    expected: Size

    def __call__(self, index: int) -> Pair:
        subject = read_ixi_pickle(self.subjects[index], self.expected)
        return make_pair(_read_atlas(self.atlas, self.expected), subject)


def _atlas_shape(atlas: Path) -> Size:
    image, _ = read_ixi_pickle(atlas, None)
    return tuple(image.shape)  # type: ignore[return-value]


def open_ixi(
    root: Path,
    image_size: SizeOption = "paper",
    max_train: int | None = None,
    max_val: int | None = None,
    seed: int = 42,
    test_subset: str = "all",
) -> RealDataset:
    """Open the IXI pkl release under ``root`` (see the module docstring for layout and options)."""
    if test_subset not in TEST_SUBSETS:
        raise ValueError(f"test_subset must be one of {tuple(TEST_SUBSETS)}, got {test_subset!r}")
    root = require_root(root, "IXI")
    atlas = require_file(root / "atlas.pkl", "IXI atlas")
    expected = resolve_size(image_size, PAPER_SIZE, lambda: _atlas_shape(atlas))
    counts = {"train": max_train, "val": max_val, "test": TEST_SUBSETS[test_subset]}
    splits: dict[str, PairList] = {}
    notes: dict[str, str] = {}
    for split, folder in SPLIT_FOLDERS.items():
        directory = require_dir(root / folder, f"IXI {split} folder")
        found = sorted(p.name for p in directory.glob("*.pkl"))
        if not found:
            raise DataError(f"IXI {split} folder holds no .pkl files: {directory}")
        chosen = sample_subjects(found, counts[split], seed)
        paths = tuple(directory / name for name in chosen)
        keys = tuple(("atlas", Path(name).stem) for name in chosen)
        splits[split] = PairList(keys=keys, load=_AtlasToSubject(atlas, paths, expected))
        notes[split] = f"atlas -> {len(chosen)} of {len(found)} subjects in {folder}/" + (
            f" (sampled with seed {seed})" if len(chosen) < len(found) else ""
        )
    notes["test"] += f"; test_subset {test_subset!r}"
    return RealDataset(
        name="ixi",
        root=root,
        layout="transmorph-pkl",
        labels=list(IXI_VOI_INDICES),
        label_names={i: IXI_INDEX_NAMES[i] for i in IXI_VOI_INDICES},
        image_size=expected,
        splits=splits,
        spacing=(1.0, 1.0, 1.0),
        bidirectional=False,
        augment_flips=True,
        notes=notes,
    )
