"""COCO box and mask AP, computed by faster-coco-eval (default) or pycocotools with the same numbers.

Both libraries are driven the same way: the ground truth and the results are first copied into small,
normalised COCO dicts (only the fields the evaluation reads, fresh annotation ids 1..M), so caller data
is never mutated, extra annotation fields such as ``clean_category_id`` cannot interfere, and an
annotation id of 0 (which both libraries confuse with "unmatched") cannot skew the matching.

Two choices worth knowing when comparing with other code bases:

* For ``segm`` the results are handed over **without** their ``bbox``, so the library takes a detection's
  area from its mask (as detectron2 does). With a ``bbox`` present, pycocotools would use the box area
  to decide whether a detection is small / medium / large, which only changes APs / APm / APl.
* No results at all is a valid input: the evaluation then runs against an empty detection set, which
  gives 0 for every figure that has ground truth to find (``loadRes([])`` itself fails in pycocotools).
"""

from __future__ import annotations

import contextlib
import io
import math
import os
from collections import Counter
from typing import Any, Sequence

import numpy as np

from noisyseg.errors import NoisysegError

#: summary figures reported per IoU type, in the order of COCOeval.stats[:6]
STAT_NAMES = ("AP", "AP50", "AP75", "APs", "APm", "APl")
IOU_TYPES = ("segm", "bbox")
BACKENDS = ("faster", "pycocotools")


# ----------------------------------------------------------------------------------------------- inputs


def _load_gt(gt: dict | str | os.PathLike) -> tuple[dict, str]:
    """The ground-truth dict and a name for it in error messages (the path, when read from a file)."""
    if isinstance(gt, dict):
        return gt, "ground truth"
    if isinstance(gt, (str, os.PathLike)):
        from noisyseg.utils.io import read_json

        data = read_json(gt, "COCO ground-truth file")
        if not isinstance(data, dict):
            raise NoisysegError(f"{gt}: expected a COCO json object, found {type(data).__name__}")
        return data, str(gt)
    raise NoisysegError(f"ground truth must be a COCO dict or a json path, not {type(gt).__name__}")


def _plain(x: Any) -> Any:
    """numpy integers -> int (faster-coco-eval and json want plain ints); anything else unchanged."""
    return int(x) if isinstance(x, np.integer) else x


def _field(obj: dict, key: str, where: str) -> Any:
    try:
        return obj[key]
    except (KeyError, TypeError):
        raise NoisysegError(f"{where} has no '{key}'") from None


def _list(d: dict, key: str, source: str, required: bool = True) -> list:
    value = d.get(key, None if required else [])
    if not isinstance(value, list):
        raise NoisysegError(f"{source}: '{key}' must be a list" + ("" if value is not None else ", missing"))
    return value


def _normalise_gt(gt: dict, source: str, need_masks: bool) -> dict:
    """A minimal COCO dict holding only what the evaluation reads.

    images keep ``id`` (and ``height`` / ``width``, needed to rasterise polygons for ``segm``);
    categories keep ``id``, ``name``; annotations keep ``image_id``, ``category_id``, ``bbox``, ``area``,
    ``iscrowd`` (0 when missing) and ``segmentation``, and are renumbered ``id`` = 1..M.
    """
    images = []
    for i, im in enumerate(_list(gt, "images", source)):
        where = f"{source}: images[{i}]"
        entry = {"id": _plain(_field(im, "id", where))}
        if need_masks:
            entry["height"], entry["width"] = int(_field(im, "height", where)), int(_field(im, "width", where))
        images.append(entry)
    categories = []
    for i, c in enumerate(_list(gt, "categories", source)):
        cid = _field(c, "id", f"{source}: categories[{i}]")
        categories.append({"id": _plain(cid), "name": str(c.get("name", cid))})
    annotations = []
    for i, a in enumerate(_list(gt, "annotations", source, required=False)):
        where = f"{source}: annotations[{i}]"
        ann = {"id": i + 1, "image_id": _plain(_field(a, "image_id", where)),
               "category_id": _plain(_field(a, "category_id", where)), "bbox": _field(a, "bbox", where),
               "area": _field(a, "area", where), "iscrowd": int(a.get("iscrowd", 0))}
        if need_masks:
            ann["segmentation"] = _field(a, "segmentation", where)
        annotations.append(ann)
    return {"images": images, "categories": categories, "annotations": annotations}


def _check_results(results: Sequence[dict], image_sizes: dict[int, tuple[int, int] | None], cat_ids: set,
                   iou_types: tuple[str, ...]) -> None:
    """Raise a one-line NoisysegError for the first result the evaluation could not use."""
    for i, r in enumerate(results):
        where = f"results[{i}]"
        if not isinstance(r, dict):
            raise NoisysegError(f"{where}: expected a dict, found {type(r).__name__}")
        image_id = _field(r, "image_id", where)
        if image_id not in image_sizes:
            raise NoisysegError(f"{where}: result for image_id {image_id!r}, which is not an image of the ground truth")
        if _field(r, "category_id", where) not in cat_ids:
            raise NoisysegError(f"{where}: category_id {r['category_id']!r} is not a category of the ground truth "
                                f"(ids: {sorted(cat_ids)})")
        score = _field(r, "score", where)
        if not isinstance(score, (int, float, np.integer, np.floating)) or not math.isfinite(score):
            raise NoisysegError(f"{where}: score must be a finite number, found {score!r}")
        if "bbox" in iou_types:
            box = _field(r, "bbox", where)
            if not isinstance(box, (list, tuple)) or len(box) != 4:
                raise NoisysegError(f"{where}: bbox must be [x, y, width, height], found {box!r}")
        if "segm" in iou_types:
            if "segmentation" not in r:
                raise NoisysegError(f"{where} has no 'segmentation' (needed for segm evaluation)")
            seg = r["segmentation"]
            if not isinstance(seg, dict) or "counts" not in seg or "size" not in seg:
                raise NoisysegError(f"{where}: segmentation must be an RLE dict {{size, counts}}")
            if tuple(seg["size"]) != image_sizes[image_id]:
                raise NoisysegError(f"{where}: mask size {list(seg['size'])} differs from image {image_id}'s "
                                    f"[height, width] {list(image_sizes[image_id])}")


def _results_for(results: Sequence[dict], iou_type: str) -> list[dict]:
    """Fresh result dicts for one IoU type (the libraries write ``id``, ``area``, ... into them).

    ``segm`` results carry no ``bbox``, so the detection's area comes from its mask; ``bbox`` results carry
    no ``segmentation``, so it comes from the box.
    """
    if iou_type == "segm":
        return [{"image_id": _plain(r["image_id"]), "category_id": _plain(r["category_id"]),
                 "score": float(r["score"]),
                 "segmentation": {"size": list(r["segmentation"]["size"]), "counts": r["segmentation"]["counts"]}}
                for r in results]
    return [{"image_id": _plain(r["image_id"]), "category_id": _plain(r["category_id"]), "score": float(r["score"]),
             "bbox": [float(v) for v in r["bbox"]]}
            for r in results]


# ---------------------------------------------------------------------------------------------- backends


def _check_backend(name: str) -> None:
    if name not in BACKENDS:
        raise NoisysegError(f"unknown evaluation backend {name!r}; available: {', '.join(BACKENDS)}")


def _coco_api(backend: str, dataset: dict, verbose: bool):
    """An indexed COCO object of ``backend`` over ``dataset`` (used as is, not copied)."""
    if backend == "faster":
        from faster_coco_eval import COCO

        coco = COCO(print_function=print) if verbose else COCO()
    else:
        from pycocotools.coco import COCO

        coco = COCO()
    coco.dataset = dataset
    coco.createIndex()
    return coco


def _run_cocoeval(backend: str, coco_gt, coco_dt, iou_type: str, verbose: bool):
    """A COCOeval of ``backend`` after evaluate(), accumulate() and summarize()."""
    if backend == "faster":
        from faster_coco_eval import COCOeval_faster

        kwargs = {"print_function": print} if verbose else {"print_function": lambda *a, **k: None}
        ev = COCOeval_faster(coco_gt, coco_dt, iou_type, **kwargs)
    else:
        from pycocotools.cocoeval import COCOeval

        ev = COCOeval(coco_gt, coco_dt, iou_type)
    ev.evaluate()
    ev.accumulate()
    ev.summarize()
    return ev


def _percent_or_none(x: float) -> float | None:
    """COCOeval's -1 ("nothing to evaluate") becomes None; a fraction becomes a percentage."""
    x = float(x)
    return None if x < 0 or math.isnan(x) else x * 100.0


def _per_class_ap(ev, names: dict[Any, str]) -> dict[str, float | None]:
    """AP (percent) of each category: the mean of its precision over IoU 0.50:0.95 and the recall points.

    ``ev.eval["precision"]`` has shape (T IoU thresholds, R recall points, K categories, A area ranges,
    M max-detection settings), with -1 where a category has no ground truth; area "all" and 100
    detections per image are used. A category without ground truth gets None.
    """
    precision = np.asarray(ev.eval["precision"])
    a = list(ev.params.areaRngLbl).index("all")
    m = list(ev.params.maxDets).index(100)
    out: dict[str, float | None] = {}
    for k, cid in enumerate(ev.params.catIds):
        p = precision[:, :, k, a, m]
        p = p[p > -1]
        out[names[_plain(cid)]] = float(p.mean()) * 100.0 if p.size else None
    return out


def _category_keys(categories: list[dict]) -> dict[Any, str]:
    """category id -> name used as the per-class key; a name shared by several ids gets ' (id N)' added."""
    counts = Counter(c["name"] for c in categories)
    return {c["id"]: c["name"] if counts[c["name"]] == 1 else f"{c['name']} (id {c['id']})" for c in categories}


# ------------------------------------------------------------------------------------------------ public


def coco_evaluators(gt: dict | str | os.PathLike, results: Sequence[dict],
                    iou_types: Sequence[str] = ("segm", "bbox"), backend: str = "faster",
                    verbose: bool = False) -> tuple[dict[str, Any], dict[Any, str]]:
    """The library's evaluator objects, after evaluate(), accumulate() and summarize(), one per IoU type.

    Arguments as for :func:`evaluate`. Returns ``({iou_type: COCOeval}, {category id: per-class key})``;
    each evaluator's ``stats`` holds the 12 usual COCO figures (fractions, -1 where there is nothing to
    measure) and ``eval["precision"]`` the (T, R, K, A, M) precision array. For callers that need more
    than :func:`evaluate` reports.
    """
    iou_types = tuple(iou_types)
    for t in iou_types:
        if t not in IOU_TYPES:
            raise NoisysegError(f"unknown IoU type {t!r}; available: {', '.join(IOU_TYPES)}")
    _check_backend(backend)
    if not isinstance(results, (list, tuple)):
        raise NoisysegError(f"results must be a list of COCO result dicts, not {type(results).__name__}")

    gt_dict, source = _load_gt(gt)
    dataset = _normalise_gt(gt_dict, source, need_masks="segm" in iou_types)
    image_sizes = {im["id"]: (im.get("height"), im.get("width")) for im in dataset["images"]}
    _check_results(results, image_sizes, {c["id"] for c in dataset["categories"]}, iou_types)

    quiet = contextlib.nullcontext() if verbose else contextlib.redirect_stdout(io.StringIO())
    evaluators: dict[str, Any] = {}
    with quiet:
        coco_gt = _coco_api(backend, dataset, verbose)
        for iou_type in iou_types:
            if results:
                coco_dt = coco_gt.loadRes(_results_for(results, iou_type))
            else:  # loadRes([]) raises in pycocotools; an empty detection set is evaluated instead
                coco_dt = _coco_api(backend, {"images": dataset["images"], "categories": dataset["categories"],
                                              "annotations": []}, verbose)
            evaluators[iou_type] = _run_cocoeval(backend, coco_gt, coco_dt, iou_type, verbose)
    return evaluators, _category_keys(dataset["categories"])


def evaluate(gt: dict | str | os.PathLike, results: Sequence[dict], iou_types: Sequence[str] = ("segm", "bbox"),
             backend: str = "faster", verbose: bool = False) -> dict[str, dict[str, Any]]:
    """COCO AP of ``results`` against the ground truth ``gt``.

    Args:
        gt: a COCO instances dict, or the path of its json file (read once). Extra fields are ignored and
            the dict is not modified.
        results: COCO result dicts (see :func:`noisyseg.eval.detections_to_coco`), each with
            ``image_id``, ``category_id`` (the data set's own id), ``score``, ``bbox`` [x, y, w, h] for
            ``bbox`` evaluation and an RLE ``segmentation`` {size [H, W], counts} for ``segm``. May be empty.
        iou_types: any of "segm" (mask AP) and "bbox" (box AP).
        backend: "faster" (faster-coco-eval, C++) or "pycocotools" (the reference); they agree.
        verbose: let the library print its usual progress and summary lines.

    Returns:
        ``{iou_type: {"AP", "AP50", "AP75", "APs", "APm", "APl": float | None,
        "per_class": {category name: float | None}}}`` in percent (0-100). None marks a figure with no
        ground truth to measure (e.g. APs without small objects, a category without annotations). A
        per-class figure is that category's precision averaged over IoU 0.50:0.95 and the 101 recall
        points (area "all", 100 detections per image); a name shared by several categories is keyed
        ``"name (id N)"``.

    Raises:
        NoisysegError: an unreadable or malformed ground truth, a result for an image or category the
            ground truth does not have, a result missing a field its IoU type needs, an unknown IoU type
            or backend.
    """
    evaluators, names = coco_evaluators(gt, results, iou_types, backend, verbose)
    out: dict[str, dict[str, Any]] = {}
    for iou_type, ev in evaluators.items():
        stats = {name: _percent_or_none(s) for name, s in zip(STAT_NAMES, ev.stats[:6])}
        out[iou_type] = {**stats, "per_class": _per_class_ap(ev, names)}
    return out


def format_metrics_table(metrics: dict[str, dict[str, Any]]) -> str:
    """A short aligned text table of :func:`evaluate`'s output.

    One row per IoU type found in ``metrics`` (segm first, then bbox), columns AP AP50 AP75 APs APm APl
    with one decimal; a missing or None figure shows as "-".
    """
    width = 7
    lines = [" " * 6 + "".join(f"{s:>{width}}" for s in STAT_NAMES)]
    rows = [t for t in IOU_TYPES if isinstance(metrics.get(t), dict)]
    rows += [t for t, v in metrics.items() if t not in rows and isinstance(v, dict) and "AP" in v]
    for t in rows:
        cells = []
        for s in STAT_NAMES:
            v = metrics[t].get(s)
            ok = isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
            cells.append(f"{v:{width}.1f}" if ok else f"{'-':>{width}}")
        lines.append(f"{t:<6}" + "".join(cells))
    return "\n".join(lines)
