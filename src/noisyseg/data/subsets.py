"""Subsets of a COCO file: image folds for out-of-sample scoring, and a file without some images."""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np


def fold_image_ids(coco: dict, folds: int, seed: int) -> list[list[Any]]:
    """The image ids of a COCO file split into ``folds`` near-equal folds, shuffled by ``seed`` (each
    fold's ids in file order). Deterministic: the same file, folds and seed give the same split."""
    ids = [im["id"] for im in coco["images"]]
    order = np.random.default_rng([seed, folds]).permutation(len(ids))
    return [[ids[i] for i in sorted(order[f::folds].tolist())] for f in range(folds)]


def without_images(coco: dict, image_ids: Sequence[Any]) -> dict:
    """``coco`` without the images ``image_ids`` and their annotations (everything else kept as it is)."""
    held = set(image_ids)
    return {**coco, "images": [im for im in coco["images"] if im["id"] not in held],
            "annotations": [a for a in coco["annotations"] if a["image_id"] not in held]}
