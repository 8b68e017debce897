"""Model outputs -> COCO result dicts (the data set's own category ids, RLE masks, xywh boxes)."""

from __future__ import annotations

from typing import Sequence

import numpy as np
from pycocotools import mask as mask_utils


def _np(x) -> np.ndarray:
    if hasattr(x, "detach"):
        x = x.detach().cpu().numpy()
    return np.asarray(x)


def detections_to_coco(image_id: int, boxes, scores, labels, masks, label_to_category_id: Sequence[int] | dict,
                       mask_threshold: float = 0.5) -> list[dict]:
    """COCO results for one image.

    boxes: (N, 4) float xyxy in original-image pixels; scores: (N,); labels: (N,) contiguous labels 1..K;
    masks: (N, 1, H, W) probabilities or (N, H, W) bool/uint8 at original image size, or None for boxes
    only. ``label_to_category_id``: a list where entry ``label - 1`` is the category id, or a dict
    label -> category id. Torch tensors and numpy arrays are both accepted.
    """
    boxes, scores, labels = _np(boxes).reshape(-1, 4).astype(np.float64), _np(scores).reshape(-1), _np(labels).reshape(-1)
    n = len(scores)
    if n == 0:
        return []
    if isinstance(label_to_category_id, dict):
        cat_ids = [int(label_to_category_id[int(l)]) for l in labels]
    else:
        cat_ids = [int(label_to_category_id[int(l) - 1]) for l in labels]
    xywh = boxes.copy()
    xywh[:, 2:] -= xywh[:, :2]
    rles = None
    if masks is not None:
        m = _np(masks)
        if m.ndim == 4:
            m = m[:, 0]
        binary = m > mask_threshold if m.dtype.kind == "f" else m.astype(bool)
        # one encode call for the whole image: (H, W, N) Fortran-ordered uint8
        rles = mask_utils.encode(np.asfortranarray(binary.transpose(1, 2, 0).astype(np.uint8)))
    out = []
    for i in range(n):
        r = {"image_id": int(image_id), "category_id": cat_ids[i],
             "bbox": [round(float(v), 2) for v in xywh[i]], "score": float(scores[i])}
        if rles is not None:
            r["segmentation"] = {"size": [int(s) for s in rles[i]["size"]], "counts": rles[i]["counts"].decode("ascii")}
        out.append(r)
    return out
