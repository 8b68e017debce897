"""COCO-format instance data as torch datasets for Mask R-CNN.

Any COCO instance json works: polygon, compressed-RLE and uncompressed-RLE masks. Category ids map to
contiguous labels 1..K in sorted-id order (0 is background); the :class:`LabelMap` is stored in every
checkpoint so predictions come back as the data set's own ids.
"""

from __future__ import annotations

import contextlib
import gc
import logging
import pickle
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from pycocotools import mask as mask_utils

from noisyseg.data.images import image_size, load_rgb
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


@contextlib.contextmanager
def _gc_paused():
    """Pause Python's cyclic garbage collector for a block that makes millions of acyclic objects.

    Parsing a COCO-sized json makes millions of dicts and lists; each batch of new containers starts a
    collection, and the full ones walk every object made so far, which costs about as much again as the
    parsing itself. Nothing built here forms a reference cycle, so nothing is left for the collector.
    """
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


class DataLoadError(NoisysegError):
    """A sample that cannot be loaded (an unreadable image, a mask pycocotools refuses), in one line.

    Raised by :class:`CocoInstances` while loading an item. Inside a DataLoader worker, torch re-raises a
    worker's exception in the main process as ``type(e)(text)``, where ``text`` is a "Caught ... Original
    Traceback" report of 20-odd lines; this class keeps only the original one-line message of that
    report, so ``num_workers >= 1`` ends with the same single line (and exit code 2) as ``num_workers: 0``.
    """

    def __init__(self, message: str) -> None:
        if isinstance(message, str) and "\nOriginal Traceback" in message:
            last = message.rstrip().rsplit("\n", 1)[-1]
            prefix = f"{type(self).__module__}.{type(self).__qualname__}: "
            message = last[len(prefix):] if last.startswith(prefix) else last
        super().__init__(message)


@dataclass(frozen=True)
class _Record:
    """One image of a :class:`CocoInstances`, made on demand from its flat arrays."""

    image_id: int
    path: str
    height: int
    width: int


class _Records:
    """``dataset.records[i]``: a read-only sequence of :class:`_Record` views (nothing is stored per item)."""

    def __init__(self, dataset: "CocoInstances") -> None:
        self._ds = dataset

    def __len__(self) -> int:
        return len(self._ds)

    def __getitem__(self, index: int) -> _Record:
        ds = self._ds
        if not -len(ds) <= index < len(ds):
            raise IndexError(index)
        index %= len(ds)
        h, w = ds._sizes[index].tolist()
        return _Record(int(ds._image_ids[index]), ds.image_path(index), h, w)

    def __iter__(self):
        return (self[i] for i in range(len(self)))


def _slices(ends: np.ndarray, index: int) -> tuple[int, int]:
    """``[start, end)`` of item ``index`` in a buffer cut at ``ends`` (cumulative, (N,))."""
    return (int(ends[index - 1]) if index else 0), int(ends[index])


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
      that annotation's classification loss and keep its objectness, box and mask losses;
    - ``class_target`` (G, K) float32, once :meth:`set_class_targets` gave every annotation a soft class
      target (the ``posterior`` loss's targets, set by the trainer at the end of the CE stage).

    For training (``train=True``): crowd annotations are excluded, degenerate boxes (width or height
    under 1 px) are dropped and counted in ``num_degenerate``, and images left without annotations are
    skipped. For evaluation every image is kept.

    The file is checked when the data set is made (:func:`load_coco`): a malformed field is a one-line
    :class:`NoisysegError` naming the file, the entry and the field, never a crash mid-epoch. With
    ``check_files`` every image's header is read too (Pillow reads only the header): a missing or
    unreadable file, or a size other than the json's, stops here, before any training. What only a full
    decode can find (a truncated file) raises :class:`DataLoadError`, one line naming the file and the
    entry, also from inside a DataLoader worker. ``load_masks=False`` skips ground-truth masks
    (evaluation never uses them).

    Memory: the parsed json is dropped once the data set is built. Per image and per annotation it keeps
    only a few flat numpy arrays and one buffer of pickled segmentations (one slice per image), so
    DataLoader workers, which share the parent's memory copy-on-write, touch no per-item Python objects
    and their memory stays flat over an epoch (a list of dicts would be copied page by page as reference
    counts change: pytorch#13246).
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
        with _gc_paused():
            coco = read_json(json_path, "COCO annotation file")
            try:
                xywh = validate_coco(coco, dataset=True)
            except NoisysegError as e:
                raise NoisysegError(f"{json_path}: {e}") from None
            self._init_from(coco, xywh, label_map)
            del coco  # freed here, while the collector still sleeps
        if check_files:
            self._check_image_headers()
        if train and not len(self):
            raise NoisysegError(f"{json_path}: no image has a usable annotation to train on")
        if train and self.num_degenerate:
            log.info("%s: dropped %d annotations with degenerate boxes", json_path, self.num_degenerate)

    def _init_from(self, coco: dict, xywh: np.ndarray, label_map: LabelMap | None) -> None:
        json_path = self.json_path
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
        self._build(coco, xywh)

    def _build(self, coco: dict, xywh: np.ndarray) -> None:
        """Flatten the checked json into arrays (one pass per field; numpy does the grouping)."""
        images, anns = coco["images"], coco["annotations"]
        n_ann = len(anns)
        image_index = {im["id"]: i for i, im in enumerate(images)}
        owner = np.fromiter((image_index[a["image_id"]] for a in anns), np.int64, n_ann)
        crowd = np.fromiter((a.get("iscrowd", 0) for a in anns), np.int64, n_ann).astype(bool)
        keep = np.ones(n_ann, dtype=bool)
        self.num_crowd = self.num_degenerate = 0
        if self.train:
            degenerate = ~crowd & ((xywh[:, 2] < 1) | (xywh[:, 3] < 1))
            self.num_crowd, self.num_degenerate = int(crowd.sum()), int(degenerate.sum())
            keep &= ~crowd & ~degenerate
        kept = np.flatnonzero(keep)
        order = kept[np.argsort(owner[kept], kind="stable")]  # grouped by image, file order within an image
        per_image = np.bincount(owner[order], minlength=len(images))
        chosen = np.flatnonzero(per_image) if self.train else np.arange(len(images))
        self.num_skipped_images = len(images) - len(chosen)
        chosen_list = chosen.tolist()

        # per image: id, size, file name, where its annotations end
        self._image_ids = np.array([images[i]["id"] for i in chosen_list], dtype=np.int64)
        self._sizes = np.array([(images[i]["height"], images[i]["width"]) for i in chosen_list],
                               dtype=np.int64).reshape(-1, 2)
        names = [images[i]["file_name"].encode("utf-8", "surrogatepass") for i in chosen_list]
        self._names = np.frombuffer(b"".join(names), dtype=np.uint8)
        self._name_ends = np.cumsum([len(n) for n in names], dtype=np.int64)
        self._image_pos = chosen  # position in the file's images list, for messages
        self._ann_ends = np.cumsum(per_image[chosen], dtype=np.int64)

        # per annotation, in the order above: boxes x1 y1 x2 y2 (the sums in float64 as Python would do
        # them, then float32), labels, clean labels, class_ignored, position and id for messages
        box = xywh[order]
        box[:, 2:] += box[:, :2]
        self._boxes = box.astype(np.float32)
        ids = np.asarray(self.label_map.category_ids, dtype=np.int64)

        def labels_of(category_ids: np.ndarray) -> np.ndarray:
            pos = np.searchsorted(ids, category_ids).clip(0, len(ids) - 1)
            return np.where(ids[pos] == category_ids, pos + 1, 0).astype(np.int64)

        # Fields are read in file order (the json's objects lie in memory in that order; reading them in
        # image order instead misses the CPU caches on every access), then put in image order by numpy.
        category = np.fromiter((a["category_id"] for a in anns), np.int64, n_ann)
        self._labels = labels_of(category[order])
        self.has_clean_labels = any("clean_category_id" in a for a in anns)
        self.has_class_ignored = any("class_ignored" in a for a in anns)
        self._clean = (labels_of(np.fromiter((a.get("clean_category_id", a["category_id"]) for a in anns),
                                             np.int64, n_ann)[order]) if self.has_clean_labels else self._labels)
        self._ignored = (np.fromiter((a.get("class_ignored", False) is True for a in anns), bool, n_ann)[order]
                         if self.has_class_ignored else np.zeros(len(order), dtype=bool))
        self._ann_pos = order
        self._ann_ids = np.fromiter((a.get("id", 0) for a in anns), np.int64, n_ann)[order]
        self._ann_has_id = np.fromiter(("id" in a for a in anns), bool, n_ann)[order]
        self._class_targets: np.ndarray | None = None  # set_class_targets

        # the segmentations, each pickled on its own (None where an annotation has none), in image order
        if self.load_masks:
            dumps, protocol = pickle.dumps, pickle.HIGHEST_PROTOCOL
            chunks = [dumps(a.get("segmentation"), protocol) for a in anns]
            chunks = [chunks[k] for k in order.tolist()]
            self._segs = np.frombuffer(b"".join(chunks), dtype=np.uint8)
            self._seg_ends = np.cumsum([len(c) for c in chunks], dtype=np.int64)
            del chunks

    def _check_image_headers(self) -> None:
        """Every image exists, is readable as an image and has the json's size (headers only)."""
        for i in range(len(self)):
            path = self.image_path(i)
            try:
                width, height = image_size(path)
            except NoisysegError as e:
                raise NoisysegError(f"{e} ({self.json_path}: {self._where_image(i)})") from None
            if (height, width) != tuple(self._sizes[i].tolist()):
                raise NoisysegError(f"{path}: image is {width}x{height} but {self.json_path} says "
                                    f"{self._sizes[i, 1]}x{self._sizes[i, 0]} ({self._where_image(i)})")

    def __len__(self) -> int:
        return len(self._image_ids)

    @property
    def records(self) -> _Records:
        """``records[i]`` has ``image_id``, ``path``, ``height``, ``width`` of item ``i`` (made on demand)."""
        return _Records(self)

    def image_id(self, index: int) -> int:
        """The json id of item ``index``'s image."""
        return int(self._image_ids[index])

    def image_path(self, index: int) -> str:
        """The file of item ``index``'s image (``image_root`` / its ``file_name``)."""
        start, end = _slices(self._name_ends, index)
        return str(self.image_root / self._names[start:end].tobytes().decode("utf-8", "surrogatepass"))

    def _where_image(self, index: int) -> str:
        return f"images[{int(self._image_pos[index])}] (id {int(self._image_ids[index])})"

    def _where_annotation(self, k: int) -> str:
        pos = int(self._ann_pos[k])
        return f"annotations[{pos}] (id {int(self._ann_ids[k])})" if self._ann_has_id[k] else f"annotations[{pos}]"

    def load_image(self, index: int) -> torch.Tensor:
        """Item ``index``'s image, uint8 (3, H, W); :class:`DataLoadError` (one line) when it cannot be read."""
        path = self.image_path(index)
        try:
            image = load_rgb(path)
        except NoisysegError as e:
            raise DataLoadError(f"{e} ({self.json_path}: {self._where_image(index)})") from None
        height, width = self._sizes[index].tolist()
        if tuple(image.shape[1:]) != (height, width):
            raise DataLoadError(f"{path}: image is {image.shape[2]}x{image.shape[1]} but {self.json_path} says "
                                f"{width}x{height} ({self._where_image(index)})")
        return image

    def target(self, index: int) -> dict[str, Any]:
        """The target dict of item ``index`` (see the class docstring)."""
        start, end = _slices(self._ann_ends, index)
        height, width = self._sizes[index].tolist()
        n = end - start
        target: dict[str, Any] = {"boxes": torch.from_numpy(self._boxes[start:end].copy()),
                                  "labels": torch.from_numpy(self._labels[start:end].copy()),
                                  "image_id": int(self._image_ids[index])}
        if self.load_masks:
            masks = np.zeros((n, height, width), dtype=np.uint8)
            for i in range(n):
                s0, s1 = _slices(self._seg_ends, start + i)
                seg = pickle.loads(self._segs[s0:s1])
                if seg is None:
                    continue
                try:
                    masks[i] = decode_mask(seg, height, width)
                except Exception as e:  # pycocotools raises bare Exceptions on malformed input
                    raise DataLoadError(f"{self.json_path}: {self._where_annotation(start + i)}: bad segmentation "
                                        f"({e})") from None
            target["masks"] = torch.from_numpy(masks)
        if self.has_clean_labels:
            target["clean_labels"] = torch.from_numpy(self._clean[start:end].copy())
        if self.has_class_ignored:
            target["class_ignored"] = torch.from_numpy(self._ignored[start:end].copy())
        if self._class_targets is not None:
            target["class_target"] = torch.from_numpy(self._class_targets[start:end].copy())
        return target

    @property
    def has_class_targets(self) -> bool:
        """Whether :meth:`set_class_targets` gave the annotations soft class targets."""
        return self._class_targets is not None

    def set_class_targets(self, annotation_ids: np.ndarray, targets: np.ndarray) -> None:
        """Give every annotation of the data set a soft class target: row i of ``targets`` (M, K), over the
        label map's classes, for the annotation whose ``id`` is ``annotation_ids[i]`` (M >= the data set's
        annotations; extra ones, e.g. dropped degenerate boxes, are not used). From then on each target
        dict carries ``class_target``. Raises NoisysegError when an annotation has no row or ids repeat.
        """
        ids = np.asarray(annotation_ids, dtype=np.int64)
        targets = np.asarray(targets, dtype=np.float32)
        k = self.label_map.num_classes
        if targets.shape != (len(ids), k):
            raise NoisysegError(f"{self.json_path}: class targets must be ({len(ids)}, {k}), got {targets.shape}")
        if len(np.unique(self._ann_ids)) != len(self._ann_ids) or not self._ann_has_id.all():
            raise NoisysegError(f"{self.json_path}: per-annotation class targets need every annotation to have a "
                                "unique id")
        order = np.argsort(ids, kind="stable")
        pos = np.searchsorted(ids[order], self._ann_ids).clip(0, max(len(ids) - 1, 0))
        found = (ids[order][pos] == self._ann_ids) if len(ids) else np.zeros(len(self._ann_ids), bool)
        if not found.all():
            missing = int(np.flatnonzero(~found)[0])
            raise NoisysegError(f"{self.json_path}: {self._where_annotation(missing)}: no class target given")
        self._class_targets = np.ascontiguousarray(targets[order][pos])

    def __getitem__(self, index: int) -> tuple[torch.Tensor, dict[str, Any]]:
        image, target = self.load_image(index), self.target(index)
        if self.transforms is not None:
            try:
                image, target = self.transforms(image, target)
            except Exception as e:  # one line naming the item, also from a worker
                raise DataLoadError(f"{self.json_path}: {self._where_image(index)}: cannot transform "
                                    f"({type(e).__name__}: {e})".replace("\n", " ")) from None
        return image, target


def collate(batch: list) -> tuple[list, list]:
    """Mask R-CNN takes lists of differently sized images and targets, not stacked tensors."""
    images, targets = zip(*batch)
    return list(images), list(targets)
