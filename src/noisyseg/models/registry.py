"""Model builders by name (timm style): ``get_model_builder("maskrcnn_tiny")(num_classes=3)``.

A builder is a function of keyword arguments only that returns a torchvision ``MaskRCNN``; see
:mod:`noisyseg.models.maskrcnn` for the presets and their arguments.
"""

from __future__ import annotations

from typing import Callable

from torch import nn

from noisyseg.errors import NoisysegError

ModelBuilder = Callable[..., nn.Module]

_BUILDERS: dict[str, ModelBuilder] = {}


def register_model(builder: ModelBuilder) -> ModelBuilder:
    """Decorator: register ``builder`` under its function name."""
    name = builder.__name__
    if name in _BUILDERS:
        raise ValueError(f"model {name!r} is registered twice")
    _BUILDERS[name] = builder
    return builder


def _load_presets() -> None:
    import noisyseg.models.maskrcnn  # noqa: F401  (its builders register themselves on import)


def available_models() -> list[str]:
    """Sorted names accepted by :func:`get_model_builder`."""
    _load_presets()
    return sorted(_BUILDERS)


def get_model_builder(name: str) -> ModelBuilder:
    """The builder registered as ``name``; raises a one-line NoisysegError listing the names otherwise."""
    _load_presets()
    if name not in _BUILDERS:
        raise NoisysegError(f"unknown model {name!r}; available: {', '.join(sorted(_BUILDERS))}")
    return _BUILDERS[name]
