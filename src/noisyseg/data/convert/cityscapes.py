"""Cityscapes gtFine polygons -> COCO instance json with the 8 Cityscapes instance classes.

Input layout (as downloaded)::

    ROOT/leftImg8bit/{split}/{city}/{stem}_leftImg8bit.png
    ROOT/gtFine/{split}/{city}/{stem}_gtFine_polygons.json

A polygons file holds ``imgHeight``, ``imgWidth`` and ``objects``: a list of ``{"label", "polygon"}`` in
drawing order. An object drawn later covers the ones drawn before it, so the *visible* mask of an instance
is its filled polygon minus the union of all polygons drawn after it, whatever their label (road, sky,
a group, another instance). Objects flagged ``"deleted": 1`` (a field some annotation tools leave) are
skipped entirely.

Classes (category ids in this order, starting at 1), with supercategories:

====  ==========  =============
id    name        supercategory
====  ==========  =============
1     person      human
2     rider       human
3     car         vehicle
4     truck       vehicle
5     bus         vehicle
6     train       vehicle
7     motorcycle  vehicle
8     bicycle     vehicle
====  ==========  =============

Only an exact label match makes an instance. Group labels (``persongroup``, ``cargroup``, ... — several
objects outlined as one, anything ending in ``group``) and every other label (``road``, ``sky``,
``license plate``, ...) give no annotation, though they still occlude what lies under them.

Pixel convention: vertices are rounded to the nearest integer, and vertex ``(x, y)`` names the pixel in
column ``x``, row ``y`` (pixel centres at integer positions). Polygons are filled with
``PIL.ImageDraw.polygon`` with both fill and outline on, so the pixels on the polygon's edges belong to the
mask: a rectangle with corners ``(x0, y0)`` and ``(x1, y1)`` covers ``(x1 - x0 + 1) * (y1 - y0 + 1)``
pixels. Parts outside the image are clipped. A polygon with fewer than 3 vertices covers nothing.

Output: one file per split, ``OUT/{split}.json`` (e.g. ``OUT/train.json``), COCO instance format.
``file_name`` is relative to ``ROOT/leftImg8bit`` (``train/aachen/aachen_000000_000019_leftImg8bit.png``);
``height``/``width`` come from the polygons json. Each annotation has a compressed-RLE ``segmentation``
(``counts`` as str) of the visible mask, ``area`` = its pixel count, ``bbox`` = its tight
``[x, y, w, h]`` and ``iscrowd`` 0. Instances with no visible pixel are dropped and counted in the
per-split summary line. Image ids and annotation ids start at 1 in each split, in sorted file order.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
from PIL import Image, ImageDraw
from tqdm import tqdm

from noisyseg.data.convert.common import (check_outputs, mask_annotation, require_dir, summary,
                                          write_splits)
from noisyseg.errors import NoisysegError

CLASSES = ["person", "rider", "car", "truck", "bus", "train", "motorcycle", "bicycle"]
SUPERCATEGORY = {"person": "human", "rider": "human", "car": "vehicle", "truck": "vehicle", "bus": "vehicle",
                 "train": "vehicle", "motorcycle": "vehicle", "bicycle": "vehicle"}
CATEGORIES = [{"id": i + 1, "name": n, "supercategory": SUPERCATEGORY[n]} for i, n in enumerate(CLASSES)]
_CATEGORY_ID = {n: i + 1 for i, n in enumerate(CLASSES)}

IMAGE_SUFFIX = "_leftImg8bit.png"
POLYGONS_SUFFIX = "_gtFine_polygons.json"


def _round(v: float) -> int:
    """Nearest integer, halves upwards (shift-invariant, unlike Python's round-half-even)."""
    return int(math.floor(v + 0.5))


def fill_polygon(points: Sequence[tuple[int, int]], height: int, width: int) -> tuple[int, int, np.ndarray] | None:
    """Rasterise one polygon inside an ``height`` x ``width`` image, drawing only its bounding box.

    Args:
        points: vertices ``(x, y)`` as integers (already rounded).
    Returns:
        ``(y0, x0, crop)`` where ``crop`` is a bool array of shape ``(h, w)`` holding the filled pixels of
        rows ``y0 .. y0 + h - 1`` and columns ``x0 .. x0 + w - 1`` of the image, or ``None`` when the
        polygon has fewer than 3 vertices or lies entirely outside the image.
    """
    if len(points) < 3:
        return None
    xs = [p[0] for p in points]
    ys = [p[1] for p in points]
    x0, x1 = max(0, min(xs)), min(width - 1, max(xs))
    y0, y1 = max(0, min(ys)), min(height - 1, max(ys))
    if x0 > x1 or y0 > y1:
        return None
    # Integer offsets keep the rasterisation identical to drawing on the full image; PIL clips the rest.
    canvas = Image.new("L", (x1 - x0 + 1, y1 - y0 + 1), 0)
    ImageDraw.Draw(canvas).polygon([(x - x0, y - y0) for x, y in points], fill=1, outline=1)
    return y0, x0, np.asarray(canvas, dtype=bool)


def _parse(path: Path) -> tuple[int, int, list[tuple[str, list[tuple[int, int]]]]]:
    """Read a polygons json: (height, width, [(label, integer vertices), ...] in drawing order)."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise NoisysegError(f"{path}: cannot read the polygons json ({e})") from None
    if not isinstance(data, dict):
        raise NoisysegError(f"{path}: not a Cityscapes polygons file (expected a JSON object)")
    for key in ("imgHeight", "imgWidth", "objects"):
        if key not in data:
            raise NoisysegError(f"{path}: not a Cityscapes polygons file (missing key '{key}')")
    height, width, objects = data["imgHeight"], data["imgWidth"], data["objects"]
    for key, v in (("imgHeight", height), ("imgWidth", width)):
        if isinstance(v, bool) or not isinstance(v, int) or v <= 0:
            raise NoisysegError(f"{path}: '{key}' must be a positive integer, got {v!r}")
    if not isinstance(objects, list):
        raise NoisysegError(f"{path}: 'objects' must be a list")
    parsed = []
    for k, obj in enumerate(objects):
        where = f"{path}: objects[{k}]"
        if not isinstance(obj, dict) or not isinstance(obj.get("label"), str) or "polygon" not in obj:
            raise NoisysegError(f"{where}: expected an object with a string 'label' and a 'polygon'")
        if obj.get("deleted"):
            continue
        poly = obj["polygon"]
        if not isinstance(poly, list):
            raise NoisysegError(f"{where}: 'polygon' must be a list of [x, y] points")
        points = []
        for pt in poly:
            if (not isinstance(pt, (list, tuple)) or len(pt) != 2
                    or not all(isinstance(c, (int, float)) and not isinstance(c, bool) and math.isfinite(c) for c in pt)):
                raise NoisysegError(f"{where}: 'polygon' must be a list of [x, y] number pairs, found {pt!r}")
            points.append((_round(pt[0]), _round(pt[1])))
        parsed.append((obj["label"], points))
    return height, width, parsed


def convert_file(path: str | Path, image_id: int, first_ann_id: int) -> tuple[dict, list[dict], int]:
    """Convert one polygons json.

    Returns:
        ``(image, annotations, dropped)``: the image record ``{"id", "height", "width"}`` (no
        ``file_name``), the annotations of the visible instances in drawing order with ids from
        ``first_ann_id``, and the number of instances dropped because nothing of them is visible.
    """
    path = Path(path)
    height, width, objects = _parse(path)
    covered = np.zeros((height, width), dtype=bool)  # union of everything drawn after the current object
    found: list[dict] = []
    dropped = 0
    for label, points in reversed(objects):  # front to back
        filled = fill_polygon(points, height, width)
        category_id = _CATEGORY_ID.get(label)
        if filled is None:
            dropped += category_id is not None
            continue
        y0, x0, crop = filled
        box = (slice(y0, y0 + crop.shape[0]), slice(x0, x0 + crop.shape[1]))
        if category_id is not None:
            visible = crop & ~covered[box]
            if visible.any():
                mask = np.zeros((height, width), dtype=np.uint8)
                mask[box] = visible
                found.append(mask_annotation(mask, 0, image_id, category_id))
            else:
                dropped += 1
        covered[box] |= crop
    found.reverse()
    for k, ann in enumerate(found):
        ann["id"] = first_ann_id + k
    return {"id": image_id, "height": height, "width": width}, found, dropped


def convert_cityscapes(root: str | Path, out_dir: str | Path, splits: Iterable[str] = ("train", "val"),
                       progress: bool = True) -> dict[str, Path]:
    """Convert Cityscapes gtFine polygons of each split to ``out_dir/{split}.json``.

    The output folder is checked first, and the jsons are written (atomically) only after every split
    converted, so bad input never leaves a partial output. Prints one summary line per split on stdout.

    Args:
        root: the Cityscapes root holding ``leftImg8bit/`` and ``gtFine/``.
        out_dir: output folder (created if missing).
        splits: split folder names, e.g. ``("train", "val")``.
        progress: show a tqdm bar over the images (on stderr).
    Returns:
        ``{split: path of the written json}``.
    """
    out_dir, splits = check_outputs(out_dir, splits)
    root = require_dir(Path(root), "Cityscapes root")
    images_root = require_dir(root / "leftImg8bit", "leftImg8bit")
    gt_root = require_dir(root / "gtFine", "gtFine")
    converted: list[tuple[Path, dict, str]] = []
    for split in splits:
        require_dir(images_root / split, f"leftImg8bit/{split}")
        gt_files = sorted(require_dir(gt_root / split, f"gtFine/{split}").glob(f"*/*{POLYGONS_SUFFIX}"))
        if not gt_files:
            raise NoisysegError(f"{gt_root / split}: no {{city}}/*{POLYGONS_SUFFIX} files")
        images: list[dict] = []
        annotations: list[dict] = []
        dropped = 0
        bar = tqdm(gt_files, desc=f"cityscapes {split}", unit="img", disable=not progress)
        for image_id, gt in enumerate(bar, 1):
            stem = gt.name[: -len(POLYGONS_SUFFIX)]
            rel = f"{split}/{gt.parent.name}/{stem}{IMAGE_SUFFIX}"
            if not (images_root / rel).is_file():
                raise NoisysegError(f"{images_root / rel}: image not found (annotated by {gt})")
            image, anns, n_dropped = convert_file(gt, image_id, len(annotations) + 1)
            images.append({"id": image_id, "file_name": rel, "height": image["height"], "width": image["width"]})
            annotations.extend(anns)
            dropped += n_dropped
        info = {"description": f"Cityscapes gtFine {split}: 8 instance classes, visible masks (converted by noisyseg)",
                "image_root": str(images_root)}
        coco = {"info": info, "images": images, "annotations": annotations, "categories": CATEGORIES}
        converted.append((out_dir / f"{split}.json", coco, summary(split, len(images), annotations, CATEGORIES, dropped)))
    return write_splits(splits, converted)
