"""Losses by name, so a config can say ``loss: {name: lncis, params: {robust: sce, beta: 0.5}}``.

Every registered loss is a function of :mod:`noisyseg.losses.functional` whose keyword arguments (with
their defaults) are its parameters, and that function's unchecked kernel. :func:`build_loss` resolves and
validates the parameters once (unknown ones, wrong types and out-of-range values raise a one-line
:class:`~noisyseg.errors.NoisysegError`) and returns a :class:`RoIClassificationLoss`, which the Mask R-CNN
RoI head calls once per training step as ``loss, stats = loss_fn(class_logits, labels)``; nothing is
validated again there.
"""

from __future__ import annotations

import inspect
from typing import Any, Callable, NamedTuple

from torch import Tensor

from noisyseg.errors import NoisysegError
from noisyseg.utils.text import shown
from noisyseg.losses import functional as F


class _Registered(NamedTuple):
    function: Callable[..., Any]  # the public, checked loss: its signature declares the parameters
    terms: Callable[..., tuple[Tensor, dict[str, Tensor]]]  # its kernel: (per-RoI values (N,), stats)


# The order is the order of available_losses().
_REGISTRY: dict[str, _Registered] = {
    "ce": _Registered(F.cross_entropy, F._ce_terms),
    "rce": _Registered(F.reverse_cross_entropy, F._rce_terms),
    "sce": _Registered(F.symmetric_cross_entropy, F._sce_terms),
    "gce": _Registered(F.generalized_cross_entropy, F._gce_terms),
    "apl": _Registered(F.active_passive_loss, F._apl_terms),
    "ls": _Registered(F.label_smoothed_cross_entropy, F._label_smoothing_terms),
    "lncis": _Registered(F.task_specific_loss, F._task_specific_terms),
    "good": _Registered(F.gradient_optimization_loss, F._gradient_optimization_terms),
    "forward": _Registered(F.forward_corrected_cross_entropy, F._forward_terms),
    "posterior": _Registered(F.posterior_cross_entropy, F._posterior_terms),
}


def available_losses() -> list[str]:
    """Names accepted by :func:`build_loss`: ``["ce", "rce", "sce", "gce", "apl", "ls", "lncis", "good",
    "forward", "posterior"]``."""
    return list(_REGISTRY)


class RoIClassificationLoss:
    """A named loss with fixed, validated parameters, called once per training step by the RoI box head.

    Build it with :func:`build_loss`, which validates the parameters; the constructor trusts them.

    Attributes:
        name: the registry name (one of :func:`available_losses`).
        params: every parameter of the loss with its resolved value (given or default); for "lncis"
            this includes the chosen robust loss's own parameters (e.g. ``alpha``/``beta`` for sce).
        uses_robust_epoch: whether the loss changes over the robust stage ("good": its ascent weight);
            the trainer tells it the epoch with :meth:`set_robust_epoch`.
        robust_epoch: the 0-based robust-stage epoch last set (0 until set).
        needs_transition_matrix: whether the loss trains through a noise transition matrix ("forward"); the
            trainer gives it with :meth:`set_transition_matrix` once the training data is known.
        needs_class_targets: whether the loss takes per-RoI soft targets ("posterior"): the RoI head passes
            ``class_targets`` (N, K+1), its annotations' targets that the trainer set at the stage switch.
        needs_ce_classes: whether the loss keeps CE for the classes the CE stage has not learned ("lncis"
            with ``learned_at``): the trainer sets them at the stage switch with :meth:`set_ce_classes`.

    Calling it with ``logits`` (N, K+1) and ``labels`` (N,) int64 returns ``(loss, stats)``: ``loss`` is
    the 0-dim mean over the N RoIs (float32 for half-precision logits) and ``stats`` a dict of 0-dim
    tensors to log, the NEG/PSN/OS/PON partition sizes ("neg", "psn", "os", "pon") for "lncis" and
    "good" (plus "os_ignored" for "lncis" with ``ignore_confident``, "os_ce" with ``learned_at``), empty for
    the other losses.
    """

    def __init__(self, name: str, params: dict[str, Any]) -> None:
        self.name = name
        self.params = dict(params)
        self._terms = _REGISTRY[name].terms
        self.uses_robust_epoch = "robust_epoch" in inspect.signature(self._terms).parameters
        self.robust_epoch = 0
        self.needs_transition_matrix = "transition_matrix" in inspect.signature(self._terms).parameters
        self.needs_class_targets = "class_targets" in inspect.signature(self._terms).parameters
        self.transition_matrix: Tensor | None = None
        self.needs_ce_classes = self.params.get("learned_at") is not None
        self.ce_classes: Tensor | None = None

    def set_transition_matrix(self, matrix) -> None:
        """Give a "forward" loss its (K, K) transition matrix (rows = true class, summing to 1)."""
        import torch

        self.transition_matrix = torch.as_tensor(matrix, dtype=torch.float32)

    def set_ce_classes(self, ce_classes) -> None:
        """Give an "lncis" loss with ``learned_at`` the classes that keep CE: a (K+1,) bool sequence,
        background first (see :func:`noisyseg.losses.functional.task_specific_loss`)."""
        import torch

        self.ce_classes = torch.as_tensor(ce_classes, dtype=torch.bool)

    def set_robust_epoch(self, robust_epoch: int) -> None:
        """Tell the loss which epoch of the robust stage (0 = the first after the CE warm-up) comes next.

        Losses that do not change over the stage ignore it. Raises NoisysegError for a negative or
        non-integer epoch.
        """
        self.robust_epoch = F.check_robust_epoch(f"loss {self.name}", robust_epoch)

    def __call__(self, logits: Tensor, labels: Tensor,
                 class_targets: Tensor | None = None) -> tuple[Tensor, dict[str, Tensor]]:
        F._check_inputs(logits, labels, "mean")
        if self.needs_class_targets:
            if class_targets is None:
                raise NoisysegError(f"loss {self.name}: the training targets carry no class_target (the trainer "
                                    "sets them at the end of the CE stage)")
            values, stats = self._terms(logits, labels, class_targets, **self.params)
        elif self.needs_transition_matrix:
            if self.transition_matrix is None:
                raise NoisysegError(f"loss {self.name}: no transition matrix was set (set_transition_matrix)")
            values, stats = self._terms(logits, labels, self.transition_matrix, **self.params)
        elif self.needs_ce_classes:
            if self.ce_classes is None:
                raise NoisysegError(f"loss {self.name}: learned_at is set but no classes were given "
                                    "(set_ce_classes, made at the end of the CE stage)")
            if self.ce_classes.device != logits.device:  # moved once, not every step
                self.ce_classes = self.ce_classes.to(logits.device)
            values, stats = self._terms(logits, labels, ce_classes=self.ce_classes, **self.params)
        elif self.uses_robust_epoch:
            values, stats = self._terms(logits, labels, self.robust_epoch, **self.params)
        else:
            values, stats = self._terms(logits, labels, **self.params)
        return F._reduce(values, "mean"), stats

    def __repr__(self) -> str:
        inner = ", ".join(f"{k}={v!r}" for k, v in self.params.items())
        return f"RoIClassificationLoss({self.name}: {inner})"


def build_loss(name: str, **params: Any) -> RoIClassificationLoss:
    """The loss registered as ``name`` with ``params`` over its defaults.

    Args:
        name: one of :func:`available_losses`.
        **params: the loss's keyword parameters. ce: none; rce: log_zero; sce/apl: alpha, beta,
            log_zero; gce: q; lncis: robust, ce_weight, robust_weight, pon_threshold, log_zero, ignore_confident,
            learned_at and the
            chosen robust loss's own parameters (alpha/beta for sce and apl, q for gce); good:
            pon_threshold, ascent_weights, tau, clipped_ce_weight, log_zero, ascent_min_prob; forward:
            transition ("data" or a matrix file, see :mod:`noisyseg.losses.transition`).

    Returns:
        A :class:`RoIClassificationLoss` whose ``params`` hold every resolved value.

    Raises:
        NoisysegError: unknown name or parameter (the message lists the valid ones), a wrong type or
            an out-of-range value (q outside (0, 1], a negative weight, log_zero >= 0, ...).
    """
    if not isinstance(name, str) or name not in _REGISTRY:
        raise NoisysegError(f"unknown loss {shown(name)}; available: {', '.join(_REGISTRY)}")
    return RoIClassificationLoss(name, F.resolve_params(f"loss {name}", _REGISTRY[name].function, params))
