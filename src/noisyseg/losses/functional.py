"""Noise-robust classification losses for the Mask R-CNN RoI box head (DESIGN.md §1).

Shapes, for every function: ``logits`` (N, K+1) raw class scores of N sampled RoIs, column 0 the
background; ``labels`` (N,) int64 in 0..K (0 = background), possibly noisy. ``reduction`` is
``"mean"`` (sum / N), ``"sum"`` or ``"none"`` (per-RoI values, shape (N,)).

Everything is computed in float32 or wider from one ``log_softmax`` (never ``log(0)``), fully
vectorised, and without host-device synchronisation.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from noisyseg.errors import NoisysegError

#: ln(1e-4): the value that stands in for log(0) of the one-hot label in the reverse cross-entropy,
#: matching the reference implementation's clamp of the one-hot target at 1e-4.
DEFAULT_LOG_ZERO = math.log(1e-4)

_REDUCTIONS = ("mean", "sum", "none")


def _check(logits: Tensor, labels: Tensor, reduction: str) -> None:
    if logits.dim() != 2:
        raise NoisysegError(f"logits must have shape (N, K+1), got {tuple(logits.shape)}")
    if labels.dim() != 1 or labels.shape[0] != logits.shape[0]:
        raise NoisysegError(f"labels must have shape ({logits.shape[0]},), got {tuple(labels.shape)}")
    if labels.dtype not in (torch.int64, torch.int32):
        raise NoisysegError(f"labels must be int64, got {labels.dtype}")
    if reduction not in _REDUCTIONS:
        raise NoisysegError(f"reduction must be one of {', '.join(_REDUCTIONS)}, got {reduction!r}")
    if labels.numel() and not labels.is_cuda:  # on CUDA this check would force a sync: skipped
        lo, hi = int(labels.min()), int(labels.max())
        if lo < 0 or hi >= logits.shape[1]:
            raise NoisysegError(
                f"labels must be in 0..{logits.shape[1] - 1} (0 = background), got values in {lo}..{hi}"
            )


def _log_probs(logits: Tensor) -> Tensor:
    """log p, (N, K+1), in float32 even for half-precision logits (float64 stays float64)."""
    if logits.dtype in (torch.float16, torch.bfloat16):
        logits = logits.float()
    return torch.log_softmax(logits, dim=1)


def _reduce(values: Tensor, reduction: str) -> Tensor:
    if reduction == "none":
        return values
    total = values.sum()
    if reduction == "sum":
        return total
    return total / max(values.shape[0], 1)


def _label_log_prob(log_p: Tensor, labels: Tensor) -> Tensor:
    """log p_i[y_i], (N,). Gathered once per loss: each gather costs an (N, K+1) scatter in backward."""
    return log_p.gather(1, labels[:, None].long()).squeeze(1)


def _ce_terms(log_p_y: Tensor) -> Tensor:
    return -log_p_y


def _rce_terms(log_p_y: Tensor, log_zero: float) -> Tensor:
    # -sum_k p[k] log q[k] with q one-hot and log 0 := A  ->  -A * (1 - p[y])
    return -log_zero * (1.0 - log_p_y.exp())


def _gce_terms(log_p_y: Tensor, q: float) -> Tensor:
    return (1.0 - torch.exp(q * log_p_y)) / q


def _nce_terms(log_p: Tensor, log_p_y: Tensor) -> Tensor:
    # CE normalised by the CE summed over every possible label: -log p[y] / sum_k -log p[k]
    return log_p_y / log_p.sum(dim=1)


def cross_entropy(logits: Tensor, labels: Tensor, reduction: str = "mean") -> Tensor:
    """CE_i = -log p_i[y_i]."""
    _check(logits, labels, reduction)
    return _reduce(_ce_terms(_label_log_prob(_log_probs(logits), labels)), reduction)


def reverse_cross_entropy(logits: Tensor, labels: Tensor, log_zero: float = DEFAULT_LOG_ZERO,
                          reduction: str = "mean") -> Tensor:
    """RCE_i = -sum_k p_i[k] log q_i[k], q the one-hot label with log 0 replaced by ``log_zero`` (A).

    Equals ``-A * (1 - p_i[y_i])``; bounded in [0, -A], which is what makes it robust to wrong labels.
    """
    _check(logits, labels, reduction)
    return _reduce(_rce_terms(_label_log_prob(_log_probs(logits), labels), log_zero), reduction)


def symmetric_cross_entropy(logits: Tensor, labels: Tensor, alpha: float = 1.0, beta: float = 0.1,
                            log_zero: float = DEFAULT_LOG_ZERO, reduction: str = "mean") -> Tensor:
    """SCE_i = alpha * CE_i + beta * RCE_i (Wang et al., ICCV 2019; reference defaults 1.0 and 0.1)."""
    _check(logits, labels, reduction)
    log_p_y = _label_log_prob(_log_probs(logits), labels)
    return _reduce(alpha * _ce_terms(log_p_y) + beta * _rce_terms(log_p_y, log_zero), reduction)


def generalized_cross_entropy(logits: Tensor, labels: Tensor, q: float = 0.3, reduction: str = "mean") -> Tensor:
    """GCE_i = (1 - p_i[y_i]^q) / q (Zhang & Sabuncu, NeurIPS 2018); q -> 0 gives CE, q = 1 gives MAE."""
    _check(logits, labels, reduction)
    return _reduce(_gce_terms(_label_log_prob(_log_probs(logits), labels), q), reduction)


def active_passive_loss(logits: Tensor, labels: Tensor, alpha: float = 1.0, beta: float = 1.0,
                        log_zero: float = DEFAULT_LOG_ZERO, reduction: str = "mean") -> Tensor:
    """APL_i = alpha * NCE_i + beta * RCE_i (Ma et al., ICML 2020: normalised CE as the active term,
    RCE as the passive one), with NCE_i = CE_i / sum_k (-log p_i[k])."""
    _check(logits, labels, reduction)
    log_p = _log_probs(logits)
    log_p_y = _label_log_prob(log_p, labels)
    return _reduce(alpha * _nce_terms(log_p, log_p_y) + beta * _rce_terms(log_p_y, log_zero), reduction)


ROBUST_TERMS = ("rce", "sce", "gce", "apl")


def _robust_terms(name: str, log_p: Tensor, log_p_y: Tensor, log_zero: float, kwargs: dict) -> Tensor:
    if name == "rce":
        return _rce_terms(log_p_y, log_zero)
    if name == "sce":
        return kwargs.get("alpha", 1.0) * _ce_terms(log_p_y) + kwargs.get("beta", 0.1) * _rce_terms(log_p_y, log_zero)
    if name == "gce":
        return _gce_terms(log_p_y, kwargs.get("q", 0.3))
    if name == "apl":
        return kwargs.get("alpha", 1.0) * _nce_terms(log_p, log_p_y) + kwargs.get("beta", 1.0) * _rce_terms(
            log_p_y, log_zero)
    raise NoisysegError(f"robust loss must be one of {', '.join(ROBUST_TERMS)}, got {name!r}")


_FUSED_ROBUST = ("rce", "sce", "gce")


class _FusedTaskSpecific(torch.autograd.Function):
    """Per-RoI task-specific values with a one-pass analytic gradient.

    For CE, RCE, SCE and GCE the gradient of a RoI's value with respect to its logits is a scalar times
    (p - onehot(y)): CE -> 1, RCE -> -A p_y, SCE -> alpha - beta A p_y, GCE -> p_y^q. So the backward is
    one (N, K+1) expression, like plain CE's, instead of autograd's chain of gathers and scatters.
    """

    @staticmethod
    def forward(ctx, logits, labels, ce_set, rest, robust, ce_weight, robust_weight, pon_threshold, log_zero, kw):
        log_p = _log_probs(logits.detach())
        log_p_y = _label_log_prob(log_p, labels)
        p_y = log_p_y.exp()
        ce = -log_p_y
        if robust == "rce":
            r, dr = -log_zero * (1.0 - p_y), -log_zero * p_y
        elif robust == "sce":
            alpha, beta = kw.get("alpha", 1.0), kw.get("beta", 0.1)
            r, dr = alpha * ce + beta * -log_zero * (1.0 - p_y), alpha + beta * -log_zero * p_y
        else:  # gce
            q = kw.get("q", 0.3)
            p_y_q = torch.exp(q * log_p_y)
            r, dr = (1.0 - p_y_q) / q, p_y_q
        keep = rest if pon_threshold is None else rest & (ce <= pon_threshold)
        zero = torch.zeros((), dtype=ce.dtype, device=ce.device)
        values = torch.where(ce_set, ce_weight * ce, zero) + torch.where(keep, robust_weight * r, zero)
        coef = torch.where(ce_set, torch.full_like(ce, ce_weight), zero) + torch.where(keep, robust_weight * dr, zero)
        ctx.save_for_backward(log_p, labels, coef)
        ctx.in_dtype = logits.dtype
        ctx.mark_non_differentiable(ce)
        return values, ce

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_values, _grad_ce):
        log_p, labels, coef = ctx.saved_tensors
        scale = (grad_values * coef)[:, None]
        grad = log_p.exp().mul_(scale)
        grad.scatter_add_(1, labels[:, None], -scale)
        return grad.to(ctx.in_dtype), None, None, None, None, None, None, None, None, None


def task_specific_loss(logits: Tensor, labels: Tensor, robust: str = "rce", ce_weight: float = 1.0,
                       robust_weight: float = 1.0, pon_threshold: float | None = None,
                       log_zero: float = DEFAULT_LOG_ZERO, reduction: str = "mean", return_counts: bool = False,
                       **robust_kwargs) -> Tensor | tuple[Tensor, dict[str, Tensor]]:
    """The paper's task-specific ("LNCIS") RoI classification loss.

    The N RoIs are split into four sets (DESIGN.md §1):

    - NEG: ``y_i = 0`` -> CE (background vs foreground is learned with CE);
    - PSN: ``y_i > 0`` and ``argmax_k p_i[k] = 0`` (a labelled object the model calls background) -> CE;
    - PON: ``y_i > 0``, not PSN, ``CE_i > pon_threshold`` (only when a threshold is given) -> 0;
    - OS: every other foreground RoI -> the robust loss ``robust`` ("rce" | "sce" | "gce" | "apl"),
      with ``robust_kwargs`` (alpha/beta/q) passed to it.

    Per RoI: ``ce_weight * CE_i`` on NEG ∪ PSN, ``robust_weight * R_i`` on OS, 0 on PON; "mean" divides
    the sum by **all** N RoIs. With ``return_counts`` also returns ``{"neg", "psn", "os", "pon"}``: the
    set sizes as 0-dim int64 tensors on the logits' device.
    """
    _check(logits, labels, reduction)
    unknown = set(robust_kwargs) - {"alpha", "beta", "q"}
    if unknown:
        raise NoisysegError(f"task_specific_loss: unknown parameter(s) {', '.join(sorted(unknown))}")
    labels = labels.long()
    fg = labels > 0
    neg = ~fg
    # argmax_k p[k] = 0  <=>  the background logit is at least every other logit (argmax picks the first
    # maximum, so ties go to background too); amax vectorises where argmax does not
    z = logits.detach()
    psn = fg & (z[:, 0] >= z[:, 1:].amax(dim=1))
    rest = fg & ~psn
    ce_set = neg | psn
    if robust in _FUSED_ROBUST:
        values, ce = _FusedTaskSpecific.apply(logits, labels, ce_set, rest, robust, ce_weight, robust_weight,
                                              pon_threshold, log_zero, robust_kwargs)
    else:
        log_p = _log_probs(logits)
        log_p_y = _label_log_prob(log_p, labels)
        ce = _ce_terms(log_p_y).detach()
        robust_values = _robust_terms(robust, log_p, log_p_y, log_zero, robust_kwargs)
        zero = torch.zeros((), dtype=robust_values.dtype, device=robust_values.device)
        keep = rest if pon_threshold is None else rest & (ce <= pon_threshold)
        values = torch.where(ce_set, ce_weight * _ce_terms(log_p_y), zero) + \
            torch.where(keep, robust_weight * robust_values, zero)
    if pon_threshold is not None:
        pon = rest & (ce > pon_threshold)
        os_set = rest & ~pon
    else:
        pon = torch.zeros_like(rest)
        os_set = rest
    loss = _reduce(values, reduction)
    if not return_counts:
        return loss
    counts = {"neg": neg.sum(), "psn": psn.sum(), "os": os_set.sum(), "pon": pon.sum()}
    return loss, counts
