"""The training objective of each method, for one direction moving→fixed of one pair.

- ``unsupervised``: L = ncc_weight·NCC(fixed, moving∘φ) + w·Grad_l2(φ), w = 1 by default.
- ``ofg``: L = mse_weight·MSE(φ, refine(φ)) + w·Grad_l2(φ), w = 0.02 by default; the refinement
  (:class:`ofg.guidance.OFGLoss`) takes ``ofg.steps`` Adam steps at ``poly_lr(ofg.lr, epoch)``.
- ``self_training`` / ``opt_self_training``: L = mse_weight·MSE(φ, φ_teacher) + w·Grad_l2(φ),
  w = 0.02 by default, φ_teacher from :class:`ofg.teacher.TeacherFields`.

``loss.image: mse`` replaces NCC by MSE(fixed, moving∘φ) (still weighed by ``ncc_weight``; history
column ``loss_image_mse``), and ``loss.regularizer: lku_smooth`` replaces Grad_l2 by LKU-Net's
smoothness loss (:func:`ofg.losses.lku_smoothness_loss`, column ``loss_lku_smooth``) in every method;
the OFG energy uses the same two terms (the config copies them into ``ofg``).

An objective maps (moving, fixed, warped, φ) to (total loss, unweighted terms, seconds spent making the
target); φ is (B,3,D,H,W) in voxels and every tensor float32.
"""

from __future__ import annotations

import math
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from ofg.config import TEACHER_METHODS, RunConfig
from ofg.guidance import OFGLoss, poly_lr
from ofg.losses import diffusion_loss, lku_smoothness_loss, ncc_loss
from ofg.spatial import flip_field
from ofg.teacher import TeacherFields, load_teacher

Terms = dict[str, float]


def image_term(name: str, fixed: torch.Tensor, warped: torch.Tensor, window: int) -> tuple[str, torch.Tensor]:
    """(history name, value) of the image term ``name`` (:data:`ofg.losses.IMAGE_TERMS`)."""
    if name == "ncc":
        return "ncc", ncc_loss(fixed, warped, window=window)
    if name == "mse":
        return "image_mse", F.mse_loss(warped, fixed)
    raise ValueError(f"unknown image term {name!r}")


def regularizer_term(name: str, disp: torch.Tensor) -> tuple[str, torch.Tensor]:
    """(history name, value) of the regulariser ``name`` (:data:`ofg.losses.REGULARIZERS`) of ``disp``."""
    if name == "grad_l2":
        return "diffusion", diffusion_loss(disp, "l2")
    if name == "lku_smooth":
        return "lku_smooth", lku_smoothness_loss(disp)
    raise ValueError(f"unknown regularizer {name!r}")


class Objective:
    """Base: the regulariser every method shares, and the epoch hook (no-op here)."""

    #: history column of the seconds spent making the target per iteration (None: no target)
    timing_column: str | None = None

    def __init__(self, config: RunConfig) -> None:
        self.config = config

    def start_epoch(self, epoch: int, epochs: int) -> float:
        """Set per-epoch schedules; return the method's own learning rate (NaN when it has none)."""
        return math.nan

    def target_terms(self, moving: torch.Tensor, fixed: torch.Tensor, warped: torch.Tensor,
                     disp: torch.Tensor, key: str, flips: tuple[int, ...]) -> tuple[torch.Tensor, dict, float]:
        raise NotImplementedError

    def __call__(self, moving: torch.Tensor, fixed: torch.Tensor, warped: torch.Tensor, disp: torch.Tensor,
                 key: str, flips: tuple[int, ...] = ()) -> tuple[torch.Tensor, Terms, float]:
        reg_name, reg = regularizer_term(self.config.loss.regularizer, disp)
        data, terms, seconds = self.target_terms(moving, fixed, warped, disp, key, flips)
        total = data + self.config.diffusion_weight * reg
        terms = {reg_name: reg, **terms}
        values = {name: float(v.detach()) if torch.is_tensor(v) else float(v) for name, v in terms.items()}
        return total, values, seconds


class Unsupervised(Objective):
    def target_terms(self, moving, fixed, warped, disp, key, flips):
        name, image = image_term(self.config.loss.image, fixed, warped, self.config.ofg.window)
        return self.config.loss.ncc_weight * image, {name: image}, 0.0


class OnTheFlyGuidance(Objective):
    """OFG: the refined field is the regression target; the refinement lr follows ``poly_lr`` per epoch."""

    timing_column = "ofg_seconds_per_iteration"

    def __init__(self, config: RunConfig) -> None:
        super().__init__(config)
        self.criterion = OFGLoss.from_settings(config.ofg)

    def start_epoch(self, epoch: int, epochs: int) -> float:
        self.criterion.lr = poly_lr(self.config.ofg.lr, epoch, epochs)
        return self.criterion.lr

    def target_terms(self, moving, fixed, warped, disp, key, flips):
        mse, info = self.criterion(moving, fixed, disp, return_info=True)
        terms = {"mse": mse, "energy_before": info.energies[0], "energy_after": info.energies[-1]}
        return self.config.loss.mse_weight * mse, terms, info.refine_seconds


class SelfTraining(Objective):
    """(Optimised) self-training: the teacher's cached field is the regression target."""

    timing_column = "teacher_seconds_per_iteration"

    def __init__(self, config: RunConfig, teacher: TeacherFields) -> None:
        super().__init__(config)
        self.teacher = teacher

    def target_terms(self, moving, fixed, warped, disp, key, flips):
        # The cache holds un-flipped fields (one teacher pass per pair): undo the flips on the
        # images for the teacher, apply them to its field.
        source_m = moving.flip([a + 2 for a in flips]) if flips else moving
        source_f = fixed.flip([a + 2 for a in flips]) if flips else fixed
        start = time.perf_counter()
        target = flip_field(self.teacher.get(key, source_m, source_f), flips)
        seconds = time.perf_counter() - start  # teacher prediction (+ offline refinement) or cache read
        mse = F.mse_loss(disp, target)
        return self.config.loss.mse_weight * mse, {"mse": mse}, seconds


def build_objective(config: RunConfig, image_size: tuple[int, int, int], teacher_cache: Path,
                    device: torch.device) -> Objective:
    """The objective of ``config.method``; self-training loads its teacher (caching under ``teacher_cache``)."""
    if config.method == "unsupervised":
        return Unsupervised(config)
    if config.method == "ofg":
        return OnTheFlyGuidance(config)
    if config.method in TEACHER_METHODS:
        return SelfTraining(config, load_teacher(config, image_size, teacher_cache, device))
    raise ValueError(f"no objective for method {config.method!r}")
