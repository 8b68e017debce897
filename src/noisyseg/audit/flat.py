"""The audited file as a few flat arrays, so the parsed json can be dropped before scoring.

A COCO-train-sized file (118k images, 860k annotations) parses into 2.7 GB of Python dicts and lists; an
audit needs only a few numbers per annotation (id, image, class, box) and, for the pictures of the
suspects, its segmentation. :class:`AuditData` keeps those in numpy arrays and one buffer of pickled
segmentations, and the parsed json is freed as soon as they are made. The
repaired file (``--fix``) is the one step that needs the whole json again; it reads the file once more
at the end (see :func:`noisyseg.audit.api.audit`).
"""

from __future__ import annotations

import contextlib
import gc
import pickle
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from noisyseg.errors import NoisysegError


@contextlib.contextmanager
def gc_paused() -> Iterator[None]:
    """Pause the cyclic garbage collector while millions of acyclic dicts and lists are made (a json
    parse): its full collections would walk every one of them again and again."""
    was = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was:
            gc.enable()


@dataclass
class AuditData:
    """The N scored annotations of a COCO file (every non-crowd one, file order) and the M images.

    Attributes:
        source: the file's path (for messages).
        categories: the file's ``categories`` list, as parsed (K entries).
        image_ids: (M,) int64, the images' ``id`` in file order.
        image_sizes: (M, 2) int64, ``height, width`` of each image.
        file_names: M strings, each image's ``file_name``.
        ann_ids: (N,) int64, the scored annotations' ``id``.
        ann_image: (N,) int64, index into the image arrays of each annotation's image.
        category_ids: (N,) int64, ``category_id``.
        clean_category_ids: (N,) int64 ``clean_category_id`` (``category_id`` where an annotation has
            none), or None when no scored annotation has one.
        bbox: (N, 4) float64, ``bbox`` ``[x, y, width, height]`` as in the file.
        seg_buffer, seg_ends: the segmentations, each pickled on its own (None where an annotation has
            none), joined; annotation r's bytes are ``seg_buffer[seg_ends[r-1]:seg_ends[r]]``.
    """

    source: str
    categories: list
    image_ids: np.ndarray
    image_sizes: np.ndarray
    file_names: list
    ann_ids: np.ndarray
    ann_image: np.ndarray
    category_ids: np.ndarray
    clean_category_ids: np.ndarray | None
    bbox: np.ndarray
    seg_buffer: np.ndarray
    seg_ends: np.ndarray

    def __len__(self) -> int:
        return len(self.ann_ids)

    @property
    def ann_image_ids(self) -> np.ndarray:
        """(N,) int64, the ``image_id`` of each scored annotation."""
        return self.image_ids[self.ann_image]

    def segmentation(self, r: int) -> Any:
        """Annotation ``r``'s ``segmentation`` as parsed (None when it has none)."""
        start = int(self.seg_ends[r - 1]) if r else 0
        return pickle.loads(self.seg_buffer[start:int(self.seg_ends[r])])

    def annotation(self, r: int) -> dict:
        """What a crop needs of annotation ``r``: ``{"bbox": [x, y, w, h] floats, "segmentation": ...}``."""
        return {"bbox": self.bbox[r].tolist(), "segmentation": self.segmentation(r)}

    def image(self, m: int) -> dict:
        """Image ``m`` as ``{"id", "file_name", "height", "width"}``."""
        h, w = self.image_sizes[m].tolist()
        return {"id": int(self.image_ids[m]), "file_name": self.file_names[m], "height": h, "width": w}

    def subset(self, rows: np.ndarray) -> AuditData:
        """The annotations ``rows`` (indices, in the order given) with every image."""
        segs = [self.seg_buffer[(int(self.seg_ends[r - 1]) if r else 0):int(self.seg_ends[r])] for r in rows.tolist()]
        buffer = np.concatenate(segs) if segs else np.zeros(0, dtype=np.uint8)
        return AuditData(self.source, self.categories, self.image_ids, self.image_sizes, self.file_names,
                         self.ann_ids[rows], self.ann_image[rows], self.category_ids[rows],
                         None if self.clean_category_ids is None else self.clean_category_ids[rows],
                         self.bbox[rows], buffer, np.cumsum([len(s) for s in segs], dtype=np.int64))

    @classmethod
    def load(cls, path: str | Path, with_parsed: Callable[[dict], Any] | None = None) -> AuditData:
        """Read and check the COCO file at ``path`` (:func:`noisyseg.data.coco.load_coco`'s checks), keep
        its arrays and free the parsed json before returning. ``with_parsed`` is called with the checked,
        parsed json before it is freed, for whatever else needs the whole file (the audit's noise matrix
        from ``clean_category_id``): a COCO-sized file is then read once."""
        from noisyseg.data.validate import validate_coco

        with gc_paused():
            coco = _read_lean(path)
            try:
                xywh = validate_coco(coco, dataset=True)
            except NoisysegError as e:
                raise NoisysegError(f"{path}: {e}") from None
            if with_parsed is not None:
                with_parsed(coco)
            fields, blocks = cls._fields(coco, path, xywh)
            del coco, xywh  # freed here, while the collector sleeps
        # the segmentations joined only now: the parsed json and the joined buffer are never held together
        return cls(**fields, seg_buffer=_join(blocks))

    @classmethod
    def from_coco(cls, coco: dict, source: str | Path, xywh: np.ndarray | None = None) -> AuditData:
        """The arrays of a parsed COCO file (checked by :func:`noisyseg.data.validate.validate_coco` or by
        hand). ``xywh``: validate_coco's (A, 4) boxes of every annotation, when at hand.

        Raises :class:`NoisysegError` naming ``source`` for an annotation without an integer ``id``, a
        repeated id, or a ``category_id`` / ``clean_category_id`` that is not a listed category.
        """
        fields, blocks = cls._fields(coco, source, xywh)
        return cls(**fields, seg_buffer=_join(blocks))

    @staticmethod
    def _fields(coco: dict, source: str | Path, xywh: np.ndarray | None) -> tuple[dict[str, Any], list[bytes]]:
        """Every field but ``seg_buffer``, and the pickled segmentations in blocks of SEG_BLOCK annotations
        (joined by the caller)."""
        from noisyseg.data.coco import LabelMap

        label_map = LabelMap.from_categories(coco["categories"])
        positions, anns = scored_positions(coco, label_map, source)
        n = len(anns)
        index = {cid: i for i, cid in enumerate(label_map.category_ids)}
        images = coco["images"]
        image_index = {im["id"]: m for m, im in enumerate(images)}
        has_clean = any("clean_category_id" in a for a in anns)
        clean = None
        if has_clean:
            clean = np.empty(n, dtype=np.int64)
            for r, a in enumerate(anns):
                cid = a.get("clean_category_id", a["category_id"])
                if cid not in index:
                    raise NoisysegError(f"{source}: annotation {a['id']} has clean_category_id {cid}, "
                                        "not one of the model's classes")
                clean[r] = cid
        if xywh is not None:
            bbox = np.ascontiguousarray(xywh[np.asarray(positions, dtype=np.int64)]).reshape(-1, 4)
        else:
            bbox = np.asarray([a["bbox"] for a in anns], dtype=np.float64).reshape(-1, 4)
        dumps, protocol = pickle.dumps, pickle.HIGHEST_PROTOCOL
        blocks, sizes = [], np.empty(n, dtype=np.int64)
        for start in range(0, n, SEG_BLOCK):
            chunks = [dumps(a.get("segmentation"), protocol) for a in anns[start:start + SEG_BLOCK]]
            sizes[start:start + len(chunks)] = [len(c) for c in chunks]
            blocks.append(b"".join(chunks))
        return {
            "source": str(source), "categories": list(coco["categories"]),
            "image_ids": np.fromiter((im["id"] for im in images), np.int64, len(images)),
            "image_sizes": np.array([(im["height"], im["width"]) for im in images], dtype=np.int64).reshape(-1, 2),
            "file_names": [im["file_name"] for im in images],
            "ann_ids": np.fromiter((a["id"] for a in anns), np.int64, n),
            "ann_image": np.fromiter((image_index[a["image_id"]] for a in anns), np.int64, n),
            "category_ids": np.fromiter((a["category_id"] for a in anns), np.int64, n),
            "clean_category_ids": clean, "bbox": bbox, "seg_ends": np.cumsum(sizes),
        }, blocks


def _read_lean(path: str | Path) -> Any:
    """The parsed json at ``path``, its bytes freed before the parse (json.load keeps the file's bytes and
    their decoded text both alive through it: 340 MB more at COCO size). Errors: read_json's one line."""
    import json

    from noisyseg.utils.io import read_json

    try:
        raw = Path(path).read_bytes()
        text = raw.decode(json.detect_encoding(raw), "surrogatepass")  # what json.loads does with bytes
        del raw
        return json.loads(text)
    except (OSError, ValueError):  # missing, a folder, unreadable, not JSON: read_json says which, in one line
        return read_json(path, "COCO annotation file")


SEG_BLOCK = 8192  # annotations pickled into one block (a few MB): no list of a million small bytes objects


def _join(blocks: list[bytes]) -> np.ndarray:
    """The blocks as one uint8 array, each block freed once copied (the list is emptied)."""
    out = np.empty(sum(len(b) for b in blocks), dtype=np.uint8)
    at = 0
    blocks.reverse()
    while blocks:
        block = blocks.pop()
        out[at:at + len(block)] = np.frombuffer(block, dtype=np.uint8)
        at += len(block)
    return out


def scored_positions(coco: dict, label_map: Any, source: str | Path) -> tuple[list[int], list[dict]]:
    """The annotations an audit scores: every non-crowd one, in file order, with a unique integer ``id``
    and a ``category_id`` of ``label_map``: (their positions in ``coco["annotations"]``, the dicts)."""
    seen: set = set()
    index = set(label_map.category_ids)
    positions, out = [], []
    for i, a in enumerate(coco["annotations"]):
        if isinstance(a.get("id"), bool) or not isinstance(a.get("id"), int):
            raise NoisysegError(f"{source}: annotations[{i}] has no integer 'id' (the audit names annotations by id)")
        if a["id"] in seen:
            raise NoisysegError(f"{source}: annotations[{i}] repeats annotation id {a['id']}")
        seen.add(a["id"])
        if a.get("iscrowd", 0):
            continue
        if a["category_id"] not in index:
            raise NoisysegError(f"{source}: annotations[{i}] has category_id {a['category_id']}, "
                                "not one of the model's classes")
        positions.append(i)
        out.append(a)
    return positions, out


def as_audit_data(coco: dict | AuditData, source: str | Path) -> AuditData:
    """``coco`` as :class:`AuditData` (a parsed COCO dict is converted; AuditData passes through)."""
    return coco if isinstance(coco, AuditData) else AuditData.from_coco(coco, source)
