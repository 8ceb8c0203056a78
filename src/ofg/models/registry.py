"""Model registry: ``build_model(name, img_size, size="paper"|"small", **overrides)``.

"paper" reproduces the configurations of the reference implementations; "small" keeps each design
with fewer channels, blocks and heads for CPU training on 32^3-96^3 volumes. Overrides replace
single constructor arguments of the chosen configuration, e.g. the reference's LPBA40 TransMorph:
``build_model("transmorph", (160, 192, 160), size="paper", window=(5, 6, 5))``.
"""

from __future__ import annotations

import inspect
from typing import Any, Sequence

from ofg.models.common import RegistrationNet
from ofg.models.lkunet import LKUNet
from ofg.models.transmorph import TransMorph
from ofg.models.vitvnet import ViTVNet
from ofg.models.voxelmorph import VoxelMorph
from ofg.names import MODEL_NAMES, MODEL_SIZES

SIZES = MODEL_SIZES
PAPER_IMG_SIZE = (160, 192, 224)

MODELS: dict[str, type[RegistrationNet]] = {
    "voxelmorph": VoxelMorph, "transmorph": TransMorph, "vitvnet": ViTVNet, "lkunet": LKUNet,
}

CONFIGS: dict[str, dict[str, dict[str, Any]]] = {
    "voxelmorph": {
        "paper": dict(encoder=(8, 32, 32, 32), decoder=(32, 32, 32, 32, 32, 8, 8)),
        "small": dict(encoder=(8, 16, 16, 16), decoder=(16, 16, 16, 16, 8, 8)),
    },
    "transmorph": {
        "paper": dict(embed_dim=96, depths=(2, 2, 4, 2), heads=(4, 4, 8, 8), window=(5, 6, 7),
                      mlp_ratio=4.0, qkv_bias=False, drop_path=0.3, reg_head_chan=16),
        # window None: per axis the largest size <= 7 that needs no padding (2 at 64^3, 3 at 96^3).
        "small": dict(embed_dim=24, depths=(1, 1, 2, 1), heads=(2, 2, 4, 4), window=None,
                      mlp_ratio=4.0, qkv_bias=False, drop_path=0.1, reg_head_chan=8),
    },
    "vitvnet": {
        "paper": dict(encoder=(16, 32, 32), patch=8, hidden=252, layers=12, heads=12, mlp_dim=3072,
                      dropout=0.1, head_channels=512, decoder=(96, 48, 32, 32, 16)),
        "small": dict(encoder=(8, 16, 16), patch=4, hidden=96, layers=4, heads=4, mlp_dim=384,
                      dropout=0.1, head_channels=64, decoder=(32, 16, 16, 8)),
    },
    "lkunet": {
        "paper": dict(start_channel=8, kernel=5, inverse_head=True, int_steps=0),
        "small": dict(start_channel=4, kernel=5, inverse_head=False, int_steps=0),
    },
}


def model_config(name: str, size: str = "paper") -> dict[str, Any]:
    """A copy of the constructor arguments of configuration ``size`` of model ``name``."""
    if name not in MODELS:
        raise ValueError(f"unknown model {name!r}; valid names: {', '.join(MODEL_NAMES)}")
    if size not in SIZES:
        raise ValueError(f"unknown size {size!r} for model {name!r}; valid sizes: {', '.join(SIZES)}")
    return dict(CONFIGS[name][size])


def build_model(name: str, img_size: int | Sequence[int], size: str = "paper", **overrides: Any) -> RegistrationNet:
    """Build registration network ``name`` for inputs of spatial size ``img_size`` (D,H,W).

    The network maps a pair x (B,2,D,H,W) (moving, fixed) to (warped moving (B,1,D,H,W),
    displacement (B,3,D,H,W) in voxels). Raises ValueError for an unknown name, size or override,
    or an img_size the network cannot take (the message names the valid sizes).
    """
    config = model_config(name, size)
    unknown = sorted(set(overrides) - set(config))
    if unknown:
        valid = [p for p in inspect.signature(MODELS[name]).parameters if p != "img_size"]
        raise ValueError(f"{name}: unknown override(s) {unknown}; valid: {valid}")
    config.update(overrides)
    return MODELS[name](img_size, **config)
