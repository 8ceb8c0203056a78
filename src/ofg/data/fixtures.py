"""Small fixture roots in the exact on-disk layouts of the paper's real datasets.

Each ``make_*_fixture`` writes, under ``root``, the real file names and the real JSON schema at a
small image size, with random smooth images and label maps that use the dataset's real label IDs.
They are part of the package, not of the tests alone, because they are a user feature:
``python -m ofg.data fixtures OUT`` (:func:`make_paper_roots`) writes the four layouts so that
``config/paper.yaml`` can be run end to end, merged with ``config/paper-fixtures.yaml``, before one has
the data (README, "Running on real data"); the tests and the workflow's dry run use them too. Open a
fixture with ``image_size=None`` (or its shape; in a workflow config ``datasets.<name>.image_size:
null``): the loaders expect the paper's sizes by default. Every file is written atomically; the same
seed gives the same arrays.
"""

from __future__ import annotations

import gzip
from pathlib import Path
from typing import Sequence

import numpy as np

from ofg.data.labels import IXI_FREESURFER_TABLE, LPBA_LABEL_NAMES
from ofg.data.fixture_volumes import Shape, random_image, random_label_map, write_pickle
from ofg.data.fixtures_learn2reg import make_abdomen_fixture, make_oasis_fixture
from ofg.io import atomic_path, save_nifti


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

    write_pickle(root / "atlas.pkl", volume())
    numbers = rng.permutation(n_train + n_val + n_test).tolist()
    for folder, count in (("Train", n_train), ("Val", n_val), ("Test", n_test)):
        for _ in range(count):
            write_pickle(root / folder / f"subject_{numbers.pop()}.pkl", volume())
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


__all__ = ["make_abdomen_fixture", "make_ixi_fixture", "make_lpba_fixture", "make_oasis_fixture", "make_paper_roots",
           "random_image", "random_label_map"]
