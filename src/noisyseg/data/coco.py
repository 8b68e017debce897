"""COCO-format instance data as torch datasets for Mask R-CNN.

Any COCO instance json works: polygon, compressed-RLE and uncompressed-RLE masks. Category ids map to
contiguous labels 1..K in sorted-id order (0 is background); the :class:`LabelMap` is stored in every
checkpoint so predictions come back as the data set's own ids.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from pycocotools import mask as mask_utils

from noisyseg.data.images import load_rgb
from noisyseg.data.validate import validate_coco
from noisyseg.errors import NoisysegError
from noisyseg.utils.io import read_json

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class LabelMap:
    """Category ids <-> contiguous labels. ``category_ids[i]`` has label ``i + 1``."""

    category_ids: tuple[int, ...]
    names: tuple[str, ...]

    @classmethod
    def from_categories(cls, categories: list[dict]) -> "LabelMap":
        cats = sorted(categories, key=lambda c: c["id"])
        return cls(tuple(int(c["id"]) for c in cats), tuple(str(c.get("name", c["id"])) for c in cats))

    @property
    def num_classes(self) -> int:
        """K, the number of object classes (background not counted)."""
        return len(self.category_ids)

    def label_of(self, category_id: int) -> int:
        return self._index[category_id]

    @property
    def _index(self) -> dict[int, int]:
        return {cid: i + 1 for i, cid in enumerate(self.category_ids)}

    def to_dict(self) -> dict:
        return {"category_ids": list(self.category_ids), "names": list(self.names)}

    @classmethod
    def from_dict(cls, d: dict) -> "LabelMap":
        return cls(tuple(int(i) for i in d["category_ids"]), tuple(d["names"]))


def load_coco(path: str | Path) -> dict:
    """Read a COCO instance json and check every field a data set relies on (see
    :func:`noisyseg.data.validate.validate_coco`); problems are one-line errors naming the file."""
    coco = read_json(path, "COCO annotation file")
    try:
        validate_coco(coco, dataset=True)
    except NoisysegError as e:
        raise NoisysegError(f"{path}: {e}") from None
    return coco


def decode_mask(segmentation: Any, height: int, width: int) -> np.ndarray:
    """Any COCO segmentation (polygon list, compressed or uncompressed RLE) -> (H, W) uint8 mask."""
    if isinstance(segmentation, list):
        if not segmentation:
            return np.zeros((height, width), dtype=np.uint8)
        rle = mask_utils.merge(mask_utils.frPyObjects(segmentation, height, width))
    elif isinstance(segmentation, dict) and isinstance(segmentation.get("counts"), list):
        rle = mask_utils.frPyObjects(segmentation, height, width)
    elif isinstance(segmentation, dict):
        rle = segmentation
    else:
        raise ValueError(f"unsupported segmentation of type {type(segmentation).__name__}")
    return mask_utils.decode(rle)


@dataclass
class _Record:
    image_id: int
    path: str
    height: int
    width: int
    annotations: list[dict]


class CocoInstances(torch.utils.data.Dataset):
    """Images and Mask R-CNN targets from a COCO instance json.

    Each item is ``(image, target)`` (before ``transforms``): image a uint8 tensor (3, H, W), RGB; target
    a dict with, for the G annotations kept on that image:

    - ``boxes`` (G, 4) float32 ``x1, y1, x2, y2`` pixels;
    - ``labels`` (G,) int64 contiguous labels in 1..K (see :class:`LabelMap`);
    - ``masks`` (G, H, W) uint8 0/1 (left out when ``load_masks`` is False);
    - ``image_id`` the image's id in the json;
    - ``clean_labels`` (G,) int64, when the file records ``clean_category_id`` (the label before noise was
      injected; 0 where the clean id is not a class of the label map). For analysis only: training never
      reads it;
    - ``class_ignored`` (G,) bool, when the file has ``class_ignored`` annotations (written by the audit's
      ``--fix --action ignore``): True where the class label is not to be trusted, so the RoI heads drop
      that annotation's classification loss and keep its objectness, box and mask losses.

    For training (``train=True``): crowd annotations are excluded, degenerate boxes (width or height
    under 1 px) are dropped and counted in ``num_degenerate``, and images left without annotations are
    skipped. For evaluation every image is kept.

    The file is checked when the data set is made (:func:`load_coco`): a malformed field is a one-line
    :class:`NoisysegError` naming the file, the entry and the field, never a crash mid-epoch.
    ``load_masks=False`` skips decoding ground-truth masks (evaluation never uses them).
    """

    def __init__(
        self,
        json_path: str | Path,
        image_root: str | Path,
        train: bool,
        transforms: Callable | None = None,
        label_map: LabelMap | None = None,
        check_files: bool = True,
        load_masks: bool = True,
    ) -> None:
        self.json_path = Path(json_path)
        self.image_root = Path(image_root)
        self.train = train
        self.transforms = transforms
        self.load_masks = load_masks
        coco = load_coco(json_path)
        own = LabelMap.from_categories(coco["categories"])
        if label_map is not None and label_map.category_ids != own.category_ids:
            raise NoisysegError(
                f"{json_path}: categories {list(own.category_ids)} differ from the training set's "
                f"{list(label_map.category_ids)}"
            )
        if label_map is not None and label_map.names != own.names:
            # same ids, other classes: scoring against them would silently compare apples with pears
            diff = next((cid, a, b) for cid, a, b in zip(own.category_ids, own.names, label_map.names) if a != b)
            raise NoisysegError(
                f"{json_path}: category {diff[0]} is named {diff[1]!r}, but {diff[2]!r} in the training set "
                "(same ids, different class names)"
            )
        self.label_map = label_map or own
        index = self.label_map._index
        by_image: dict[Any, list[dict]] = {im["id"]: [] for im in coco["images"]}
        self.num_degenerate = 0
        self.num_crowd = 0
        for a in coco["annotations"]:
            if train and a.get("iscrowd", 0):
                self.num_crowd += 1
                continue
            x, y, w, h = a["bbox"]
            if train and (w < 1 or h < 1):
                self.num_degenerate += 1
                continue
            by_image[a["image_id"]].append(a)
        self.records: list[_Record] = []
        for im in coco["images"]:
            anns = by_image[im["id"]]
            if train and not anns:
                continue
            self.records.append(
                _Record(im["id"], str(self.image_root / im["file_name"]), int(im["height"]), int(im["width"]), anns)
            )
        self.num_skipped_images = len(coco["images"]) - len(self.records)
        self._label_index = index
        self.has_clean_labels = any("clean_category_id" in a for a in coco["annotations"])
        self.has_class_ignored = any("class_ignored" in a for a in coco["annotations"])
        if check_files:
            for r in self.records:
                if not os.path.isfile(r.path):
                    raise NoisysegError(f"{json_path}: image not found: {r.path}")
        if train and not self.records:
            raise NoisysegError(f"{json_path}: no image has a usable annotation to train on")
        if train and self.num_degenerate:
            log.info("%s: dropped %d annotations with degenerate boxes", json_path, self.num_degenerate)

    def __len__(self) -> int:
        return len(self.records)

    def load_image(self, index: int) -> torch.Tensor:
        r = self.records[index]
        image = load_rgb(r.path)
        if tuple(image.shape[1:]) != (r.height, r.width):
            raise NoisysegError(
                f"{r.path}: image is {image.shape[2]}x{image.shape[1]} but {self.json_path} says {r.width}x{r.height}"
            )
        return image

    def target(self, index: int) -> dict[str, Any]:
        """The target dict of item ``index`` (see the class docstring)."""
        r = self.records[index]
        anns = r.annotations
        n = len(anns)
        boxes = torch.zeros((n, 4), dtype=torch.float32)
        labels = torch.zeros(n, dtype=torch.int64)
        clean = torch.zeros(n, dtype=torch.int64)
        ignored = torch.zeros(n, dtype=torch.bool)
        masks = np.zeros((n, r.height, r.width), dtype=np.uint8) if self.load_masks else None
        for i, a in enumerate(anns):
            x, y, w, h = a["bbox"]
            boxes[i] = torch.tensor([x, y, x + w, y + h])
            labels[i] = self._label_index[a["category_id"]]
            clean[i] = self._label_index.get(a.get("clean_category_id", a["category_id"]), 0)
            ignored[i] = a.get("class_ignored", False)
            if masks is not None and "segmentation" in a:
                try:
                    masks[i] = decode_mask(a["segmentation"], r.height, r.width)
                except Exception as e:  # pycocotools raises bare Exceptions on malformed input
                    raise NoisysegError(f"{self.json_path}: annotation {a.get('id', i)}: bad segmentation ({e})") from None
        target: dict[str, Any] = {"boxes": boxes, "labels": labels, "image_id": r.image_id}
        if masks is not None:
            target["masks"] = torch.from_numpy(masks)
        if self.has_clean_labels:
            target["clean_labels"] = clean
        if self.has_class_ignored:
            target["class_ignored"] = ignored
        return target

    def __getitem__(self, index: int) -> tuple[torch.Tensor, dict[str, Any]]:
        image, target = self.load_image(index), self.target(index)
        if self.transforms is not None:
            image, target = self.transforms(image, target)
        return image, target


def collate(batch: list) -> tuple[list, list]:
    """Mask R-CNN takes lists of differently sized images and targets, not stacked tensors."""
    images, targets = zip(*batch)
    return list(images), list(targets)
