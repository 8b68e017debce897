"""Where label noise costs AP in a bench: finding objects, or naming them?

For every finished run of a ``noisyseg bench`` folder (optionally only some methods/noise settings/seeds)
this predicts the clean val set with the run's final checkpoint and splits its mask AP into

- ``agnostic AP``: mask AP with every class merged into one, after class-agnostic NMS (box IoU 0.5)
  keeps the best-scoring detection per object: how well objects are found and segmented, whatever
  their class;
- ``recall``: share of val objects whose best-scoring detection (box IoU >= 0.5, greedy by score) exists;
- ``class acc``: share of those found objects whose best-scoring detection has the right class;
- ``score``: mean score of those best-scoring detections (CE under symmetric noise learns the noisy
  posterior, so its top class score shrinks towards 1 - rate).

and prints the mean over seeds per (method, noise) next to the class-aware mask AP from results.csv.

    .venv/bin/python benchmarks/noise_diagnostics.py benchmarks/results/shapes [--methods ce,lncis]
        [--noise clean,sym0.8] [--seeds 0]
"""

from __future__ import annotations

import argparse
import csv
import statistics
from collections import defaultdict
from pathlib import Path

import torch
from torchvision.ops import box_iou, nms

from noisyseg.data.coco import CocoInstances
from noisyseg.data.transforms import DetectionTransform
from noisyseg.engine.evaluate import predict_dataset
from noisyseg.engine.predict import load_trained_model
from noisyseg.eval import evaluate
from noisyseg.utils.io import read_json


def _xyxy(bbox: list[float]) -> list[float]:
    x, y, w, h = bbox
    return [x, y, x + w, y + h]


def best_per_object(results: list[dict]) -> dict[int, list[dict]]:
    """Per image: the detections left after class-agnostic NMS at box IoU 0.5, best score first."""
    by_image: dict[int, list[dict]] = defaultdict(list)
    for r in results:
        by_image[r["image_id"]].append(r)
    kept = {}
    for image_id, dets in by_image.items():
        boxes = torch.tensor([_xyxy(d["bbox"]) for d in dets], dtype=torch.float32)
        scores = torch.tensor([d["score"] for d in dets], dtype=torch.float32)
        kept[image_id] = [dets[i] for i in nms(boxes, scores, 0.5).tolist()]
    return kept


def diagnose(gt: dict, results: list[dict]) -> dict[str, float]:
    kept = best_per_object(results)
    one_class = {**gt, "categories": [{"id": 1, "name": "object"}],
                 "annotations": [{**a, "category_id": 1} for a in gt["annotations"]]}
    flat = [{**d, "category_id": 1} for dets in kept.values() for d in dets]
    agnostic = evaluate(one_class, flat, iou_types=("segm",))["segm"]["AP"] if flat else 0.0

    gts: dict[int, list[dict]] = defaultdict(list)
    for a in gt["annotations"]:
        if not a.get("iscrowd", 0):
            gts[a["image_id"]].append(a)
    n_gt = found = correct = 0
    scores = []
    for image_id, objects in gts.items():
        n_gt += len(objects)
        dets = kept.get(image_id, [])
        if not dets:
            continue
        iou = box_iou(torch.tensor([_xyxy(d["bbox"]) for d in dets]), torch.tensor([_xyxy(a["bbox"]) for a in objects]))
        taken = set()
        for i, d in enumerate(dets):  # best score first: greedy matching
            cand = [(iou[i, j].item(), j) for j in range(len(objects)) if j not in taken and iou[i, j] >= 0.5]
            if not cand:
                continue
            j = max(cand)[1]
            taken.add(j)
            found += 1
            correct += int(d["category_id"] == objects[j]["category_id"])
            scores.append(d["score"])
    return {"agnostic_AP": agnostic, "recall": 100.0 * found / max(n_gt, 1),
            "class_acc": 100.0 * correct / max(found, 1), "score": statistics.fmean(scores) if scores else 0.0}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("bench", type=Path)
    ap.add_argument("--methods", help="comma-separated (default: all in the folder)")
    ap.add_argument("--noise", help="comma-separated noise settings (default: all)")
    ap.add_argument("--seeds", help="comma-separated (default: all)")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    pick = {k: set(v.split(",")) if v else None for k, v in
            (("method", args.methods), ("noise", args.noise), ("seed", args.seeds))}
    mask_ap = {}
    with open(args.bench / "results.csv", newline="") as f:
        for row in csv.DictReader(f):
            mask_ap[row["method"], row["noise"], row["seed"]] = float(row["mask_AP"])

    table: dict[tuple[str, str], list[dict[str, float]]] = defaultdict(list)
    for ckpt in sorted(args.bench.glob("runs/*/*/seed*/checkpoints/last.pt")):
        run = ckpt.parents[1]
        method, noise, seed = run.parent.parent.name, run.parent.name, run.name[len("seed"):]
        key = (method, noise, seed)
        if key not in mask_ap or any(pick[k] and v not in pick[k] for k, v in zip(("method", "noise", "seed"), key)):
            continue
        model, cfg, label_map = load_trained_model(ckpt)
        val = CocoInstances(cfg.data.val_json, cfg.data.val_image_root or cfg.data.image_root, train=False,
                            transforms=DetectionTransform(0.0), label_map=label_map)
        results = predict_dataset(model, val, label_map, torch.device("cpu"), progress=False)
        d = diagnose(read_json(cfg.data.val_json), results)
        d["mask_AP"] = mask_ap[key]
        print(f"  {method}/{noise}/seed{seed}: " + ", ".join(f"{k} {v:.3f}" for k, v in d.items()), flush=True)
        table[method, noise].append(d)

    cols = ("mask_AP", "agnostic_AP", "recall", "class_acc", "score")
    print(f"\n{'method':8} {'noise':8} {'runs':>4} " + " ".join(f"{c:>11}" for c in cols))
    for (method, noise), ds in table.items():
        print(f"{method:8} {noise:8} {len(ds):4d} " + " ".join(f"{statistics.fmean(d[c] for d in ds):11.2f}" for c in cols))


if __name__ == "__main__":
    main()
