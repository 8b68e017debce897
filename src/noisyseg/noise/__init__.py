"""Class-label noise for COCO-format files: symmetric, asymmetric presets, pairs, matrices (numpy only).

``inject(coco, kind, rate, seed, ...) -> (noisy_coco, report)`` is the entry point; see
:mod:`noisyseg.noise.inject` for the exact semantics. ``predict_precision(coco, kind, rate, ...)`` says,
before injecting, what share of each class's labels will still be right (label precision). This package
never imports torch.
"""

from noisyseg.noise.files import format_precision, format_prediction, format_stats, inject_file, predict_file
from noisyseg.noise.inject import (KINDS, SAMPLINGS, check_matrix, inject, noise_stats, parse_pairs,
                                   predict_precision, realised_matrix, transition_counts)
from noisyseg.noise.presets import CITYSCAPES, PRESETS, VOC

__all__ = ["CITYSCAPES", "KINDS", "PRESETS", "SAMPLINGS", "VOC", "check_matrix", "format_precision",
           "format_prediction", "format_stats", "inject", "inject_file", "noise_stats", "parse_pairs", "predict_file",
           "predict_precision", "realised_matrix", "transition_counts"]
