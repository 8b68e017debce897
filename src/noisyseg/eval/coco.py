"""COCO box and mask AP, with faster-coco-eval (default) or pycocotools — both give the same numbers."""

from __future__ import annotations

import contextlib
import copy
import io
import json
import math
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from noisyseg.errors import NoisysegError

STAT_NAMES = ("AP", "AP50", "AP75", "APs", "APm", "APl")


def _load_gt(gt: dict | str | Path) -> dict:
    if isinstance(gt, dict):
        return gt
    from noisyseg.utils.io import read_json

    return read_json(gt, "COCO ground-truth file")


def _backend(name: str):
    if name == "faster":
        from faster_coco_eval import COCO, COCOeval_faster

        return COCO, COCOeval_faster
    if name == "pycocotools":
        from pycocotools.coco import COCO
        from pycocotools.cocoeval import COCOeval

        return COCO, COCOeval
    raise NoisysegError(f"unknown evaluation backend {name!r}; available: faster, pycocotools")


def _per_class_ap(precision: np.ndarray, cat_ids: list[int], names: dict[int, str]) -> dict[str, float | None]:
    # precision: (T iou thresholds, R recall points, K categories, A area ranges, M max-dets); -1 = no GT
    out = {}
    for k, cid in enumerate(cat_ids):
        p = precision[:, :, k, 0, -1]
        p = p[p > -1]
        out[names[cid]] = float(p.mean() * 100) if p.size else None
    return out


def evaluate(gt: dict | str | Path, results: list[dict], iou_types: Sequence[str] = ("segm", "bbox"),
             backend: str = "faster", verbose: bool = False) -> dict[str, dict[str, Any]]:
    """COCO AP of ``results`` against ``gt`` (a COCO dict or json path).

    Returns ``{iou_type: {"AP", "AP50", "AP75", "APs", "APm", "APl", "per_class": {name: AP or None}}}``,
    all in percent (0-100). No results at all gives zeros.
    """
    gt_dict = _load_gt(gt)
    image_ids = {im["id"] for im in gt_dict.get("images", [])}
    for r in results:
        if r["image_id"] not in image_ids:
            raise NoisysegError(f"result for image_id {r['image_id']}, which is not an image of the ground truth")
    names = {c["id"]: str(c.get("name", c["id"])) for c in gt_dict["categories"]}
    cat_ids = sorted(names)
    if not results:
        return {t: {**{s: 0.0 for s in STAT_NAMES}, "per_class": {names[c]: 0.0 for c in cat_ids}} for t in iou_types}
    COCO, COCOeval = _backend(backend)
    sink = contextlib.nullcontext() if verbose else contextlib.redirect_stdout(io.StringIO())
    out: dict[str, dict[str, Any]] = {}
    with sink:
        coco_gt = COCO()
        coco_gt.dataset = copy.deepcopy(gt_dict) if backend == "pycocotools" else gt_dict
        coco_gt.createIndex()
        for iou_type in iou_types:
            res = results if iou_type == "segm" else [{k: v for k, v in r.items() if k != "segmentation"} for r in results]
            if iou_type == "segm" and any("segmentation" not in r for r in results):
                raise NoisysegError("segm evaluation needs a 'segmentation' in every result")
            coco_dt = coco_gt.loadRes(copy.deepcopy(res))
            ev = COCOeval(coco_gt, coco_dt, iou_type)
            ev.evaluate()
            ev.accumulate()
            ev.summarize()
            # -1 marks "no ground truth in this area range": reported as None
            stats = [float(s) * 100 if s >= 0 else None for s in ev.stats[:6]]
            out[iou_type] = {**dict(zip(STAT_NAMES, stats)),
                             "per_class": _per_class_ap(np.asarray(ev.eval["precision"]), list(ev.params.catIds), names)}
    return out


def format_metrics_table(metrics: dict[str, dict[str, Any]]) -> str:
    """A small aligned text table: one row per IoU type, columns AP AP50 AP75 APs APm APl."""
    head = f"{'':6}" + "".join(f"{s:>7}" for s in STAT_NAMES)
    rows = [head]
    for iou_type, m in metrics.items():
        cells = "".join(f"{m[s]:7.1f}" if isinstance(m.get(s), (int, float)) and not math.isnan(m[s]) else f"{'-':>7}"
                        for s in STAT_NAMES)
        rows.append(f"{iou_type:6}{cells}")
    return "\n".join(rows)
