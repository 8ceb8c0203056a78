"""Small fixture roots in the exact on-disk layouts of the paper's real datasets.

Each ``make_*_fixture`` writes, under ``root``, the real file names and the real JSON schema at a
small image size, with random smooth images and label maps that use the dataset's real label IDs.
They exist so that tests and the workflow's dry run can exercise the real-data loaders without the
data. Open a fixture with ``image_size=None`` (or its shape): the loaders expect the paper's sizes
by default. Every file is written atomically; the same seed gives the same arrays.
"""

from __future__ import annotations

import gzip
import pickle
from pathlib import Path
from typing import Sequence

import numpy as np
from scipy.ndimage import gaussian_filter

from ofg.data.labels import (
    ABDOMEN_LABEL_NAMES,
    ABDOMEN_LABELS,
    IXI_FREESURFER_TABLE,
    LPBA_LABEL_NAMES,
    OASIS_LABELS,
)
from ofg.io import atomic_path, save_nifti, write_json_atomic

Shape = tuple[int, int, int]


# --- synthetic volumes -------------------------------------------------------------------------


def random_label_map(
    rng: np.random.Generator, shape: Shape, ids: Sequence[int], smoothness: float = 2.0
) -> np.ndarray:
    """A smooth random parcellation of an ellipsoidal "body" into ``ids``; 0 outside (int16)."""
    fields = np.stack([gaussian_filter(rng.standard_normal(shape), smoothness) for _ in ids])
    parcel = np.asarray(ids, dtype=np.int16)[np.argmax(fields, axis=0)]
    grid = np.meshgrid(*[np.linspace(-1, 1, n) for n in shape], indexing="ij")
    inside = sum(g**2 for g in grid) <= 0.9
    return np.where(inside, parcel, 0).astype(np.int16)


def random_image(
    rng: np.random.Generator, label: np.ndarray, low: float = 0.0, high: float = 1.0
) -> np.ndarray:
    """A smooth image that follows ``label`` (one random intensity per label), in [low, high] (float32)."""
    ids = np.unique(label)
    levels = dict(zip(ids.tolist(), rng.uniform(0.2, 1.0, len(ids)).tolist()))
    levels[0] = 0.0
    image = np.vectorize(levels.__getitem__, otypes=[np.float64])(label)
    image = gaussian_filter(image, 0.7) + 0.05 * gaussian_filter(rng.standard_normal(label.shape), 1.0)
    image = (image - image.min()) / max(image.max() - image.min(), 1e-12)
    return (low + (high - low) * image).astype(np.float32)


def _write_pickle(path: Path, obj: object) -> Path:
    with atomic_path(path) as tmp:
        tmp.write_bytes(pickle.dumps(obj, protocol=4))
    return path


def _affine(spacing: Sequence[float]) -> np.ndarray:
    return np.diag([*map(float, spacing), 1.0])


# --- IXI ---------------------------------------------------------------------------------------


def make_ixi_fixture(
    root: str | Path,
    shape: Shape = (16, 16, 16),
    n_train: int = 3,
    n_val: int = 2,
    n_test: int = 2,
    seed: int = 0,
) -> Path:
    """IXI TransMorph release: ``atlas.pkl``, ``Train|Val|Test/subject_<n>.pkl`` = (image, label).

    Images are float32 in [0, 1]; labels hold FreeSurfer IDs of the 46-entry IXI table. Subject
    numbers are shuffled across the splits, as in the release.
    """
    root = Path(root)
    rng = np.random.default_rng(seed)
    ids = [i for i in IXI_FREESURFER_TABLE if i != 0]

    def volume() -> tuple[np.ndarray, np.ndarray]:
        label = random_label_map(rng, shape, ids)
        return random_image(rng, label), label

    _write_pickle(root / "atlas.pkl", volume())
    numbers = rng.permutation(n_train + n_val + n_test).tolist()
    for folder, count in (("Train", n_train), ("Val", n_val), ("Test", n_test)):
        for _ in range(count):
            _write_pickle(root / folder / f"subject_{numbers.pop()}.pkl", volume())
    return root


# --- OASIS -------------------------------------------------------------------------------------


def _l2r_json(
    name: str, shape: Shape, training: list, val: list, test: list, labels: dict, modality: str
) -> dict:
    return {
        "name": name,
        "release": "fixture",
        "description": f"Small synthetic fixture in the layout of the Learn2Reg {name} release.",
        "licence": "CC0 (synthetic)",
        "reference": "ofg.data.fixtures",
        "pairings": "unpaired",
        "provided_data": {"0": ["image", "label", "mask"]},
        "registration_direction": {"fixed": 0, "moving": 0},
        "modality": {"0": modality},
        "img_shift": {"fixed": "Patient A", "moving": "Patient B"},
        "labels": {"0": {str(k): v for k, v in labels.items()}},
        "tensorImageSize": {"0": "3D"},
        "tensorImageShape": {"0": list(shape)},
        "numTraining": len(training),
        "numTest": len({p[k] for p in test for k in ("fixed", "moving")}),
        "training": training,
        "test": [{"image": i} for i in sorted({p[k] for p in test for k in ("fixed", "moving")})],
        "numPairedTraining": 0,
        "training_paired_images": [],
        "numRegistration_val": len(val),
        "registration_val": val,
        "numRegistration_test": len(test),
        "registration_test": test,
    }


def _write_l2r_subject(
    root: Path, name: str, image: np.ndarray, label: np.ndarray | None, spacing, split: str = "Tr"
) -> dict:
    file = f"{name}_0000.nii.gz"
    save_nifti(root / f"images{split}" / file, image, _affine(spacing))
    entry = {"image": f"./images{split}/{file}"}
    if label is not None:
        save_nifti(root / f"labels{split}" / file, label, _affine(spacing))
        save_nifti(root / f"masks{split}" / file, (label > 0).astype(np.uint8), _affine(spacing))
        entry.update(label=f"./labels{split}/{file}", mask=f"./masks{split}/{file}")
    return entry


def make_oasis_fixture(
    root: str | Path,
    layout: str = "nifti",
    shape: Shape = (16, 16, 16),
    n_train: int = 4,
    n_val: int = 2,
    n_test: int = 1,
    seed: int = 0,
) -> Path:
    """OASIS in the Learn2Reg NIfTI layout (``layout="nifti"``) or TransMorph's pkl layout (``"pkl"``).

    NIfTI: ``OASIS_dataset.json``; ``imagesTr|labelsTr|masksTr/OASIS_<nnnn>_0000.nii.gz`` for
    ``n_train + n_val + 1`` subjects, the last ``n_val + 1`` of which form ``n_val`` consecutive
    ``registration_val`` pairs (fixed k, moving k+1) as in the release; ``n_test`` unlabelled
    ``registration_test`` pairs in ``imagesTs`` (labels withheld, as in the public release).
    pkl: ``Train/subject_<n>.pkl`` = (image, label) and ``Val/p_<a>_<b>.pkl`` = (x, y, x_seg, y_seg).
    Labels use 1..35; images are float32 in [0, 1].
    """
    root = Path(root)
    rng = np.random.default_rng(seed)

    def volume() -> tuple[np.ndarray, np.ndarray]:
        label = random_label_map(rng, shape, OASIS_LABELS)
        return random_image(rng, label), label

    if layout == "pkl":
        for k in range(n_train):
            _write_pickle(root / "Train" / f"subject_{k}.pkl", volume())
        for k in range(n_val):
            (x, x_seg), (y, y_seg) = volume(), volume()
            _write_pickle(root / "Val" / f"p_{438 + 2 * k:04d}_{439 + 2 * k:04d}.pkl", (x, y, x_seg, y_seg))
        return root
    if layout != "nifti":
        raise ValueError(f"unknown OASIS layout {layout!r}; expected 'nifti' or 'pkl'")
    training = []
    n_subjects = n_train + n_val + 1
    for k in range(1, n_subjects + 1):
        training.append(_write_l2r_subject(root, f"OASIS_{k:04d}", *volume(), spacing=(1, 1, 1)))
    first_val = n_train + 1
    val = [
        {
            "fixed": f"./imagesTr/OASIS_{k:04d}_0000.nii.gz",
            "moving": f"./imagesTr/OASIS_{k + 1:04d}_0000.nii.gz",
        }
        for k in range(first_val, first_val + n_val)
    ]
    test = []
    for k in range(n_test):
        a, b = n_subjects + 1 + 2 * k, n_subjects + 2 + 2 * k
        for number in (a, b):
            _write_l2r_subject(root, f"OASIS_{number:04d}", volume()[0], None, spacing=(1, 1, 1), split="Ts")
        test.append(
            {
                "fixed": f"./imagesTs/OASIS_{a:04d}_0000.nii.gz",
                "moving": f"./imagesTs/OASIS_{b:04d}_0000.nii.gz",
            }
        )
    names = {0: "background", **{k: f"label {k}" for k in OASIS_LABELS}}
    write_json_atomic(
        root / "OASIS_dataset.json", _l2r_json("OASIS", shape, training, val, test, names, "MR")
    )
    return root


# --- LPBA40 ------------------------------------------------------------------------------------


def _write_analyze(path_img: Path, array: np.ndarray, zooms: Sequence[float], gz: bool) -> None:
    """Write an Analyze 7.5 pair ``<stem>.hdr`` + ``<stem>.img`` (the image gzipped if ``gz``)."""
    import nibabel as nib

    header = nib.AnalyzeHeader()
    header.set_data_shape(array.shape)
    header.set_data_dtype(array.dtype)
    header.set_zooms(tuple(float(z) for z in zooms))
    data = np.asarray(array, dtype=header.get_data_dtype()).tobytes(order="F")
    stem = path_img.name[: -len(".img")]
    with atomic_path(path_img.with_name(stem + ".hdr")) as tmp:
        tmp.write_bytes(header.binaryblock)
    target = path_img.with_name(path_img.name + (".gz" if gz else ""))
    with atomic_path(target) as tmp:
        tmp.write_bytes(gzip.compress(data, mtime=0) if gz else data)


def make_lpba_fixture(
    root: str | Path,
    layout: str = "preprocessed",
    shape: Shape = (16, 16, 16),
    n_train: int = 3,
    n_test: int = 2,
    seed: int = 0,
    loni_zooms: Sequence[float] = (0.9375, 1.5, 0.9375),
    loni_gzip: bool = True,
) -> Path:
    """LPBA40: the preprocessed NIfTI layout or the LONI delineation-space Analyze layout.

    Subjects: the atlas S01, test S02.. (``n_test``), train S11.. (``n_train``). Labels use the 56
    LPBA40 structure IDs; images are float32 in [0, 200] (preprocessed) or int16 (LONI).
    ``"preprocessed"``: ``fixed.nii.gz``, ``train|test/S<nn>.delineation.skullstripped.nii.gz``,
    ``label/S<nn>.delineation.structure.label.nii.gz``. ``"loni"``: ``S<nn>/S<nn>.delineation.
    skullstripped.img(.gz)`` + ``.hdr`` and ``S<nn>.delineation.structure.label.img(.gz)`` + ``.hdr``
    under ``root/LPBA40/delineation_space``, at voxel size ``loni_zooms`` and a shape that, resampled
    to 1 mm, is about 10% larger than ``shape`` (so the loader crops).
    """
    root = Path(root)
    rng = np.random.default_rng(seed)
    ids = sorted(LPBA_LABEL_NAMES)
    subjects = [
        "S01",
        *[f"S{k:02d}" for k in range(2, 2 + n_test)],
        *[f"S{k:02d}" for k in range(11, 11 + n_train)],
    ]
    if layout == "preprocessed":
        for subject in subjects:
            label = random_label_map(rng, shape, ids)
            image = random_image(rng, label, 0.0, 200.0)
            save_nifti(root / "label" / f"{subject}.delineation.structure.label.nii.gz", label)
            if subject == "S01":
                save_nifti(root / "fixed.nii.gz", image)
            else:
                folder = "test" if int(subject[1:]) <= 10 else "train"
                save_nifti(root / folder / f"{subject}.delineation.skullstripped.nii.gz", image)
        return root
    if layout != "loni":
        raise ValueError(f"unknown LPBA layout {layout!r}; expected 'preprocessed' or 'loni'")
    raw = tuple(int(round(n * 1.1 / z)) for n, z in zip(shape, loni_zooms))
    folder = root / "LPBA40" / "delineation_space"
    for subject in subjects:
        label = random_label_map(rng, raw, ids)
        image = np.round(random_image(rng, label, 0.0, 200.0)).astype(np.int16)
        _write_analyze(
            folder / subject / f"{subject}.delineation.skullstripped.img", image, loni_zooms, loni_gzip
        )
        _write_analyze(
            folder / subject / f"{subject}.delineation.structure.label.img", label, loni_zooms, loni_gzip
        )
    return root


# --- AbdomenCTCT -------------------------------------------------------------------------------


def make_abdomen_fixture(
    root: str | Path,
    shape: Shape = (16, 16, 16),
    n_subjects: int = 7,
    seed: int = 0,
    spacing: Sequence[float] = (2, 2, 2),
) -> Path:
    """AbdomenCTCT (Learn2Reg 2022): ``AbdomenCTCT_dataset.json``, ``imagesTr|labelsTr|masksTr/
    AbdomenCTCT_<nnnn>_0000.nii.gz``; images in HU (int16, -1000..1000), labels 1..13.

    As in the release, every subject is in ``training`` and ``registration_val`` holds all pairs
    (fixed earlier, moving later) of subjects 1, 4, 7, ...; ``registration_test`` is empty.
    """
    root = Path(root)
    rng = np.random.default_rng(seed)
    training = []
    for k in range(1, n_subjects + 1):
        label = random_label_map(rng, shape, ABDOMEN_LABELS)
        image = np.round(random_image(rng, label, -1000.0, 1000.0)).astype(np.int16)
        training.append(_write_l2r_subject(root, f"AbdomenCTCT_{k:04d}", image, label, spacing))
    val_subjects = list(range(1, n_subjects + 1, 3))
    val = [
        {
            "fixed": f"./imagesTr/AbdomenCTCT_{a:04d}_0000.nii.gz",
            "moving": f"./imagesTr/AbdomenCTCT_{b:04d}_0000.nii.gz",
        }
        for i, a in enumerate(val_subjects)
        for b in val_subjects[i + 1 :]
    ]
    names = {0: "background", **ABDOMEN_LABEL_NAMES}
    write_json_atomic(
        root / "AbdomenCTCT_dataset.json", _l2r_json("AbdomenCTCT", shape, training, val, [], names, "CT")
    )
    return root


def make_paper_roots(base: str | Path) -> dict[str, Path]:
    """Build small fixture roots of all four real datasets under ``base``; return name -> root.

    Names are the registry names: ``ixi`` (pkl), ``oasis`` (Learn2Reg NIfTI), ``lpba``
    (preprocessed), ``abdomen``.
    """
    base = Path(base)
    return {
        "ixi": make_ixi_fixture(base / "ixi"),
        "oasis": make_oasis_fixture(base / "oasis"),
        "lpba": make_lpba_fixture(base / "lpba"),
        "abdomen": make_abdomen_fixture(base / "abdomen"),
    }
