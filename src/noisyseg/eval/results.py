"""Turn one image's model outputs into COCO result dicts.

A COCO result names the data set's own ``category_id`` (not the model's contiguous label), gives the box
as ``[x, y, width, height]`` and the mask as a compressed RLE whose ``counts`` is a ``str`` so the list can
go straight into ``json.dumps``. All masks of an image are encoded by one ``pycocotools.mask.encode`` call.
"""

from __future__ import annotations

import sys
from typing import Any, Mapping, Sequence

import numpy as np
from pycocotools import mask as mask_utils


def _torch():
    """torch if something already imported it, else None: an object cannot be a tensor before torch is
    imported, so evaluation alone (``noisyseg.eval.evaluate`` on json results) never pays torch's import
    (seconds, and hundreds of MB in every process that scores)."""
    return sys.modules.get("torch")


def _is_tensor(x: Any) -> bool:
    torch = _torch()
    return torch is not None and isinstance(x, torch.Tensor)


def _to_numpy(x: Any) -> np.ndarray:
    """A CPU numpy view of a tensor, array or nested list (no copy where none is needed)."""
    if _is_tensor(x):
        torch = _torch()
        x = x.detach()
        if x.dtype == torch.bfloat16:  # numpy has no bfloat16
            x = x.float()
        return x.cpu().numpy()
    return np.asarray(x)


def _category_ids(labels: np.ndarray, mapping: Mapping[int, int] | Sequence[int]) -> list[int]:
    """Category ids of ``labels`` (shape (N,), contiguous labels 1..K) through ``mapping``.

    ``mapping`` is a dict label -> category id, or a sequence whose entry ``label - 1`` is the category id
    of that label. A label the mapping does not cover (0 = background included) raises ``ValueError``.
    """
    out = []
    if isinstance(mapping, Mapping):
        for lab in labels.tolist():
            try:
                out.append(int(mapping[int(lab)]))
            except KeyError:
                raise ValueError(f"label {int(lab)} has no category id in the label mapping "
                                 f"(labels known: {sorted(mapping)})") from None
        return out
    k = len(mapping)
    for lab in labels.tolist():
        lab = int(lab)
        if not 1 <= lab <= k:
            raise ValueError(f"label {lab} is outside 1..{k}, the labels of the {k} category ids given")
        out.append(int(mapping[lab - 1]))
    return out


def _binary_masks_fortran(masks: Any, n: int, threshold: float) -> np.ndarray:
    """Masks as one Fortran-ordered uint8 array of shape (H, W, N), ready for ``pycocotools.mask.encode``.

    ``masks``: (N, 1, H, W) or (N, H, W). Floating-point masks are probabilities and a pixel is
    foreground where the value is strictly above ``threshold``; bool / integer masks are already binary
    (non-zero = foreground). Torch masks are thresholded and laid out on their own device, so only the
    uint8 result travels to the CPU.
    """
    if masks.ndim == 4:
        if masks.shape[1] != 1:
            raise ValueError(f"masks of shape {tuple(masks.shape)}: expected (N, 1, H, W) or (N, H, W)")
        masks = masks[:, 0]
    if masks.ndim != 3 or masks.shape[0] != n:
        raise ValueError(f"masks of shape {tuple(masks.shape)}: expected (N, 1, H, W) or (N, H, W) with N={n}")
    if _is_tensor(masks):
        torch = _torch()
        binary = masks.detach() > threshold if masks.is_floating_point() else masks.detach() != 0
        # (N, W, H) C-contiguous is the same memory as (H, W, N) Fortran-ordered.
        nwh = binary.to(torch.uint8).transpose(1, 2).contiguous().cpu().numpy()
        return nwh.transpose(2, 1, 0)
    masks = np.asarray(masks)
    binary = masks > threshold if masks.dtype.kind == "f" else masks != 0
    return binary.transpose(1, 2, 0).astype(np.uint8, order="F")


def detections_to_coco(
    image_id: int,
    boxes: Any,
    scores: Any,
    labels: Any,
    masks: Any,
    label_to_category_id: Mapping[int, int] | Sequence[int],
    mask_threshold: float = 0.5,
) -> list[dict]:
    """COCO result dicts for the N detections of one image.

    Args:
        image_id: the image's ``id`` in the ground-truth json.
        boxes: (N, 4) float, ``x1, y1, x2, y2`` in pixels of the original image.
        scores: (N,) float confidence of each detection.
        labels: (N,) int, the model's contiguous class labels 1..K (0 is background and never valid here).
        masks: (N, 1, H, W) float probabilities (torchvision's pasted masks), or (N, H, W) bool / uint8
            binary masks, at the original image size H x W; ``None`` for box-only results.
        label_to_category_id: a dict label -> category id, or a list / tuple whose entry ``label - 1`` is
            the category id of that label (``LabelMap.category_ids``).
        mask_threshold: a float mask pixel is foreground where its probability is strictly above this.

    Torch tensors (any device) and numpy arrays (or nested lists) are both accepted.

    Returns:
        N dicts ``{"image_id": int, "category_id": int, "bbox": [x, y, w, h] (floats, 2 decimals),
        "score": float, "segmentation": {"size": [H, W], "counts": str}}``, in input order;
        ``segmentation`` is left out when ``masks`` is None. No detections give ``[]``.

    Raises:
        ValueError: inconsistent shapes, or a label the mapping does not cover.
    """
    box_arr = _to_numpy(boxes).astype(np.float64, copy=False).reshape(-1, 4)
    score_arr = _to_numpy(scores).astype(np.float64, copy=False).reshape(-1)
    label_arr = _to_numpy(labels).reshape(-1)
    n = len(score_arr)
    if len(box_arr) != n or len(label_arr) != n:
        raise ValueError(f"{len(box_arr)} boxes, {n} scores and {len(label_arr)} labels: expected equal counts")
    if n == 0:
        return []
    cat_ids = _category_ids(label_arr, label_to_category_id)

    xywh = box_arr.copy()
    xywh[:, 2:] -= xywh[:, :2]
    xywh = [[round(v, 2) for v in row] for row in xywh.tolist()]

    rles = None
    if masks is not None:
        hwn = _binary_masks_fortran(masks if _is_tensor(masks) else np.asarray(masks), n, mask_threshold)
        rles = mask_utils.encode(hwn)  # one call for all N masks

    img = int(image_id)
    out = []
    for i in range(n):
        r = {"image_id": img, "category_id": cat_ids[i], "bbox": xywh[i], "score": float(score_arr[i])}
        if rles is not None:
            h, w = rles[i]["size"]
            r["segmentation"] = {"size": [int(h), int(w)], "counts": rles[i]["counts"].decode("ascii")}
        out.append(r)
    return out
