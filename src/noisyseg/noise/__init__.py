"""Class-label noise for COCO-format files: symmetric, asymmetric presets, pairs, matrices (numpy only)."""

from noisyseg.noise.inject import KINDS, SAMPLINGS, inject, parse_pairs, realised_matrix, transition_counts
from noisyseg.noise.presets import PRESETS

__all__ = ["KINDS", "PRESETS", "SAMPLINGS", "inject", "parse_pairs", "realised_matrix", "transition_counts"]
