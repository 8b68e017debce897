"""Noise-robust classification losses for the RoI box head of Mask R-CNN (DESIGN.md §1).

Conventions shared by every function here:

- ``logits``: float tensor of shape (N, K+1), the raw class scores of N sampled RoIs. Column 0 is the
  background, columns 1..K the object classes (torchvision convention), K >= 1.
- ``labels``: integer tensor of shape (N,), int64 preferred, values in 0..K; 0 means background. The
  labels may be wrong (noisy) - that is what the robust losses are for.
- ``reduction``: ``"mean"`` (sum over the N RoIs divided by N), ``"sum"``, or ``"none"`` (a (N,) tensor
  of per-RoI values).

Numerics: everything derives from one ``log_softmax`` of the logits, so no ``log(0)`` is ever taken.
float16/bfloat16 logits are softmaxed in float32 and the result is float32; float32 and float64 keep
their dtype. With N = 0 the "mean"/"sum" result is a zero that is still attached to the graph (its
gradient, when the logits require one, is an empty tensor).

Speed: fully vectorised, no Python loop over RoIs and no host-device synchronisation on accelerators
(masks are applied with ``torch.where`` instead of boolean indexing; partition sizes stay 0-dim device
tensors). The only host-side read is the label range check, which runs for CPU tensors only: on CUDA
it would force a synchronisation every step, so there an out-of-range label surfaces as the device-side
index error of ``gather`` instead of a :class:`~noisyseg.errors.NoisysegError`.
"""

from __future__ import annotations

import inspect
import math
from typing import Any

import torch
from torch import Tensor

from noisyseg.errors import NoisysegError

#: ``ln(1e-4)``, about -9.2103: the stand-in for ``log 0`` in the one-hot target of the reverse
#: cross-entropy. It equals the reference code's clamp of the one-hot target at 1e-4.
DEFAULT_LOG_ZERO: float = math.log(1e-4)

#: Names of the robust losses the task-specific loss can apply to its OS set.
ROBUST_LOSSES: tuple[str, ...] = ("rce", "sce", "gce", "apl")

_REDUCTIONS = ("mean", "sum", "none")


# --------------------------------------------------------------------------------------------------
# input and parameter checks


def _check_inputs(logits: Tensor, labels: Tensor, reduction: str) -> None:
    """Raise a one-line NoisysegError unless logits (N, K+1), labels (N,) and reduction are usable."""
    if not isinstance(logits, Tensor) or not isinstance(labels, Tensor):
        raise NoisysegError("logits and labels must be torch tensors")
    if logits.dim() != 2 or logits.shape[1] < 2:
        raise NoisysegError(
            f"logits must have shape (N, K+1) with K >= 1 (column 0 = background), got {tuple(logits.shape)}"
        )
    if not logits.is_floating_point():
        raise NoisysegError(f"logits must be a floating-point tensor, got {logits.dtype}")
    if labels.dim() != 1 or labels.shape[0] != logits.shape[0]:
        raise NoisysegError(
            f"labels must have shape (N,) = ({logits.shape[0]},) to match logits {tuple(logits.shape)}, "
            f"got {tuple(labels.shape)}"
        )
    if labels.is_floating_point() or labels.is_complex() or labels.dtype == torch.bool:
        raise NoisysegError(f"labels must be an integer tensor (int64), got {labels.dtype}")
    if labels.device != logits.device:
        raise NoisysegError(f"labels are on {labels.device} but logits on {logits.device}")
    if reduction not in _REDUCTIONS:
        raise NoisysegError(f"reduction must be one of {', '.join(_REDUCTIONS)}, got {reduction!r}")
    if labels.device.type == "cpu" and labels.numel() > 0:  # on accelerators this read would force a sync
        lowest, highest = (int(v) for v in torch.aminmax(labels))
        num_classes = logits.shape[1] - 1
        if lowest < 0 or highest > num_classes:
            raise NoisysegError(
                f"labels must be in 0..{num_classes} (0 = background, K = {num_classes} classes), "
                f"got values in {lowest}..{highest}"
            )


def _real(where: str, key: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise NoisysegError(f"{where}: {key} must be a finite number, got {value!r}")
    return float(value)


def check_loss_params(where: str, params: dict[str, Any]) -> None:
    """Validate loss keyword parameters by name; raise a one-line NoisysegError naming ``where``.

    Known names and their domains: ``alpha``, ``beta``, ``ce_weight``, ``robust_weight`` >= 0;
    ``q`` in (0, 1]; ``log_zero`` < 0 (it replaces log 0); ``pon_threshold`` None or > 0;
    ``robust`` one of :data:`ROBUST_LOSSES`. Other names are not checked here.
    """
    for key, value in params.items():
        if key in ("alpha", "beta", "ce_weight", "robust_weight"):
            if _real(where, key, value) < 0:
                raise NoisysegError(f"{where}: {key} must be >= 0, got {value!r}")
        elif key == "q":
            if not 0.0 < _real(where, key, value) <= 1.0:
                raise NoisysegError(f"{where}: q must be in (0, 1], got {value!r}")
        elif key == "log_zero":
            if _real(where, key, value) >= 0:
                raise NoisysegError(f"{where}: log_zero must be < 0 (it stands in for log 0), got {value!r}")
        elif key == "pon_threshold":
            if value is not None and _real(where, key, value) <= 0:
                raise NoisysegError(f"{where}: pon_threshold must be > 0 or None, got {value!r}")
        elif key == "robust":
            if not isinstance(value, str) or value not in ROBUST_LOSSES:
                raise NoisysegError(f"{where}: robust must be one of {', '.join(ROBUST_LOSSES)}, got {value!r}")


# --------------------------------------------------------------------------------------------------
# shared building blocks: everything is a function of log p (N, K+1) and log p_y (N,)


def _log_probs(logits: Tensor) -> Tensor:
    """log softmax of ``logits`` (N, K+1) over the classes, (N, K+1); half precision is upcast to float32."""
    if logits.dtype in (torch.float16, torch.bfloat16):
        return torch.log_softmax(logits, dim=1, dtype=torch.float32)  # the cast happens inside the kernel
    return torch.log_softmax(logits, dim=1)


def _at_label(log_p: Tensor, labels: Tensor) -> Tensor:
    """log p_i[y_i] for every RoI: (N,) picked from ``log_p`` (N, K+1) by ``labels`` (N,)."""
    return log_p.gather(1, labels.long().unsqueeze(1)).squeeze(1)


def _ce_values(log_p_y: Tensor) -> Tensor:
    """CE_i = -log p_i[y_i], (N,)."""
    return -log_p_y


def _rce_values(log_p_y: Tensor, log_zero: float) -> Tensor:
    """RCE_i = -A (1 - p_i[y_i]) = A p_i[y_i] - A, (N,).

    (``expm1`` would be a little more accurate for p close to 1, but on CPU it is ~9x slower than
    ``exp``, and the absolute error of ``exp`` here is ~1e-7 * |A|.)
    """
    return torch.exp(log_p_y).mul(log_zero).sub(log_zero)


def _gce_values(log_p_y: Tensor, q: float) -> Tensor:
    """GCE_i = (1 - p_i[y_i]^q) / q, (N,), with p^q = exp(q log p)."""
    return torch.exp(q * log_p_y).sub(1.0).mul(-1.0 / q)


def _nce_values(log_p: Tensor, log_p_y: Tensor) -> Tensor:
    """NCE_i = CE_i / sum_k (-log p_i[k]), (N,). The denominator is <= -(K+1) ln(K+1) < 0 for K >= 1."""
    return log_p_y / log_p.sum(dim=1)


def _reduce(values: Tensor, reduction: str) -> Tensor:
    """Reduce per-RoI ``values`` (N,) to a 0-dim sum or mean; "mean" divides by N (by 1 when N = 0)."""
    if reduction == "none":
        return values
    total = values.sum()
    if reduction == "sum":
        return total
    return total / max(values.shape[0], 1)


def _robust_values(robust: str, log_p: Tensor, log_p_y: Tensor, log_zero: float, params: dict[str, float]) -> Tensor:
    """Per-RoI values (N,) of robust loss ``robust`` with its resolved ``params`` (alpha/beta or q)."""
    if robust == "rce":
        return _rce_values(log_p_y, log_zero)
    if robust == "sce":
        return params["alpha"] * _ce_values(log_p_y) + params["beta"] * _rce_values(log_p_y, log_zero)
    if robust == "gce":
        return _gce_values(log_p_y, params["q"])
    return params["alpha"] * _nce_values(log_p, log_p_y) + params["beta"] * _rce_values(log_p_y, log_zero)


# --------------------------------------------------------------------------------------------------
# the losses


def cross_entropy(logits: Tensor, labels: Tensor, reduction: str = "mean") -> Tensor:
    """Cross-entropy ``CE_i = -log p_i[y_i]`` with ``p_i = softmax(logits_i)``.

    Args:
        logits: (N, K+1) raw class scores, column 0 = background.
        labels: (N,) int64 class labels in 0..K, 0 = background.
        reduction: "mean" (divide the sum by N), "sum" or "none".

    Returns:
        0-dim loss, or the (N,) per-RoI values for ``reduction="none"``; float32 for half-precision logits.
    """
    _check_inputs(logits, labels, reduction)
    return _reduce(_ce_values(_at_label(_log_probs(logits), labels)), reduction)


def reverse_cross_entropy(
    logits: Tensor, labels: Tensor, log_zero: float = DEFAULT_LOG_ZERO, reduction: str = "mean"
) -> Tensor:
    """Reverse cross-entropy ``RCE_i = -sum_k p_i[k] log q_i[k]`` (Wang et al., ICCV 2019).

    ``q_i`` is the one-hot label, whose ``log 0`` entries are replaced by ``log_zero`` (A < 0), so
    ``RCE_i = -A (1 - p_i[y_i])``: bounded in [0, -A], and its sum over all K+1 possible labels is the
    constant ``-A K`` (the symmetry that makes it tolerate wrong labels).

    Args:
        logits: (N, K+1) raw class scores, column 0 = background.
        labels: (N,) int64 class labels in 0..K.
        log_zero: A, the value used for log 0; default ln(1e-4).
        reduction: "mean" (divide the sum by N), "sum" or "none".

    Returns:
        0-dim loss, or (N,) per-RoI values for ``reduction="none"``.
    """
    _check_inputs(logits, labels, reduction)
    check_loss_params("reverse_cross_entropy", {"log_zero": log_zero})
    return _reduce(_rce_values(_at_label(_log_probs(logits), labels), log_zero), reduction)


def symmetric_cross_entropy(
    logits: Tensor,
    labels: Tensor,
    alpha: float = 1.0,
    beta: float = 0.1,
    log_zero: float = DEFAULT_LOG_ZERO,
    reduction: str = "mean",
) -> Tensor:
    """Symmetric cross-entropy ``SCE_i = alpha CE_i + beta RCE_i`` (Wang et al., ICCV 2019).

    Defaults alpha = 1.0, beta = 0.1 are the reference code's.

    Args:
        logits: (N, K+1) raw class scores, column 0 = background.
        labels: (N,) int64 class labels in 0..K.
        alpha: weight of the CE term (>= 0).
        beta: weight of the RCE term (>= 0).
        log_zero: A, the value used for log 0 in the RCE term; default ln(1e-4).
        reduction: "mean" (divide the sum by N), "sum" or "none".

    Returns:
        0-dim loss, or (N,) per-RoI values for ``reduction="none"``.
    """
    _check_inputs(logits, labels, reduction)
    check_loss_params("symmetric_cross_entropy", {"alpha": alpha, "beta": beta, "log_zero": log_zero})
    log_p_y = _at_label(_log_probs(logits), labels)
    return _reduce(alpha * _ce_values(log_p_y) + beta * _rce_values(log_p_y, log_zero), reduction)


def generalized_cross_entropy(logits: Tensor, labels: Tensor, q: float = 0.3, reduction: str = "mean") -> Tensor:
    """Generalised cross-entropy ``GCE_i = (1 - p_i[y_i]^q) / q`` (Zhang & Sabuncu, NeurIPS 2018).

    q -> 0 approaches CE, q = 1 is the mean absolute error ``1 - p_i[y_i]``; default 0.3 is the
    reference code's.

    Args:
        logits: (N, K+1) raw class scores, column 0 = background.
        labels: (N,) int64 class labels in 0..K.
        q: exponent in (0, 1].
        reduction: "mean" (divide the sum by N), "sum" or "none".

    Returns:
        0-dim loss, or (N,) per-RoI values for ``reduction="none"``.
    """
    _check_inputs(logits, labels, reduction)
    check_loss_params("generalized_cross_entropy", {"q": q})
    return _reduce(_gce_values(_at_label(_log_probs(logits), labels), q), reduction)


def active_passive_loss(
    logits: Tensor,
    labels: Tensor,
    alpha: float = 1.0,
    beta: float = 1.0,
    log_zero: float = DEFAULT_LOG_ZERO,
    reduction: str = "mean",
) -> Tensor:
    """Active-passive loss NCE + RCE (Ma et al., ICML 2020, "Normalized Loss Functions for Deep
    Learning with Noisy Labels"): ``APL_i = alpha NCE_i + beta RCE_i``.

    ``NCE_i = CE_i / sum_k (-log p_i[k])`` is the cross-entropy normalised by its sum over every
    possible label (the "active" term, in [0, 1]); RCE is the "passive" term. Defaults alpha = 1.0,
    beta = 1.0: an unweighted sum of the two, a neutral starting point (the paper tunes alpha and beta
    per data set). NCE is at most 1 while RCE reaches -A ~ 9.2 with the default A, so a larger alpha
    (or smaller beta) gives the active term more say.

    Args:
        logits: (N, K+1) raw class scores, column 0 = background.
        labels: (N,) int64 class labels in 0..K.
        alpha: weight of NCE (>= 0).
        beta: weight of RCE (>= 0).
        log_zero: A, the value used for log 0 in the RCE term; default ln(1e-4).
        reduction: "mean" (divide the sum by N), "sum" or "none".

    Returns:
        0-dim loss, or (N,) per-RoI values for ``reduction="none"``.
    """
    _check_inputs(logits, labels, reduction)
    check_loss_params("active_passive_loss", {"alpha": alpha, "beta": beta, "log_zero": log_zero})
    log_p = _log_probs(logits)
    log_p_y = _at_label(log_p, labels)
    values = alpha * _nce_values(log_p, log_p_y) + beta * _rce_values(log_p_y, log_zero)
    return _reduce(values, reduction)


def _keyword_defaults(fn) -> dict[str, Any]:
    """The keyword parameters of a robust loss function with their defaults, minus the shared ones."""
    skip = ("logits", "labels", "log_zero", "reduction")
    return {k: p.default for k, p in inspect.signature(fn).parameters.items() if k not in skip}


#: The robust losses' own parameters (besides ``log_zero``) with their defaults, read off the functions
#: above so there is a single source of truth: rce {}, sce {alpha, beta}, gce {q}, apl {alpha, beta}.
ROBUST_PARAM_DEFAULTS: dict[str, dict[str, Any]] = {
    "rce": _keyword_defaults(reverse_cross_entropy),
    "sce": _keyword_defaults(symmetric_cross_entropy),
    "gce": _keyword_defaults(generalized_cross_entropy),
    "apl": _keyword_defaults(active_passive_loss),
}


def resolve_robust_params(where: str, robust: Any, given: dict[str, Any]) -> dict[str, Any]:
    """The parameters of robust loss ``robust``: its defaults overridden by ``given``, validated.

    Raises a one-line NoisysegError for an unknown robust loss, a parameter it does not take (listing
    those it does) or an out-of-range value.
    """
    check_loss_params(where, {"robust": robust})
    defaults = ROBUST_PARAM_DEFAULTS[robust]
    unknown = sorted(set(given) - set(defaults))
    if unknown:
        valid = ", ".join(defaults) if defaults else "none"
        raise NoisysegError(
            f"{where}: parameter(s) {', '.join(unknown)} do not apply to robust={robust!r} "
            f"(its own parameters: {valid})"
        )
    resolved = {**defaults, **given}
    check_loss_params(where, resolved)
    return resolved


def task_specific_loss(
    logits: Tensor,
    labels: Tensor,
    robust: str = "rce",
    ce_weight: float = 1.0,
    robust_weight: float = 1.0,
    pon_threshold: float | None = None,
    log_zero: float = DEFAULT_LOG_ZERO,
    reduction: str = "mean",
    return_counts: bool = False,
    **robust_kwargs: float,
) -> Tensor | tuple[Tensor, dict[str, Tensor]]:
    """The paper's task-specific ("LNCIS") RoI classification loss (Yang et al., ECCV 2020).

    Every RoI falls in exactly one of four sets, decided from the (detached) logits and the label:

    - NEG: ``y_i = 0`` (background label) -> ``ce_weight * CE_i``;
    - PSN: ``y_i > 0`` and ``argmax_k p_i[k] = 0``, a labelled object the model calls background (a tie
      with the background logit counts as background, as ``argmax`` returns the first maximum)
      -> ``ce_weight * CE_i``;
    - PON: ``y_i > 0``, not PSN and ``CE_i > pon_threshold``; only when ``pon_threshold`` is not None
      (the paper uses 6.0) -> 0;
    - OS: every other foreground RoI -> ``robust_weight * R_i`` with R the robust loss ``robust``.

    Background-vs-object is thus learned with CE (a wrong class label is still a right "object"), the
    object class with a symmetric loss that wrong labels cannot pull hard. Both sums are divided by
    **all** N RoIs for ``reduction="mean"``, so the mean of the "none" values equals the "mean" result.

    Args:
        logits: (N, K+1) raw class scores, column 0 = background.
        labels: (N,) int64 (possibly noisy) class labels in 0..K, 0 = background.
        robust: "rce" (default), "sce", "gce" or "apl", the loss on OS.
        ce_weight: weight of the CE term on NEG and PSN (>= 0).
        robust_weight: weight of the robust term on OS (>= 0).
        pon_threshold: CE above which a non-PSN foreground RoI is dropped (PON); None disables PON.
        log_zero: A, the value used for log 0 by the RCE part of rce/sce/apl; default ln(1e-4).
        reduction: "mean" (divide the sum by N), "sum" or "none" ((N,) per-RoI values).
        return_counts: also return the set sizes.
        **robust_kwargs: parameters of the robust loss: ``alpha``/``beta`` for sce and apl, ``q`` for
            gce; missing ones take that loss's defaults. A parameter the chosen loss does not take
            raises NoisysegError.

    Returns:
        The loss (0-dim, or (N,) for "none"), float32 for half-precision logits. With
        ``return_counts``, a pair ``(loss, counts)`` where ``counts`` maps "neg", "psn", "os", "pon" to
        0-dim int64 tensors on the logits' device (read them with ``.item()`` when logging; keeping
        them as tensors avoids a host-device sync per step).
    """
    _check_inputs(logits, labels, reduction)
    check_loss_params(
        "task_specific_loss",
        {"ce_weight": ce_weight, "robust_weight": robust_weight, "pon_threshold": pon_threshold, "log_zero": log_zero},
    )
    params = resolve_robust_params("task_specific_loss", robust, robust_kwargs)

    log_p = _log_probs(logits)  # (N, K+1), the single pass over the full score matrix
    log_p_y = _at_label(log_p, labels)  # (N,)
    ce = _ce_values(log_p_y)

    # Partition. argmax p = 0 <=> the background logit is >= every object logit; amax is cheaper than
    # argmax and needs no softmax. All masks are (N,) bool tensors; nothing is read back to the host.
    scores = logits.detach()
    foreground = labels > 0
    psn = foreground & (scores[:, 0] >= scores[:, 1:].amax(dim=1))
    use_ce = psn | ~foreground  # NEG or PSN; its complement is OS plus PON

    ce_term = ce if ce_weight == 1.0 else ce_weight * ce
    robust_term = _robust_values(robust, log_p, log_p_y, log_zero, params)
    if robust_weight != 1.0:
        robust_term = robust_weight * robust_term
    # torch.where routes each RoI's value (and its gradient) to exactly one term; PON RoIs get 0
    pon = None
    if pon_threshold is not None:
        pon = ~use_ce & (ce.detach() > pon_threshold)
        robust_term = torch.where(pon, 0.0, robust_term)
    values = torch.where(use_ce, ce_term, robust_term)
    loss = _reduce(values, reduction)
    if not return_counts:
        return loss

    n = labels.shape[0]
    n_foreground, n_psn = foreground.sum(), psn.sum()
    n_pon = torch.zeros_like(n_foreground) if pon is None else pon.sum()
    counts = {"neg": n - n_foreground, "psn": n_psn, "os": n_foreground - n_psn - n_pon, "pon": n_pon}
    return loss, counts
