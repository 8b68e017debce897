"""Model parts shared by the presets: the image transform and the RoI pooler."""

from __future__ import annotations

import math
from typing import Sequence

from torchvision.models.detection.transform import GeneralizedRCNNTransform
from torchvision.ops import MultiScaleRoIAlign
from torchvision.ops.poolers import initLevelMapper


class ScaleRangeTransform(GeneralizedRCNNTransform):
    """Resize so the short side is drawn from ``train_sizes`` when training and is ``test_size`` otherwise.

    The draw uses torch's global generator, so it is seeded and restored on resume with the RNG state.
    The long side is capped at ``max_size`` (the short side then shrinks), as in torchvision.
    """

    def __init__(self, train_sizes: Sequence[int], test_size: int, max_size: int, **kwargs) -> None:
        super().__init__(min_size=tuple(train_sizes), max_size=max_size, **kwargs)
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
