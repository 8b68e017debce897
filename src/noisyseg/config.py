"""Run configuration: YAML validated into typed, frozen-by-convention pydantic objects.

A config is data, not code. ``load_config(path, overrides)`` reads YAML, applies ``key.sub=value``
overrides and validates. Any unknown key or wrong type becomes one :class:`NoisysegError` line naming the
file (or the ``--set`` option at fault), the key and what was expected.

- **Bounded input.** A config file is at most :data:`MAX_CONFIG_BYTES`, UTF-8, and expands to at most
  :data:`MAX_CONFIG_NODES` values, aliases counted at every place they are used (a small file of nested
  YAML aliases would otherwise expand to gigabytes). Values quoted in messages are cut
  (:func:`noisyseg.utils.text.shown`).
- **Strict types.** A boolean is never taken as a number nor a number as a boolean; an int field takes
  no float; float fields take ints and refuse NaN and infinities. YAML 1.2 floats (``1e-3``) are floats.
- **Overrides by field type.** ``--set key=value`` gives a string field (``data.image_root``,
  ``model.name``, ...) the text verbatim (``data.image_root=2024`` is the folder "2024", a ``#`` is part
  of the text; ``null`` clears an optional one); every other field parses the value as YAML
  (``train.lr=0.02``, ``train.lr_steps=[8,11]``, ``loss.params={q: 0.5}``), where a comment is refused.
- **Checked before work.** Sizes and counts that would crash a run later (an image side below 16 pixels,
  a seed outside what the random generators take, more threads than torch can set) are refused here.
"""

from __future__ import annotations

import copy
import re
from pathlib import Path
from typing import Annotated, Any, Callable, Iterable, Literal, get_args, get_origin

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    StrictFloat,
    StrictInt,
    StrictStr,
    ValidationError,
    field_validator,
    model_validator,
)

from noisyseg.errors import NoisysegError
from noisyseg.models.settings import DEFAULT_BACKBONE_WEIGHTS, DetectionSettings
from noisyseg.utils.read import read_bytes
from noisyseg.utils.text import clipped, shown

# The device names a run or a command accepts (``train.device``, ``--device``).
DEVICE_PATTERN = re.compile(r"auto|cpu|cuda(:[0-9]+)?")

#: The largest config file read (a full config with every default is about 1.5 KB).
MAX_CONFIG_BYTES = 1 << 20
#: The most values (mappings, lists, keys and scalars) a config may expand to, every use of a YAML alias
#: counted: a config with every default written out has about 150.
MAX_CONFIG_NODES = 10_000
#: Image sides (pixels): below 16 the backbone's stride-16 and stride-32 maps are empty and a run fails at
#: its first step or its evaluation; the cap keeps a typo from asking for a gigapixel image.
MIN_IMAGE_SIDE, MAX_IMAGE_SIDE = 16, 16384
#: Seeds: numpy's generators take 0..2**32-1, and the loader's seed (seed * 100003 + ...) must fit 64 bits.
MAX_SEED = 2**32 - 1
#: torch cannot set more than 2**31 - 1 threads; no machine has more than this many cores or workers.
MAX_PROCESSES = 1024

_DETECTION = DetectionSettings()
_Side = Field(ge=MIN_IMAGE_SIDE, le=MAX_IMAGE_SIDE)


class _Strict(BaseModel):
    # allow_inf_nan: no float setting means anything as NaN or an infinity
    model_config = ConfigDict(extra="forbid", validate_assignment=True, allow_inf_nan=False)


class _KeyedError(ValueError):
    """A check across fields: the message and the dotted keys it concerns (for naming the --set at fault)."""

    def __init__(self, message: str, keys: tuple[str, ...]) -> None:
        super().__init__(message)
        self.keys = keys


class DataConfig(_Strict):
    """Where the COCO-format data lives and how images are scaled."""

    train_json: StrictStr
    val_json: StrictStr
    image_root: StrictStr = Field(description="folder that image file_name entries are relative to")
    val_image_root: StrictStr | None = Field(default=None, description="defaults to image_root")
    train_min_size: tuple[StrictInt, StrictInt] = Field(
        default=(800, 1024), description="training short side drawn uniformly from this inclusive range"
    )
    test_min_size: StrictInt = Field(default=1024, ge=MIN_IMAGE_SIDE, le=MAX_IMAGE_SIDE)
    max_size: StrictInt = Field(default=2048, ge=MIN_IMAGE_SIDE, le=MAX_IMAGE_SIDE,
                                description="cap on the long side (the short side then shrinks)")
    hflip_prob: StrictFloat = Field(default=0.5, ge=0.0, le=1.0)
    num_workers: StrictInt = Field(default=2, ge=0, le=MAX_PROCESSES)

    @field_validator("train_min_size")
    @classmethod
    def _ordered(cls, v: tuple[int, int]) -> tuple[int, int]:
        if not MIN_IMAGE_SIDE <= v[0] <= v[1] <= MAX_IMAGE_SIDE:
            raise ValueError(f"expected [low, high] with {MIN_IMAGE_SIDE} <= low <= high <= {MAX_IMAGE_SIDE}, "
                             f"got {list(v)}")
        return v


class ModelConfig(_Strict):
    """Which Mask R-CNN preset to build and its RoI-head sampling (defaults: noisyseg.models.settings)."""

    name: StrictStr = "maskrcnn_tiny"
    backbone_weights: StrictStr = Field(default=DEFAULT_BACKBONE_WEIGHTS,
                                        description="imagenet | none | path to a state dict")
    rois_per_image: StrictInt = Field(default=_DETECTION.rois_per_image, ge=1,
                                      description="RoIs sampled per image for the RoI heads")
    rpn_batch_size_per_image: StrictInt = Field(default=_DETECTION.rpn_batch_size_per_image, ge=1,
                                                description="anchors sampled per image for the RPN")
    positive_fraction: StrictFloat = Field(default=_DETECTION.positive_fraction, gt=0.0, le=1.0)
    class_agnostic: StrictBool = Field(
        default=_DETECTION.class_agnostic,
        description="one mask and one box-regression channel for all classes (beyond the paper)",
    )
    detections_per_image: StrictInt = Field(default=_DETECTION.detections_per_image, ge=1)
    score_threshold: StrictFloat = Field(default=_DETECTION.score_threshold, ge=0.0, le=1.0)


class LossConfig(_Strict):
    """The RoI classification loss: plain CE for ``warmup_epochs`` epochs, then ``name``."""

    name: StrictStr = "lncis"
    params: dict[StrictStr, Any] = Field(default_factory=dict)
    warmup_epochs: StrictInt = Field(default=0, ge=0, description="epochs of plain cross-entropy before switching")


class TrainConfig(_Strict):
    """Optimisation schedule. ``lr`` is for ``batch_size`` images per step over all processes.

    Linear scaling rule: when the total batch changes, scale ``lr`` by the same factor
    (the paper: 0.01 for 8 images; 0.02 for 16).
    """

    epochs: StrictInt = Field(default=12, ge=1)
    batch_size: StrictInt = Field(default=8, ge=1, description="images per step, summed over all processes")
    lr: StrictFloat = Field(default=0.01, gt=0.0)
    momentum: StrictFloat = Field(default=0.9, ge=0.0, lt=1.0)
    weight_decay: StrictFloat = Field(default=1e-4, ge=0.0)
    warmup_iters: StrictInt = Field(default=500, ge=0)
    warmup_ratio: StrictFloat = Field(default=0.001, gt=0.0, le=1.0)
    lr_steps: list[StrictInt] = Field(default_factory=lambda: [11],
                                      description="epochs (>= 1) after which lr is multiplied by lr_gamma")
    lr_gamma: StrictFloat = Field(default=0.1, gt=0.0)
    grad_clip: StrictFloat | None = Field(default=None, gt=0.0)
    amp: Literal["off", "fp16", "bf16"] = "off"
    eval_interval: StrictInt = Field(default=0, ge=0, description="evaluate every N epochs (0: only at the end)")
    log_interval: StrictInt = Field(default=20, ge=1, description="iterations between metric lines")
    device: StrictStr = Field(default="auto", description="auto | cpu | cuda | cuda:N")
    threads: StrictInt | None = Field(default=None, ge=1, le=MAX_PROCESSES,
                                      description="CPU threads for torch (default: torch's own choice)")
    keep_epochs: list[StrictInt] = Field(
        default_factory=list, description="also save checkpoints/epoch_N.pt after each of these epochs (1-based)"
    )

    @field_validator("amp", mode="before")
    @classmethod
    def _yaml_off(cls, v: Any) -> Any:
        # YAML 1.1 reads a bare `off` in a file as False
        return "off" if v is False else v

    @field_validator("device")
    @classmethod
    def _device_name(cls, v: str) -> str:
        if not DEVICE_PATTERN.fullmatch(v):
            raise ValueError(f"expected auto, cpu, cuda or cuda:N, got {shown(v)}")
        return v

    @field_validator("lr_steps")
    @classmethod
    def _positive_steps(cls, v: list[int]) -> list[int]:
        if any(step < 1 for step in v):
            raise ValueError(f"expected epochs >= 1, got {shown(v)}")
        return v


class Config(_Strict):
    """A whole run. ``seed`` drives every random choice: same seed, same result on the same machine."""

    seed: StrictInt = Field(default=0, ge=0, le=MAX_SEED)
    out_dir: StrictStr | None = None
    data: DataConfig
    model: ModelConfig = Field(default_factory=ModelConfig)
    loss: LossConfig = Field(default_factory=LossConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)

    @model_validator(mode="after")
    def _check(self) -> "Config":
        warmup, epochs = self.loss.warmup_epochs, self.train.epochs
        stages = ("loss.warmup_epochs", "train.epochs")
        if warmup > epochs:
            raise _KeyedError(f"loss.warmup_epochs ({warmup}) is larger than train.epochs ({epochs})", stages)
        if warmup == epochs and self.loss.name != "ce":
            raise _KeyedError(
                f"loss.warmup_epochs ({warmup}) equals train.epochs ({epochs}), so loss.name={clipped(self.loss.name)} "
                f"would never be used; lower loss.warmup_epochs or set loss.name to ce", (*stages, "loss.name"))
        outside = [e for e in self.train.keep_epochs if not 1 <= e <= epochs]
        if outside:
            raise _KeyedError(f"train.keep_epochs: {shown(outside)} outside the epochs 1..{epochs} of the run",
                              ("train.keep_epochs", "train.epochs"))
        return self


# ------------------------------------------------------------------------------------------ bounded YAML


class _ConfigLoader(yaml.SafeLoader):
    """PyYAML's safe loader, reading YAML 1.2 floats: ``1e-3`` is a float, not the string YAML 1.1 makes it."""


_ConfigLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9][0-9_]*(?:\.[0-9_]*)?|\.[0-9_]+)[eE][-+]?[0-9]+$"),
    list("-+0123456789."),
)


class _TooLarge(Exception):
    pass


def _expanded_size(root: Any, children: Callable[[Any], Iterable[Any]], limit: int) -> int:
    """How many values ``root`` expands to (a shared child counted at every use); ``_TooLarge`` above
    ``limit`` or on a cycle. Linear in the distinct objects: each one's size is computed once."""
    sizes: dict[int, int] = {}
    on_path: set[int] = set()
    stack: list[tuple[Any, bool]] = [(root, False)]
    while stack:
        obj, finished = stack.pop()
        key = id(obj)
        if finished:
            on_path.discard(key)
            sizes[key] = 1 + sum(sizes[id(c)] for c in children(obj))
            if sizes[key] > limit:
                raise _TooLarge
        elif key not in sizes:
            if key in on_path:  # an alias inside its own anchor: an infinite value
                raise _TooLarge
            on_path.add(key)
            stack.append((obj, True))
            stack.extend((c, False) for c in children(obj) if id(c) not in sizes)
    return sizes[id(root)]


def _node_children(node: yaml.Node) -> list[yaml.Node]:
    if isinstance(node, yaml.MappingNode):
        return [n for pair in node.value for n in pair]
    return list(node.value) if isinstance(node, yaml.SequenceNode) else []


def _value_children(value: Any) -> list[Any]:
    if isinstance(value, dict):
        return [*value.keys(), *value.values()]
    return list(value) if isinstance(value, (list, tuple)) else []


def _too_large(where: str) -> NoisysegError:
    return NoisysegError(f"{where}: expands to more than {MAX_CONFIG_NODES} values (nested or recursive YAML "
                         f"aliases?); a config is at most that")


def _parse_yaml(text: str, where: str) -> Any:
    """``text`` as YAML (:class:`_ConfigLoader`), refused before it is built if it expands too far."""
    loader = _ConfigLoader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        _expanded_size(node, _node_children, MAX_CONFIG_NODES)
        return loader.construct_document(node)
    except _TooLarge:
        raise _too_large(where) from None
    except RecursionError:
        raise NoisysegError(f"{where}: nested too deeply to be a config") from None
    finally:
        loader.dispose()


def _yaml_problem(where: str, err: yaml.YAMLError) -> NoisysegError:
    mark = getattr(err, "problem_mark", None)
    at = f" at line {mark.line + 1}" if mark else ""
    problem = getattr(err, "problem", None)
    return NoisysegError(f"{where}: not valid YAML{at}" + (f" ({clipped(str(problem), 60)})" if problem else ""))


def parse_yaml_text(text: str, where: str) -> Any:
    """``text`` read as YAML as a config is: YAML 1.2 floats, at most :data:`MAX_CONFIG_NODES` values
    (aliases counted at every use), one-line NoisysegError naming ``where`` otherwise. For any small YAML
    a user types (a ``--set`` value, a ``--methods`` option value)."""
    try:
        return _parse_yaml(text, where)
    except yaml.YAMLError as e:
        raise _yaml_problem(where, e) from None


# ------------------------------------------------------------------------------------------- overrides


def _field_type(dotted: str) -> Any:
    """The annotation of the config field at ``dotted`` (``data.image_root`` -> str); ``Any`` inside
    ``loss.params`` and for a section; None for a key the schema does not have."""
    model: Any = Config
    for part in dotted.split("."):
        if not (isinstance(model, type) and issubclass(model, BaseModel)):
            return Any if get_origin(model) is dict else None
        field = model.model_fields.get(part)
        if field is None:
            return None
        model = field.annotation
    return Any if isinstance(model, type) and issubclass(model, BaseModel) else model


def _is_text(annotation: Any) -> tuple[bool, bool]:
    """(whether the field holds text, whether it may also be None)."""
    if annotation is str:
        return True, False
    # StrictStr | None: the members keep their Annotated[str, Strict()] wrapper
    args = tuple(get_args(a)[0] if get_origin(a) is Annotated else a for a in get_args(annotation))
    if get_origin(annotation) is Literal:
        return all(isinstance(a, str) for a in args), False
    if args and str in args and set(args) <= {str, type(None)}:
        return True, True
    return False, False


def parse_override(text: str) -> tuple[str, Any]:
    """Split ``key.sub=value`` and read the value by the type of the field it sets.

    A string field takes the text verbatim (``null``, ``~`` or nothing clears one that may be None);
    any other field reads it as YAML (``1e-3`` -> float, ``[1,2]`` -> list), bounded as a config file
    is, and a comment (``#`` after a space) is refused rather than silently cutting the value.
    """
    if not isinstance(text, str) or "=" not in text:
        raise NoisysegError(f"--set {shown(text)}: expected key=value, e.g. train.lr=0.02")
    key, raw = text.split("=", 1)
    key = key.strip()
    where = f"--set {clipped(text)}"
    if not key or "" in key.split("."):
        raise NoisysegError(f"{where}: expected a dotted key before '=', e.g. train.lr=0.02")
    is_text, nullable = _is_text(_field_type(key))
    if is_text:
        return key, None if nullable and raw.strip() in ("", "null", "~") else raw
    if not raw.strip():
        raise NoisysegError(f"{where}: {key}: expected a value after '='")
    try:
        tokens = list(yaml.scan(raw, Loader=_ConfigLoader))
        content_end = max((t.end_mark.index for t in tokens
                           if not isinstance(t, (yaml.StreamStartToken, yaml.StreamEndToken))), default=0)
    except yaml.YAMLError as e:
        raise _yaml_problem(f"{where}: {key}", e) from None
    if raw[content_end:].strip():
        raise NoisysegError(f"{where}: {key}: a comment ('#') in a value; quote the value if it holds a '#'")
    return key, parse_yaml_text(raw, f"{where}: {key}")


def _set_dotted(tree: dict, dotted: str, value: Any, where: str) -> None:
    keys = dotted.split(".")
    node = tree
    for depth, k in enumerate(keys[:-1]):
        if node.get(k) is None:
            node[k] = {}
        if not isinstance(node[k], dict):
            raise NoisysegError(f"{where}: {'.'.join(keys[:depth + 1])} is not a section")
        node = node[k]
    node[keys[-1]] = value


class _Sources:
    """Which option set which keys, to name the one at fault: the file, or the --set options."""

    def __init__(self, source: str) -> None:
        self.source = source
        self.overrides: list[tuple[str, str]] = []  # (dotted key, the option's text)

    def _touching(self, key: str) -> list[str]:
        return [text for k, text in self.overrides if k == key or key.startswith(k + ".") or k.startswith(key + ".")]

    def where(self, keys: Iterable[str], also: Iterable[str] = ()) -> str:
        """The file or --set options to blame for a problem with ``keys`` (and, second, ``also``)."""
        keys = list(keys)
        touched = [self._touching(k) for k in keys]
        named = [f"--set {clipped(t)}" for t in dict.fromkeys(t for ts in touched for t in ts)]
        if named and all(touched):
            return ", ".join(named)
        named += [f"--set {clipped(t)}" for k in also for t in self._touching(k)]
        return f"{self.source} with {', '.join(dict.fromkeys(named))}" if named else self.source


def _section_keys(loc: tuple) -> list[str]:
    model: Any = Config
    for part in loc:
        field = model.model_fields.get(part) if isinstance(model, type) and issubclass(model, BaseModel) else None
        if field is None:
            break
        model = field.annotation
    return list(model.model_fields) if isinstance(model, type) and issubclass(model, BaseModel) else []


def _format_validation_error(sources: _Sources, err: ValidationError) -> str:
    first = err.errors()[0]
    loc = tuple(first["loc"])
    dotted = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in loc).lstrip(".")
    keyed = [p for p in loc if isinstance(p, str)]
    key = ".".join(keyed[: next((i for i, p in enumerate(loc) if not isinstance(p, str)), len(loc))])
    cause = first.get("ctx", {}).get("error")
    msg = str(cause) if isinstance(cause, ValueError) else first["msg"]
    got = first.get("input")
    shown_got = f" (got {shown(got)})"
    if first["type"] == "extra_forbidden":
        valid = _section_keys(loc[:-1])
        msg, shown_got = "unknown key" + (f"; expected one of {clipped(', '.join(valid), 240)}" if valid else ""), ""
    elif first["type"] == "missing":
        msg, shown_got = "required key missing", ""
    elif isinstance(cause, ValueError) or isinstance(got, dict):
        shown_got = ""  # the validators' messages quote the value themselves
    elif first["type"] == "string_type" and isinstance(got, (int, float, bool)):
        shown_got += "; YAML reads this unquoted value as a number or boolean: quote it"  # image_root: 2024
    more = f" (+{len(err.errors()) - 1} more)" if len(err.errors()) > 1 else ""
    if isinstance(cause, _KeyedError):
        return f"{sources.where(cause.keys)}: {msg}{more}"
    return f"{sources.where([key])}: {dotted or '(top level)'}: {msg}{shown_got}{more}"


def config_from_dict(tree: dict, source: str = "config", overrides: list[str] | None = None) -> Config:
    """Validate a config tree (as read from YAML) after applying ``key=value`` overrides.

    ``source`` names the tree in messages (a file path); a problem with a key an override set names
    that ``--set`` option instead. The tree is bounded like a file (:data:`MAX_CONFIG_NODES`).
    """
    try:
        _expanded_size(tree, _value_children, MAX_CONFIG_NODES)
    except _TooLarge:
        raise _too_large(source) from None
    tree = copy.deepcopy(tree)
    sources = _Sources(source)
    for text in overrides or []:
        key, value = parse_override(text)
        _set_dotted(tree, key, value, f"--set {clipped(text)}")
        sources.overrides.append((key, text))
    try:
        cfg = Config.model_validate(tree)
    except ValidationError as e:
        raise NoisysegError(_format_validation_error(sources, e)) from None
    _check_loss(cfg.loss, sources)
    return cfg


def _check_loss(loss: LossConfig, sources: _Sources) -> None:
    """Build the configured loss once so that a bad name or parameter names the file and the key."""
    from noisyseg.losses import available_losses, build_loss  # torch: only once a config is used

    names = available_losses()
    if loss.name not in names:
        raise NoisysegError(f"{sources.where(['loss.name'])}: loss.name: unknown loss {shown(loss.name)}; "
                            f"expected one of {', '.join(names)}")
    try:
        build_loss(loss.name, **loss.params)
    except NoisysegError as e:
        # the parameters are at fault, unless only the name was changed under them
        raise NoisysegError(f"{sources.where(['loss.params'], also=['loss.name'])}: loss.params: {e}") from None


def load_config(path: str | Path, overrides: list[str] | None = None) -> Config:
    """Read a YAML config file and validate it (see :func:`config_from_dict`).

    The file must be UTF-8 and at most :data:`MAX_CONFIG_BYTES`; anything else is a one-line error.
    """
    path = Path(path)
    data = read_bytes(path, "config file", MAX_CONFIG_BYTES)
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise NoisysegError(f"{path}: not UTF-8 text (byte {e.start} is {data[e.start]:#04x}); "
                            f"save the config as UTF-8") from None
    try:
        tree = _parse_yaml(text, str(path))
    except yaml.YAMLError as e:
        raise _yaml_problem(str(path), e) from None
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
