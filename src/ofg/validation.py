"""Input checks shared by the tensor functions: every failure is a ``ValueError`` that says
what was expected and what came."""

from __future__ import annotations

import torch


def check_image(image: torch.Tensor, name: str = "image") -> int:
    """Check a (B,C,D,H,W) or (B,C,H,W) floating tensor; return its spatial rank (2 or 3)."""
    if not isinstance(image, torch.Tensor):
        raise ValueError(f"{name}: expected a torch.Tensor, got {type(image).__name__}")
    if image.ndim not in (4, 5):
        raise ValueError(
            f"{name}: expected shape (B,C,D,H,W) or (B,C,H,W), got {tuple(image.shape)} "
            f"({image.ndim} dimensions)"
        )
    if not image.is_floating_point():
        raise ValueError(
            f"{name}: expected a floating-point tensor, got {image.dtype} "
            "(convert labels with .float() before warping)"
        )
    return image.ndim - 2


def check_displacement(disp: torch.Tensor, name: str = "displacement") -> int:
    """Check a (B,3,D,H,W) or (B,2,H,W) floating displacement; return its spatial rank."""
    ndim = check_image(disp, name)
    if disp.shape[1] != ndim:
        raise ValueError(
            f"{name}: expected {ndim} channels for a {ndim}-D field of shape "
            f"(B,{ndim},{'D,H,W' if ndim == 3 else 'H,W'}), got {tuple(disp.shape)}"
        )
    return ndim


def check_image_and_displacement(image: torch.Tensor, disp: torch.Tensor) -> int:
    """Check that ``disp`` can warp ``image``: same rank, same spatial shape, compatible batch."""
    ndim = check_image(image, "image")
    disp_ndim = check_displacement(disp, "displacement")
    if disp_ndim != ndim:
        raise ValueError(
            f"image is {ndim}-D {tuple(image.shape)} but displacement is {disp_ndim}-D {tuple(disp.shape)}"
        )
    if image.shape[2:] != disp.shape[2:]:
        raise ValueError(
            f"displacement spatial shape {tuple(disp.shape[2:])} does not match image spatial shape "
            f"{tuple(image.shape[2:])}"
        )
    if image.shape[0] != disp.shape[0] and image.shape[0] != 1:
        raise ValueError(
            f"batch sizes differ: image has {image.shape[0]}, displacement has {disp.shape[0]} "
            "(an image batch of 1 is broadcast)"
        )
    return ndim


def check_same_shape(a: torch.Tensor, b: torch.Tensor, name_a: str, name_b: str) -> int:
    """Check two floating images of identical shape; return the spatial rank."""
    ndim = check_image(a, name_a)
    check_image(b, name_b)
    if a.shape != b.shape:
        raise ValueError(f"{name_a} has shape {tuple(a.shape)} but {name_b} has shape {tuple(b.shape)}")
    return ndim
