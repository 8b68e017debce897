"""The settings every Mask R-CNN preset shares, with their defaults: the one place that holds them.

This module imports nothing but the standard library, so the config schema (:mod:`noisyseg.config`) takes
its ``model.*`` defaults from here without importing torch, and the builders
(:mod:`noisyseg.models.maskrcnn`) and the engine's adapter (:mod:`noisyseg.engine.build`) read the
same names off :class:`DetectionSettings`.
"""

from __future__ import annotations

from dataclasses import dataclass, fields, replace
from typing import Any, Sequence

from noisyseg.errors import NoisysegError

#: ``backbone_weights`` when none is asked for: random initialisation.
DEFAULT_BACKBONE_WEIGHTS = "none"


@dataclass(frozen=True)
class DetectionSettings:
    """Sampling and inference settings of the RPN and RoI heads, the same for every preset.

    Attributes:
        class_agnostic: one box-regression and one mask channel shared by all classes (beyond the paper).
        rois_per_image: RoIs sampled per image for the RoI heads (the paper: 512).
        positive_fraction: the share of those that are positives (the paper: 0.25).
        rpn_batch_size_per_image: anchors sampled per image for the RPN loss.
        detections_per_image: inference: at most this many detections per image.
        score_threshold: inference: the lowest class score kept.
    """

    class_agnostic: bool = False
    rois_per_image: int = 512
    positive_fraction: float = 0.25
    rpn_batch_size_per_image: int = 256
    detections_per_image: int = 100
    score_threshold: float = 0.05

    @classmethod
    def names(cls) -> tuple[str, ...]:
        """The field names, in order: the keyword arguments every builder takes for them."""
        return tuple(f.name for f in fields(cls))


@dataclass(frozen=True)
class ImageSizes:
    """How a preset scales images: short sides (pixels) drawn uniformly per training image
    (``train_sizes``), the short side at evaluation (``test_size``) and the cap on the long side."""

    train_sizes: tuple[int, ...]
    test_size: int
    max_size: int

    @classmethod
    def names(cls) -> tuple[str, ...]:
        return tuple(f.name for f in fields(cls))


#: The small-image presets (tiny, mobilenet): objects of about 8-128 px in images of about 128 px.
SMALL_IMAGES = ImageSizes(tuple(range(112, 145)), 128, 256)
#: The paper's Cityscapes scales (short side 800-1024 when training, 1024 at test, long side <= 2048).
PAPER_IMAGES = ImageSizes(tuple(range(800, 1025)), 1024, 2048)


def split_options(options: dict[str, Any], sizes: ImageSizes) -> tuple[DetectionSettings, ImageSizes]:
    """A builder's ``**options``: :class:`DetectionSettings` fields over their defaults and
    :class:`ImageSizes` fields over the preset's ``sizes``.

    Raises:
        TypeError: a name that is neither (as Python does for an unknown keyword argument).
        NoisysegError: an empty ``train_sizes``.
    """
    unknown = sorted(set(options) - set(DetectionSettings.names()) - set(ImageSizes.names()))
    if unknown:
        valid = ", ".join(DetectionSettings.names() + ImageSizes.names())
        raise TypeError(f"unexpected keyword argument(s) {', '.join(unknown)}; the presets take {valid}")
    settings = DetectionSettings(**{k: v for k, v in options.items() if k in DetectionSettings.names()})
    given = {k: v for k, v in options.items() if k in ImageSizes.names()}
    if "train_sizes" in given:
        given["train_sizes"] = _sizes(given["train_sizes"])
    return settings, replace(sizes, **given)


def _sizes(values: Sequence[int]) -> tuple[int, ...]:
    sizes = tuple(int(s) for s in values)
    if not sizes:
        raise NoisysegError("train_sizes: expected at least one short-side size")
    return sizes
