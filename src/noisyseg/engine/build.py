"""The one adapter from a run config to the model builders' plain keyword arguments."""

from __future__ import annotations

import inspect

from torchvision.models.detection import MaskRCNN

from noisyseg.config import Config
from noisyseg.errors import NoisysegError
from noisyseg.models import ClassificationLoss, available_models, get_model_builder
from noisyseg.models.settings import DEFAULT_BACKBONE_WEIGHTS, DetectionSettings
from noisyseg.utils.text import shown


def model_kwargs(cfg: Config, num_classes: int, classification_loss: ClassificationLoss | None = None,
                 *, load_backbone_weights: bool = True) -> tuple[str, dict]:
    """The builder name and keyword arguments that ``cfg`` asks for (see :func:`model_from_config`)."""
    m, d = cfg.model, cfg.data
    # the config's model.* keys carry the builders' option names (noisyseg.models.settings), so none is listed here
    kwargs = dict(
        num_classes=num_classes,
        classification_loss=classification_loss,
        **{name: getattr(m, name) for name in DetectionSettings.names()},
        train_sizes=tuple(range(d.train_min_size[0], d.train_min_size[1] + 1)),
        test_size=d.test_min_size,
        max_size=d.max_size,
    )
    if m.name not in available_models():
        raise NoisysegError(f"model.name: unknown model {shown(m.name)}; available: {', '.join(available_models())}")
    takes = inspect.signature(get_model_builder(m.name)).parameters
    if "backbone_weights" in takes:
        kwargs.update(backbone_weights=m.backbone_weights, load_backbone_weights=load_backbone_weights)
    elif m.backbone_weights != DEFAULT_BACKBONE_WEIGHTS:
        raise NoisysegError(f"model.backbone_weights: {m.name} has no pretrained backbone; "
                            f"expected {DEFAULT_BACKBONE_WEIGHTS!r}, got {shown(m.backbone_weights)}")
    return m.name, kwargs


def model_from_config(cfg: Config, num_classes: int, classification_loss: ClassificationLoss | None = None,
                      *, load_backbone_weights: bool = True) -> MaskRCNN:
    """The Mask R-CNN preset ``cfg.model.name`` built from ``cfg.model`` and ``cfg.data``'s image sizes.

    Args:
        cfg: the run config; ``data.train_min_size`` [lo, hi] becomes ``train_sizes`` lo..hi.
        num_classes: K object classes (background is added), e.g. ``LabelMap.num_classes``.
        classification_loss: the RoI classification loss to start with (default: cross-entropy).
        load_backbone_weights: False builds the layout of ``model.backbone_weights`` (frozen batch norm
            when pretrained) without reading a weights file, for loading a whole checkpoint next.

    Raises:
        NoisysegError: one line naming the ``model.*`` key at fault.
    """
    name, kwargs = model_kwargs(cfg, num_classes, classification_loss, load_backbone_weights=load_backbone_weights)
    try:
        return get_model_builder(name)(**kwargs)
    except NoisysegError as e:
        raise NoisysegError(f"model.{e}") from None
