"""The refinement optimiser's settings: a plain dataclass, the run config's ``ofg`` section.

Free of torch, so that the workflow's plan can validate a run config while Snakemake parses;
:mod:`ofg.guidance` runs the optimiser these settings describe.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any


@dataclass
class RefineSettings:
    """The refinement optimiser: ``steps`` Adam(amsgrad) steps at learning rate ``lr`` on the energy
    NCC(fixed, moving∘φ) + ``reg_weight``·Grad_l2(φ), NCC over cubic windows of ``window`` voxels.

    ``image`` (:data:`ofg.names.IMAGE_TERMS`) replaces NCC by MSE(fixed, moving∘φ) (``window`` then
    unused); ``regularizer`` (:data:`ofg.names.REGULARIZERS`) replaces Grad_l2 by LKU-Net's
    smoothness loss (3-D only). In a run config both follow ``loss.image`` / ``loss.regularizer``.

    ``lku_smooth`` decision: the energy's regulariser is :func:`ofg.losses.lku_smoothness_loss` of the
    voxel field, the very term of the network loss, so energy, target and network agree on units.
    The reference's LKU-Net script (weight 5.0 in both) instead hands LKU-Net's normalised field
    f = 2u/(n−1) to an optimiser that warps by f *voxels* and smooths f as normalised: its image
    term sees a displacement (n−1)/2 times smaller than the network's, and its Adam steps move f by
    about lr normalised units, i.e. about lr·(n−1)/2 voxels. That mix is a unit slip with no
    consistent voxel-space equivalent, so it is not reproduced; the weight 5.0 is kept.

    One object serves OFG training (:class:`ofg.guidance.OFGLoss`, the config's ``ofg`` section), the offline
    refinement of optimised self-training, the refinement curve and test-time refinement.
    """

    steps: int = 10
    lr: float = 0.1
    reg_weight: float = 1.0
    window: int = 9
    image: str = "ncc"
    regularizer: str = "grad_l2"
    #: run each step as a few fused loops (:mod:`ofg.fused`): numba kernels on CPU (:mod:`ofg.kernels`),
    #: ``torch.compile`` elsewhere; the same energy and Adam update, summed in another order (float32
    #: iterates differ by round-off); NCC + grad_l2 and 3-D only
    fused: bool = False

    def kwargs(self) -> dict[str, Any]:
        """Keyword arguments of :func:`refine`."""
        return asdict(self)
