"""MobileNetV2 + FPN over its stage ends (strides 4, 8, 16, 32), for small images on a CPU.

torchvision's ``mobilenet_backbone(fpn=True)`` feeds the FPN from the last two stage starts of
MobileNetV2, both at stride 32 (4x4 maps for a 128 px image). Here the FPN reads the last block of each
stage instead: ``features[3]`` (stride 4, 24 channels), ``features[6]`` (8, 32), ``features[13]`` (16, 96)
and ``features[18]`` (32, 1280), plus a max-pooled level ("pool", stride 64), like the ResNet FPNs.
"""

from __future__ import annotations

from torch import nn
from torchvision.models import mobilenet_v2
from torchvision.models.detection.backbone_utils import BackboneWithFPN
from torchvision.ops import misc as misc_ops
from torchvision.ops.feature_pyramid_network import LastLevelMaxPool

from noisyseg.errors import NoisysegError


def stage_starts(features: nn.Sequential) -> list[int]:
    """Indices in ``features`` where torchvision's MobileNet stages start: the stem, each strided block, the
    last block (MobileNetV2: [0, 2, 4, 7, 14, 18]). ``trainable_layers`` counts these from the end."""
    strided = [i for i, block in enumerate(features) if getattr(block, "stride", 1) > 1]
    return [0] + strided + [len(features) - 1]


def stage_ends(features: nn.Sequential) -> list[int]:
    """Indices of the last block before each stride change from stride 4 on, and the last block
    (MobileNetV2: [3, 6, 13, 18]): the FPN inputs at strides 4, 8, 16, 32."""
    strided = [i for i, block in enumerate(features) if getattr(block, "stride", 1) > 1]
    return [i - 1 for i in strided[1:]] + [len(features) - 1]


def mobilenet_v2_fpn_backbone(
    *,
    state_dict: dict | None,
    pretrained: bool | None = None,
    fpn_channels: int = 64,
    trainable_layers: int | None = None,
    source: str = "state dict",
) -> BackboneWithFPN:
    """MobileNetV2 features with an FPN of ``fpn_channels`` over its stage ends.

    Args:
        state_dict: torchvision ``MobileNetV2`` weights (e.g. ImageNet), or None to start from scratch.
        pretrained: the layout of a pretrained backbone (frozen batch norm, ``FrozenBatchNorm2d``, as in
            torchvision's detection models, and 3 trainable stages by default); default: whether
            ``state_dict`` is given. True without a state dict: weights are loaded later, whole-model.
        fpn_channels: width of every FPN output (``out_channels`` of the result).
        trainable_layers: torchvision's semantics: how many of the 6 stages (:func:`stage_starts`),
            counted from the last, keep ``requires_grad``; default 3 with weights, all 6 without.
        source: where ``state_dict`` came from, for error messages.

    Returns:
        A module mapping images (B, 3, H, W) to {"0": stride 4, "1": 8, "2": 16, "3": 32, "pool": 64}
        feature maps of ``fpn_channels`` channels.
    """
    from noisyseg.models.weights import load_backbone

    if pretrained is None:
        pretrained = state_dict is not None
    net = mobilenet_v2(weights=None, norm_layer=misc_ops.FrozenBatchNorm2d if pretrained else nn.BatchNorm2d)
    if state_dict is not None:
        load_backbone(net, state_dict, source, "MobileNetV2", unused_prefix="classifier.")
    features = net.features
    starts = stage_starts(features)
    if trainable_layers is None:
        trainable_layers = 3 if pretrained else len(starts)
    if not 0 <= trainable_layers <= len(starts):
        raise NoisysegError(f"trainable_backbone_layers: expected 0..{len(starts)} for MobileNetV2, got {trainable_layers}")
    freeze_before = len(features) if trainable_layers == 0 else starts[len(starts) - trainable_layers]
    for block in features[:freeze_before]:
        block.requires_grad_(False)
    ends = stage_ends(features)
    return BackboneWithFPN(
        features,
        return_layers={str(i): str(level) for level, i in enumerate(ends)},
        in_channels_list=[features[i].out_channels for i in ends],
        out_channels=fpn_channels,
        extra_blocks=LastLevelMaxPool(),
    )
