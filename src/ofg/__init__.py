"""OFG: on-the-fly guidance training for medical image registration."""

from importlib.metadata import PackageNotFoundError as _PackageNotFoundError
from importlib.metadata import version as _version

from ofg.guidance import OFGLoss, poly_lr, refine
from ofg.losses import diffusion_loss, ncc_loss
from ofg.spatial import compose, integrate, resize_displacement, warp

try:
    __version__ = _version("ofg")
except _PackageNotFoundError:  # a source tree that was never installed
    __version__ = "0+unknown"

__all__ = ["warp", "integrate", "compose", "resize_displacement", "ncc_loss", "diffusion_loss", "refine",
           "OFGLoss", "poly_lr", "__version__"]
