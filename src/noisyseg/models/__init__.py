"""Mask R-CNN models with an injectable RoI classification loss.

Builders are typed functions of plain keyword arguments (:mod:`noisyseg.models.maskrcnn`), found by name
through :func:`get_model_builder`; this layer knows nothing of noisyseg's config files (the engine's
``model_from_config`` is the one adapter).
"""

from noisyseg.models.maskrcnn import maskrcnn_mobilenet_v2_fpn, maskrcnn_r50_fpn, maskrcnn_tiny
from noisyseg.models.parts import KnownStrideRoIAlign, ScaleRangeTransform
from noisyseg.models.registry import available_models, get_model_builder, register_model
from noisyseg.models.roi_heads import ClassificationLoss, NoisyLabelRoIHeads

__all__ = [
    "ClassificationLoss",
    "KnownStrideRoIAlign",
    "NoisyLabelRoIHeads",
    "ScaleRangeTransform",
    "available_models",
    "get_model_builder",
    "maskrcnn_mobilenet_v2_fpn",
    "maskrcnn_r50_fpn",
    "maskrcnn_tiny",
    "register_model",
]
