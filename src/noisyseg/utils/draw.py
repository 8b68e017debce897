"""Drawing predictions over images (masks, boxes, "name score" captions) and saving them as PNG."""

from __future__ import annotations

import io
import os
from pathlib import Path

import numpy as np
import torch

from noisyseg.utils.io import atomic_write_bytes


def palette(num_classes: int) -> list[tuple[int, int, int]]:
    """``num_classes + 1`` RGB colours, entry ``label`` for that label (0 = background); fixed, not random."""
    rng = np.random.default_rng(12345)
    return [tuple(int(c) for c in rng.integers(40, 256, 3)) for _ in range(num_classes + 1)]


def draw_overlay(image: torch.Tensor, boxes: torch.Tensor, labels: torch.Tensor, scores: torch.Tensor,
                 masks: torch.Tensor | None, names: tuple[str, ...]) -> torch.Tensor:
    """Draw N detections over an image.

    Args:
        image: uint8 (3, H, W).
        boxes: (N, 4) float ``x1, y1, x2, y2`` pixels.
        labels: (N,) int contiguous labels 1..K; ``names[label - 1]`` is the caption's class name.
        scores: (N,) float, shown with two decimals.
        masks: (N, H, W) bool (or 0/1) masks, or None for boxes only.
        names: the K class names.
    Returns:
        uint8 (3, H, W): masks blended at 45% in the class colour, boxes and captions on top.
    """
    from torchvision.utils import draw_bounding_boxes, draw_segmentation_masks

    colours = palette(len(names))
    cols = [colours[int(label)] for label in labels]
    out = image
    if masks is not None and len(masks):
        out = draw_segmentation_masks(out, masks.bool(), alpha=0.45, colors=cols)
    if len(boxes):
        captions = [f"{names[int(label) - 1]} {float(s):.2f}" for label, s in zip(labels, scores)]
        out = draw_bounding_boxes(out, boxes, labels=captions, colors=cols, width=1)
    return out


def encode_png(image: torch.Tensor, scale: int = 1) -> bytes:
    """PNG bytes of a uint8 (3, H, W) image, enlarged ``scale`` times with nearest-neighbour pixels."""
    from PIL import Image

    pil = Image.fromarray(image.permute(1, 2, 0).contiguous().numpy())
    if scale != 1:
        pil = pil.resize((pil.width * scale, pil.height * scale), Image.NEAREST)
    buf = io.BytesIO()
    pil.save(buf, format="PNG")
    return buf.getvalue()


def write_png(path: str | os.PathLike, image: torch.Tensor, scale: int = 1) -> Path:
    """Atomically write a uint8 (3, H, W) image as a PNG file (see :func:`encode_png`); returns ``path``."""
    return atomic_write_bytes(path, encode_png(image, scale))
