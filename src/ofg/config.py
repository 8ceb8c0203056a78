"""The run configuration: one YAML file describes one training run.

The YAML keys are fixed (the workflow writes them)::

    dataset: {name: embedded-brain, root: data/embedded-brain, options: {}}
    model: {name: voxelmorph, size: small, overrides: {}}
    method: ofg          # unsupervised | ofg | self_training | opt_self_training
    ofg: {steps: 10, lr: 0.1, reg_weight: 1.0, window: 9, fused: false}
    loss: {ncc_weight: 1.0, mse_weight: 1.0, diffusion_weight: null, image: ncc, regularizer: grad_l2}
    epochs: 500
    iterations_per_epoch: null
    val_pairs: null
    val_label_mode: onehot   # onehot | nearest: how validation warps labels (selects best.pt)
    val_dice_rule: either    # either | both: how validation averages a pair's Dice
    lr: 1.0e-4
    seed: 0
    device: auto
    bidirectional: null
    augment_flips: null
    teacher: null
    compile: false
    amp: false           # true | false | auto (auto: where bf16 is native, see ofg.runtime)
    channels_last: false # true | false | auto
    num_workers: 0
    guidance_gap: true   # OFG and unsupervised: measure the guidance gap after every epoch (ofg.gap)

The defaults are the reference protocol: Adam(amsgrad) at lr 1e-4 with poly decay 0.9 per epoch,
batch 1, OFG with k=10 Adam steps at lr 0.1 (poly-decayed per epoch), model loss
MSE + 0.02 diffusion for OFG and the self-training methods, NCC + 1 diffusion for the baseline.
The ``ofg`` section is a :class:`ofg.settings.RefineSettings`; ``ofg.window`` is the local-NCC
window of both the OFG energy and the baseline loss. ``loss.image`` (ncc | mse, weight ``ncc_weight``)
and ``loss.regularizer`` (grad_l2 | lku_smooth) are the terms of the network losses and of the OFG
energy alike: ``ofg.image`` / ``ofg.regularizer`` are copied from them (other values are refused).

``null`` entries are resolved by :func:`resolve`: ``loss.diffusion_weight`` from the method, and
``bidirectional`` / ``augment_flips`` from the dataset's reference protocol.
"""

from __future__ import annotations

import copy
import dataclasses
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import yaml

from ofg.files import DataError, require_file, write_text_atomic
from ofg.names import (DICE_RULES, IMAGE_TERMS, LABEL_MODES, METHODS, MODEL_NAMES, MODEL_SIZES, REGULARIZERS,
                       TEACHER_METHODS)
from ofg.settings import RefineSettings

__all__ = ["METHODS", "TEACHER_METHODS", "MODEL_SIZES", "DEFAULT_DIFFUSION_WEIGHT", "DatasetConfig", "ModelConfig",
           "LossConfig", "RunConfig", "RefineSettings", "validate", "resolve", "coerce"]
#: diffusion weight of the model loss when ``loss.diffusion_weight`` is null
DEFAULT_DIFFUSION_WEIGHT = {"unsupervised": 1.0, "ofg": 0.02, "self_training": 0.02, "opt_self_training": 0.02}


@dataclass
class DatasetConfig:
    """Which dataset to open: ``ofg.data.open_dataset(name, root, **options)``."""

    name: str = "embedded-brain"
    root: str = "data/embedded-brain"
    options: dict[str, Any] = field(default_factory=dict)


@dataclass
class ModelConfig:
    """Which network: ``ofg.models.build_model(name, image_size, size=size, **overrides)``."""

    name: str = "voxelmorph"
    size: str = "small"
    overrides: dict[str, Any] = field(default_factory=dict)


@dataclass
class LossConfig:
    """Terms (:data:`ofg.losses.IMAGE_TERMS`, :data:`ofg.losses.REGULARIZERS`) and weights of the model
    loss; ``diffusion_weight`` (the regulariser's) None means the method's default."""

    ncc_weight: float = 1.0
    mse_weight: float = 1.0
    diffusion_weight: float | None = None
    image: str = "ncc"
    regularizer: str = "grad_l2"


@dataclass
class RunConfig:
    """Everything that defines a training run (see the module docstring for the YAML form)."""

    dataset: DatasetConfig = field(default_factory=DatasetConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    method: str = "ofg"
    ofg: RefineSettings = field(default_factory=RefineSettings)
    loss: LossConfig = field(default_factory=LossConfig)
    epochs: int = 500
    iterations_per_epoch: int | None = None
    val_pairs: int | None = None
    val_label_mode: str = "onehot"
    val_dice_rule: str = "either"
    lr: float = 1.0e-4
    seed: int = 0
    device: str = "auto"
    bidirectional: bool | None = None
    augment_flips: bool | None = None
    teacher: str | None = None
    compile: bool = False
    amp: bool | str = False
    channels_last: bool | str = False
    num_workers: int = 0
    guidance_gap: bool = True

    def __post_init__(self) -> None:
        validate(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "RunConfig":
        """Build from a (possibly partial) nested mapping; unknown keys raise a ValueError."""
        config = _from_mapping(cls, data, "")
        given = data.get("ofg") if isinstance(data.get("ofg"), Mapping) else {}
        for key in ("image", "regularizer"):
            if key in given and given[key] != getattr(config.loss, key):
                raise ValueError(f"config key ofg.{key}: the OFG energy uses loss.{key} "
                                 f"({getattr(config.loss, key)!r}); set that instead of ofg.{key} ({given[key]!r})")
        return config

    @classmethod
    def load(cls, path: str | Path) -> "RunConfig":
        """Read a YAML config file; a missing or malformed file raises DataError naming it."""
        path = require_file(path, "config file")
        try:
            data = yaml.safe_load(path.read_text())
        except yaml.YAMLError as exc:
            raise DataError(f"{path}: not valid YAML ({exc})") from exc
        if data is None:
            data = {}
        if not isinstance(data, Mapping):
            raise DataError(f"{path}: expected a mapping of config keys, got {type(data).__name__}")
        try:
            return cls.from_dict(data)
        except ValueError as exc:
            raise DataError(f"{path}: {exc}") from exc

    def to_dict(self) -> dict[str, Any]:
        """Plain nested dict (YAML-safe) with every key."""
        return dataclasses.asdict(self)

    def save(self, path: str | Path) -> Path:
        """Write the config as YAML, atomically; return the path."""
        return write_text_atomic(path, yaml.safe_dump(self.to_dict(), sort_keys=False))

    @property
    def diffusion_weight(self) -> float:
        """The diffusion weight in effect (the method's default when the config says null)."""
        if self.loss.diffusion_weight is not None:
            return float(self.loss.diffusion_weight)
        return DEFAULT_DIFFUSION_WEIGHT[self.method]


def _from_mapping(cls: type, data: Mapping[str, Any], prefix: str) -> Any:
    if not isinstance(data, Mapping):
        where = prefix.rstrip(".") or "config"
        raise ValueError(f"{where}: expected a mapping, got {type(data).__name__} ({data!r})")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise ValueError(
            f"unknown config key(s) {', '.join(prefix + str(k) for k in unknown)}; "
            f"valid keys{' under ' + prefix.rstrip('.') if prefix else ''}: {', '.join(fields)}"
        )
    kwargs = {}
    for name, value in data.items():
        sub = _NESTED.get((cls, name))
        if sub is not None:
            kwargs[name] = _from_mapping(sub, value if value is not None else {}, f"{prefix}{name}.")
        else:
            kwargs[name] = copy.deepcopy(value)
    return cls(**kwargs)


_NESTED: dict[tuple[type, str], type] = {
    (RunConfig, "dataset"): DatasetConfig,
    (RunConfig, "model"): ModelConfig,
    (RunConfig, "ofg"): RefineSettings,
    (RunConfig, "loss"): LossConfig,
}


def _check(condition: bool, key: str, expected: str, value: Any) -> None:
    if not condition:
        raise ValueError(f"config key {key}: expected {expected}, got {value!r}")


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return (isinstance(value, (int, float)) and not isinstance(value, bool)) and math.isfinite(value)


def _as_float(value: Any) -> Any:
    """YAML 1.1 reads ``1e-4`` (no dot) as a string: accept numeric strings for float keys."""
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return value
    return value


def validate(config: RunConfig) -> RunConfig:
    """Check types and ranges of every key; raise a ValueError naming the key. Returns ``config``."""
    config.lr = _as_float(config.lr)
    config.ofg.lr = _as_float(config.ofg.lr)
    config.ofg.reg_weight = _as_float(config.ofg.reg_weight)
    for key in ("ncc_weight", "mse_weight", "diffusion_weight"):
        setattr(config.loss, key, _as_float(getattr(config.loss, key)))
    _check(config.method in METHODS, "method", f"one of {', '.join(METHODS)}", config.method)
    _check(isinstance(config.dataset.name, str) and config.dataset.name != "", "dataset.name",
           "a dataset name", config.dataset.name)
    _check(isinstance(config.dataset.root, (str, Path)), "dataset.root", "a path", config.dataset.root)
    config.dataset.root = str(config.dataset.root)
    _check(isinstance(config.dataset.options, dict), "dataset.options", "a mapping", config.dataset.options)
    if config.model.name not in MODEL_NAMES:
        raise ValueError(f"unknown model {config.model.name!r} (config key model.name); valid models: "
                         f"{', '.join(MODEL_NAMES)}")
    _check(config.model.size in MODEL_SIZES, "model.size", f"one of {MODEL_SIZES}", config.model.size)
    _check(isinstance(config.model.overrides, dict), "model.overrides", "a mapping", config.model.overrides)
    _check(_is_int(config.ofg.steps) and config.ofg.steps >= 0, "ofg.steps", "an integer >= 0", config.ofg.steps)
    _check(_is_number(config.ofg.lr) and config.ofg.lr > 0, "ofg.lr", "a number > 0", config.ofg.lr)
    _check(_is_number(config.ofg.reg_weight) and config.ofg.reg_weight >= 0, "ofg.reg_weight", "a number >= 0",
           config.ofg.reg_weight)
    _check(isinstance(config.ofg.fused, bool), "ofg.fused", "true or false", config.ofg.fused)
    _check(_is_int(config.ofg.window) and config.ofg.window >= 1 and config.ofg.window % 2 == 1, "ofg.window",
           "a positive odd integer", config.ofg.window)
    for key in ("ncc_weight", "mse_weight"):
        value = getattr(config.loss, key)
        _check(_is_number(value) and value >= 0, f"loss.{key}", "a number >= 0", value)
    choices = {"loss.image": (config.loss.image, IMAGE_TERMS), "loss.regularizer": (config.loss.regularizer, REGULARIZERS),
               "val_label_mode": (config.val_label_mode, LABEL_MODES), "val_dice_rule": (config.val_dice_rule, DICE_RULES)}
    for key, (value, names) in choices.items():
        _check(value in names, key, f"one of {names}", value)
    config.ofg.image, config.ofg.regularizer = config.loss.image, config.loss.regularizer
    dw = config.loss.diffusion_weight
    _check(dw is None or (_is_number(dw) and dw >= 0), "loss.diffusion_weight", "null or a number >= 0", dw)
    _check(_is_int(config.epochs) and config.epochs >= 1, "epochs", "an integer >= 1", config.epochs)
    for key in ("iterations_per_epoch", "val_pairs"):
        value = getattr(config, key)
        _check(value is None or (_is_int(value) and value >= 1), key, "null or an integer >= 1", value)
    _check(_is_number(config.lr) and config.lr > 0, "lr", "a number > 0", config.lr)
    _check(_is_int(config.seed) and config.seed >= 0, "seed", "an integer >= 0", config.seed)
    _check(isinstance(config.device, str) and _valid_device(config.device), "device",
           "'auto', 'cpu', 'cuda' or 'cuda:N'", config.device)
    for key in ("bidirectional", "augment_flips"):
        value = getattr(config, key)
        _check(value is None or isinstance(value, bool), key, "null, true or false", value)
    for key in ("compile", "guidance_gap"):
        _check(isinstance(getattr(config, key), bool), key, "true or false", getattr(config, key))
    for key in ("amp", "channels_last"):
        value = getattr(config, key)
        _check(isinstance(value, bool) or value == "auto", key, "true, false or auto", value)
    _check(_is_int(config.num_workers) and config.num_workers >= 0, "num_workers", "an integer >= 0",
           config.num_workers)
    _check(config.teacher is None or isinstance(config.teacher, (str, Path)), "teacher",
           "null or a checkpoint path", config.teacher)
    if config.teacher is not None:
        config.teacher = str(config.teacher)
    if config.method in TEACHER_METHODS and not config.teacher:
        raise ValueError(f"method {config.method!r} needs a teacher checkpoint: set config key 'teacher' "
                         "to the path of a trained model's checkpoint (for example its checkpoints/best.pt)")
    return config


def _valid_device(device: str) -> bool:
    head, _, index = device.partition(":")
    return device in ("auto", "cpu", "cuda") or (head == "cuda" and index.isdigit())


def resolve(config: RunConfig, dataset: Any | None = None, bf16_native: bool | None = None) -> RunConfig:
    """A copy with every null default filled in.

    ``loss.diffusion_weight`` comes from the method; ``bidirectional`` and ``augment_flips`` from
    ``dataset`` (a :class:`ofg.data.RegistrationDataset`; when None they stay as they are);
    ``amp`` / ``channels_last`` "auto" become ``bf16_native`` (whether the run's device computes
    bfloat16 natively: :func:`ofg.runtime.bf16_is_fast`; when None they stay "auto").
    """
    out = copy.deepcopy(config)
    if bf16_native is not None:
        for key in ("amp", "channels_last"):
            if getattr(out, key) == "auto":
                setattr(out, key, bool(bf16_native))
    out.loss.diffusion_weight = config.diffusion_weight
    if dataset is not None:
        if out.bidirectional is None:
            out.bidirectional = bool(getattr(dataset, "bidirectional", False))
        if out.augment_flips is None:
            out.augment_flips = bool(getattr(dataset, "augment_flips", False))
    return validate(out)


def coerce(config: "RunConfig | Mapping[str, Any] | str | Path") -> RunConfig:
    """Accept a RunConfig, a mapping or a YAML path; return a RunConfig (a copy)."""
    if isinstance(config, RunConfig):
        return copy.deepcopy(validate(config))
    if isinstance(config, Mapping):
        return RunConfig.from_dict(config)
    if isinstance(config, (str, Path)):
        return RunConfig.load(config)
    raise ValueError(f"config: expected a RunConfig, a mapping or a YAML path, got {type(config).__name__}")
