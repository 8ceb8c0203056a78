"""Register your own images with a trained network: ``ofg-register`` or ``python -m ofg.register``.

    ofg-register --checkpoint best.pt --moving m.nii.gz --fixed f.nii.gz --warped out.nii.gz
        --field field.nii.gz [--field-units voxel|mm] [--moving-labels ml.nii.gz --warped-labels wl.nii.gz]
        [--intensity none|minmax|ct] [--resample] [--training-image IMG] [--device auto|cpu|cuda]

Conventions (:mod:`ofg.spatial`'s): arrays (D,H,W) in the files' voxel order; the displacement u is
(3,D,H,W) on the fixed grid, component i along array axis i, and warped(x) = moving(x + u(x))
(grid_sample, align_corners=True, zero outside). One network forward is :func:`ofg.inference.predict`.

Checked; any failure exits with status 2 and one line naming the file:
- every input exists and reads as a 3-D NIfTI/Analyze volume without NaN/Inf; label maps hold
  integers and lie on their image's grid (same shape, affine within 1e-3 mm);
- moving and fixed have the same shape, axis codes (``nibabel.aff2axcodes``) and voxel size (0.1%);
- their shape is the checkpoint's ``image_size`` (the network is built for one size), unless
  ``--resample``: then the network sees both images resampled (trilinear, align_corners=True) to
  that size and its field is resampled back to the fixed grid (:func:`ofg.spatial.resize_displacement`);
- orientation against the training data: checkpoints record the image size only, not the
  orientation or voxel size. The embedded cohorts are always written on a RAS grid, so for their
  checkpoints the axis codes must be RAS. ``--training-image`` (one image of the training cohort)
  makes the axis codes, and without ``--resample`` the voxel size, match it. Otherwise orientation
  is not checked: bring the images in the voxel order of the training data.
- no output is an input, the checkpoint or another output.

Intensities are not checked; ``--intensity`` sets what the network sees: ``none`` (default) the
stored values, as every loader feeds files already preprocessed like the training data (embedded
cohorts, IXI/OASIS in [0, 1]); ``minmax`` each image rescaled to [0, 1] by its own min and max (the
LPBA LONI loader's rule; MR in scanner units for a brain network); ``ct`` HU clipped to
[-1000, 1000] HU and divided by 500 (embedded-ct's rule; AbdomenCTCT's loader divides by 500 without
clipping). The warped image is the moving image in its own stored units.

Outputs, all with the fixed image's affine, written atomically: the warped image float32 (D,H,W),
trilinear; the field float32 (D,H,W,1,3), a NIfTI vector image (intent "vector"), component i along
array axis i, in voxels (``--field-units voxel``, default) or in mm (× the fixed image's voxel size
along axis i; array axes, not world axes), the header's descrip saying which; warped labels by
nearest neighbour (:func:`ofg.metrics.warp_labels`, ``ofg-evaluate --label-mode nearest``'s), in
the label map's integer type (int32 for labels stored as floats).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import NamedTuple

import nibabel as nib
import numpy as np
import torch
import torch.nn.functional as F

from ofg import metrics
from ofg.checkpoint import build_from_checkpoint, read_checkpoint
from ofg.config import RunConfig
from ofg.data import EMBEDDED
from ofg.data.anatomy import CT_HU_SCALE, CT_HU_WINDOW
from ofg.data.realdata import integral_label
from ofg.inference import as_field, as_tensor, predict
from ofg.io import DataError, check_finite, load_nifti, save_nifti
from ofg.runtime import resolve_device
from ofg.spatial import resize_displacement, warp

INTENSITY_MODES = ("none", "minmax", "ct")
FIELD_UNITS = ("voxel", "mm")
DESCRIP = {"voxel": "ofg displacement u in voxels along array axes 0,1,2; warped(x)=moving(x+u(x))",
           "mm": "ofg displacement u in mm along array axes 0,1,2; warped(x)=moving(x+u(x))"}
SPACING_RTOL = 1e-3  # voxel sizes agree to 0.1%
AFFINE_ATOL = 1e-3   # mm


class Volume(NamedTuple):
    """One image or label file: its path, the (D,H,W) array and the 4x4 voxel-to-mm affine."""

    path: Path
    array: np.ndarray
    affine: np.ndarray


def read_volume(path: str | Path, label: bool = False) -> Volume:
    """Read a 3-D image (float32) or label map (integers: its own type, int32 if stored as floats)."""
    array, affine = load_nifti(path, dtype=None if label else np.float32)
    if array.ndim != 3:
        raise DataError(f"{path}: expected a 3-D volume, found shape {array.shape}")
    if label:
        array = integral_label(array, path, array.dtype if np.issubdtype(array.dtype, np.integer) else np.int32)
    else:
        check_finite(array, path)
    return Volume(Path(path), array, affine)


def axcodes(affine: np.ndarray) -> str:
    """The axis codes of ``affine`` as one string, e.g. "RAS" (None axes written as "?")."""
    return "".join(code or "?" for code in nib.aff2axcodes(affine))


def spacing(affine: np.ndarray) -> tuple[float, float, float]:
    """Voxel size in mm along array axes 0, 1, 2."""
    return tuple(float(s) for s in nib.affines.voxel_sizes(affine))  # type: ignore[return-value]


def check_grid(volume: Volume, codes: str, voxel: tuple[float, ...] | None, against: str) -> None:
    """DataError naming ``volume`` unless it has axis ``codes`` and (if given) voxel size ``voxel``."""
    if axcodes(volume.affine) != codes:
        raise DataError(f"{volume.path}: orientation {axcodes(volume.affine)} differs from {codes} of {against}")
    if voxel is not None and not np.allclose(spacing(volume.affine), voxel, rtol=SPACING_RTOL, atol=0):
        raise DataError(f"{volume.path}: voxel size {spacing(volume.affine)} mm differs from {tuple(voxel)} mm "
                        f"of {against}")


def check_pair(moving: Volume, fixed: Volume, image_size: tuple[int, ...], resample: bool) -> None:
    """Moving and fixed on consistent grids of the network's size (see the module docstring)."""
    if moving.array.shape != fixed.array.shape:
        raise DataError(f"{moving.path}: shape {moving.array.shape} differs from {fixed.array.shape} of the "
                        f"fixed image {fixed.path}")
    check_grid(moving, axcodes(fixed.affine), spacing(fixed.affine), f"the fixed image {fixed.path}")
    if not resample and fixed.array.shape != tuple(image_size):
        raise DataError(f"{fixed.path}: shape {fixed.array.shape}, but the network was trained on "
                        f"{tuple(image_size)}; resample the images to that size or pass --resample")


def check_labels(labels: Volume, image: Volume) -> None:
    """DataError naming ``labels`` unless it lies on the grid of ``image``."""
    if labels.array.shape != image.array.shape or not np.allclose(labels.affine, image.affine, atol=AFFINE_ATOL):
        raise DataError(f"{labels.path}: label grid (shape {labels.array.shape}) differs from the grid of "
                        f"{image.path} (shape {image.array.shape}); the affines must agree")


def training_grid(dataset: str, training_image: Volume | None, resample: bool) -> tuple[str | None, tuple | None, str]:
    """(axis codes, voxel size, description) the inputs must match; None where not known."""
    if training_image is not None:
        voxel = None if resample else spacing(training_image.affine)
        return axcodes(training_image.affine), voxel, f"the training image {training_image.path}"
    if dataset in EMBEDDED:
        return "RAS", None, f"the {dataset} cohort the network was trained on"
    return None, None, ""


def normalise(array: np.ndarray, mode: str) -> np.ndarray:
    """The network's input (float32) of a stored image under intensity ``mode`` (module docstring)."""
    if mode == "minmax":
        low, high = float(array.min()), float(array.max())
        return ((array - low) / (high - low) if high > low else np.zeros_like(array)).astype(np.float32)
    if mode == "ct":
        return (np.clip(array, *CT_HU_WINDOW) / np.float32(CT_HU_SCALE)).astype(np.float32)
    if mode != "none":
        raise ValueError(f"intensity must be one of {INTENSITY_MODES}, got {mode!r}")
    return array.astype(np.float32)


def displacement(model: torch.nn.Module, moving: np.ndarray, fixed: np.ndarray, image_size: tuple[int, ...],
                 device: torch.device) -> torch.Tensor:
    """The network's field (1,3,D,H,W) in voxels of the fixed grid for (D,H,W) network inputs.

    Inputs of another size than ``image_size`` are resampled to it and the field back to (D,H,W).
    """
    m, f = as_tensor(moving, device), as_tensor(fixed, device)
    if m.shape[2:] == tuple(image_size):
        return predict(model, m, f)[0]
    size = tuple(int(s) for s in image_size)
    resized = [F.interpolate(t, size=size, mode="trilinear", align_corners=True) for t in (m, f)]
    return resize_displacement(predict(model, *resized)[0], m.shape[2:])


def field_image(disp: torch.Tensor, voxel: tuple[float, ...], units: str) -> np.ndarray:
    """``disp`` (1,3,D,H,W) in voxels as a float32 NIfTI vector array (D,H,W,1,3) in ``units``."""
    field = as_field(disp)  # (3,D,H,W) float64
    if units == "mm":
        field = field * np.asarray(voxel, dtype=np.float64).reshape(3, 1, 1, 1)
    return np.moveaxis(field, 0, -1)[:, :, :, None, :].astype(np.float32)


def check_outputs(outputs: list[Path], inputs: list[Path]) -> None:
    """DataError naming an output that is an input, or that appears twice."""
    taken = {p.resolve(): p for p in inputs}
    for out in outputs:
        if out.resolve() in taken:
            raise DataError(f"{out}: output would overwrite {taken[out.resolve()]}; choose another name")
        taken[out.resolve()] = out


def read_inputs(checkpoint: Path, moving: Path, fixed: Path, moving_labels: Path | None,
                training_image: Path | None, resample: bool) -> tuple[dict, Volume, Volume, Volume | None]:
    """(checkpoint payload, moving, fixed, moving labels or None), read and checked (module docstring)."""
    payload = read_checkpoint(checkpoint)
    dataset = RunConfig.from_dict(payload["config"]).dataset.name
    mov, fix = read_volume(moving), read_volume(fixed)
    check_pair(mov, fix, tuple(int(s) for s in payload["image_size"]), resample)
    codes, voxel, against = training_grid(dataset, read_volume(training_image) if training_image else None, resample)
    if codes is not None:
        check_grid(fix, codes, voxel, against)
    labels = read_volume(moving_labels, label=True) if moving_labels is not None else None
    if labels is not None:
        check_labels(labels, mov)
    return payload, mov, fix, labels


def register(checkpoint: Path, moving: Path, fixed: Path, warped: Path, field: Path, *,
             moving_labels: Path | None = None, warped_labels: Path | None = None, field_units: str = "voxel",
             intensity: str = "none", resample: bool = False, training_image: Path | None = None,
             device: str = "auto") -> dict[str, float]:
    """Register ``moving`` to ``fixed`` with the network of ``checkpoint`` and write the outputs.

    Everything is read and checked before anything is written. Returns a summary: ``folding_percent``
    (100·mean(det J ≤ 0) of the field) and the input ranges ``moving_min/max``, ``fixed_min/max``.
    """
    if field_units not in FIELD_UNITS:
        raise ValueError(f"field units must be one of {FIELD_UNITS}, got {field_units!r}")
    if (moving_labels is None) != (warped_labels is None):
        raise ValueError("--moving-labels and --warped-labels go together")
    inputs = [Path(p) for p in (checkpoint, moving, fixed, moving_labels, training_image) if p is not None]
    check_outputs([Path(p) for p in (warped, field, warped_labels) if p is not None], inputs)
    payload, mov, fix, labels = read_inputs(checkpoint, moving, fixed, moving_labels, training_image, resample)
    image_size = tuple(int(s) for s in payload["image_size"])
    torch_device = resolve_device(device)
    model = build_from_checkpoint(payload, checkpoint, torch_device)
    disp = displacement(model, normalise(mov.array, intensity), normalise(fix.array, intensity), image_size,
                        torch_device)
    warped_image = warp(as_tensor(mov.array, torch_device), disp)[0, 0].cpu().numpy()
    save_nifti(warped, warped_image, fix.affine)
    save_nifti(field, field_image(disp, spacing(fix.affine), field_units), fix.affine,
               descrip=DESCRIP[field_units], intent="vector")
    if labels is not None:
        save_nifti(warped_labels, metrics.warp_labels(labels.array, as_field(disp), None, mode="nearest"),
                   fix.affine)
    return {"folding_percent": metrics.folding_percent_of(metrics.jacobian_determinant(as_field(disp))),
            "moving_min": float(mov.array.min()), "moving_max": float(mov.array.max()),
            "fixed_min": float(fix.array.min()), "fixed_max": float(fix.array.max())}


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ofg-register", description="Register a moving image to a fixed "
                                     "image with a trained ofg network (see the ofg.register docstring).")
    path = {"type": Path, "metavar": "NII"}
    parser.add_argument("--checkpoint", type=Path, required=True, metavar="PT", help="written by ofg-train")
    parser.add_argument("--moving", required=True, help="moving image (NIfTI)", **path)
    parser.add_argument("--fixed", required=True, help="fixed image (NIfTI); outputs get its affine", **path)
    parser.add_argument("--warped", required=True, help="output: the moving image warped, trilinear", **path)
    parser.add_argument("--field", required=True, help="output: displacement, (D,H,W,1,3) vector image", **path)
    parser.add_argument("--field-units", choices=FIELD_UNITS, default="voxel",
                        help="voxel (default) or mm (times the fixed voxel size), along the array axes")
    parser.add_argument("--moving-labels", help="moving label map to warp (nearest neighbour)", **path)
    parser.add_argument("--warped-labels", help="output: the warped label map", **path)
    parser.add_argument("--intensity", choices=INTENSITY_MODES, default="none",
                        help="network input: none (stored values, default), minmax ([0, 1] per image) "
                             "or ct (HU clipped to [-1000, 1000], / 500)")
    parser.add_argument("--resample", action="store_true",
                        help="run the network on the images resampled to its training size")
    parser.add_argument("--training-image", help="an image of the training data: inputs must have its "
                        "orientation and (without --resample) voxel size", **path)
    parser.add_argument("--device", default="auto", help="auto (default: cuda if available), cpu, cuda or cuda:N")
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the command line; 0 on success, 2 with a one-line message on bad input."""
    parser = _parser()
    args = parser.parse_args(argv)
    if (args.moving_labels is None) != (args.warped_labels is None):
        parser.error("--moving-labels and --warped-labels go together")
    try:
        summary = register(args.checkpoint, args.moving, args.fixed, args.warped, args.field,
                           moving_labels=args.moving_labels, warped_labels=args.warped_labels,
                           field_units=args.field_units, intensity=args.intensity, resample=args.resample,
                           training_image=args.training_image, device=args.device)
    except (ValueError, OSError) as exc:  # DataError is a ValueError
        print(f"ofg-register: error: {' '.join(str(exc).split())}", file=sys.stderr)
        return 2
    low, high = min(summary["moving_min"], summary["fixed_min"]), max(summary["moving_max"], summary["fixed_max"])
    if args.intensity == "none" and max(-low, high) > 10:
        print(f"ofg-register: warning: input values span {low:g}..{high:g}, fed as stored; the networks train "
              "on [0, 1] (MR) or HU/500 (CT): see --intensity", file=sys.stderr)
    outputs = ", ".join(str(p) for p in (args.warped, args.field, args.warped_labels) if p is not None)
    print(f"ofg-register: wrote {outputs} (field in {args.field_units}); "
          f"{summary['folding_percent']:.3f}% of voxels fold")
    return 0


if __name__ == "__main__":
    sys.exit(main())
