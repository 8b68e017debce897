"""A small from-scratch backbone + FPN for CPU training (the demo and the shapes benchmark).

Four stages of 3x3 convolutions with GroupNorm (batch statistics would be noisy at 2-4 images per step,
and GroupNorm makes multi-process training equal single-process training exactly).
"""

from __future__ import annotations

from collections import OrderedDict

from torch import Tensor, nn
from torchvision.ops import FeaturePyramidNetwork
from torchvision.ops.feature_pyramid_network import LastLevelMaxPool


def _conv(cin: int, cout: int, stride: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False),
        nn.GroupNorm(min(8, cout // 4), cout),
        nn.ReLU(inplace=True),
    )


class TinyBackbone(nn.Module):
    """Image (B, 3, H, W) -> FPN features {"0": stride 4, "1": 8, "2": 16, "3": 32, "pool": 64}.

    ``out_channels`` is the FPN width, as torchvision's detection models expect.
    """

    def __init__(self, widths: tuple[int, int, int, int] = (24, 48, 96, 160), fpn_channels: int = 64) -> None:
        super().__init__()
        stem = widths[0] // 2
        self.stem = nn.Sequential(_conv(3, stem, 2), _conv(stem, widths[0], 2))  # stride 4
        stages = []
        cin = widths[0]
        for i, w in enumerate(widths):
            stride = 1 if i == 0 else 2
            stages.append(nn.Sequential(_conv(cin, w, stride), _conv(w, w, 1)))
            cin = w
        self.stages = nn.ModuleList(stages)
        self.fpn = FeaturePyramidNetwork(list(widths), fpn_channels, extra_blocks=LastLevelMaxPool())
        self.out_channels = fpn_channels
        for m in self.modules():
            if isinstance(m, nn.Conv2d) and m.bias is None:
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x: Tensor) -> "OrderedDict[str, Tensor]":
        x = self.stem(x)
        feats = OrderedDict()
        for i, stage in enumerate(self.stages):
            x = stage(x)
            feats[str(i)] = x
        return self.fpn(feats)
