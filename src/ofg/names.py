"""The names the workflow and the library share: methods, networks, loss terms, Dice conventions and
datasets.

The one home of each name: the loss, metric, model and data modules use these tuples, and the plan
checks a workflow config against them without importing any of those (this module imports nothing,
so a Snakemake host parses the workflow with the standard library and PyYAML alone).
"""

from __future__ import annotations

#: training methods; the last two learn from a teacher network's fields
METHODS = ("unsupervised", "ofg", "self_training", "opt_self_training")
TEACHER_METHODS = ("self_training", "opt_self_training")
#: methods whose training refines fields: OFG online, optimised self-training its teacher's fields offline
REFINING_METHODS = ("ofg", "opt_self_training")
#: networks of :func:`ofg.models.build_model` and their two sizes
MODEL_NAMES = ("voxelmorph", "transmorph", "vitvnet", "lkunet")
MODEL_SIZES = ("paper", "small")
#: image terms and regularisers of the network loss and the OFG energy (:mod:`ofg.losses`)
IMAGE_TERMS = ("ncc", "mse")
REGULARIZERS = ("grad_l2", "lku_smooth")
#: label warping for Dice: one-hot trilinear (TransMorph's) or nearest neighbour (the reference's)
LABEL_MODES = ("onehot", "nearest")
#: which labels a pair's mean Dice averages: present in the warped or the fixed map, or in both
DICE_RULES = ("either", "both")
#: embedded cohorts (prepared by the workflow from packaged anatomy) -> their kind in ofg.data.embedded
EMBEDDED: dict[str, str] = {"embedded-brain": "brain", "embedded-ct": "ct"}
#: the paper's real datasets, read from a user's folder as they are
REAL: tuple[str, ...] = ("ixi", "oasis", "lpba", "abdomen")
#: the guidance gap's history columns (:mod:`ofg.gap`): per field, what is measured, and the two fields
GAP_QUANTITIES = ("dice", "folding", "energy", "epe")
GAP_ROLES = ("prediction", "target")
#: the figure kind that draws them (prediction vs target through training), in the report and each robustness setting
GAP_FIGURE = "guidance_gap"


def gap_column(quantity: str, role: str) -> str:
    """The history column ``gap_<quantity>_<role>`` of one measured quantity (:data:`GAP_QUANTITIES`) of the
    network's prediction or its refined target (:data:`GAP_ROLES`)."""
    return f"gap_{quantity}_{role}"
