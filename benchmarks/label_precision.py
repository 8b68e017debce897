"""Label precision per class under injected noise: predicted from class counts, and realised.

Label precision of class k = the share of the annotations labelled k whose clean class is k. This script
builds a COCO file with a data set's own instance counts per class (no images: noise needs only the labels),
prints ``noisyseg.noise.predict_precision`` for symmetric noise at each rate, and the precision realised by
``noisyseg.noise.inject`` (exact sampling, seeds 0-4) on the same file, beside the figures FINDINGS.md
section 5 quotes for Cityscapes (computed there outside the product).

Cityscapes: instances per class of the gtFine train split (2975 images), as tabulated for the eight
instance classes (person 17.9k, rider 1.8k, car 27.0k, truck 0.48k, bus 0.38k, train 0.17k,
motorcycle 0.74k, bicycle 3.7k; issue 22 quotes car 26.9k, train 0.17k). A file of your own: pass it.

    .venv/bin/python benchmarks/label_precision.py                       # Cityscapes counts
    .venv/bin/python benchmarks/label_precision.py data/fashion_lt_bench/train.json --rates 0.2,0.4,0.8
"""

from __future__ import annotations

import argparse
import statistics

import numpy as np

from noisyseg.noise import inject, predict_precision
from noisyseg.utils.io import read_json

CITYSCAPES_TRAIN = {"person": 17919, "rider": 1781, "car": 26963, "truck": 484, "bus": 380, "train": 168,
                    "motorcycle": 737, "bicycle": 3675}
# FINDINGS.md section 5: label precision after exact symmetric noise on Cityscapes' counts
FINDINGS = {0.4: {"train": 0.03, "bus": 0.07, "truck": 0.09, "motorcycle": 0.13, "rider": 0.27, "bicycle": 0.44,
                  "person": 0.85, "car": 0.92},
            0.2: {"train": 0.08, "bus": 0.17, "truck": 0.21}}


def coco_from_counts(counts: dict[str, int]) -> dict:
    """A COCO dict with ``counts[name]`` annotations of each class (ids 1..K in the given order), one image."""
    cats = [{"id": i + 1, "name": n, "supercategory": "thing"} for i, n in enumerate(counts)]
    anns, aid = [], 0
    for i, n in enumerate(counts):
        for _ in range(counts[n]):
            aid += 1
            anns.append({"id": aid, "image_id": 1, "category_id": i + 1, "iscrowd": 0})
    return {"images": [{"id": 1, "file_name": "x.png", "width": 1, "height": 1}], "annotations": anns,
            "categories": cats}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("file", nargs="?", help="a COCO json (default: Cityscapes' train counts)")
    ap.add_argument("--rates", default="0.2,0.4", help="comma-separated symmetric noise rates (default 0.2,0.4)")
    ap.add_argument("--seeds", type=int, default=5, help="injections per rate for the realised figures (default 5)")
    args = ap.parse_args()
    coco = read_json(args.file, "COCO annotation file") if args.file else coco_from_counts(CITYSCAPES_TRAIN)
    names = {c["id"]: c["name"] for c in coco["categories"]}
    n_per = {names[c]: n for c, n in zip(*np.unique([a["category_id"] for a in coco["annotations"]],
                                                        return_counts=True))}
    print(f"source: {args.file or 'Cityscapes train instance counts'}; {sum(n_per.values())} annotations")
    for rate in (float(r) for r in args.rates.split(",")):
        pred = predict_precision(coco, "symmetric", rate)["per_class"]
        real = {n: [] for n in pred}
        for seed in range(args.seeds):
            _, report = inject(coco, "symmetric", rate, seed)
            for n, v in report["label_precision"].items():
                real[n].append(v["precision"])
        print(f"\nsymmetric {rate:g}, exact sampling")
        print(f"{'class':<14} {'instances':>9} {'predicted':>9} {'realised (mean of ' + str(args.seeds) + ')':>22}"
              f" {'FINDINGS':>8}")
        for n in sorted(pred, key=lambda k: pred[k]["precision"]):
            quoted = FINDINGS.get(rate, {}).get(n) if not args.file else None
            print(f"{n:<14} {n_per.get(n, 0):>9} {pred[n]['precision']:>9.3f} "
                  f"{statistics.fmean(real[n]) if real[n] else float('nan'):>22.3f} "
                  f"{'' if quoted is None else f'{quoted:.2f}':>8}")


if __name__ == "__main__":
    main()
