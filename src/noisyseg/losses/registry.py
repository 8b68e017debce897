"""Losses by name, so configs can say ``loss: {name: lncis, params: {robust: sce}}``.

``build_loss(name, **params)`` validates the parameters against the loss's signature and returns a
:class:`RoIClassificationLoss`, the object the Mask R-CNN RoI head calls as
``loss, stats = loss_fn(class_logits, labels)``.
"""

from __future__ import annotations

import inspect
import math
from dataclasses import dataclass, field
from typing import Any, Callable

from torch import Tensor

from noisyseg.errors import NoisysegError
from noisyseg.losses import functional as F

_LOSSES: dict[str, Callable[..., Any]] = {
    "ce": F.cross_entropy,
    "rce": F.reverse_cross_entropy,
    "sce": F.symmetric_cross_entropy,
    "gce": F.generalized_cross_entropy,
    "apl": F.active_passive_loss,
    "lncis": F.task_specific_loss,
}

# keyword parameters of the task-specific loss forwarded to its robust term
_ROBUST_KWARGS = ("alpha", "beta", "q")
_NOT_CONFIGURABLE = ("logits", "labels", "reduction", "return_counts", "robust_kwargs")


def available_losses() -> list[str]:
    return list(_LOSSES)


def _defaults(name: str) -> dict[str, Any]:
    sig = inspect.signature(_LOSSES[name])
    out = {k: p.default for k, p in sig.parameters.items()
           if k not in _NOT_CONFIGURABLE and p.kind is not inspect.Parameter.VAR_KEYWORD}
    if name == "lncis":
        out.update({k: None for k in _ROBUST_KWARGS})  # None: the robust term's own default
    return out


def _validate(name: str, params: dict[str, Any]) -> None:
    def number(key: str) -> float:
        v = params[key]
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
            raise NoisysegError(f"loss {name}: {key} must be a finite number, got {v!r}")
        return float(v)

    for key in ("alpha", "beta", "ce_weight", "robust_weight"):
        if params.get(key) is not None and number(key) < 0:
            raise NoisysegError(f"loss {name}: {key} must be >= 0, got {params[key]}")
    if params.get("q") is not None and not 0 < number("q") <= 1:
        raise NoisysegError(f"loss {name}: q must be in (0, 1], got {params['q']}")
    if params.get("log_zero") is not None and number("log_zero") >= 0:
        raise NoisysegError(f"loss {name}: log_zero must be negative (it stands in for log 0), got {params['log_zero']}")
    if params.get("pon_threshold") is not None and number("pon_threshold") <= 0:
        raise NoisysegError(f"loss {name}: pon_threshold must be > 0 or null, got {params['pon_threshold']}")
    if "robust" in params and params["robust"] not in F.ROBUST_TERMS:
        raise NoisysegError(f"loss {name}: robust must be one of {', '.join(F.ROBUST_TERMS)}, got {params['robust']!r}")


@dataclass
class RoIClassificationLoss:
    """A named, parameterised RoI classification loss.

    ``loss_fn(logits (N, K+1), labels (N,))`` -> (mean loss over the N RoIs, statistics): the
    statistics are the partition counts ``{"neg", "psn", "os", "pon"}`` for ``lncis`` and empty
    otherwise.
    """

    name: str
    params: dict[str, Any] = field(default_factory=dict)

    def __call__(self, logits: Tensor, labels: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        fn = _LOSSES[self.name]
        kwargs = {k: v for k, v in self.params.items() if v is not None or k == "pon_threshold"}
        if self.name == "lncis":
            return fn(logits, labels, return_counts=True, **kwargs)
        return fn(logits, labels, **kwargs), {}


def build_loss(name: str, **params: Any) -> RoIClassificationLoss:
    """The loss ``name`` (one of :func:`available_losses`) with ``params`` over its defaults.

    Unknown names or parameters, and out-of-range values, raise a one-line :class:`NoisysegError`.
    """
    if name not in _LOSSES:
        raise NoisysegError(f"unknown loss {name!r}; available: {', '.join(available_losses())}")
    defaults = _defaults(name)
    unknown = sorted(set(params) - set(defaults))
    if unknown:
        raise NoisysegError(
            f"loss {name}: unknown parameter(s) {', '.join(unknown)}; valid: {', '.join(sorted(defaults))}"
        )
    resolved = {**defaults, **params}
    _validate(name, resolved)
    return RoIClassificationLoss(name, resolved)
