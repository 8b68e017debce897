"""Losses by name, so a config can say ``loss: {name: lncis, params: {robust: sce, beta: 0.5}}``.

:func:`build_loss` checks the parameters against the named loss (unknown ones, wrong types and
out-of-range values raise a one-line :class:`~noisyseg.errors.NoisysegError`), fills in the defaults and
returns a :class:`RoIClassificationLoss`. The Mask R-CNN RoI head calls that object as
``loss, stats = loss_fn(class_logits, labels)``.
"""

from __future__ import annotations

import inspect
from typing import Any, Callable

from torch import Tensor

from noisyseg.errors import NoisysegError
from noisyseg.losses import functional as F

# name -> the functional loss it wraps. The order is the order of available_losses().
_REGISTRY: dict[str, Callable[..., Any]] = {
    "ce": F.cross_entropy,
    "rce": F.reverse_cross_entropy,
    "sce": F.symmetric_cross_entropy,
    "gce": F.generalized_cross_entropy,
    "apl": F.active_passive_loss,
    "lncis": F.task_specific_loss,
}

# arguments that the RoI head or RoIClassificationLoss supplies, never a config
_NOT_CONFIGURABLE = ("logits", "labels", "reduction", "return_counts")


def _configurable_defaults(fn: Callable[..., Any]) -> dict[str, Any]:
    """The named keyword parameters of ``fn`` a config may set, with their defaults (``**kwargs`` left out)."""
    return {
        k: p.default
        for k, p in inspect.signature(fn).parameters.items()
        if k not in _NOT_CONFIGURABLE and p.kind is not inspect.Parameter.VAR_KEYWORD
    }


_DEFAULTS: dict[str, dict[str, Any]] = {name: _configurable_defaults(fn) for name, fn in _REGISTRY.items()}


def available_losses() -> list[str]:
    """Names accepted by :func:`build_loss`: ``["ce", "rce", "sce", "gce", "apl", "lncis"]``."""
    return list(_REGISTRY)


class RoIClassificationLoss:
    """A named loss with fixed parameters, called once per training step by the RoI box head.

    Attributes:
        name: the registry name ("ce", "rce", "sce", "gce", "apl" or "lncis").
        params: every parameter of the loss with its resolved value (given or default); for "lncis"
            this includes the chosen robust loss's own parameters (e.g. ``alpha``/``beta`` for sce).

    Calling it with ``logits`` (N, K+1) and ``labels`` (N,) int64 returns ``(loss, stats)``: ``loss`` is
    the 0-dim mean over the N RoIs (float32 for half-precision logits) and ``stats`` a dict of 0-dim
    tensors to log, the NEG/PSN/OS/PON partition sizes ("neg", "psn", "os", "pon") for "lncis" and
    empty for the other losses.
    """

    def __init__(self, name: str, params: dict[str, Any]) -> None:
        self.name = name
        self.params = dict(params)
        self._fn = _REGISTRY[name]

    def __call__(self, logits: Tensor, labels: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        if self.name == "lncis":
            return self._fn(logits, labels, reduction="mean", return_counts=True, **self.params)
        return self._fn(logits, labels, reduction="mean", **self.params), {}

    def __repr__(self) -> str:
        inner = ", ".join(f"{k}={v!r}" for k, v in self.params.items())
        return f"RoIClassificationLoss({self.name}: {inner})"


def build_loss(name: str, **params: Any) -> RoIClassificationLoss:
    """The loss registered as ``name`` with ``params`` over its defaults.

    Args:
        name: one of :func:`available_losses`.
        **params: the loss's keyword parameters. ce: none; rce: log_zero; sce/apl: alpha, beta,
            log_zero; gce: q; lncis: robust, ce_weight, robust_weight, pon_threshold, log_zero and the
            chosen robust loss's own parameters (alpha/beta for sce and apl, q for gce).

    Returns:
        A :class:`RoIClassificationLoss` whose ``params`` hold every resolved value.

    Raises:
        NoisysegError: unknown name or parameter (the message lists the valid ones), a wrong type or
            an out-of-range value (q outside (0, 1], a negative weight, log_zero >= 0, ...).
    """
    if not isinstance(name, str) or name not in _REGISTRY:
        raise NoisysegError(f"unknown loss {name!r}; available: {', '.join(_REGISTRY)}")
    where = f"loss {name}"
    defaults = _DEFAULTS[name]
    if name == "lncis":
        own = {k: v for k, v in params.items() if k in defaults}
        extra = {k: v for k, v in params.items() if k not in defaults}
        robust = own.get("robust", defaults["robust"])
        F.check_loss_params(where, {"robust": robust})
        robust_valid = F.ROBUST_PARAM_DEFAULTS[robust]
        unknown = sorted(k for k in extra if k not in robust_valid)
        if unknown:
            valid = sorted(defaults) + sorted(robust_valid)
            raise NoisysegError(
                f"{where}: unknown parameter(s) {', '.join(unknown)} with robust={robust!r}; "
                f"valid: {', '.join(valid)}"
            )
        resolved = {**defaults, **own}
        F.check_loss_params(where, resolved)
        resolved.update(F.resolve_robust_params(where, robust, extra))
    else:
        unknown = sorted(set(params) - set(defaults))
        if unknown:
            valid = ", ".join(sorted(defaults)) if defaults else "none"
            raise NoisysegError(f"{where}: unknown parameter(s) {', '.join(unknown)}; valid: {valid}")
        resolved = {**defaults, **params}
        F.check_loss_params(where, resolved)
    return RoIClassificationLoss(name, resolved)
