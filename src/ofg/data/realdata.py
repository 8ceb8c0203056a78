"""Shared machinery of the real-dataset loaders (IXI, OASIS, LPBA40, AbdomenCTCT).

Checked volume reading (grid, size, finiteness, integral labels), the image-size option every loader
takes, the reference subject sampling, the concrete dataset class the loaders return, and
:func:`check_image_size`, which the trainer calls before building a model.

The ``image_size`` option of every loader:
- ``"paper"`` (default): every image must have the paper's size for that dataset and layout;
  any other size raises a DataError naming the file, the expected and the found size.
- ``None``: the size is read from one reference file (the atlas, the fixed image or the first
  subject); every other file must then match it. Use this for the small fixtures.
- ``(D, H, W)``: every image must have exactly this size.

In the workflow the option is the config key ``datasets.<name>.image_size`` ([D, H, W] or null; absent =
``"paper"``), passed to the loader by every stage that opens the dataset (:func:`ofg.plan.dataset_options`).
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence, Union

import numpy as np

from ofg.data.base import Pair, PairList, RegistrationDataset, check_split
from ofg.io import DataError, check_finite, load_nifti

Size = tuple[int, int, int]
SizeOption = Union[str, Sequence[int], None]


def resolve_size(option: SizeOption, paper: Size, infer: Callable[[], Size]) -> Size:
    """Turn an ``image_size`` option into the size every image must have (see module docstring)."""
    if isinstance(option, str):
        if option != "paper":
            raise ValueError(f"image_size must be 'paper', None or (D, H, W); got {option!r}")
        return tuple(int(s) for s in paper)  # type: ignore[return-value]
    if option is None:
        return tuple(int(s) for s in infer())  # type: ignore[return-value]
    size = tuple(int(s) for s in option)
    if len(size) != 3 or min(size) < 1:
        raise ValueError(f"image_size must be three positive integers (D, H, W); got {option!r}")
    return size  # type: ignore[return-value]


def nifti_shape(path: Path, axes: Sequence[int] | None = None) -> Size:
    """Shape of a NIfTI file's array (header only, nothing loaded), permuted by ``axes``."""
    import nibabel as nib

    try:
        shape = tuple(int(s) for s in nib.load(str(path)).shape)
    except Exception as exc:
        raise DataError(f"{path}: cannot read as NIfTI ({type(exc).__name__}: {exc})") from exc
    while len(shape) > 3 and shape[-1] == 1:
        shape = shape[:-1]
    if len(shape) != 3:
        raise DataError(f"{path}: expected a 3-D volume, found shape {shape}")
    return permute_shape(shape, axes)  # type: ignore[arg-type]


def nifti_spacing(path: Path, axes: Sequence[int] | None = None) -> tuple[float, float, float]:
    """Voxel size in mm from a NIfTI header, permuted by ``axes``."""
    import nibabel as nib

    try:
        zooms = tuple(float(z) for z in nib.load(str(path)).header.get_zooms()[:3])
    except Exception as exc:
        raise DataError(f"{path}: cannot read as NIfTI ({type(exc).__name__}: {exc})") from exc
    return permute_shape(zooms, axes)  # type: ignore[return-value]


def permute_shape(shape: Sequence, axes: Sequence[int] | None) -> tuple:
    """``shape`` reordered by the axis permutation ``axes`` (None keeps it)."""
    return tuple(shape) if axes is None else tuple(shape[a] for a in axes)


def check_axes(axes: Sequence[int] | None) -> tuple[int, int, int] | None:
    """Validate an axis permutation option: None or a permutation of (0, 1, 2)."""
    if axes is None:
        return None
    axes = tuple(int(a) for a in axes)
    if sorted(axes) != [0, 1, 2]:
        raise ValueError(f"axes must be a permutation of (0, 1, 2); got {axes!r}")
    return axes  # type: ignore[return-value]


def read_nifti_volume(path: Path, axes: Sequence[int] | None = None, label: bool = False) -> np.ndarray:
    """Read a 3-D NIfTI image (float32) or label map (stored type), permuted by ``axes``."""
    array, _ = load_nifti(path, dtype=None if label else np.float32)
    if array.ndim != 3:
        raise DataError(f"{path}: expected a 3-D volume, found shape {array.shape}")
    return array if axes is None else np.transpose(array, axes)


def integral_label(label: np.ndarray, path: Path | str, dtype: type = np.int16) -> np.ndarray:
    """Return ``label`` as ``dtype``; raise DataError naming ``path`` if it is not integer-valued.

    Float label maps (some releases store them so) are accepted when every value is an integer.
    """
    label = np.asarray(label)
    if not (np.issubdtype(label.dtype, np.integer) or np.issubdtype(label.dtype, np.floating)):
        raise DataError(f"{path}: label map has non-numeric type {label.dtype}")
    if np.issubdtype(label.dtype, np.floating):
        if not np.isfinite(label).all() or not np.array_equal(label, np.round(label)):
            raise DataError(f"{path}: label map holds non-integer values")
    info = np.iinfo(dtype)
    if label.size and (label.min() < info.min or label.max() > info.max):
        raise DataError(
            f"{path}: label values {label.min()}..{label.max()} do not fit {np.dtype(dtype).name}"
        )
    return np.ascontiguousarray(label.astype(dtype))


def check_volume(
    image: np.ndarray,
    label: np.ndarray,
    image_path: Path | str,
    label_path: Path | str,
    expected: Size | None,
) -> tuple[np.ndarray, np.ndarray]:
    """Check one (image, label) volume; return (float32 image, label) unchanged otherwise.

    Raises DataError naming the file when the image is not 3-D, its size differs from ``expected``,
    the label grid differs from the image grid, or the image holds NaN/Inf.
    """
    image = np.asarray(image)
    label = np.asarray(label)
    if image.ndim != 3:
        raise DataError(f"{image_path}: expected a 3-D image, found shape {image.shape}")
    if expected is not None and tuple(image.shape) != tuple(expected):
        raise DataError(
            f"{image_path}: wrong image size for this dataset: expected {tuple(expected)}, "
            f"found {tuple(image.shape)} (image_size None, in the workflow config datasets.<name>.image_size: "
            "null, takes the size from the files)"
        )
    if label.shape != image.shape:
        raise DataError(
            f"{label_path}: label grid {tuple(label.shape)} differs from the image grid "
            f"{tuple(image.shape)} of {image_path}"
        )
    if not np.issubdtype(image.dtype, np.number):
        raise DataError(f"{image_path}: image has non-numeric type {image.dtype}")
    image = np.ascontiguousarray(image, dtype=np.float32)
    check_finite(image, image_path)
    return image, label


def require_dir(path: Path, what: str) -> Path:
    """Return ``path`` if it is a directory, else raise DataError naming it."""
    if not path.is_dir():
        raise DataError(f"{what} not found: {path}")
    return path


def require_root(root: str | Path, dataset: str) -> Path:
    """The dataset root as a Path; DataError if it is missing."""
    root = Path(root)
    return require_dir(root, f"{dataset} data root")


def sample_subjects(names: Sequence[str], count: int | None, seed: int) -> list[str]:
    """The reference protocol's subject sampling: sort, ``random.Random(seed).sample``, sort again.

    This reproduces the reference code's ``random.seed(42); random.sample(sorted_paths, k)`` draw
    (paths in one folder sort as their file names do). ``count`` None, or at least the number of
    names, keeps every name.
    """
    names = sorted(names)
    if count is None or count >= len(names):
        return names
    if count < 1:
        raise ValueError(f"subject count must be positive or None; got {count}")
    return sorted(random.Random(seed).sample(names, count))


def unordered_pairs(n: int) -> list[tuple[int, int]]:
    """All index pairs (i, j) with i < j, in lexicographic order."""
    return [(i, j) for i in range(n) for j in range(i + 1, n)]


@dataclass
class RealDataset(RegistrationDataset):
    """A real dataset: fixed per-split pair lists built by one of the loaders.

    Attributes beyond :class:`RegistrationDataset`: ``root`` (the data folder, never written),
    ``layout`` (which release layout was detected), ``label_names`` (label value -> structure),
    ``notes`` (split -> how that split was formed) and ``train_epochs`` (epoch -> train pairs, set
    with the reference pairing; then ``pairs("train")`` is epoch 0's list).
    """

    name: str
    root: Path
    layout: str
    labels: list[int]
    label_names: dict[int, str]
    image_size: Size
    splits: dict[str, PairList]
    spacing: tuple[float, float, float] = (1.0, 1.0, 1.0)
    bidirectional: bool = False
    augment_flips: bool = False
    notes: dict[str, str] = field(default_factory=dict)
    train_pairing: str = "all"
    train_epochs: Callable[[int], PairList] | None = None

    def pairs(self, split: str) -> PairList:
        """The pairs of ``split``; item i is a Pair of (D,H,W) arrays, loaded only when indexed."""
        return self.splits[check_split(split)]

    def epoch_pairs(self, split: str, epoch: int) -> PairList:
        """The pairs epoch ``epoch`` visits: ``train_epochs(epoch)`` for the train split when set,
        else :meth:`pairs`."""
        if check_split(split) == "train" and self.train_epochs is not None:
            return self.train_epochs(epoch)
        return self.pairs(split)


def make_pair(moving: tuple[np.ndarray, np.ndarray], fixed: tuple[np.ndarray, np.ndarray]) -> Pair:
    """A Pair from (image, label) of the moving and of the fixed volume."""
    return Pair(moving=moving[0], fixed=fixed[0], moving_label=moving[1], fixed_label=fixed[1])


def check_image_size(dataset: RegistrationDataset | Sequence[int], img_size: Sequence[int]) -> None:
    """Raise ValueError if the images of ``dataset`` do not have the model's ``img_size``.

    The registration models are built for one fixed (D, H, W) (their spatial transformer, window
    partition and position grids depend on it), so the sizes must be equal. ``dataset`` may also
    be a plain size tuple.
    """
    size = getattr(dataset, "image_size", dataset)
    name = getattr(dataset, "name", "dataset")
    data_size = tuple(int(s) for s in size)  # type: ignore[union-attr]
    model_size = tuple(int(s) for s in img_size)
    if len(model_size) != 3:
        raise ValueError(f"img_size must be (D, H, W); got {tuple(img_size)}")
    if data_size != model_size:
        raise ValueError(
            f"{name} images are {data_size} but the model expects img_size={model_size}; "
            f"build the model with img_size={data_size} or open the dataset at the model's size"
        )


@dataclass(frozen=True)
class Volume:
    """One subject on disk: its image file, its label file and the key that names it."""

    key: str
    image: Path
    label: Path


def read_nifti_subject(
    volume: Volume,
    expected: Size | None,
    axes: Sequence[int] | None = None,
    scale: float = 1.0,
    minmax: bool = False,
) -> tuple[np.ndarray, np.ndarray]:
    """Read and check one NIfTI subject; return (float32 image, int16 label), both (D,H,W).

    The image is divided by ``scale`` (AbdomenCTCT: HU/500) or, with ``minmax``, rescaled to [0, 1]
    by its own minimum and maximum (a constant image becomes all zeros).
    """
    image = read_nifti_volume(volume.image, axes)
    label = read_nifti_volume(volume.label, axes, label=True)
    image, label = check_volume(image, label, volume.image, volume.label, expected)
    if minmax:
        low, high = float(image.min()), float(image.max())
        image = (image - low) / (high - low) if high > low else np.zeros_like(image)
    elif scale != 1.0:
        image = image / np.float32(scale)
    return np.ascontiguousarray(image, dtype=np.float32), integral_label(label, volume.label)


@dataclass(frozen=True)
class NiftiPairLoader:
    """Picklable PairList loader: pair i = (moving, fixed) volumes read by :func:`read_nifti_subject`."""

    pairs: tuple[tuple[Volume, Volume], ...]
    expected: Size
    axes: tuple[int, int, int] | None = None
    scale: float = 1.0
    minmax: bool = False

    def __call__(self, index: int) -> Pair:
        moving, fixed = self.pairs[index]
        read = lambda v: read_nifti_subject(
            v, self.expected, self.axes, self.scale, self.minmax
        )  # noqa: E731
        return make_pair(read(moving), read(fixed))


def nifti_pair_list(
    pairs: Sequence[tuple[Volume, Volume]],
    expected: Size,
    axes: tuple[int, int, int] | None = None,
    scale: float = 1.0,
    minmax: bool = False,
) -> PairList:
    """A lazy PairList over (moving, fixed) NIfTI volumes; keys are the volumes' keys."""
    pairs = tuple(pairs)
    keys = tuple((m.key, f.key) for m, f in pairs)
    return PairList(keys=keys, load=NiftiPairLoader(pairs, expected, axes, scale, minmax))
