"""Checks of a COCO instance file, shared by the data sets (train, eval) and noise injection.

A file is checked once, when it is read, so that a malformed field stops the command before any work
with one line naming the entry and the field (``annotations[12] (id 40): bbox ...``), instead of a crash
in the middle of an epoch or a ``NaN`` written into an output that is then not JSON.

This module needs only numpy (noise injection must not import torch), and is fast enough for COCO-sized
files: one pass over the entries in Python, numbers checked in bulk with numpy.
"""

from __future__ import annotations

import math
import numbers
from typing import Any

import numpy as np

from noisyseg.errors import NoisysegError

_NUMBER_TYPES = (int, float)  # exact JSON number types; bool is a subclass of int and is refused
_ABSENT = object()  # marks a field that is not there (None is a value a file can hold)
#: how far a box may reach past the image, in image sizes: [x, y, w, h] must lie in [-W, 2W] x [-H, 2H].
#: Annotation tools leave boxes a few pixels outside; anything past a whole image size is broken data.
BOX_SLACK = 1.0


def _is_int(v: Any) -> bool:
    t = type(v)
    return t is int or (t is not bool and isinstance(v, numbers.Integral))


def _is_number(v: Any) -> bool:
    t = type(v)
    return t in _NUMBER_TYPES or (t is not bool and isinstance(v, numbers.Real))


def _where(kind: str, i: int, entry: Any) -> str:
    """``annotations[3] (id 17)``, the position of an entry for messages (with its id when it has one)."""
    if isinstance(entry, dict) and "id" in entry:
        return f"{kind}[{i}] (id {entry['id']!r})"
    return f"{kind}[{i}]"


def _check_id(kind: str, i: int, entry: dict, seen: dict, singular: str) -> Any:
    """Check ``entry['id']`` is an integer not used by an earlier entry of ``kind``; return it."""
    eid = entry["id"]
    if not _is_int(eid):
        raise NoisysegError(f"{kind}[{i}] has id {eid!r}, expected an integer")
    first = seen.setdefault(eid, i)
    if first != i:
        raise NoisysegError(f"{kind}[{i}] repeats {singular} id {eid} (already used by {kind}[{first}])")
    return eid


def _check_categories(categories: list, need_names: bool) -> dict:
    """{category id: index in ``categories``}; one-line errors for a bad or repeated id or a missing name."""
    seen: dict = {}
    for i, c in enumerate(categories):
        if not isinstance(c, dict) or "id" not in c or (need_names and "name" not in c):
            raise NoisysegError(f"categories[{i}] needs an 'id' and a 'name'" if need_names
                                else f"categories[{i}] has no 'id'")
        _check_id("categories", i, c, seen, "category")
    return seen


def _check_images(images: list, need_files: bool) -> dict:
    """{image id: (height, width) or None}; one-line errors for a bad or repeated id or a bad size."""
    sizes: dict = {}
    seen: dict = {}
    for i, im in enumerate(images):
        if not isinstance(im, dict):
            raise NoisysegError(f"images[{i}] is not an object")
        for key in ("id", "file_name", "height", "width") if need_files else ("id",):
            if key not in im:
                raise NoisysegError(f"images[{i}] has no '{key}'")
        iid = _check_id("images", i, im, seen, "image")
        if need_files:
            name = im["file_name"]
            if not isinstance(name, str) or not name:
                raise NoisysegError(f"{_where('images', i, im)} has file_name {name!r}, expected a file path")
        size = []
        for key in ("height", "width"):
            if key in im:
                v = im[key]
                if not _is_int(v) or v <= 0:
                    raise NoisysegError(f"{_where('images', i, im)} has {key} {v!r}, expected a positive integer")
                size.append(int(v))
        sizes[iid] = tuple(size) if len(size) == 2 else None
    return sizes


def _check_segmentation(seg: Any, size: tuple[int, int] | None, where: str) -> None:
    """A polygon list (lists of an even number of finite numbers) or an RLE dict sized like its image."""
    if isinstance(seg, list):
        for k, poly in enumerate(seg):
            if not isinstance(poly, list) or len(poly) % 2 or not all(_is_number(v) for v in poly):
                raise NoisysegError(f"{where}: segmentation[{k}] must be a polygon [x1, y1, x2, y2, ...] "
                                    "of an even number of numbers")
            if poly and not np.isfinite(np.asarray(poly, dtype=np.float64)).all():
                raise NoisysegError(f"{where}: segmentation[{k}] holds a NaN or infinite coordinate")
        return
    if isinstance(seg, dict):
        counts, rle_size = seg.get("counts"), seg.get("size")
        if not (isinstance(counts, (str, bytes)) or (isinstance(counts, list) and all(_is_int(v) for v in counts))):
            raise NoisysegError(f"{where}: segmentation RLE needs 'counts' (a string or a list of integers)")
        if not isinstance(rle_size, list) or len(rle_size) != 2 or not all(_is_int(v) for v in rle_size):
            raise NoisysegError(f"{where}: segmentation RLE needs 'size' [height, width]")
        if size is not None and tuple(rle_size) != size:
            raise NoisysegError(f"{where}: segmentation RLE has size {rle_size}, but its image is "
                                f"{size[0]}x{size[1]} (height x width)")
        return
    raise NoisysegError(f"{where}: segmentation must be a polygon list or an RLE object, "
                        f"found {type(seg).__name__}")


def _check_boxes(boxes: list, owners: list[int], sizes: list, annotations: list) -> None:
    """Bulk check of the collected ``[x, y, w, h]`` boxes: finite, w and h >= 0, near their image.

    Args:
        boxes: M boxes, each a list of 4 numbers (types already checked).
        owners: (M,) index in ``annotations`` of each box, for messages.
        sizes: (M,) ``(height, width)`` of each box's image, or None when unknown.
    """
    if not boxes:
        return
    try:
        arr = np.array(boxes, dtype=np.float64)
    except OverflowError:  # an integer too large for a float
        arr = np.array([[float(v) if abs(v) < 1e308 else math.inf for v in b] for b in boxes], dtype=np.float64)
    hw = np.array([s if s is not None else (np.nan, np.nan) for s in sizes], dtype=np.float64).reshape(-1, 2)
    height, width = hw[:, 0], hw[:, 1]
    x, y, w, h = arr.T
    problems = (
        (~np.isfinite(arr).all(axis=1), "holds a NaN or infinite number"),
        ((w < 0) | (h < 0), "has a negative width or height"),
        # comparisons with NaN (image size unknown) are False, so those boxes pass this check
        ((x < -BOX_SLACK * width) | (y < -BOX_SLACK * height)
         | (x + w > (1 + BOX_SLACK) * width) | (y + h > (1 + BOX_SLACK) * height), None),
    )
    for bad, message in problems:
        hit = np.flatnonzero(bad)
        if len(hit):
            k = int(hit[0])
            i = owners[k]
            if message is None:
                hh, ww = sizes[k]
                message = (f"reaches far outside its {ww}x{hh} image (a box must lie within one image width "
                           "and height of the image's edges)")
            raise NoisysegError(f"{_where('annotations', i, annotations[i])} has bbox {boxes[k]!r}: "
                                f"{message}; expected [x, y, width, height] in pixels")


def validate_coco(coco: Any, *, dataset: bool = True) -> None:
    """Check a parsed COCO instance file; raise :class:`NoisysegError` (one line) at the first problem.

    The message names the entry (``annotations[i] (id X)``, ``images[i]``, ``categories[i]``) and the
    field, without the file name (callers prefix it).

    Args:
        coco: the parsed json.
        dataset: True for what a data set needs (train, eval): ``images`` with ``id``, ``file_name``,
            ``height``, ``width``; annotations with ``image_id``, ``category_id`` and ``bbox``; polygon or
            RLE segmentations. False for what noise injection needs: ``annotations`` with
            ``category_id`` and ``categories`` with ``id`` and ``name``.

    Either way every field that is present is checked: ids are integers (not bools, strings or floats)
    and unique within images, annotations and categories; ``height``/``width`` positive integers;
    ``category_id`` and ``clean_category_id`` listed categories; ``image_id`` a listed image; ``bbox``
    four finite numbers with width, height >= 0 lying within one image size of its image;
    ``iscrowd`` 0 or 1; ``area`` a finite number >= 0; ``class_ignored`` true or false.
    """
    if not isinstance(coco, dict):
        raise NoisysegError("expected a COCO JSON object with images, annotations and categories"
                            if dataset else "expected a COCO JSON object with 'annotations' and 'categories'")
    for key in ("images", "annotations", "categories") if dataset else ("annotations", "categories"):
        if key not in coco:
            raise NoisysegError(f"missing '{key}'")
    for key in ("images", "annotations", "categories"):
        if key in coco and not isinstance(coco[key], list):
            raise NoisysegError(f"'{key}' must be a list")
    if coco.get("info") is not None and not isinstance(coco["info"], dict):
        raise NoisysegError("'info' must be an object")
    if dataset and not coco["categories"]:
        raise NoisysegError("'categories' is empty")
    categories = _check_categories(coco["categories"], need_names=not dataset)
    has_images = "images" in coco
    image_sizes = _check_images(coco.get("images") or [], need_files=dataset)

    annotations = coco["annotations"]
    required = ("category_id", "image_id", "bbox") if dataset else ("category_id",)
    seen_ids: dict = {}
    boxes: list = []
    owners: list[int] = []
    box_sizes: list = []
    # One pass in Python over possibly a million annotations: the common case (plain JSON ints and floats)
    # is tested inline by exact type, and the general helpers run only for other types or to explain.
    for i, a in enumerate(annotations):
        if not isinstance(a, dict):
            raise NoisysegError(f"annotations[{i}] has no '{required[0]}' (found {a!r}, not an object)")
        for key in required:
            if key not in a:
                raise NoisysegError(f"annotations[{i}] has no '{key}'")
        if "id" in a:
            _check_id("annotations", i, a, seen_ids, "annotation")
        for key in ("category_id", "clean_category_id"):
            cid = a.get(key, _ABSENT)
            if cid is _ABSENT:
                continue
            if type(cid) is not int and not _is_int(cid):
                raise NoisysegError(f"{_where('annotations', i, a)} has {key} {cid!r}, not a listed category "
                                    f"(category ids are integers, not {type(cid).__name__})")
            if cid not in categories:
                raise NoisysegError(f"{_where('annotations', i, a)} has {key} {cid!r}, not a listed category")
        size = None
        iid = a.get("image_id", _ABSENT)
        if iid is not _ABSENT:
            if type(iid) is not int and not _is_int(iid):
                raise NoisysegError(f"{_where('annotations', i, a)} has image_id {iid!r}, expected an integer "
                                    "image id")
            if has_images:
                size = image_sizes.get(iid, _ABSENT)
                if size is _ABSENT:
                    raise NoisysegError(f"{_where('annotations', i, a)} has image_id {iid!r}, not a listed image")
        b = a.get("bbox", _ABSENT)
        if b is not _ABSENT:
            if not (type(b) is list and len(b) == 4 and all(type(v) in _NUMBER_TYPES or _is_number(v) for v in b)):
                raise NoisysegError(f"{_where('annotations', i, a)} has bbox {b!r}, expected a list of 4 numbers "
                                    "[x, y, width, height]")
            boxes.append(b)
            owners.append(i)
            box_sizes.append(size)
        crowd = a.get("iscrowd", 0)
        if crowd != 0 and crowd != 1:
            raise NoisysegError(f"{_where('annotations', i, a)} has iscrowd {crowd!r}, expected 0 or 1")
        area = a.get("area", 0)
        if type(area) not in _NUMBER_TYPES and not _is_number(area) or not (0 <= area < math.inf):
            raise NoisysegError(f"{_where('annotations', i, a)} has area {area!r}, expected a finite number >= 0")
        if "class_ignored" in a and type(a["class_ignored"]) is not bool:
            raise NoisysegError(f"{_where('annotations', i, a)} has class_ignored {a['class_ignored']!r}, "
                                "expected true or false")
        if dataset and "segmentation" in a:
            _check_segmentation(a["segmentation"], size, _where("annotations", i, a))
    _check_boxes(boxes, owners, box_sizes, annotations)
