"""Data augmentation with torchvision v2 transforms, keeping image, boxes and masks consistent.

Rescaling is not done here: the model's transform resizes on the device (a random short side from
``data.train_min_size`` in training, ``data.test_min_size`` at test time) and maps predictions back to
original image coordinates, so doing it twice would only cost time.
"""

from __future__ import annotations

from typing import Any

import torch
from torchvision import tv_tensors
from torchvision.transforms import v2


class DetectionTransform:
    """uint8 image (3, H, W) + target dict -> float32 image in [0, 1] + target, with optional horizontal flip.

    ``boxes`` (G, 4) and ``masks`` (G, H, W; optional) move with the image; every other entry
    (``labels``, ``clean_labels``, ``class_ignored``, ``image_id``) passes through unchanged.
    """

    def __init__(self, hflip_prob: float = 0.0) -> None:
        steps: list = []
        if hflip_prob > 0:
            steps.append(v2.RandomHorizontalFlip(p=hflip_prob))
        steps.append(v2.ToDtype(torch.float32, scale=True))
        self.pipeline = v2.Compose(steps)

    def __call__(self, image: torch.Tensor, target: dict[str, Any]) -> tuple[torch.Tensor, dict[str, Any]]:
        h, w = image.shape[-2:]
        wrapped = dict(target)
        wrapped["boxes"] = tv_tensors.BoundingBoxes(target["boxes"], format="XYXY", canvas_size=(h, w))
        if "masks" in target:  # absent when the data set skips decoding them (evaluation)
            wrapped["masks"] = tv_tensors.Mask(target["masks"])
        image, out = self.pipeline(tv_tensors.Image(image), wrapped)
        out["boxes"] = out["boxes"].as_subclass(torch.Tensor)
        if "masks" in out:
            out["masks"] = out["masks"].as_subclass(torch.Tensor)
        return image.as_subclass(torch.Tensor), out
