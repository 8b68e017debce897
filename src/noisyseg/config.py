"""Run configuration: YAML validated into typed, frozen-by-convention pydantic objects.

A config is data, not code. ``load_config(path, overrides)`` reads YAML, applies ``key.sub=value``
overrides (values parsed as YAML, so ``train.lr=0.02`` is a float and ``train.lr_steps=[8,11]`` a list),
and validates. Any unknown key or wrong type becomes one :class:`NoisysegError` line naming the key.
"""

from __future__ import annotations

import copy
import math
import re
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from noisyseg.errors import NoisysegError

# The device names a run or a command accepts (``train.device``, ``--device``).
DEVICE_PATTERN = re.compile(r"auto|cpu|cuda(:[0-9]+)?")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class DataConfig(_Strict):
    """Where the COCO-format data lives and how images are scaled."""

    train_json: str
    val_json: str
    image_root: str = Field(description="folder that image file_name entries are relative to")
    val_image_root: str | None = Field(default=None, description="defaults to image_root")
    train_min_size: tuple[int, int] = Field(
        default=(800, 1024), description="training short side drawn uniformly from this inclusive range"
    )
    test_min_size: int = 1024
    max_size: int = 2048
    hflip_prob: float = Field(default=0.5, ge=0.0, le=1.0)
    num_workers: int = Field(default=2, ge=0)

    @field_validator("train_min_size")
    @classmethod
    def _ordered(cls, v: tuple[int, int]) -> tuple[int, int]:
        if v[0] > v[1] or v[0] < 16:
            raise ValueError(f"expected [low, high] with 16 <= low <= high, got {list(v)}")
        return v


class ModelConfig(_Strict):
    """Which Mask R-CNN preset to build and its RoI-head sampling."""

    name: str = "maskrcnn_tiny"
    backbone_weights: str = Field(default="none", description="imagenet | none | path to a state dict")
    rois_per_image: int = Field(default=512, ge=1, description="RoIs sampled per image for the RoI heads")
    rpn_batch_size_per_image: int = Field(default=256, ge=1, description="anchors sampled per image for the RPN")
    positive_fraction: float = Field(default=0.25, gt=0.0, le=1.0)
    class_agnostic: bool = Field(
        default=False, description="one mask and one box-regression channel for all classes (beyond the paper)"
    )
    detections_per_image: int = Field(default=100, ge=1)
    score_threshold: float = Field(default=0.05, ge=0.0, le=1.0)


class LossConfig(_Strict):
    """The RoI classification loss: plain CE for ``warmup_epochs`` epochs, then ``name``."""

    name: str = "lncis"
    params: dict[str, Any] = Field(default_factory=dict)
    warmup_epochs: int = Field(default=0, ge=0, description="epochs of plain cross-entropy before switching")


class TrainConfig(_Strict):
    """Optimisation schedule. ``lr`` is for ``batch_size`` images per step over all processes.

    Linear scaling rule: when the total batch changes, scale ``lr`` by the same factor
    (the paper: 0.01 for 8 images; 0.02 for 16).
    """

    epochs: int = Field(default=12, ge=1)
    batch_size: int = Field(default=8, ge=1, description="images per step, summed over all processes")
    lr: float = Field(default=0.01, gt=0.0)
    momentum: float = Field(default=0.9, ge=0.0, lt=1.0)
    weight_decay: float = Field(default=1e-4, ge=0.0)
    warmup_iters: int = Field(default=500, ge=0)
    warmup_ratio: float = Field(default=0.001, gt=0.0, le=1.0)
    lr_steps: list[int] = Field(default_factory=lambda: [11], description="epochs after which lr is multiplied by lr_gamma")
    lr_gamma: float = Field(default=0.1, gt=0.0)
    grad_clip: float | None = Field(default=None, gt=0.0)
    amp: Literal["off", "fp16", "bf16"] = "off"
    eval_interval: int = Field(default=0, ge=0, description="evaluate every N epochs (0: only at the end)")
    log_interval: int = Field(default=20, ge=1, description="iterations between metric lines")
    device: str = Field(default="auto", description="auto | cpu | cuda | cuda:N")
    threads: int | None = Field(default=None, ge=1, description="CPU threads for torch (default: torch's own choice)")
    keep_epochs: list[int] = Field(
        default_factory=list, description="also save checkpoints/epoch_N.pt after each of these epochs (1-based)"
    )

    @field_validator("amp", mode="before")
    @classmethod
    def _yaml_off(cls, v: Any) -> Any:
        # YAML 1.1 reads a bare `off` as False
        return "off" if v is False else v

    @field_validator("device")
    @classmethod
    def _device_name(cls, v: str) -> str:
        if not DEVICE_PATTERN.fullmatch(v):
            raise ValueError(f"expected auto, cpu, cuda or cuda:N, got {v!r}")
        return v


class Config(_Strict):
    """A whole run. ``seed`` drives every random choice: same seed, same result on the same machine."""

    seed: int = 0
    out_dir: str | None = None
    data: DataConfig
    model: ModelConfig = Field(default_factory=ModelConfig)
    loss: LossConfig = Field(default_factory=LossConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)

    @model_validator(mode="after")
    def _check(self) -> "Config":
        warmup, epochs = self.loss.warmup_epochs, self.train.epochs
        if warmup > epochs:
            raise ValueError(f"loss.warmup_epochs ({warmup}) is larger than train.epochs ({epochs})")
        if warmup == epochs and self.loss.name != "ce":
            raise ValueError(
                f"loss.warmup_epochs ({warmup}) equals train.epochs ({epochs}), so loss.name={self.loss.name} "
                f"would never be used; lower loss.warmup_epochs or set loss.name to ce"
            )
        outside = [e for e in self.train.keep_epochs if not 1 <= e <= epochs]
        if outside:
            raise ValueError(f"train.keep_epochs: {outside} outside the epochs 1..{epochs} of the run")
        return self


def _set_dotted(tree: dict, dotted: str, value: Any) -> None:
    keys = dotted.split(".")
    node = tree
    for k in keys[:-1]:
        if not isinstance(node.get(k), dict):
            node[k] = {} if k not in node or node[k] is None else node[k]
            if not isinstance(node[k], dict):
                raise NoisysegError(f"--set {dotted}: '{k}' is not a section")
        node = node[k]
    node[keys[-1]] = value


def parse_override(text: str) -> tuple[str, Any]:
    """Split ``key.sub=value`` and parse the value as YAML (``1e-3`` -> float, ``[1,2]`` -> list)."""
    if "=" not in text:
        raise NoisysegError(f"--set {text!r}: expected key=value, e.g. train.lr=0.02")
    key, raw = text.split("=", 1)
    key = key.strip()
    if not key:
        raise NoisysegError(f"--set {text!r}: empty key")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError:
        value = raw
    return key, value


def _format_validation_error(source: str, err: ValidationError) -> str:
    first = err.errors()[0]
    loc = ".".join(str(p) for p in first["loc"]) or "(top level)"
    msg = first["msg"]
    if first["type"] == "extra_forbidden":
        msg = "unknown key"
    elif first["type"] == "missing":
        msg = "required key missing"
    got = first.get("input")
    more = f" (+{len(err.errors()) - 1} more)" if len(err.errors()) > 1 else ""
    shown = "" if first["type"] in ("missing", "extra_forbidden") or isinstance(got, dict) else f" (got {got!r})"
    return f"{source}: {loc}: {msg}{shown}{more}"


def config_from_dict(tree: dict, source: str = "config", overrides: list[str] | None = None) -> Config:
    """Validate a config tree (as read from YAML) after applying ``key=value`` overrides."""
    tree = copy.deepcopy(tree)
    for text in overrides or []:
        key, value = parse_override(text)
        _set_dotted(tree, key, value)
    try:
        cfg = Config.model_validate(tree)
    except ValidationError as e:
        raise NoisysegError(_format_validation_error(source, e)) from None
    for name in ("lr", "lr_gamma", "momentum"):
        if not math.isfinite(getattr(cfg.train, name)):
            raise NoisysegError(f"{source}: train.{name}: must be a finite number")
    _check_loss(cfg.loss, source)
    return cfg


def _check_loss(loss: LossConfig, source: str) -> None:
    """Build the configured loss once so that a bad name or parameter names the file and the key."""
    from noisyseg.losses import available_losses, build_loss  # torch: only once a config is used

    names = available_losses()
    if loss.name not in names:
        raise NoisysegError(f"{source}: loss.name: unknown loss {loss.name!r}; expected one of {', '.join(names)}")
    try:
        build_loss(loss.name, **loss.params)
    except NoisysegError as e:
        raise NoisysegError(f"{source}: loss.params: {e}") from None


def load_config(path: str | Path, overrides: list[str] | None = None) -> Config:
    """Read a YAML config file and validate it (see :func:`config_from_dict`)."""
    path = Path(path)
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise NoisysegError(f"{path}: config file not found") from None
    except IsADirectoryError:
        raise NoisysegError(f"{path}: expected a YAML config file, found a folder") from None
    try:
        tree = yaml.safe_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark else ""
        raise NoisysegError(f"{path}: not valid YAML{where}") from None
    if not isinstance(tree, dict):
        raise NoisysegError(f"{path}: expected a mapping of config sections at the top level")
    return config_from_dict(tree, source=str(path), overrides=overrides)


# Settings that cannot change what a run computes, so a resumed run may use other values than its start.
# (data.num_workers: augmentation is drawn per sample, not per worker, see noisyseg.engine.trainer.)
RESUME_FREE_KEYS = ("out_dir", "train.device", "train.threads", "data.num_workers")
_MISSING = object()


def _flatten(tree: Any, prefix: str = "") -> dict[str, Any]:
    """``{"a": {"b": 1}}`` -> ``{"a.b": 1}``; an empty mapping has no keys."""
    if not isinstance(tree, dict):
        return {prefix: tree}
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        flat.update(_flatten(value, f"{prefix}.{key}" if prefix else str(key)))
    return flat


def differing_keys(old: dict, new: dict, ignore: tuple[str, ...] = RESUME_FREE_KEYS) -> list[str]:
    """Dotted keys (``train.lr``, ``loss.params.beta``) whose values differ between two config trees.

    ``old`` and ``new`` are ``Config.model_dump(mode="json")`` trees; a key present in only one counts as
    differing. Keys in ``ignore`` are left out. Returns the keys sorted.
    """
    a, b = _flatten(old), _flatten(new)
    return sorted(k for k in set(a) | set(b) if k not in ignore and a.get(k, _MISSING) != b.get(k, _MISSING))


def config_to_yaml(cfg: Config) -> str:
    """The validated config, every default filled in, as YAML (saved next to each run)."""
    return yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False)
