"""Named Mask R-CNN presets, all built on torchvision's ``MaskRCNN`` with :class:`NoisyLabelRoIHeads`.

``maskrcnn_r50_fpn``: the paper's model (ResNet-50-FPN, ImageNet backbone when asked).
``maskrcnn_tiny``: a ~1.5M-parameter from-scratch model for CPU runs on small images.
"""

from __future__ import annotations

import math
import os
from typing import Callable

import torch
from torch import nn
from torchvision.models import ResNet50_Weights, resnet50
from torchvision.models.detection import MaskRCNN
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.detection.backbone_utils import _resnet_fpn_extractor
from torchvision.models.detection.faster_rcnn import FastRCNNPredictor, TwoMLPHead
from torchvision.models.detection.mask_rcnn import MaskRCNNHeads, MaskRCNNPredictor
from torchvision.models.detection.transform import GeneralizedRCNNTransform
from torchvision.ops import MultiScaleRoIAlign, misc as misc_ops
from torchvision.ops.poolers import initLevelMapper

from noisyseg.config import DataConfig, ModelConfig
from noisyseg.errors import NoisysegError
from noisyseg.models.roi_heads import ClassificationLoss, NoisyLabelRoIHeads
from noisyseg.models.tiny import TinyBackbone


class ScaleRangeTransform(GeneralizedRCNNTransform):
    """Resize so the short side is random in ``train_sizes`` when training and ``test_size`` otherwise.

    The draw uses torch's global generator, so it is seeded and restored on resume with the RNG state.
    """

    def __init__(self, train_sizes: tuple[int, ...], test_size: int, max_size: int, **kwargs) -> None:
        super().__init__(min_size=train_sizes, max_size=max_size, **kwargs)
        self.train_sizes = tuple(train_sizes)
        self.test_size = test_size

    def train(self, mode: bool = True):
        super().train(mode)
        self.min_size = self.train_sizes if mode else (self.test_size,)
        return self


class KnownStrideRoIAlign(MultiScaleRoIAlign):
    """Multi-scale RoIAlign over FPN levels whose strides are given, not guessed.

    torchvision's pooler infers each level's scale from the first batch it sees (feature size / largest
    unpadded image size, rounded to a power of two) and caches it. With small images the padding to a
    multiple of 32 skews that guess (a stride-4 level can come out as 1/2), and the result then depends
    on which batch came first, which also breaks exact resume. The strides are known, so set them.
    """

    def __init__(self, featmap_names: list[str], output_size: int, sampling_ratio: int,
                 strides: tuple[int, ...] = (4, 8, 16, 32)) -> None:
        super().__init__(featmap_names, output_size=output_size, sampling_ratio=sampling_ratio)
        self.scales = [1.0 / s for s in strides]
        levels = [int(math.log2(s)) for s in strides]
        self.map_levels = initLevelMapper(levels[0], levels[-1], canonical_scale=224, canonical_level=4)


class ClassAgnosticBoxPredictor(FastRCNNPredictor):
    """Class scores for K+1 classes, but one box-regression channel shared by every class."""

    def __init__(self, in_channels: int, num_classes: int) -> None:
        super().__init__(in_channels, num_classes)
        self.bbox_pred = nn.Linear(in_channels, 4)


def _predictors(in_box: int, in_mask: int, mask_dim: int, num_classes: int, class_agnostic: bool):
    box_cls = ClassAgnosticBoxPredictor if class_agnostic else FastRCNNPredictor
    return box_cls(in_box, num_classes), MaskRCNNPredictor(in_mask, mask_dim, 1 if class_agnostic else num_classes)


# One bilinear sample per RoIAlign bin: torchvision's CPU RoIAlign backward is single-threaded and was
# 39% of a training step with 2x2 samples; at 128 px the bins are about a feature pixel wide anyway.
_TINY_SAMPLING = 1


def _tiny(cfg: ModelConfig, num_classes: int) -> dict:
    backbone = TinyBackbone()
    ch = backbone.out_channels
    box_predictor, mask_predictor = _predictors(256, 64, 64, num_classes, cfg.class_agnostic)
    return dict(
        backbone=backbone,
        rpn_anchor_generator=AnchorGenerator(((8,), (16,), (32,), (64,), (128,)), ((0.5, 1.0, 2.0),) * 5),
        rpn_pre_nms_top_n_train=600,
        rpn_post_nms_top_n_train=300,
        rpn_pre_nms_top_n_test=300,
        rpn_post_nms_top_n_test=150,
        box_roi_pool=KnownStrideRoIAlign(["0", "1", "2", "3"], output_size=7, sampling_ratio=_TINY_SAMPLING),
        box_head=TwoMLPHead(ch * 7 * 7, 256),
        box_predictor=box_predictor,
        mask_roi_pool=KnownStrideRoIAlign(["0", "1", "2", "3"], output_size=14, sampling_ratio=_TINY_SAMPLING),
        mask_head=MaskRCNNHeads(ch, (64, 64), 1),
        mask_predictor=mask_predictor,
    )


def _load_resnet50_weights(spec: str) -> dict | None:
    if spec == "none":
        return None
    if spec == "imagenet":
        weights = ResNet50_Weights.IMAGENET1K_V1
        try:
            return weights.get_state_dict(progress=True, check_hash=True)
        except Exception as e:  # offline: URLError / OSError / RuntimeError from the hub download
            cache = os.path.join(torch.hub.get_dir(), "checkpoints", os.path.basename(weights.url))
            raise NoisysegError(
                f"model.backbone_weights=imagenet: cannot download {weights.url} ({type(e).__name__}); "
                f"copy that file to {cache} or set model.backbone_weights to its path"
            ) from None
    if not os.path.isfile(spec):
        raise NoisysegError(f"model.backbone_weights: {spec} is not 'imagenet', 'none' or an existing file")
    try:
        state = torch.load(spec, map_location="cpu", weights_only=True)
    except Exception as e:
        raise NoisysegError(f"model.backbone_weights: cannot read {spec} as a torch state dict ({e})") from None
    return state.get("state_dict", state) if isinstance(state, dict) else state


def _r50_fpn(cfg: ModelConfig, num_classes: int) -> dict:
    state = _load_resnet50_weights(cfg.backbone_weights)
    pretrained = state is not None
    # As in torchvision: frozen BN and the first stages frozen when starting from ImageNet weights.
    resnet = resnet50(weights=None, norm_layer=misc_ops.FrozenBatchNorm2d if pretrained else nn.BatchNorm2d)
    if pretrained:
        missing, unexpected = resnet.load_state_dict(state, strict=False)
        missing = [k for k in missing if not k.startswith("fc.")]
        if missing:
            raise NoisysegError(
                f"model.backbone_weights: {cfg.backbone_weights} is not a ResNet-50 state dict "
                f"(missing {len(missing)} keys, e.g. {missing[0]})"
            )
    backbone = _resnet_fpn_extractor(resnet, trainable_layers=3 if pretrained else 5)
    box_predictor, mask_predictor = _predictors(1024, 256, 256, num_classes, cfg.class_agnostic)
    return dict(backbone=backbone, box_predictor=box_predictor, mask_predictor=mask_predictor,
                box_roi_pool=KnownStrideRoIAlign(["0", "1", "2", "3"], output_size=7, sampling_ratio=2),
                mask_roi_pool=KnownStrideRoIAlign(["0", "1", "2", "3"], output_size=14, sampling_ratio=2))


_PRESETS: dict[str, Callable[[ModelConfig, int], dict]] = {
    "maskrcnn_tiny": _tiny,
    "maskrcnn_r50_fpn": _r50_fpn,
}


def available_models() -> list[str]:
    return sorted(_PRESETS)


def build_model(
    cfg: ModelConfig, data: DataConfig, num_classes: int, classification_loss: ClassificationLoss
) -> MaskRCNN:
    """Mask R-CNN preset ``cfg.name`` for ``num_classes`` object classes (K; background is added).

    ``classification_loss`` is the RoI-head classification loss to start with; swap it later through
    ``model.roi_heads.set_classification_loss``.
    """
    if cfg.name not in _PRESETS:
        raise NoisysegError(f"model.name: unknown model {cfg.name!r}; available: {', '.join(available_models())}")
    parts = _PRESETS[cfg.name](cfg, num_classes + 1)
    model = MaskRCNN(
        num_classes=None,
        min_size=data.test_min_size,
        max_size=data.max_size,
        rpn_batch_size_per_image=cfg.rpn_batch_size_per_image,
        box_batch_size_per_image=cfg.rois_per_image,
        box_positive_fraction=cfg.positive_fraction,
        box_detections_per_img=cfg.detections_per_image,
        box_score_thresh=cfg.score_threshold,
        **parts,
    )
    lo, hi = data.train_min_size
    model.transform = ScaleRangeTransform(
        tuple(range(lo, hi + 1)), data.test_min_size, data.max_size,
        image_mean=model.transform.image_mean, image_std=model.transform.image_std,
    )
    model.roi_heads = NoisyLabelRoIHeads.replacing(model.roi_heads, classification_loss, cfg.class_agnostic)
    return model
