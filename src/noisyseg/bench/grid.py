"""What a bench is made of: methods, noise settings, seeds, and the training config of each cell."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import yaml

from noisyseg.errors import NoisysegError


@dataclass(frozen=True)
class Method:
    """A bench method: the robust-stage loss, its parameters, whether it keeps the config's CE warm-up
    (``loss.warmup_epochs``) and model overrides."""

    loss: str
    params: dict[str, Any]
    warm_up: bool
    model: dict[str, Any]


METHODS: dict[str, Method] = {
    "ce": Method("ce", {}, False, {}),
    "sce": Method("sce", {}, False, {}),
    "gce": Method("gce", {}, False, {}),
    "apl": Method("apl", {}, False, {}),
    "lncis": Method("lncis", {}, True, {}),
    "lncis-nowarmup": Method("lncis", {}, False, {}),
    "lncis-pon": Method("lncis", {"pon_threshold": 6.0}, True, {}),
    "lncis-sce": Method("lncis", {"robust": "sce"}, True, {}),
    "lncis-gce": Method("lncis", {"robust": "gce"}, True, {}),
    # Xia et al. 2024 (GOOD): the CE stage, then CE / gradient ascent / clipped SCE by RoI set
    "good": Method("good", {}, True, {}),
    "good-nowarmup": Method("good", {}, False, {}),
    # beyond the paper: one mask/box channel for all classes, so a wrong label cannot pick the wrong one
    "ce-agnostic": Method("ce", {}, False, {"class_agnostic": True}),
    "lncis-agnostic": Method("lncis", {}, True, {"class_agnostic": True}),
}
DEFAULT_METHODS = "ce,sce,gce,lncis"
DEFAULT_NOISE = "clean,sym0.2,sym0.4,sym0.6,sym0.8,asym0.2,asym0.4"
DEFAULT_SEEDS = "0,1,2"


@dataclass(frozen=True)
class NoiseSetting:
    """One noise setting of the train split: ``name`` as written (``clean``, ``sym0.4``, ``asym0.2``)."""

    name: str
    kind: str  # "clean" | "symmetric" | "asymmetric"
    rate: float


def parse_noise_setting(token: str) -> NoiseSetting:
    """``clean``, ``symR`` or ``asymR`` (R in [0, 1], e.g. ``sym0.4``) -> a :class:`NoiseSetting`."""
    if token == "clean":
        return NoiseSetting("clean", "clean", 0.0)
    m = re.fullmatch(r"(sym|asym)(\d*\.?\d+)", token)
    if not m:
        raise NoisysegError(f"--noise: cannot read {token!r}; expected clean, symR or asymR (e.g. sym0.4)")
    rate = float(m.group(2))
    if not 0.0 <= rate <= 1.0:
        raise NoisysegError(f"--noise: rate in {token!r} must be in [0, 1]")
    return NoiseSetting(token, "symmetric" if m.group(1) == "sym" else "asymmetric", rate)


def parse_noise(spec: str) -> list[NoiseSetting]:
    """``clean,sym0.4,asym0.2`` -> settings (rates in [0, 1]); a setting given twice is an error."""
    out = [parse_noise_setting(t.strip()) for t in spec.split(",") if t.strip()]
    if not out:
        raise NoisysegError("--noise: no setting given")
    check_noise(out)
    return out


def check_noise(noise: Sequence[NoiseSetting]) -> None:
    seen: dict[tuple[str, float], str] = {}
    for n in noise:
        key = (n.kind, n.rate)
        if key in seen:
            same = f" (the same setting as {seen[key]!r})" if seen[key] != n.name else ""
            raise NoisysegError(f"--noise: {n.name!r} is given twice{same}")
        seen[key] = n.name


def split_method(method: str) -> tuple[str, dict[str, Any]]:
    """``lncis:log_zero=-4:robust=sce`` -> ("lncis", {"log_zero": -4, "robust": "sce"}).

    Parameters after the name are loss parameters added to the method's own (values read as YAML), so one
    bench can compare settings of a loss, e.g. its ``log_zero`` constant.
    """
    if not isinstance(method, str):
        raise NoisysegError(f"--methods: expected a method name, got {method!r}")
    name, *pairs = method.split(":")
    if name not in METHODS:
        raise NoisysegError(f"--methods: unknown method {name!r}; available: {', '.join(METHODS)}")
    params: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise NoisysegError(f"--methods: cannot read {pair!r} in {method!r}; expected METHOD:KEY=VALUE")
        params[key.strip()] = yaml.safe_load(value)
    return name, params


def method_loss(method: str) -> tuple[str, dict[str, Any]]:
    """The robust-stage loss name and its parameters (the method's own, then those after the name)."""
    name, extra = split_method(method)
    return METHODS[name].loss, {**METHODS[name].params, **extra}


def check_methods(methods: Sequence[str]) -> None:
    """Every method known, its loss parameters valid (the loss is built once), none given twice."""
    from noisyseg.losses import build_loss

    if not methods:
        raise NoisysegError("--methods: no method given")
    seen: list[tuple[str, dict[str, Any], str]] = []  # (method name, resolved loss parameters, spec)
    for m in methods:
        name, _ = split_method(m)
        loss, params = method_loss(m)
        try:
            resolved = build_loss(loss, **params).params
        except NoisysegError as e:
            raise NoisysegError(f"--methods: {m!r}: {e}") from None
        for other_name, other_params, spec in seen:
            if other_name == name and other_params == resolved:
                same = f" (the same method as {spec!r})" if spec != m else ""
                raise NoisysegError(f"--methods: {m!r} is given twice{same}")
        seen.append((name, resolved, m))


def parse_methods(spec: str) -> list[str]:
    """Comma-separated methods, each a name from METHODS with optional ``:KEY=VALUE`` loss parameters."""
    methods = [m.strip() for m in spec.split(",") if m.strip()]
    check_methods(methods)
    return methods


def method_dir(method: str) -> str:
    """A folder name for a method spec (``lncis:log_zero=-4`` -> ``lncis_log_zero=-4``)."""
    return re.sub(r"[^A-Za-z0-9._=+-]", "_", method)


def check_seeds(seeds: Sequence[int]) -> None:
    if not seeds:
        raise NoisysegError("--seeds: no seed given")
    for s in seeds:
        if isinstance(s, bool) or not isinstance(s, int) or s < 0:
            raise NoisysegError(f"--seeds: expected integers >= 0, got {s!r}")
    for s in seeds:
        if list(seeds).count(s) > 1:
            raise NoisysegError(f"--seeds: {s} is given twice")


def parse_seeds(spec: str) -> list[int]:
    """``0,1,2`` -> [0, 1, 2]; a seed given twice is an error."""
    try:
        seeds = [int(s) for s in spec.split(",") if s.strip()]
    except ValueError:
        raise NoisysegError(f"--seeds: expected comma-separated integers, got {spec!r}") from None
    check_seeds(seeds)
    return seeds


def cell_config(base: dict, method: str, train_json: str | Path, seed: int) -> dict:
    """The base config tree with this cell's loss, seed and (noisy) train file; ``base`` is not changed.

    The robust-stage loss starts after the base's ``loss.warmup_epochs`` for methods that keep the CE
    warm-up, from the first epoch for the others.
    """
    tree = json.loads(json.dumps(base))
    name, _ = split_method(method)
    loss, params = method_loss(method)
    tree["seed"] = seed
    tree.setdefault("model", {}).update(METHODS[name].model)
    tree["data"]["train_json"] = str(train_json)
    tree.setdefault("loss", {})
    warmup = tree["loss"].get("warmup_epochs", 0) if METHODS[name].warm_up else 0
    tree["loss"] = {"name": loss, "params": params, "warmup_epochs": warmup}
    tree.pop("out_dir", None)
    return tree
