"""Mask R-CNN models with an injectable RoI classification loss.

Builders are typed functions of plain keyword arguments (:mod:`noisyseg.models.maskrcnn`), found by name
through :func:`get_model_builder`; this layer knows nothing of noisyseg's config files (the engine's
``model_from_config`` is the one adapter). The defaults the presets share live in
:mod:`noisyseg.models.settings`, which imports no torch.

The names below are imported on first use (PEP 562), so that the config schema can read
:mod:`noisyseg.models.settings` without importing torch and torchvision.
"""

from importlib import import_module
from typing import Any

# name -> the submodule that defines it
_HOMES = {
    "ClassificationLoss": "roi_heads",
    "DetectionSettings": "settings",
    "ImageSizes": "settings",
    "KnownStrideRoIAlign": "parts",
    "NoisyLabelRoIHeads": "roi_heads",
    "ScaleRangeTransform": "parts",
    "available_models": "registry",
    "get_model_builder": "registry",
    "maskrcnn_mobilenet_v2_fpn": "maskrcnn",
    "maskrcnn_r50_fpn": "maskrcnn",
    "maskrcnn_tiny": "maskrcnn",
    "register_model": "registry",
}

__all__ = [  # the keys of _HOMES, written out for tools that read __all__ without running the module
    "ClassificationLoss", "DetectionSettings", "ImageSizes", "KnownStrideRoIAlign", "NoisyLabelRoIHeads",
    "ScaleRangeTransform", "available_models", "get_model_builder", "maskrcnn_mobilenet_v2_fpn", "maskrcnn_r50_fpn",
    "maskrcnn_tiny", "register_model",
]


def __getattr__(name: str) -> Any:
    if name not in _HOMES:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(import_module(f"{__name__}.{_HOMES[name]}"), name)
    globals()[name] = value  # later look-ups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_HOMES))
