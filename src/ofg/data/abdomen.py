"""AbdomenCTCT (Learn2Reg 2022): inter-subject abdominal CT registration, 13 organ labels.

Layout read (``root``)::

    AbdomenCTCT_dataset.json
    imagesTr/AbdomenCTCT_0001_0000.nii.gz     192x160x256 (file voxel order), HU
    labelsTr/AbdomenCTCT_0001_0000.nii.gz     labels 0..13 (see ofg.data.labels.ABDOMEN_LABEL_NAMES)

Splits follow :mod:`ofg.data.learn2reg`: val = the ``registration_val`` pairs (in the public
release the 45 pairs among subjects 1, 4, ..., 28); test = ``registration_test`` when its labels
exist, else the val pairs; train = all unordered pairs of the remaining training subjects, each
trained both ways (``bidirectional`` True). Intensities are HU / ``intensity_scale`` (500, as in the
reference code; no clipping). Spacing comes from the NIfTI header (2 mm in the release).
``axes`` optionally permutes every volume; ``image_size`` see :mod:`ofg.data.realdata`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

from ofg.data.labels import ABDOMEN_LABEL_NAMES, ABDOMEN_LABELS
from ofg.data.learn2reg import learn2reg_pair_splits, read_learn2reg
from ofg.data.realdata import (
    RealDataset,
    Size,
    SizeOption,
    check_axes,
    require_root,
)

PAPER_SIZE: Size = (192, 160, 256)
JSON_NAME = "AbdomenCTCT_dataset.json"


def open_abdomen(
    root: Path,
    image_size: SizeOption = "paper",
    axes: Sequence[int] | None = None,
    intensity_scale: float = 500.0,
) -> RealDataset:
    """Open the AbdomenCTCT release under ``root`` (see the module docstring)."""
    if not intensity_scale > 0:
        raise ValueError(f"intensity_scale must be positive; got {intensity_scale!r}")
    root = require_root(root, "AbdomenCTCT")
    axes = check_axes(axes)
    splits, notes, expected, spacing = learn2reg_pair_splits(read_learn2reg(root, JSON_NAME), PAPER_SIZE, image_size,
                                                             axes, scale=intensity_scale)
    return RealDataset(
        name="abdomen",
        root=root,
        layout="learn2reg-nifti",
        labels=list(ABDOMEN_LABELS),
        label_names=dict(ABDOMEN_LABEL_NAMES),
        image_size=expected,
        splits=splits,
        spacing=spacing,
        bidirectional=True,
        augment_flips=False,
        notes=notes,
    )
