"""Noise-robust classification losses for the RoI box head of Mask R-CNN (DESIGN.md §1, and GOOD).

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

Validation: the public functions check their inputs and parameters on every call. Each one is a
check followed by a private ``_*_terms`` kernel that only computes; :mod:`noisyseg.losses.registry`
validates parameters once (:func:`resolve_params`) and then calls the kernels directly, so a training
step does no parameter checking.

Speed: fully vectorised, no Python loop over RoIs and no host-device synchronisation on accelerators
(masks are applied with ``torch.where`` instead of boolean indexing; partition sizes stay 0-dim device
tensors). The only host-side read is the label range check, which runs for CPU tensors only: on CUDA
it would force a synchronisation every step, so there an out-of-range label surfaces as the device-side
index error of ``gather`` instead of a :class:`~noisyseg.errors.NoisysegError`.
"""

from __future__ import annotations

import inspect
import math
from typing import Any, Callable

import torch
from torch import Tensor

from noisyseg.errors import NoisysegError
from noisyseg.utils.text import clipped, shown

#: ``ln(1e-4)``, about -9.2103: the stand-in for ``log 0`` in the one-hot target of the reverse
#: cross-entropy. It equals the reference code's clamp of the one-hot target at 1e-4.
DEFAULT_LOG_ZERO: float = math.log(1e-4)

#: Names of the robust losses the task-specific loss can apply to its OS set.
ROBUST_LOSSES: tuple[str, ...] = ("rce", "sce", "gce", "apl")

#: GOOD's weight of the cross-entropy on PON RoIs in robust-stage epochs 0, 1, 2, ... (the last one is
#: kept for later epochs): negative, i.e. gradient *ascent*, growing over the first epochs. The values
#: are those of the authors' public code (Xia et al., 2024).
GOOD_ASCENT_WEIGHTS: tuple[float, ...] = (0.0, -0.001, -0.005, -0.01, -0.05, -0.1)

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
        raise NoisysegError(f"reduction must be one of {', '.join(_REDUCTIONS)}, got {shown(reduction)}")
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
        raise NoisysegError(f"{where}: {key} must be a finite number, got {shown(value)}")
    return float(value)


def check_loss_params(where: str, params: dict[str, Any]) -> None:
    """Validate loss keyword parameters by name; raise a one-line NoisysegError naming ``where``.

    Known names and their domains: ``alpha``, ``beta``, ``ce_weight``, ``robust_weight``,
    ``clipped_ce_weight`` >= 0; ``q`` in (0, 1]; ``log_zero`` < 0 (it replaces log 0);
    ``pon_threshold`` None or > 0; ``epsilon`` in [0, 1); ``ignore_confident`` None or in (0, 1);
    ``learned_at`` None or > 0; ``robust`` one of :data:`ROBUST_LOSSES`; ``target_momentum`` in [0, 1];
    ``tau`` >= 1; ``ascent_min_prob`` in (0, 1); ``ascent_weights`` a non-empty list of numbers <= 0. Other
    names are not checked here.
    """
    for key, value in params.items():
        if key in ("alpha", "beta", "ce_weight", "robust_weight", "clipped_ce_weight"):
            if _real(where, key, value) < 0:
                raise NoisysegError(f"{where}: {key} must be >= 0, got {shown(value)}")
        elif key == "q":
            if not 0.0 < _real(where, key, value) <= 1.0:
                raise NoisysegError(f"{where}: q must be in (0, 1], got {shown(value)}")
        elif key == "epsilon":
            if not 0.0 <= _real(where, key, value) < 1.0:
                raise NoisysegError(f"{where}: epsilon must be in [0, 1) (the share of an object label spread "
                                    f"over the object classes), got {shown(value)}")
        elif key == "log_zero":
            if _real(where, key, value) >= 0:
                raise NoisysegError(f"{where}: log_zero must be < 0 (it stands in for log 0), got {shown(value)}")
        elif key == "pon_threshold":
            if value is not None and _real(where, key, value) <= 0:
                raise NoisysegError(f"{where}: pon_threshold must be > 0 or None, got {shown(value)}")
        elif key == "ignore_confident":
            if value is not None and not 0.0 < _real(where, key, value) < 1.0:
                raise NoisysegError(f"{where}: ignore_confident must be in (0, 1) or None, got {shown(value)}")
        elif key == "learned_at":
            if value is not None and _real(where, key, value) <= 0:
                raise NoisysegError(f"{where}: learned_at must be > 0 (a multiple of chance, 1/K) or None, "
                                    f"got {shown(value)}")
        elif key == "robust":
            if not isinstance(value, str) or value not in ROBUST_LOSSES:
                raise NoisysegError(f"{where}: robust must be one of {', '.join(ROBUST_LOSSES)}, got {shown(value)}")
        elif key == "tau":
            if _real(where, key, value) < 1.0:
                raise NoisysegError(f"{where}: tau must be >= 1 (the clip starts at p = 1/tau), got {shown(value)}")
        elif key == "ascent_min_prob":
            if not 0.0 < _real(where, key, value) < 1.0:
                raise NoisysegError(f"{where}: ascent_min_prob must be in (0, 1), got {shown(value)}")
        elif key == "balance":
            if not 0.0 <= _real(where, key, value) <= 1.0:
                raise NoisysegError(f"{where}: balance must be in [0, 1] (the power of the class prior that "
                                    f"divides the transition matrix's rows), got {shown(value)}")
        elif key == "target_momentum":
            if not 0.0 <= _real(where, key, value) <= 1.0:
                raise NoisysegError(f"{where}: target_momentum must be in [0, 1] (the share of the previous targets "
                                    f"kept at each refresh; 1 keeps the switch's), got {shown(value)}")
        elif key == "transition":
            if not isinstance(value, str) or not value.strip():
                raise NoisysegError(f"{where}: transition must be 'data', 'identity' or the path of a matrix file, "
                                    f"got {shown(value)}")
        elif key == "ascent_weights":
            if not isinstance(value, (list, tuple)) or not value:
                raise NoisysegError(f"{where}: ascent_weights must be a non-empty list of numbers <= 0 "
                                    f"(one per robust-stage epoch), got {shown(value)}")
            for w in value:
                if _real(where, "ascent_weights", w) > 0:
                    raise NoisysegError(f"{where}: ascent_weights must be <= 0 (gradient ascent), got {shown(w)}")


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


def _foreground_values(log_p: Tensor) -> Tensor:
    """F_i = -log(1 - p_i[0]) = -logsumexp_{k >= 1} log p_i[k], (N,): object-vs-background CE, no class."""
    return -torch.logsumexp(log_p[:, 1:], dim=1)


def foreground_loss_values(logits: Tensor) -> Tensor:
    """Object-vs-background cross-entropy per RoI, ``-log(1 - p[0])``, (N,) from ``logits`` (N, K+1).

    The class-free term of an RoI whose class label is not trusted: the RoI heads give it to RoIs matched
    to a ``class_ignored`` annotation, and :func:`task_specific_loss` with ``ignore_confident`` to
    confidently contradicted OS RoIs (one implementation for both). Stable for any logits (computed from
    ``log_softmax``); half precision is upcast to float32. No input checks: a building block.
    """
    return _foreground_values(_log_probs(logits))


def _reduce(values: Tensor, reduction: str) -> Tensor:
    """Reduce per-RoI ``values`` (N,) to a 0-dim sum or mean; "mean" divides by N (by 1 when N = 0)."""
    if reduction == "none":
        return values
    total = values.sum()
    if reduction == "sum":
        return total
    return total / max(values.shape[0], 1)


def _checked_loss(where: str, terms: Callable[..., tuple[Tensor, dict]], logits: Tensor, labels: Tensor,
                  reduction: str, **params: Any) -> Tensor:
    """The public losses' body: check the inputs and ``params`` (named ``where`` in errors), then reduce
    the per-RoI values (N,) of ``terms(logits, labels, **params)``."""
    _check_inputs(logits, labels, reduction)
    check_loss_params(where, params)
    return _reduce(terms(logits, labels, **params)[0], reduction)


def _robust_values(robust: str, log_p: Tensor, log_p_y: Tensor, log_zero: float, params: dict[str, float]) -> Tensor:
    """Per-RoI values (N,) of robust loss ``robust`` with its resolved ``params`` (alpha/beta or q)."""
    if robust == "rce":
        return _rce_values(log_p_y, log_zero)
    if robust == "sce":
        return params["alpha"] * _ce_values(log_p_y) + params["beta"] * _rce_values(log_p_y, log_zero)
    if robust == "gce":
        return _gce_values(log_p_y, params["q"])
    return params["alpha"] * _nce_values(log_p, log_p_y) + params["beta"] * _rce_values(log_p_y, log_zero)


def _partition(logits: Tensor, labels: Tensor, ce: Tensor, pon_threshold: float | None):
    """The NEG/PSN/PON/OS sets as (N,) bool masks: ``(foreground, psn, use_ce, pon)``.

    ``use_ce`` is NEG or PSN; ``pon`` (None when ``pon_threshold`` is None) the non-PSN foreground RoIs
    whose CE is above the threshold; OS is ``~use_ce & ~pon``. argmax p = 0 <=> the background logit is
    >= every object logit (a tie counts as background, as ``argmax`` takes the first maximum); ``amax`` is
    cheaper than ``argmax`` and needs no softmax. Nothing is read back to the host.
    """
    scores = logits.detach()
    foreground = labels > 0
    psn = foreground & (scores[:, 0] >= scores[:, 1:].amax(dim=1))
    use_ce = psn | ~foreground
    pon = None if pon_threshold is None else ~use_ce & (ce.detach() > pon_threshold)
    return foreground, psn, use_ce, pon


def _partition_counts(labels: Tensor, foreground: Tensor, psn: Tensor, pon: Tensor | None) -> dict[str, Tensor]:
    """Set sizes "neg", "psn", "os", "pon" as 0-dim int64 tensors on the labels' device."""
    n = labels.shape[0]
    n_foreground, n_psn = foreground.sum(), psn.sum()
    n_pon = torch.zeros_like(n_foreground) if pon is None else pon.sum()
    return {"neg": n - n_foreground, "psn": n_psn, "os": n_foreground - n_psn - n_pon, "pon": n_pon}


# --------------------------------------------------------------------------------------------------
# kernels: per-RoI values (N,) and statistics (a dict of 0-dim tensors), computed without any checks.
# The public functions below check, then call these; the registry calls them with pre-validated
# parameters.


def _ce_terms(logits: Tensor, labels: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
    return _ce_values(_at_label(_log_probs(logits), labels)), {}


def _rce_terms(logits: Tensor, labels: Tensor, log_zero: float) -> tuple[Tensor, dict[str, Tensor]]:
    return _rce_values(_at_label(_log_probs(logits), labels), log_zero), {}


def _sce_terms(logits: Tensor, labels: Tensor, alpha: float, beta: float,
               log_zero: float) -> tuple[Tensor, dict[str, Tensor]]:
    log_p_y = _at_label(_log_probs(logits), labels)
    return alpha * _ce_values(log_p_y) + beta * _rce_values(log_p_y, log_zero), {}


def _gce_terms(logits: Tensor, labels: Tensor, q: float) -> tuple[Tensor, dict[str, Tensor]]:
    return _gce_values(_at_label(_log_probs(logits), labels), q), {}


def _label_smoothing_terms(logits: Tensor, labels: Tensor, epsilon: float) -> tuple[Tensor, dict[str, Tensor]]:
    log_p = _log_probs(logits)
    ce = _ce_values(_at_label(log_p, labels))
    uniform = -log_p[:, 1:].mean(dim=1)  # CE against the uniform distribution over the K object classes
    return torch.where(labels > 0, (1.0 - epsilon) * ce + epsilon * uniform, ce), {}


def _apl_terms(logits: Tensor, labels: Tensor, alpha: float, beta: float,
               log_zero: float) -> tuple[Tensor, dict[str, Tensor]]:
    log_p = _log_probs(logits)
    log_p_y = _at_label(log_p, labels)
    return alpha * _nce_values(log_p, log_p_y) + beta * _rce_values(log_p_y, log_zero), {}


def _task_specific_terms(logits: Tensor, labels: Tensor, robust: str, ce_weight: float, robust_weight: float,
                         pon_threshold: float | None, log_zero: float, ignore_confident: float | None = None,
                         learned_at: float | None = None, ce_classes: Tensor | None = None,
                         **robust_params: float) -> tuple[Tensor, dict[str, Tensor]]:
    # learned_at is the trainer's rule for ce_classes (noisyseg.losses.transition.unlearned_classes)
    log_p = _log_probs(logits)  # (N, K+1), the single pass over the full score matrix
    log_p_y = _at_label(log_p, labels)  # (N,)
    ce = _ce_values(log_p_y)
    foreground, psn, use_ce, pon = _partition(logits, labels, ce, pon_threshold)
    kept_ce = None
    if ce_classes is not None:
        # an object RoI labelled with a class the CE stage has not learned keeps CE: the robust term's pull
        # on it would be proportional to a p[label] near 0 (it would starve the class)
        kept_ce = ~use_ce & ce_classes[labels]
        use_ce = use_ce | kept_ce
        if pon is not None:
            pon = pon & ~kept_ce

    ce_term = ce if ce_weight == 1.0 else ce_weight * ce
    robust_term = _robust_values(robust, log_p, log_p_y, log_zero, robust_params)
    if robust_weight != 1.0:
        robust_term = robust_weight * robust_term
    # torch.where routes each RoI's value (and its gradient) to exactly one term; PON RoIs get 0
    if pon is not None:
        robust_term = torch.where(pon, 0.0, robust_term)
    counts = _partition_counts(labels, foreground, psn, pon)
    if kept_ce is not None:
        counts["os_ce"] = kept_ce.sum()
        counts["os"] = counts["os"] - counts["os_ce"]
    if ignore_confident is not None:
        # the online audit: an OS RoI the model confidently puts in another class keeps only "this is an
        # object", -log(1 - p[0]) = -logsumexp(log p[1:]), the term of a class_ignored annotation
        top_prob, top_class = log_p.detach().max(dim=1)
        confident_wrong = ~use_ce & (top_class != labels) & (top_prob > math.log(ignore_confident))
        if pon is not None:
            confident_wrong = confident_wrong & ~pon
        robust_term = torch.where(confident_wrong, _foreground_values(log_p), robust_term)
        counts["os_ignored"] = confident_wrong.sum()
    values = torch.where(use_ce, ce_term, robust_term)
    return values, counts


def _clipped_ce_values(log_p_y: Tensor, tau: float) -> Tensor:
    """CE with a bounded gradient: ``-ln p`` for p > 1/tau, the tangent ``-tau p + ln tau + 1`` below, (N,).

    The two pieces meet at p = 1/tau with the same value (ln tau) and slope (-tau), so the gradient with
    respect to p never exceeds tau in size, where plain CE's grows like 1/p.
    """
    p_y = torch.exp(log_p_y)
    tangent = p_y.mul(-tau).add(math.log(tau) + 1.0)
    return torch.where(p_y <= 1.0 / tau, tangent, -log_p_y)


def _gradient_optimization_terms(logits: Tensor, labels: Tensor, robust_epoch: int, pon_threshold: float | None,
                                 ascent_weights: tuple[float, ...], tau: float, clipped_ce_weight: float,
                                 log_zero: float, ascent_min_prob: float) -> tuple[Tensor, dict[str, Tensor]]:
    log_p_y = _at_label(_log_probs(logits), labels)
    ce = _ce_values(log_p_y)
    foreground, psn, use_ce, pon = _partition(logits, labels, ce, pon_threshold)

    os_term = _rce_values(log_p_y, log_zero) + clipped_ce_weight * _clipped_ce_values(log_p_y, tau)
    values = os_term
    if pon is not None:
        weight = ascent_weights[min(robust_epoch, len(ascent_weights) - 1)]
        # capping CE stops the ascent once p[label] < ascent_min_prob (zero gradient above the cap),
        # as the authors' clamp of the probabilities does; without it the ascent never ends
        ascent = ce.clamp(max=-math.log(ascent_min_prob)).mul(weight)
        values = torch.where(pon, ascent, values)
    values = torch.where(use_ce, ce, values)
    return values, _partition_counts(labels, foreground, psn, pon)


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
    return _reduce(_ce_terms(logits, labels)[0], reduction)


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
    return _checked_loss("reverse_cross_entropy", _rce_terms, logits, labels, reduction, log_zero=log_zero)


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
    return _checked_loss("symmetric_cross_entropy", _sce_terms, logits, labels, reduction, alpha=alpha, beta=beta,
                         log_zero=log_zero)


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
    return _checked_loss("generalized_cross_entropy", _gce_terms, logits, labels, reduction, q=q)


def label_smoothed_cross_entropy(logits: Tensor, labels: Tensor, epsilon: float = 0.1,
                                 reduction: str = "mean") -> Tensor:
    """Cross-entropy against the label smoothed over the object classes (Szegedy et al., 2016): an object
    RoI's target is ``(1 - epsilon) onehot(y) + epsilon / K`` on each of the K object classes (none on
    background), a background RoI's is background alone, so object-vs-background stays plain CE and only
    which-class is smoothed. The target is fixed, so, unlike the losses that weigh a label by the model's
    own belief, it cannot starve a class the model has not learned; it only caps how far a label, right or
    wrong, is pushed (Lukasik et al., ICML 2020, on smoothing under label noise).

    Args:
        logits: (N, K+1) raw class scores, column 0 = background.
        labels: (N,) int64 class labels in 0..K, 0 = background.
        epsilon: the share of an object label spread evenly over the K object classes, in [0, 1);
            0 is CE.
        reduction: "mean" (divide the sum by N), "sum" or "none".
    """
    return _checked_loss("label_smoothed_cross_entropy", _label_smoothing_terms, logits, labels, reduction,
                         epsilon=epsilon)


def active_passive_loss(logits: Tensor, labels: Tensor, alpha: float = 1.0, beta: float = 1.0,
                        log_zero: float = DEFAULT_LOG_ZERO, reduction: str = "mean") -> Tensor:
    """Active-passive loss NCE + RCE (Ma et al., ICML 2020, "Normalized Loss Functions for Deep
    Learning with Noisy Labels"): ``APL_i = alpha NCE_i + beta RCE_i``.

    ``NCE_i = CE_i / sum_k (-log p_i[k])`` is the cross-entropy normalised by its sum over every
    possible label (the "active" term, in [0, 1]); RCE is the "passive" term. Defaults alpha = 1.0,
    beta = 1.0: an unweighted sum of the two, a neutral starting point (the paper tunes alpha and beta
    per data set). NCE is at most 1 while RCE reaches -A ~ 9.2 with the default A, so a larger alpha
    (or smaller beta) gives the active term more say.

    Args:
        alpha: weight of NCE (>= 0).
        beta: weight of RCE (>= 0).
        logits, labels, log_zero, reduction: as for :func:`symmetric_cross_entropy`.

    Returns:
        0-dim loss, or (N,) per-RoI values for ``reduction="none"``.
    """
    return _checked_loss("active_passive_loss", _apl_terms, logits, labels, reduction, alpha=alpha, beta=beta,
                         log_zero=log_zero)


def task_specific_loss(
    logits: Tensor,
    labels: Tensor,
    robust: str = "rce",
    ce_weight: float = 1.0,
    robust_weight: float = 1.0,
    pon_threshold: float | None = None,
    log_zero: float = DEFAULT_LOG_ZERO,
    ignore_confident: float | None = None,
    learned_at: float | None = None,
    ce_classes: Tensor | None = None,
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
    - OS: every other foreground RoI -> ``robust_weight * R_i`` with R the robust loss ``robust``;
      with ``ignore_confident`` = t (an extension beyond the paper, the audit's ``ignore`` repair done
      online), an OS RoI whose most probable class c (K+1-way softmax) differs from its label and has
      ``p_i[c] > t`` gets only the object-vs-background term ``F_i = -log(1 - p_i[0])`` instead (the
      term a ``class_ignored`` annotation gets; :func:`foreground_loss_values`);
    - with ``ce_classes`` (an extension beyond the paper), an OS RoI whose label is one of those classes
      gets ``ce_weight * CE_i`` instead (counted as "os_ce", not "os").

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
        ignore_confident: None (default: the paper's loss), or a probability in (0, 1) above which a
            confidently contradicted OS RoI loses its class supervision (see OS above).
        learned_at: None (default: the paper's loss), or r > 0: at the stage switch the trainer keeps CE for
            the classes whose training labels the CE-stage model gives a mean p[label] below r / K
            (:func:`noisyseg.losses.transition.unlearned_classes`) and passes them as ``ce_classes``;
            not used by this function itself.
        ce_classes: None, or a (K+1,) bool tensor on the logits' device: the classes whose OS RoIs keep CE
            (index 0, background, is never OS).
        reduction: "mean" (divide the sum by N), "sum" or "none" ((N,) per-RoI values).
        return_counts: also return the set sizes (and "os_ignored", the OS RoIs ignore_confident
            relieved of their class, when it is set; "os_ce", the RoIs ce_classes kept on CE, when given).
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
    params = resolve_params("task_specific_loss", task_specific_loss, {
        "robust": robust, "ce_weight": ce_weight, "robust_weight": robust_weight,
        "pon_threshold": pon_threshold, "log_zero": log_zero, "ignore_confident": ignore_confident,
        "learned_at": learned_at, **robust_kwargs})
    if ce_classes is not None:
        ce_classes = check_ce_classes("task_specific_loss", ce_classes, logits)
    values, counts = _task_specific_terms(logits, labels, ce_classes=ce_classes, **params)
    loss = _reduce(values, reduction)
    return (loss, counts) if return_counts else loss


def gradient_optimization_loss(
    logits: Tensor,
    labels: Tensor,
    robust_epoch: int = 0,
    pon_threshold: float | None = 6.0,
    ascent_weights: tuple[float, ...] | list[float] = GOOD_ASCENT_WEIGHTS,
    tau: float = 10.0,
    clipped_ce_weight: float = 0.01,
    log_zero: float = DEFAULT_LOG_ZERO,
    ascent_min_prob: float = 1e-7,
    reduction: str = "mean",
    return_counts: bool = False,
) -> Tensor | tuple[Tensor, dict[str, Tensor]]:
    """GOOD, gradient optimization for object detection (Xia, Hu, Lee, Chen, 2024, "Gradient optimization
    for object detection in learning with noisy labels").

    The RoIs are split as in the task-specific loss (NEG, PSN, PON, OS; see :func:`task_specific_loss`),
    but PON and OS are treated differently:

    - NEG and PSN -> ``CE_i`` (gradient descent: a wrong class label is still a right "object");
    - PON (``y_i > 0``, not PSN, ``CE_i > pon_threshold``, 6.0 by default): a label the model disagrees
      with strongly, likely wrong -> ``w_e * min(CE_i, -ln ascent_min_prob)`` with ``w_e < 0``, i.e. a
      small gradient *ascent* that pushes the model further from that label. ``w_e`` is
      ``ascent_weights[e]`` for robust-stage epoch ``e`` (0-based; the last value holds after the list
      ends): by default 0, -0.001, -0.005, -0.01, -0.05, -0.1, the authors' ramp. The cap (the authors'
      clamp of p at 1e-7) stops the ascent once ``p_i[y_i] < ascent_min_prob``;
    - OS (every other foreground RoI) -> ``RCE_i + clipped_ce_weight * CCE_i``, where CCE is CE with its
      gradient clipped: ``-ln p`` for ``p = p_i[y_i] > 1/tau`` and ``-tau p + ln tau + 1`` (its tangent at
      1/tau) below, tau = 10 by default.

    The sum over all RoIs is divided by **all** N RoIs for ``reduction="mean"``. Differences from the
    authors' code, which computes CE with the one-hot label clamped at 1e-4: CE here is the exact
    ``-ln p_i[y_i]`` (theirs adds ``-1e-4 sum_{k != y} ln p_i[k]``), and CE on NEG and PSN is not capped.
    Their code comments that ``clipped_ce_weight`` was 1 for symmetric and 0.01 for asymmetric noise.

    Args:
        logits: (N, K+1) raw class scores, column 0 = background.
        labels: (N,) int64 (possibly noisy) class labels in 0..K, 0 = background.
        robust_epoch: 0-based epoch of the robust stage (the stage after the CE warm-up), which picks
            the ascent weight.
        pon_threshold: CE above which a non-PSN foreground RoI is PON; None: no PON, no ascent.
        ascent_weights: one weight (<= 0) per robust-stage epoch.
        tau: the clipped CE turns linear below p = 1/tau (>= 1).
        clipped_ce_weight: weight of the clipped CE on OS (>= 0).
        log_zero: A, the value used for log 0 in the RCE term; default ln(1e-4).
        ascent_min_prob: the ascent stops once ``p_i[y_i]`` is below this, in (0, 1).
        reduction: "mean" (divide the sum by N), "sum" or "none" ((N,) per-RoI values).
        return_counts: also return the set sizes, as :func:`task_specific_loss` does.

    Returns:
        The loss (0-dim, or (N,) for "none"), float32 for half-precision logits; with ``return_counts``
        a pair ``(loss, counts)``, counts mapping "neg", "psn", "os", "pon" to 0-dim int64 tensors.
    """
    _check_inputs(logits, labels, reduction)
    check_robust_epoch("gradient_optimization_loss", robust_epoch)
    params = resolve_params("gradient_optimization_loss", gradient_optimization_loss, {
        "pon_threshold": pon_threshold, "ascent_weights": ascent_weights, "tau": tau,
        "clipped_ce_weight": clipped_ce_weight, "log_zero": log_zero, "ascent_min_prob": ascent_min_prob})
    values, counts = _gradient_optimization_terms(logits, labels, robust_epoch, **params)
    loss = _reduce(values, reduction)
    return (loss, counts) if return_counts else loss


def _forward_terms(logits: Tensor, labels: Tensor, transition_matrix: Tensor,
                   transition: str = "data", balance: float = 0.0) -> tuple[Tensor, dict[str, Tensor]]:
    """Forward-corrected CE per RoI, (N,): ``-log q_i[y_i]`` with q = (p_0, p_{1..K} T).

    ``transition_matrix`` (K, K): T[c, j] = P(given j | true c). The background probability is kept as it
    is (no annotation is noisy about being an object), so q sums to 1 when T's rows do. The product is
    taken in probabilities (float32 at least) and q is floored at the dtype's smallest normal before the
    log, so a class T never produces gives a large but finite loss.
    """
    log_p = _log_probs(logits)
    p = torch.exp(log_p)
    matrix = transition_matrix.to(device=p.device, dtype=p.dtype)
    q_objects = p[:, 1:] @ matrix
    log_q = torch.cat([log_p[:, :1], torch.log(q_objects.clamp_min(torch.finfo(p.dtype).tiny))], dim=1)
    return _ce_values(_at_label(log_q, labels)), {}


def forward_corrected_cross_entropy(logits: Tensor, labels: Tensor, transition_matrix: Tensor,
                                    transition: str = "data", balance: float = 0.0,
                                    reduction: str = "mean") -> Tensor:
    """Cross-entropy of the noisy labels against the model's clean-class probabilities passed through the
    noise, ``-log q[y]`` with ``q = (p_0, p_{1..K} T)`` (forward loss correction, Patrini et al., CVPR 2017).

    The model's softmax estimates the *true* class; the loss compares the *given* label with what the
    noise would make of that estimate, so a label the noise often produces costs little when the model
    puts its mass on a likely true class. With the true T the minimiser is the clean posterior, for
    every class at once: nothing in it depends on a class being learned first (unlike the robust terms,
    whose gradient scales with p[label]).

    Args:
        logits: (N, K+1) raw class scores, column 0 = background.
        labels: (N,) int64 (possibly noisy) class labels in 0..K, 0 = background.
        transition_matrix: (K, K) float, rows summing to 1: T[c, j] = P(given class j+1 | true class c+1).
        transition: where the config took T from ("data" or a matrix file; see
            :mod:`noisyseg.losses.transition`); recorded, not used in the computation.
        balance: b in [0, 1]: the trainer divides T's rows by the true classes' training frequencies to
            the power b (:func:`noisyseg.losses.transition.balanced_matrix`), so a class the model has not
            learned yet keeps its right labels; recorded here, applied to the matrix the trainer gives.
        reduction: "mean" | "sum" | "none".
    """
    _check_inputs(logits, labels, reduction)
    k = logits.shape[1] - 1
    if not torch.is_tensor(transition_matrix) or tuple(transition_matrix.shape) != (k, k):
        raise NoisysegError(f"forward loss: transition_matrix must be a ({k}, {k}) tensor for {k} classes, got "
                            f"{tuple(transition_matrix.shape) if torch.is_tensor(transition_matrix) else shown(transition_matrix)}")
    check_loss_params("forward loss", {"transition": transition, "balance": balance})
    return _reduce(_forward_terms(logits, labels, transition_matrix, transition, balance)[0], reduction)


def _posterior_terms(logits: Tensor, labels: Tensor, class_targets: Tensor, transition: str = "data",
                     target_momentum: float = 1.0) -> tuple[Tensor, dict[str, Tensor]]:
    """Soft-target CE per RoI, (N,): ``-sum_k t_i[k] log p_i[k]`` with ``t = class_targets`` (N, K+1)."""
    log_p = _log_probs(logits)
    return -(class_targets.to(log_p.dtype) * log_p).sum(dim=1), {}


def posterior_cross_entropy(logits: Tensor, labels: Tensor, class_targets: Tensor, transition: str = "data",
                            target_momentum: float = 1.0, reduction: str = "mean") -> Tensor:
    """Cross-entropy against soft targets: each annotation's posterior of its true class given its image
    and its label, ``r[c] ~ p0[c] T[c, y]``, computed at the end of the CE stage from that stage's model
    ``p0`` (the ``posterior`` loss; the trainer computes the targets, the RoI head routes each sampled RoI
    its annotation's). With ``target_momentum`` m < 1 the trainer refreshes them before every later epoch
    from the model as it is then, ``t <- m t + (1 - m) r``: an exponential average over the epochs'
    models (temporal ensembling of the targets); m = 1 keeps the switch's targets to the end.

    Forward correction trains toward the same posterior, but from the model being trained: a class the
    model is unlearning explains its own right labels away, which explains more away (measured on the
    long-tailed Fashion bench: 11 of Shirt's 13 right labels trained as right at the switch, none at the
    end). Fixing the targets at the switch cuts that loop.

    Args:
        logits: (N, K+1) raw class scores, column 0 = background.
        labels: (N,) int64 class labels in 0..K (not used in the value: the targets hold them).
        class_targets: (N, K+1) float, rows summing to 1: a background RoI's is one-hot on column 0.
        transition: where the trainer takes T from (see :mod:`noisyseg.losses.transition`); recorded.
        target_momentum: m in [0, 1], the share of the previous targets a refresh keeps; used by the trainer.
        reduction: "mean" | "sum" | "none".
    """
    _check_inputs(logits, labels, reduction)
    if not torch.is_tensor(class_targets) or tuple(class_targets.shape) != tuple(logits.shape):
        raise NoisysegError(f"posterior loss: class_targets must be a tensor of the logits' shape {tuple(logits.shape)}, "
                            f"got {tuple(class_targets.shape) if torch.is_tensor(class_targets) else shown(class_targets)}")
    check_loss_params("posterior loss", {"transition": transition, "target_momentum": target_momentum})
    return _reduce(_posterior_terms(logits, labels, class_targets, transition, target_momentum)[0], reduction)


# --------------------------------------------------------------------------------------------------
# parameters: every loss declares its parameters in its signature (keyword arguments with defaults)


#: Arguments the caller supplies per call (the RoI head, the trainer), never a config.
PER_CALL_ARGUMENTS: tuple[str, ...] = ("logits", "labels", "reduction", "return_counts", "robust_epoch",
                                        "transition_matrix", "class_targets", "ce_classes")

#: The robust losses by name: a loss with a ``robust`` parameter also takes the chosen one's parameters.
ROBUST_FUNCTIONS: dict[str, Any] = {
    "rce": reverse_cross_entropy,
    "sce": symmetric_cross_entropy,
    "gce": generalized_cross_entropy,
    "apl": active_passive_loss,
}


def loss_parameters(fn) -> dict[str, Any]:
    """The configurable parameters of loss function ``fn`` with their defaults, read off its signature."""
    return {
        k: p.default
        for k, p in inspect.signature(fn).parameters.items()
        if k not in PER_CALL_ARGUMENTS and p.kind is not inspect.Parameter.VAR_KEYWORD
    }


def check_ce_classes(where: str, ce_classes: Any, logits: Tensor) -> Tensor:
    """``ce_classes`` as a (K+1,) bool tensor on the logits' device, else a one-line NoisysegError."""
    if not isinstance(ce_classes, Tensor) or ce_classes.dtype != torch.bool or ce_classes.dim() != 1:
        raise NoisysegError(f"{where}: ce_classes must be a 1-D bool tensor, got {shown(ce_classes)}")
    if ce_classes.shape[0] != logits.shape[1]:
        raise NoisysegError(f"{where}: ce_classes has {ce_classes.shape[0]} entries for {logits.shape[1]} logit "
                            "columns (K+1, background first)")
    return ce_classes.to(logits.device)


def check_robust_epoch(where: str, robust_epoch: Any) -> int:
    """``robust_epoch`` as an int >= 0, else a one-line NoisysegError."""
    if isinstance(robust_epoch, bool) or not isinstance(robust_epoch, int) or robust_epoch < 0:
        raise NoisysegError(f"{where}: robust_epoch must be an integer >= 0, got {shown(robust_epoch)}")
    return robust_epoch


def resolve_params(where: str, fn, given: dict[str, Any]) -> dict[str, Any]:
    """Every parameter of loss function ``fn``: its defaults overridden by ``given``, validated.

    A loss with a ``robust`` parameter (the task-specific loss) also takes the parameters of the robust
    loss it names (``alpha``/``beta`` for sce and apl, ``q`` for gce), with that loss's defaults.
    ``ascent_weights`` comes back as a tuple of floats.

    Raises:
        NoisysegError: one line naming ``where``: a parameter ``fn`` does not take (listing those it
            does), a wrong type or an out-of-range value.
    """
    defaults = loss_parameters(fn)
    resolved = {**defaults, **{k: v for k, v in given.items() if k in defaults}}
    check_loss_params(where, resolved)
    sub_defaults: dict[str, Any] = {}
    if "robust" in resolved:
        sub = loss_parameters(ROBUST_FUNCTIONS[resolved["robust"]])
        sub_defaults = {k: v for k, v in sub.items() if k not in defaults}
    extra = {k: v for k, v in given.items() if k not in defaults}
    unknown = sorted(set(extra) - set(sub_defaults))
    if unknown:
        context = f" with robust={shown(resolved['robust'])}" if "robust" in resolved else ""
        valid = ", ".join(sorted(defaults) + sorted(sub_defaults)) or "none"
        raise NoisysegError(f"{where}: unknown parameter(s) {clipped(', '.join(unknown))}{context}; valid: {valid}")
    chosen = {**sub_defaults, **extra}
    check_loss_params(where, chosen)
    resolved.update(chosen)
    if "ascent_weights" in resolved:
        resolved["ascent_weights"] = tuple(float(w) for w in resolved["ascent_weights"])
    return resolved
