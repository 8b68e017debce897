"""Mask R-CNN models with an injectable RoI classification loss."""

from noisyseg.models.registry import ScaleRangeTransform, available_models, build_model
from noisyseg.models.roi_heads import NoisyLabelRoIHeads, box_regression_loss

__all__ = ["NoisyLabelRoIHeads", "ScaleRangeTransform", "available_models", "box_regression_loss", "build_model"]
