"""Pieces shared by the converters: split names, output checks, mask -> COCO annotation, json output."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Iterable

import numpy as np
from pycocotools import mask as mask_utils

from noisyseg.errors import NoisysegError
from noisyseg.utils.io import atomic_write_text, ensure_output_dir, ensure_output_file


def mask_annotation(mask: np.ndarray, ann_id: int, image_id: int, category_id: int) -> dict:
    """A COCO annotation for a binary (H, W) mask: compressed RLE, pixel-count area, tight xywh box."""
    rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    x, y, w, h = (float(v) for v in mask_utils.toBbox(rle))
    return {"id": ann_id, "image_id": image_id, "category_id": category_id,
            "segmentation": {"size": [int(s) for s in rle["size"]], "counts": rle["counts"].decode("ascii")},
            "area": int(mask.sum()), "bbox": [x, y, w, h], "iscrowd": 0}


def check_splits(splits: Iterable[str]) -> list[str]:
    """The split names as a list; one-line error for an empty list or a name that is not a plain folder name."""
    splits = [s for s in splits]
    if not splits:
        raise NoisysegError("no splits given (e.g. --splits train,val)")
    for s in splits:
        if not s or "/" in s or "\\" in s or s in (".", ".."):
            raise NoisysegError(f"bad split name {s!r}")
    return splits


def require_dir(path: Path, what: str) -> Path:
    if not path.is_dir():
        raise NoisysegError(f"{path}: {what} folder not found")
    return path


def check_outputs(out_dir: str | Path, splits: Iterable[str]) -> tuple[Path, list[str]]:
    """Before any work: the split names must pass :func:`check_splits`, ``out_dir`` must be (or be
    creatable as) a writable folder, and no ``out_dir/{split}.json`` may be a folder. One-line
    :class:`NoisysegError` otherwise. Returns ``(out_dir as a Path, the splits as a list)``."""
    out_dir, splits = Path(out_dir), check_splits(splits)
    ensure_output_dir(out_dir, "output folder")
    for split in splits:
        ensure_output_file(out_dir / f"{split}.json", f"{split} json")
    return out_dir, splits


def write_splits(splits: list[str], converted: list[tuple[Path, dict, str]]) -> dict[str, Path]:
    """Write every converted split, then print its summary line; returns ``{split: path written}``.

    Args:
        splits: the split names, in the order of ``converted``.
        converted: per split ``(output path, COCO dict, summary line)``.
    """
    written = {split: atomic_write_text(path, json.dumps(coco)) for split, (path, coco, _) in zip(splits, converted)}
    for _, _, line in converted:
        print(line)
    return written


def summary(split: str, n_images: int, annotations: list, categories: list, dropped: int) -> str:
    names = {c["id"]: c["name"] for c in categories}
    per = {n: 0 for n in names.values()}
    for a in annotations:
        per[names[a["category_id"]]] += 1
    counts = ", ".join(f"{n} {k}" for n, k in per.items())
    return f"[{split}] {n_images} images, {len(annotations)} instances ({counts}); {dropped} dropped (no visible pixels)"
