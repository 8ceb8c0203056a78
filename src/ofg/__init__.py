"""OFG: on-the-fly guidance training for medical image registration.

The public API (``warp``, ``integrate``, ``compose``, ``resize_displacement``, ``ncc_loss``,
``diffusion_loss``, ``refine``, ``OFGLoss``, ``OFGInfo``, ``poly_lr``) is imported on first use, so that
``import ofg.plan`` (what the Snakefile does while parsing) needs neither torch nor numba: a Snakemake
host with Snakemake alone parses the workflow, and each rule's environment does the computing.
"""

from __future__ import annotations

import importlib
from importlib.metadata import PackageNotFoundError as _PackageNotFoundError
from importlib.metadata import version as _version
from typing import Any

try:
    __version__ = _version("ofg")
except _PackageNotFoundError:  # a source tree that was never installed
    __version__ = "0+unknown"

#: public name -> the module that defines it
_API = {"OFGLoss": "guidance", "OFGInfo": "guidance", "poly_lr": "guidance", "refine": "guidance", "diffusion_loss": "losses",
        "ncc_loss": "losses", "compose": "spatial", "integrate": "spatial", "resize_displacement": "spatial",
        "warp": "spatial"}


def __getattr__(name: str) -> Any:
    if name not in _API:
        raise AttributeError(f"module 'ofg' has no attribute {name!r}")
    return getattr(importlib.import_module(f"ofg.{_API[name]}"), name)


def __dir__() -> list[str]:
    return sorted([*globals(), *_API])


__all__ = ["warp", "integrate", "compose", "resize_displacement", "ncc_loss", "diffusion_loss", "refine",
           "OFGLoss", "OFGInfo", "poly_lr", "__version__"]
