"""Teacher fields of the self-training baselines: predicted once per training direction, cached on disk.

A teacher is a trained network of the student's architecture (its run's ``checkpoints/best.pt``). Its
field for a direction moving→fixed is predicted on first use and cached as a float32 (1,3,D,H,W)
tensor in voxels for the un-flipped pair. For optimised self-training each field is first refined
once, offline, with the run's :class:`ofg.guidance.RefineSettings` at the base learning rate.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path

import torch

from ofg.checkpoint import build_from_checkpoint, read_checkpoint
from ofg.config import RunConfig
from ofg.guidance import RefineSettings, refine
from ofg.inference import forward
from ofg.io import DataError, atomic_path, sha256_file

log = logging.getLogger("ofg.train")


class TeacherFields:
    """Pseudo ground-truth fields of ``teacher``, cached under ``cache_dir/<key>.pt``.

    The cache directory is named after the teacher file's SHA-256 (and, for refined fields, after
    the refinement settings), so a different teacher never reuses stale fields.
    """

    def __init__(self, teacher: torch.nn.Module, cache_dir: Path, device: torch.device,
                 settings: RefineSettings | None = None) -> None:
        self.teacher = teacher
        self.cache_dir = cache_dir
        self.device = device
        self.settings = settings
        self.predictions = 0  # teacher forward passes in this process

    def path(self, key: str) -> Path:
        return self.cache_dir / (re.sub(r"[^A-Za-z0-9._-]+", "_", key) + ".pt")

    def predict(self, moving: torch.Tensor, fixed: torch.Tensor) -> torch.Tensor:
        """The teacher's field (1,3,D,H,W) for moving→fixed, refined if so configured."""
        self.predictions += 1
        with torch.no_grad():
            _, disp = forward(self.teacher, moving, fixed)
        disp = disp.float()
        if self.settings is not None:
            disp, _ = refine(moving, fixed, disp, **self.settings.kwargs())
        return disp.detach()

    def get(self, key: str, moving: torch.Tensor, fixed: torch.Tensor) -> torch.Tensor:
        """The cached field of ``key``; predicted (and cached atomically) on first use."""
        path = self.path(key)
        if path.is_file():
            try:
                return torch.load(path, map_location=self.device, weights_only=True)
            except Exception as exc:
                raise DataError(f"{path}: unreadable cached teacher field ({exc}); delete it to recompute") from exc
        disp = self.predict(moving, fixed)
        with atomic_path(path, suffix=".pt") as tmp:
            torch.save(disp.cpu().contiguous(), tmp)
        return disp


def load_teacher(config: RunConfig, image_size: tuple[int, int, int], cache_root: Path,
                 device: torch.device) -> TeacherFields:
    """Load the teacher checkpoint ``config.teacher``; check it matches the student's architecture and
    image size; cache its fields under ``cache_root`` (the run folder's teacher-field cache)."""
    path = Path(config.teacher)
    if not path.is_file():
        raise DataError(f"teacher checkpoint not found: {path} (config key teacher, needed by method "
                        f"{config.method!r})")
    payload = read_checkpoint(path)
    teacher_config = RunConfig.from_dict(payload["config"])
    ours = (config.model.name, config.model.size, config.model.overrides)
    theirs = (teacher_config.model.name, teacher_config.model.size, teacher_config.model.overrides)
    if ours != theirs:
        raise DataError(f"{path}: teacher is model {theirs[0]!r} (size {theirs[1]!r}, overrides {theirs[2]}) but "
                        f"this run trains {ours[0]!r} (size {ours[1]!r}, overrides {ours[2]}); self-training "
                        "needs a teacher of the same architecture")
    teacher_size = tuple(int(s) for s in payload["image_size"])
    if teacher_size != tuple(image_size):
        raise DataError(f"{path}: teacher was trained on images of size {teacher_size}, this dataset has "
                        f"{tuple(image_size)}")
    teacher = build_from_checkpoint(payload, path, device)
    for parameter in teacher.parameters():
        parameter.requires_grad_(False)
    cache_dir = cache_root / sha256_file(path)[:16]
    settings = None
    if config.method == "opt_self_training":
        settings = RefineSettings(**config.ofg.kwargs())
        terms = "" if (settings.image, settings.regularizer) == ("ncc", "grad_l2") else \
            f"_{settings.image}_{settings.regularizer}"
        cache_dir = cache_dir / f"refined_k{settings.steps}_lr{settings.lr:g}_w{settings.reg_weight:g}{terms}"
    else:
        cache_dir = cache_dir / "plain"
    log.info("teacher %s (%s); fields cached in %s", path, teacher_config.model.name, cache_dir)
    return TeacherFields(teacher, cache_dir, device, settings)
