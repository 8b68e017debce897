"""RoI classification losses: cross-entropy, the noise-robust RCE/SCE/GCE/APL, label smoothing, the paper's
task-specific loss, GOOD (gradient ascent on likely-wrong labels) and forward loss correction through the noise
transition matrix, as functions over
(logits (N, K+1), labels (N,)) and as named, configurable objects.
"""

from noisyseg.losses.functional import (
    DEFAULT_LOG_ZERO,
    GOOD_ASCENT_WEIGHTS,
    ROBUST_LOSSES,
    active_passive_loss,
    cross_entropy,
    foreground_loss_values,
    forward_corrected_cross_entropy,
    generalized_cross_entropy,
    gradient_optimization_loss,
    label_smoothed_cross_entropy,
    reverse_cross_entropy,
    symmetric_cross_entropy,
    task_specific_loss,
)
from noisyseg.losses.registry import RoIClassificationLoss, available_losses, build_loss

__all__ = [
    "DEFAULT_LOG_ZERO",
    "GOOD_ASCENT_WEIGHTS",
    "ROBUST_LOSSES",
    "RoIClassificationLoss",
    "active_passive_loss",
    "available_losses",
    "build_loss",
    "cross_entropy",
    "foreground_loss_values",
    "forward_corrected_cross_entropy",
    "generalized_cross_entropy",
    "gradient_optimization_loss",
    "label_smoothed_cross_entropy",
    "reverse_cross_entropy",
    "symmetric_cross_entropy",
    "task_specific_loss",
]
