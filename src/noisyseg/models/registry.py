"""Model builders by name (timm style): ``get_model_builder("maskrcnn_tiny")(num_classes=3)``.

A builder is a function of keyword arguments only that returns a torchvision ``MaskRCNN``; see
:mod:`noisyseg.models.maskrcnn` for the presets and their arguments. The registry imports the presets
(one direction: the presets know nothing of the registry); :func:`register_model` adds more.
"""

from __future__ import annotations

from typing import Callable

from torch import nn

from noisyseg.errors import NoisysegError
from noisyseg.models.maskrcnn import maskrcnn_mobilenet_v2_fpn, maskrcnn_r50_fpn, maskrcnn_tiny
from noisyseg.utils.text import shown

ModelBuilder = Callable[..., nn.Module]

_BUILDERS: dict[str, ModelBuilder] = {b.__name__: b for b in (maskrcnn_tiny, maskrcnn_r50_fpn, maskrcnn_mobilenet_v2_fpn)}


def register_model(builder: ModelBuilder) -> ModelBuilder:
    """Decorator: register ``builder`` under its function name."""
    name = builder.__name__
    if name in _BUILDERS:
        raise ValueError(f"model {name!r} is registered twice")
    _BUILDERS[name] = builder
    return builder


def available_models() -> list[str]:
    """Sorted names accepted by :func:`get_model_builder`."""
    return sorted(_BUILDERS)


def get_model_builder(name: str) -> ModelBuilder:
    """The builder registered as ``name``; raises a one-line NoisysegError listing the names otherwise."""
    if name not in _BUILDERS:
        raise NoisysegError(f"unknown model {shown(name)}; available: {', '.join(sorted(_BUILDERS))}")
    return _BUILDERS[name]
