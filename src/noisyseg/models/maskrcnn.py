"""The Mask R-CNN presets: typed builders of plain keyword arguments, all on torchvision's ``MaskRCNN``.

- ``maskrcnn_r50_fpn``: the paper's model (ResNet-50-FPN; ImageNet backbone when asked).
- ``maskrcnn_tiny``: a ~1.7M-parameter from-scratch model for CPU runs on small images.
- ``maskrcnn_mobilenet_v2_fpn``: an ImageNet MobileNetV2 with an FPN over its stage ends and the tiny
  model's anchors and heads (3.44M parameters with 10 classes): a pretrained model that trains on a CPU.

Every builder returns a ``MaskRCNN`` whose ``roi_heads`` is a :class:`NoisyLabelRoIHeads` (the injected
RoI classification loss) and whose ``transform`` is a :class:`ScaleRangeTransform`. Shared arguments:

    num_classes: K object classes (label 0, background, is added: the box head has K+1 outputs).
    classification_loss: the RoI classification loss to start with, ``(logits, labels) -> (loss, stats)``;
        default noisyseg's cross-entropy. Swap it later with ``model.roi_heads.set_classification_loss``.
    **options: the fields of :class:`~noisyseg.models.settings.DetectionSettings` (``class_agnostic``,
        ``rois_per_image``, ``positive_fraction``, ``rpn_batch_size_per_image``, ``detections_per_image``,
        ``score_threshold``; their defaults are held there, the one place) and of
        :class:`~noisyseg.models.settings.ImageSizes` (``train_sizes``: short sides drawn uniformly per
        training image; ``test_size``: the short side at evaluation; ``max_size``: cap on the long side;
        defaults per preset). Any other name raises TypeError.

``backbone_weights`` (r50, mobilenet): ``"imagenet"`` (torchvision's weights API), ``"none"`` (random
init) or the path of a state dict of the classification network. ``trainable_backbone_layers`` follows
torchvision (default: 3 when pretrained, all when not; pretrained backbones also get frozen batch norm).
``load_backbone_weights=False`` builds the layout that ``backbone_weights`` implies (frozen batch norm and
stages unless "none") without reading any weights file: for a model whose whole state dict is loaded next.
"""

from __future__ import annotations

from typing import Any

from torch import nn
from torchvision.models import MobileNet_V2_Weights, ResNet50_Weights
from torchvision.models.detection import MaskRCNN
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.detection.backbone_utils import resnet_fpn_backbone
from torchvision.models.detection.faster_rcnn import FastRCNNPredictor, TwoMLPHead
from torchvision.models.detection.mask_rcnn import MaskRCNNHeads, MaskRCNNPredictor
from torchvision.ops import misc as misc_ops

from noisyseg.errors import NoisysegError
from noisyseg.models.mobilenet import mobilenet_v2_fpn_backbone
from noisyseg.models.parts import KnownStrideRoIAlign, ScaleRangeTransform
from noisyseg.models.settings import (
    DEFAULT_BACKBONE_WEIGHTS,
    PAPER_IMAGES,
    SMALL_IMAGES,
    DetectionSettings,
    ImageSizes,
    split_options,
)
from noisyseg.models.roi_heads import (
    ClassAgnosticBoxPredictor,
    ClassAgnosticMaskPredictor,
    ClassificationLoss,
    NoisyLabelRoIHeads,
)
from noisyseg.models.tiny import TinyBackbone
from noisyseg.models.weights import backbone_state_dict, load_backbone

_FPN_LEVELS = ["0", "1", "2", "3"]


def _predictors(in_box: int, in_mask: int, mask_dim: int, num_classes: int, class_agnostic: bool):
    """Box and mask predictors for ``num_classes`` = K+1 outputs (class-agnostic: one shared channel)."""
    if class_agnostic:
        return ClassAgnosticBoxPredictor(in_box, num_classes), ClassAgnosticMaskPredictor(in_mask, mask_dim, num_classes)
    return FastRCNNPredictor(in_box, num_classes), MaskRCNNPredictor(in_mask, mask_dim, num_classes)


# One bilinear sample per RoIAlign bin: torchvision's CPU RoIAlign backward is single-threaded and was
# 39% of a training step with 2x2 samples; at 128 px the bins are about a feature pixel wide anyway.
_SMALL_SAMPLING = 1


def _small_image_parts(fpn_channels: int, num_classes: int, class_agnostic: bool) -> dict:
    """Anchors, RPN budgets and RoI heads of the small-image presets (objects of ~8-128 px).

    The predictors are built before the heads: that order fixes which random numbers initialise what.
    """
    box_predictor, mask_predictor = _predictors(256, 64, 64, num_classes, class_agnostic)
    return dict(
        rpn_anchor_generator=AnchorGenerator(((8,), (16,), (32,), (64,), (128,)), ((0.5, 1.0, 2.0),) * 5),
        rpn_pre_nms_top_n_train=600,
        rpn_post_nms_top_n_train=300,
        rpn_pre_nms_top_n_test=300,
        rpn_post_nms_top_n_test=150,
        box_roi_pool=KnownStrideRoIAlign(_FPN_LEVELS, output_size=7, sampling_ratio=_SMALL_SAMPLING),
        box_head=TwoMLPHead(fpn_channels * 7 * 7, 256),
        box_predictor=box_predictor,
        mask_roi_pool=KnownStrideRoIAlign(_FPN_LEVELS, output_size=14, sampling_ratio=_SMALL_SAMPLING),
        mask_head=MaskRCNNHeads(fpn_channels, (64, 64), 1),
        mask_predictor=mask_predictor,
    )


def _assemble(backbone: nn.Module, parts: dict, classification_loss: ClassificationLoss | None,
              settings: DetectionSettings, sizes: ImageSizes) -> MaskRCNN:
    """torchvision's ``MaskRCNN`` over ``backbone`` and ``parts``, with noisyseg's transform and RoI heads."""
    if classification_loss is None:
        from noisyseg.losses import build_loss

        classification_loss = build_loss("ce")
    model = MaskRCNN(
        backbone,
        num_classes=None,
        min_size=sizes.test_size,
        max_size=sizes.max_size,
        rpn_batch_size_per_image=settings.rpn_batch_size_per_image,
        box_batch_size_per_image=settings.rois_per_image,
        box_positive_fraction=settings.positive_fraction,
        box_detections_per_img=settings.detections_per_image,
        box_score_thresh=settings.score_threshold,
        **parts,
    )
    model.transform = ScaleRangeTransform(sizes.train_sizes, sizes.test_size, sizes.max_size,
                                          image_mean=model.transform.image_mean, image_std=model.transform.image_std)
    model.roi_heads = NoisyLabelRoIHeads.from_roi_heads(model.roi_heads, classification_loss)
    return model


def maskrcnn_tiny(*, num_classes: int, classification_loss: ClassificationLoss | None = None,
                  **options: Any) -> MaskRCNN:
    """From-scratch Mask R-CNN with :class:`TinyBackbone` (GroupNorm, 64-channel FPN) for CPU runs.

    ``options``: :class:`DetectionSettings` and :class:`ImageSizes` fields (default
    :data:`SMALL_IMAGES`); see the module docstring. About 1.7M parameters for K = 3.
    """
    settings, sizes = split_options(options, SMALL_IMAGES)
    backbone = TinyBackbone()
    parts = _small_image_parts(backbone.out_channels, num_classes + 1, settings.class_agnostic)
    return _assemble(backbone, parts, classification_loss, settings, sizes)


def maskrcnn_r50_fpn(*, num_classes: int, backbone_weights: str = DEFAULT_BACKBONE_WEIGHTS,
                     load_backbone_weights: bool = True, trainable_backbone_layers: int | None = None,
                     classification_loss: ClassificationLoss | None = None, **options: Any) -> MaskRCNN:
    """The paper's Mask R-CNN: ResNet-50-FPN (256 channels), torchvision's anchors and heads.

    ``backbone_weights="imagenet"`` loads ``ResNet50_Weights.IMAGENET1K_V1``; with weights, batch norm is
    frozen and ``trainable_backbone_layers`` (0..5, default 3) of the stages from the top train.
    Image sizes default to the paper's Cityscapes ones (:data:`PAPER_IMAGES`). Other arguments: the
    module docstring.
    """
    settings, sizes = split_options(options, PAPER_IMAGES)
    state = backbone_state_dict(backbone_weights, ResNet50_Weights.IMAGENET1K_V1) if load_backbone_weights else None
    pretrained = backbone_weights != DEFAULT_BACKBONE_WEIGHTS
    if trainable_backbone_layers is None:
        trainable_backbone_layers = 3 if pretrained else 5
    if not 0 <= trainable_backbone_layers <= 5:
        raise NoisysegError(f"trainable_backbone_layers: expected 0..5 for ResNet-50, got {trainable_backbone_layers}")
    backbone = resnet_fpn_backbone(
        backbone_name="resnet50", weights=None, trainable_layers=trainable_backbone_layers,
        norm_layer=misc_ops.FrozenBatchNorm2d if pretrained else nn.BatchNorm2d,
    )
    if state is not None:
        load_backbone(backbone.body, state, backbone_weights, "ResNet-50", unused_prefix="fc.")
    box_predictor, mask_predictor = _predictors(1024, 256, 256, num_classes + 1, settings.class_agnostic)
    parts = dict(box_predictor=box_predictor, mask_predictor=mask_predictor,
                 box_roi_pool=KnownStrideRoIAlign(_FPN_LEVELS, output_size=7, sampling_ratio=2),
                 mask_roi_pool=KnownStrideRoIAlign(_FPN_LEVELS, output_size=14, sampling_ratio=2))
    return _assemble(backbone, parts, classification_loss, settings, sizes)


def maskrcnn_mobilenet_v2_fpn(*, num_classes: int, backbone_weights: str = DEFAULT_BACKBONE_WEIGHTS,
                              load_backbone_weights: bool = True, trainable_backbone_layers: int | None = None,
                              classification_loss: ClassificationLoss | None = None, **options: Any) -> MaskRCNN:
    """MobileNetV2 with a 64-channel FPN over its stage ends (strides 4-32), the tiny model's anchors and heads.

    ``backbone_weights="imagenet"`` loads ``MobileNet_V2_Weights.IMAGENET1K_V1`` from the torch hub cache
    (offline: ``noisyseg weights fetch mobilenet_v2`` installs it); with weights, batch norm is frozen and
    ``trainable_backbone_layers`` (0..6, default 3) of the 6 stages from the top train, as in
    torchvision. Image sizes default to :data:`SMALL_IMAGES`. Other arguments: the module docstring.
    """
    settings, sizes = split_options(options, SMALL_IMAGES)
    state = None
    if load_backbone_weights:
        state = backbone_state_dict(backbone_weights, MobileNet_V2_Weights.IMAGENET1K_V1, fetch_name="mobilenet_v2")
    backbone = mobilenet_v2_fpn_backbone(state_dict=state, pretrained=backbone_weights != DEFAULT_BACKBONE_WEIGHTS,
                                         fpn_channels=64, trainable_layers=trainable_backbone_layers,
                                         source=backbone_weights)
    parts = _small_image_parts(backbone.out_channels, num_classes + 1, settings.class_agnostic)
    return _assemble(backbone, parts, classification_loss, settings, sizes)
