"""Registration networks: VoxelMorph, TransMorph, ViT-V-Net and LKU-Net.

Each maps a pair x (B,2,D,H,W) — moving and fixed on channels — to
``(warped_moving, displacement)``, the displacement (B,3,D,H,W) in voxels; each has ``img_size``
and ``flow_head`` (its final conv, initialised N(0, 1e-5) with zero bias).
"""

from ofg.models.common import RegistrationNet, count_parameters, init_flow_head_
from ofg.models.lkunet import LKUNet
from ofg.models.registry import MODEL_NAMES, PAPER_IMG_SIZE, SIZES, build_model, model_config
from ofg.models.transmorph import TransMorph
from ofg.models.vitvnet import ViTVNet
from ofg.models.voxelmorph import VoxelMorph

__all__ = [
    "MODEL_NAMES", "PAPER_IMG_SIZE", "SIZES", "build_model", "model_config", "count_parameters",
    "init_flow_head_", "RegistrationNet", "VoxelMorph", "TransMorph", "ViTVNet", "LKUNet",
]
