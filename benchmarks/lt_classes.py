"""What the long-tailed bench's analysis scripts share (imported by them; run nothing by itself)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np


def class_counts(train_json: str | Path, names: list[str]) -> np.ndarray:
    """Non-crowd annotations per class in the clean training file, in the order of ``names`` (the tables
    list classes most frequent first by these counts)."""
    coco = json.loads(Path(train_json).read_text())
    by_id = {c["id"]: c["name"] for c in coco["categories"]}
    counts = np.zeros(len(names))
    for a in coco["annotations"]:
        if not a.get("iscrowd"):
            counts[names.index(by_id[a["category_id"]])] += 1
    return counts
