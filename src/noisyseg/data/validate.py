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
from itertools import chain
from typing import Any

import numpy as np

from noisyseg.errors import NoisysegError

_NUMBER_TYPES = (int, float)  # exact JSON number types; bool is a subclass of int and is refused
_ABSENT = object()  # marks a field that is not there (None is a value a file can hold)
#: how far a box may reach past the image, in image sizes: [x, y, w, h] must lie in [-W, 2W] x [-H, 2H].
#: Annotation tools leave boxes a few pixels outside; anything past a whole image size is broken data.
BOX_SLACK = 1.0
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1
#: the fewest numbers a polygon may have: 3 points. pycocotools takes a first polygon of 4 numbers for a
#: box and fails on a first polygon of fewer, inside a data loader worker.
MIN_POLYGON_NUMBERS = 6


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
    if not INT64_MIN <= eid <= INT64_MAX:
        # ids travel as int64 (tensors, numpy arrays, the COCO evaluators' C++ code): a larger one would
        # only fail after training
        raise NoisysegError(f"{kind}[{i}] has id {eid}, expected an integer in -2^63 .. 2^63-1")
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


def _check_category(a: dict, i: int, key: str, categories: dict) -> None:
    """``a[key]`` is the id of a listed category (one-line error otherwise)."""
    cid = a[key]
    if type(cid) is not int and not _is_int(cid):
        raise NoisysegError(f"{_where('annotations', i, a)} has {key} {cid!r}, not a listed category "
                            f"(category ids are integers, not {type(cid).__name__})")
    if cid not in categories:
        raise NoisysegError(f"{_where('annotations', i, a)} has {key} {cid!r}, not a listed category")


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


def rle_counts(counts: Any) -> np.ndarray | None:
    """The run lengths of an RLE ``counts`` (compressed string / bytes, or a list of integers), as int64.

    Compressed counts are decoded the way pycocotools' ``rleFrString`` does (6 bits a character from
    ``'0'``: 5 value bits and a "more" bit; the last character of a value carries its sign; runs from the
    fourth on are stored as differences to the run two before). Returns None for counts pycocotools would
    read wrongly: a character outside ``'0'..'o'``, a string that ends inside a value, a value too long
    for 64 bits, or a run that comes out negative.
    """
    if isinstance(counts, list):
        try:
            runs = np.array(counts, dtype=np.int64)
        except (OverflowError, ValueError, TypeError):
            return None
        return runs if runs.ndim == 1 and not (runs < 0).any() else None
    if isinstance(counts, str):
        try:
            counts = counts.encode("ascii")
        except UnicodeEncodeError:
            return None
    c = np.frombuffer(counts, dtype=np.uint8).astype(np.int64) - 48
    if ((c < 0) | (c > 63)).any():
        return None
    if not c.size:
        return np.zeros(0, dtype=np.int64)
    more = (c & 0x20) != 0
    if more[-1]:
        return None
    ends = np.flatnonzero(~more)  # the last character of each value
    starts = np.concatenate(([0], ends[:-1] + 1))
    lengths = ends - starts + 1
    if lengths.max() > 12:  # 5 bits a character: 12 characters fill 60 bits
        return None
    shift = 5 * (np.arange(c.size) - np.repeat(starts, lengths))
    x = np.add.reduceat((c & 0x1F) << shift, starts)
    negative = (c[ends] & 0x10) != 0
    x[negative] -= np.left_shift(1, 5 * lengths[negative])
    runs = x.copy()
    runs[1::2] = np.cumsum(x[1::2])  # run i > 2 is stored as its difference to run i - 2
    runs[2::2] = np.cumsum(x[2::2])
    return None if (runs < 0).any() else runs


def _check_polygon(poly: Any, k: int, i: int, a: dict) -> None:
    """Polygon ``k`` of annotation ``a`` (``annotations[i]``): an even number, at least 6, of finite numbers."""
    if type(poly) is not list or len(poly) % 2:
        raise NoisysegError(f"{_where('annotations', i, a)}: segmentation[{k}] must be a polygon "
                            "[x1, y1, x2, y2, ...] of an even number of numbers")
    kinds = set(map(type, poly))  # one C-speed pass; the exact check only for unusual types
    if not kinds <= {int, float} and not all(_is_number(v) for v in poly):
        raise NoisysegError(f"{_where('annotations', i, a)}: segmentation[{k}] must be a polygon "
                            "[x1, y1, x2, y2, ...] of an even number of numbers")
    if len(poly) < MIN_POLYGON_NUMBERS:
        raise NoisysegError(f"{_where('annotations', i, a)}: segmentation[{k}] has {len(poly)} numbers, expected "
                            "a polygon of at least 3 points (6 numbers)")
    # a sum of finite floats is finite unless it overflows: the exact check runs only then
    try:
        finite = math.isfinite(sum(poly)) or bool(np.isfinite(np.asarray(poly, dtype=np.float64)).all())
    except OverflowError:  # an integer too large for a float
        finite = False
    if not finite:
        raise NoisysegError(f"{_where('annotations', i, a)}: segmentation[{k}] holds a NaN or infinite coordinate")


def _check_segmentation(seg: Any, size: tuple[int, int] | None, i: int, a: dict) -> None:
    """The segmentation of annotation ``a`` (``annotations[i]``): a polygon list (see :func:`_check_polygon`)
    or an RLE dict sized like its image whose runs cover exactly its height x width pixels."""
    where = _where("annotations", i, a)
    if type(seg) is list:
        for k, poly in enumerate(seg):
            _check_polygon(poly, k, i, a)
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
        # pycocotools decodes runs that do not cover the mask into uninitialised memory, and reads
        # a malformed string past its end: the runs must add up to the mask's pixels exactly
        runs = rle_counts(counts)
        pixels = int(rle_size[0]) * int(rle_size[1])
        if runs is None or int(runs.sum()) != pixels or rle_size[0] < 0 or rle_size[1] < 0:
            found = "malformed counts" if runs is None else f"runs covering {int(runs.sum())} pixels"
            raise NoisysegError(f"{where}: segmentation RLE has {found}, expected runs of 0s and 1s covering its "
                                f"{rle_size[0]}x{rle_size[1]} = {pixels} pixels")
        return
    raise NoisysegError(f"{where}: segmentation must be a polygon list or an RLE object, "
                        f"found {type(seg).__name__}")


def _check_boxes(boxes: list, owners: list[int], sizes: list, annotations: list) -> np.ndarray:
    """Bulk check of the collected ``[x, y, w, h]`` boxes: finite, w and h >= 0, near their image.

    Args:
        boxes: M boxes, each a list of 4 numbers (types already checked).
        owners: (M,) index in ``annotations`` of each box, for messages.
        sizes: (M,) ``(height, width)`` of each box's image, or None when unknown.

    Returns the boxes as a (M, 4) float64 array.
    """
    if not boxes:
        return np.zeros((0, 4), dtype=np.float64)
    # np.fromiter over the flattened numbers is several times faster than np.array on a list of lists
    try:
        arr = np.fromiter(chain.from_iterable(boxes), np.float64, 4 * len(boxes)).reshape(-1, 4)
    except OverflowError:  # an integer too large for a float
        arr = np.array([[float(v) if abs(v) < 1e308 else math.inf for v in b] for b in boxes], dtype=np.float64)
    unknown = (np.nan, np.nan)
    hw = np.fromiter(chain.from_iterable(unknown if s is None else s for s in sizes), np.float64,
                     2 * len(sizes)).reshape(-1, 2)
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
    return arr


def validate_coco(coco: Any, *, dataset: bool = True) -> np.ndarray:
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
    ``category_id`` and ``clean_category_id`` listed categories; ``image_id`` a listed image; ids fit in
    64 bits (-2^63 .. 2^63-1); ``bbox`` four finite numbers with width, height >= 0 lying within one image
    size of its image; ``iscrowd`` 0 or 1; ``area`` a finite number >= 0; ``class_ignored`` true or false.
    In ``dataset`` mode a polygon has at least 3 points, and an RLE's runs are well formed and cover
    exactly its height x width pixels.

    Returns:
        (M, 4) float64 array of the M annotations' ``bbox`` ``[x, y, width, height]`` in file order (NaN
        rows for annotations without one), so a data set need not convert them again.
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
    ann_ids: list[int] = []
    ann_id_pos: list[int] = []
    boxes: list = []
    owners: list[int] = []
    box_sizes: list = []
    # One pass in Python over possibly a million annotations: the common case (plain JSON ints and floats)
    # is tested inline by exact type, and the general helpers run only for other types or to explain.
    number_types = set(_NUMBER_TYPES)
    check_masks = dataset
    for i, a in enumerate(annotations):
        if type(a) is not dict:
            if not isinstance(a, dict):
                raise NoisysegError(f"annotations[{i}] has no '{required[0]}' (found {a!r}, not an object)")
        for key in required:
            if key not in a:
                raise NoisysegError(f"annotations[{i}] has no '{key}'")
        aid = a.get("id", _ABSENT)
        if aid is not _ABSENT:
            if type(aid) is int and INT64_MIN <= aid <= INT64_MAX:
                ann_ids.append(aid)  # checked for repeats in bulk after the pass
                ann_id_pos.append(i)
            else:
                ann_ids.append(int(_check_id("annotations", i, a, seen_ids, "annotation")))
                ann_id_pos.append(i)
        cid = a.get("category_id", _ABSENT)
        if type(cid) is not int or cid not in categories:
            _check_category(a, i, "category_id", categories)
        if "clean_category_id" in a:
            _check_category(a, i, "clean_category_id", categories)
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
            if not (type(b) is list and len(b) == 4
                    and (set(map(type, b)) <= number_types or all(_is_number(v) for v in b))):
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
        if check_masks and "segmentation" in a:
            seg = a["segmentation"]
            if type(seg) is list:  # the common case inline; the helper names the entry only on error
                for k, poly in enumerate(seg):
                    # NaN fails both comparisons, and so does a sum near a float's limit (ints compare
                    # exactly): the helper then checks each number
                    if not (type(poly) is list and len(poly) >= MIN_POLYGON_NUMBERS and not len(poly) & 1
                            and set(map(type, poly)) <= number_types and -1e300 < sum(poly) < 1e300):
                        _check_polygon(poly, k, i, a)
            else:
                _check_segmentation(seg, size, i, a)
    if len(ann_ids) and len(np.unique(np.array(ann_ids, dtype=np.int64))) != len(ann_ids):
        for aid, i in zip(ann_ids, ann_id_pos):  # a repeat: find the first one in file order to name it
            first = seen_ids.setdefault(aid, i)
            if first != i:
                raise NoisysegError(f"annotations[{i}] repeats annotation id {aid} (already used by "
                                    f"annotations[{first}])")
    checked = _check_boxes(boxes, owners, box_sizes, annotations)
    if len(owners) == len(annotations):
        return checked
    out = np.full((len(annotations), 4), np.nan)
    out[np.asarray(owners, dtype=np.int64)] = checked
    return out
