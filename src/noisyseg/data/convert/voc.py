"""PASCAL VOC 2012 segmentation -> COCO instance json with the 20 VOC classes.

Input: the ``VOC2012`` folder with ``JPEGImages/{name}.jpg``, ``SegmentationObject/{name}.png``,
``SegmentationClass/{name}.png`` and ``ImageSets/Segmentation/{split}.txt`` (one image name per line).
Both PNGs are palette ("P") images whose pixel values are indices, not colours:

- SegmentationObject: 0 background, 1..n instance number within the image, 255 boundary/void;
- SegmentationClass: 0 background, 1..20 class index (order below), 255 boundary/void.

An instance is the set of pixels carrying one instance number, minus every pixel that is void (255) in
either map. Its class is the most frequent class index among its pixels in SegmentationClass, counting
only 1..20 (background and void do not vote). A tie (never seen in the official annotations) takes the
lower class index and prints a warning on stderr. An instance with no pixel left (or none with a class)
is dropped and counted in the summary line.

Classes (category ids 1..20 in the standard VOC order) and the supercategories chosen here:

- vehicle: aeroplane, bicycle, boat, bus, car, motorbike, train
- animal: bird, cat, cow, dog, horse, sheep
- indoor: bottle, chair, diningtable, pottedplant, sofa, tvmonitor
- person: person

Output: one file per split, ``OUT/{split}.json`` (e.g. ``OUT/train.json``), COCO instance format, with
``file_name`` relative to ``VOC2012/JPEGImages`` (``2007_000032.jpg``), ``height``/``width`` from the
PNGs, compressed-RLE masks (``counts`` as str), ``area`` = pixel count, tight ``bbox`` ``[x, y, w, h]``,
``iscrowd`` 0. Image ids follow the split list order from 1; annotation ids from 1 in each split.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Iterable

import numpy as np
from PIL import Image
from tqdm import tqdm

from noisyseg.data.convert.common import check_outputs, mask_annotation, require_dir, write_splits
from noisyseg.errors import NoisysegError

CLASSES = ["aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow", "diningtable",
           "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa", "train", "tvmonitor"]
_GROUPS = {"vehicle": ["aeroplane", "bicycle", "boat", "bus", "car", "motorbike", "train"],
           "animal": ["bird", "cat", "cow", "dog", "horse", "sheep"],
           "indoor": ["bottle", "chair", "diningtable", "pottedplant", "sofa", "tvmonitor"],
           "person": ["person"]}
SUPERCATEGORY = {n: g for g, names in _GROUPS.items() for n in names}
CATEGORIES = [{"id": i + 1, "name": n, "supercategory": SUPERCATEGORY[n]} for i, n in enumerate(CLASSES)]
VOID = 255


def _read_index_png(path: Path, what: str, listed_in: Path) -> np.ndarray:
    """Pixel indices of a palette PNG as a (H, W) uint8 array; one-line errors naming the file."""
    if not path.is_file():
        raise NoisysegError(f"{path}: {what} not found (image listed in {listed_in})")
    try:
        with Image.open(path) as im:
            if im.mode not in ("P", "L"):
                raise NoisysegError(f"{path}: expected a palette (index) PNG, got mode {im.mode}")
            return np.array(im, dtype=np.uint8)
    except OSError as e:
        raise NoisysegError(f"{path}: cannot read {what} ({e})") from None


def instances(objects: np.ndarray, classes: np.ndarray) -> tuple[list[tuple[np.ndarray, int, bool]], int]:
    """Split an object map into instances.

    Args:
        objects: (H, W) uint8 SegmentationObject indices.
        classes: (H, W) uint8 SegmentationClass indices (values 0..20 or 255).
    Returns:
        ``(found, dropped)``: ``found`` lists ``(mask, class_index, tied)`` per kept instance in instance
        number order, ``mask`` a (H, W) bool array without void pixels, ``class_index`` in 1..20 and
        ``tied`` True when another class had as many pixels; ``dropped`` counts instance numbers with no
        classified pixel.
    """
    valid = (objects != VOID) & (classes != VOID)
    found, dropped = [], 0
    for idx in np.unique(objects):
        if idx == 0 or idx == VOID:
            continue
        mask = (objects == idx) & valid
        votes = np.bincount(classes[mask], minlength=VOID)[1: len(CLASSES) + 1]
        if votes.sum() == 0:
            dropped += 1
            continue
        best = int(votes.argmax())
        found.append((mask, best + 1, bool((votes == votes[best]).sum() > 1)))
    return found, dropped


def _summary(split: str, n_images: int, annotations: list[dict], dropped: int) -> str:
    per = np.bincount([a["category_id"] for a in annotations], minlength=len(CLASSES) + 1)[1:]
    counts = ", ".join(f"{n} {int(k)}" for n, k in zip(CLASSES, per))
    return (f"[{split}] {n_images} images, {len(annotations)} instances ({counts}); "
            f"{dropped} dropped (no pixel with a class)")


def convert_voc(root: str | Path, out_dir: str | Path, splits: Iterable[str] = ("train", "val"),
                progress: bool = True) -> dict[str, Path]:
    """Convert PASCAL VOC 2012 instance segmentation of each split to ``out_dir/{split}.json``.

    The output folder is checked first, and the jsons are written (atomically) only after every split
    converted, so bad input never leaves a partial output. Prints one summary line per split on stdout.

    Args:
        root: the ``VOC2012`` folder.
        out_dir: output folder (created if missing).
        splits: names of the lists in ``ImageSets/Segmentation`` (without ``.txt``).
        progress: show a tqdm bar over the images (on stderr).
    Returns:
        ``{split: path of the written json}``.
    """
    out_dir, splits = check_outputs(out_dir, splits)
    root = require_dir(Path(root), "VOC2012")
    jpegs = require_dir(root / "JPEGImages", "JPEGImages")
    objects_dir = require_dir(root / "SegmentationObject", "SegmentationObject")
    classes_dir = require_dir(root / "SegmentationClass", "SegmentationClass")
    lists = require_dir(root / "ImageSets" / "Segmentation", "ImageSets/Segmentation")
    converted: list[tuple[Path, dict, str]] = []
    warnings: list[str] = []
    for split in splits:
        list_file = lists / f"{split}.txt"
        if not list_file.is_file():
            raise NoisysegError(f"{list_file}: split list not found")
        names = [line.split()[0] for line in list_file.read_text().splitlines() if line.strip()]
        images: list[dict] = []
        annotations: list[dict] = []
        dropped = 0
        tied: list[str] = []
        for image_id, name in enumerate(tqdm(names, desc=f"voc {split}", unit="img", disable=not progress), 1):
            jpeg = jpegs / f"{name}.jpg"
            if not jpeg.is_file():
                raise NoisysegError(f"{jpeg}: image not found (listed in {list_file})")
            obj_png = objects_dir / f"{name}.png"
            cls_png = classes_dir / f"{name}.png"
            objects = _read_index_png(obj_png, "SegmentationObject PNG", list_file)
            classes = _read_index_png(cls_png, "SegmentationClass PNG", list_file)
            if objects.shape != classes.shape:
                raise NoisysegError(f"{cls_png}: size {classes.shape[1]}x{classes.shape[0]} differs from "
                                    f"{obj_png} ({objects.shape[1]}x{objects.shape[0]})")
            bad = np.setdiff1d(np.unique(classes), np.r_[np.arange(len(CLASSES) + 1), VOID])
            if bad.size:
                raise NoisysegError(f"{cls_png}: class index {int(bad[0])} outside 0..{len(CLASSES)} and {VOID}")
            height, width = objects.shape
            images.append({"id": image_id, "file_name": f"{name}.jpg", "height": int(height), "width": int(width)})
            found, n_dropped = instances(objects, classes)
            dropped += n_dropped
            for mask, class_index, is_tied in found:
                if is_tied:
                    tied.append(name)
                annotations.append(mask_annotation(mask, len(annotations) + 1, image_id, class_index))
        info = {"description": f"PASCAL VOC 2012 segmentation {split}: 20 classes (converted by noisyseg)",
                "image_root": str(jpegs)}
        coco = {"info": info, "images": images, "annotations": annotations, "categories": CATEGORIES}
        converted.append((out_dir / f"{split}.json", coco, _summary(split, len(images), annotations, dropped)))
        if tied:
            shown = ", ".join(sorted(set(tied))[:5])
            warnings.append(f"noisyseg convert voc: warning: [{split}] {len(tied)} instance(s) had a tie for the "
                            f"majority class; the lower class index was used (images: {shown}"
                            f"{', ...' if len(set(tied)) > 5 else ''})")
    written = write_splits(splits, converted)
    for line in warnings:
        print(line, file=sys.stderr)
    return written
