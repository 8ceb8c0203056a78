"""Fixture roots in the Learn2Reg layouts: OASIS (NIfTI and the TransMorph pkl release) and AbdomenCTCT.

See :mod:`ofg.data.fixtures` for what a fixture is, how to open one and why fixtures are part of the
package (``python -m ofg.data fixtures OUT`` writes them for a user to try ``config/paper.yaml``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

from ofg.data.labels import (
    ABDOMEN_LABEL_NAMES,
    ABDOMEN_LABELS,
    OASIS_LABELS,
)
from ofg.data.fixture_volumes import Shape, affine, random_image, random_label_map, write_pickle
from ofg.io import save_nifti, write_json_atomic


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
    save_nifti(root / f"images{split}" / file, image, affine(spacing))
    entry = {"image": f"./images{split}/{file}"}
    if label is not None:
        save_nifti(root / f"labels{split}" / file, label, affine(spacing))
        save_nifti(root / f"masks{split}" / file, (label > 0).astype(np.uint8), affine(spacing))
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
            write_pickle(root / "Train" / f"subject_{k}.pkl", volume())
        for k in range(n_val):
            (x, x_seg), (y, y_seg) = volume(), volume()
            write_pickle(root / "Val" / f"p_{438 + 2 * k:04d}_{439 + 2 * k:04d}.pkl", (x, y, x_seg, y_seg))
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
