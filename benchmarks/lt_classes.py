"""What the long-tailed bench's analysis scripts share (imported by them; run nothing by itself)."""

from __future__ import annotations

import argparse
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


def bench_parser(doc: str) -> argparse.ArgumentParser:
    """The arguments every long-tailed analysis script takes: the bench folder, the noise setting, the seeds
    and the clean training file (``doc``: the script's docstring; its first paragraph describes it)."""
    parser = argparse.ArgumentParser(description=doc.split("\n\n")[0])
    parser.add_argument("bench", help="the bench folder (runs/ and noisy/ inside)")
    parser.add_argument("--setting", default="sym0.4")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--train-json", default="data/fashion_lt_bench/train.json",
                        help="the clean training file (the tables list classes most frequent first by its counts)")
    return parser
