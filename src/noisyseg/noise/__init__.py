"""Class-label noise for COCO-format files: symmetric, asymmetric presets, pairs, matrices (numpy only).

``inject(coco, kind, rate, seed, ...) -> (noisy_coco, report)`` is the entry point; see
:mod:`noisyseg.noise.inject` for the exact semantics. This package never imports torch.
"""

from noisyseg.noise.files import format_stats, inject_file
from noisyseg.noise.inject import (KINDS, SAMPLINGS, check_matrix, inject, noise_stats, parse_pairs,
                                   realised_matrix, transition_counts)
from noisyseg.noise.presets import CITYSCAPES, PRESETS, VOC

__all__ = ["CITYSCAPES", "KINDS", "PRESETS", "SAMPLINGS", "VOC", "check_matrix", "format_stats", "inject",
           "inject_file", "noise_stats", "parse_pairs", "realised_matrix", "transition_counts"]
