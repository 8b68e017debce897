"""Every CPU-side step at COCO size, each printed against its anchor measured in the same run.

One command makes the inputs (deterministic: the same bytes for the same sizes and seed) and prints:

  1. ``noisyseg noise`` sym 0.4 on a COCO-train-sized file       vs  json.load + json.dumps of the file
  2. ``CocoInstances(train=True, check_files=False)``             vs  json.load of the file
  3. worker memory (USS) at the start and end of one epoch of targets, 2 DataLoader workers, flat records
                                                                 vs  the same epoch over per-image lists of
                                                                     annotation dicts (the layout before)
  4. ``noisyseg.eval.evaluate`` (faster-coco-eval), 5,000 images x 100 detections with masks, segm + bbox
                                                                 vs  pycocotools' COCOeval (the numbers must
                                                                     be equal)
  5. ``noisyseg.audit.audit`` over two slices (the smaller one to show the cost is linear) with small images
     and a maskrcnn_tiny checkpoint: annotations/s, peak memory, and what that gives at 860k
  6. ``noisyseg noise --stats`` on the noisy file of step 1      vs  json.load of that file
  7. the audit's table, summary and review page data at the train file's size (860k rows, scores drawn
     at random: cleanlab flags, ranks, writes rows; the page's crops for its first --page-crops suspects),
     holding what the audit holds (the file's flat arrays); then ``--fix --action relabel`` in a second
     process (the table, then the file read again and repaired as the audit does)
  8. the data set's check of every image's header before work (on the slice's real images), per image

Every step runs as its own child process; "peak" is that child's maximum resident memory (its rusage),
"USS" a process's own memory (/proc/PID/smaps_rollup Private_Clean + Private_Dirty), which is what a
DataLoader worker adds on top of the memory it shares with its parent. Times are wall seconds; on a shared
machine they hold to about 20% (the anchor runs next to the figure it anchors, so their ratio holds better).

    nice -n 5 .venv/bin/python benchmarks/coco_scale.py --dir /tmp/coco_scale        # COCO size, ~1 h
    .venv/bin/python benchmarks/coco_scale.py --dir /tmp/cs_tiny --scale 0.01 --audit 500,1000 --val-images 50

Sizes: ``--images 118287 --annotations 860001`` (COCO train2017), 80 classes with long-tailed counts in 12
supercategories, 640x480 or 480x640 images (the json only: no pixels are needed for steps 1-4 and 6),
polygons of 8-30 points on an ellipse inside each box, 1% crowd annotations with uncompressed RLE.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve()
ROOT = HERE.parents[1]


# ------------------------------------------------------------------------------------------ the inputs


def _categories() -> list[dict]:
    # COCO's ids have gaps (1..90 for 80 classes)
    return [{"supercategory": f"super{i % 12}", "id": i + 1 + i // 10, "name": f"class{i}"} for i in range(80)]


def _polygon(rng: np.random.Generator, x: float, y: float, w: float, h: float, n: int) -> list[float]:
    """``n`` points on an ellipse inside the box, in order (a simple polygon), 2 decimals as in COCO."""
    t = np.sort(rng.uniform(0, 2 * np.pi, n))
    r = rng.uniform(0.7, 1.0, n)
    px = x + w / 2 + (w / 2) * r * np.cos(t)
    py = y + h / 2 + (h / 2) * r * np.sin(t)
    return np.round(np.stack([px, py], 1).ravel(), 2).tolist()


def _crowd_rle(h: int, w: int, x: float, y: float, bw: float, bh: float) -> dict:
    """Uncompressed RLE (column-major runs, from a run of 0s) of the box, as COCO stores crowd regions."""
    x0, y0 = int(x), int(y)
    x1, y1 = min(w, max(x0 + 1, int(x + bw))), min(h, max(y0 + 1, int(y + bh)))
    counts = [x0 * h + y0]
    for c in range(x0, x1):
        counts += [y1 - y0, (h - y1) + (y0 if c < x1 - 1 else (w - x1) * h)]
    return {"size": [h, w], "counts": counts}


def make_coco(n_images: int, n_annotations: int, seed: int, small: tuple[int, int] | None = None) -> dict:
    """A COCO-train-like dict. ``small=(W, H)`` gives every image that size (for files with pixels)."""
    rng = np.random.default_rng(seed)
    cats = _categories()
    cat_ids = np.array([c["id"] for c in cats])
    freq = 1.0 / np.arange(1, 81) ** 1.1  # long-tailed: the first class ~40x the last
    images = []
    for i in range(n_images):
        w, h = small if small else ((640, 480) if i % 3 else (480, 640))
        images.append({"license": 1, "file_name": f"{i + 1:012d}.png", "height": h, "width": w, "id": i + 1,
                       "date_captured": "2013-11-14 11:18:45"})
    owner = np.sort(rng.integers(0, n_images, n_annotations))
    rng.shuffle(owner[: n_annotations // 2])  # COCO's files are not sorted by image either
    labels = rng.choice(cat_ids, size=n_annotations, p=freq / freq.sum())
    crowd = rng.random(n_annotations) < 0.01
    n_pts = rng.integers(8, 31, n_annotations)
    anns = []
    for k in range(n_annotations):
        im = images[int(owner[k])]
        W, H = im["width"], im["height"]
        bw, bh = float(rng.uniform(4, W / 2)), float(rng.uniform(4, H / 2))
        x, y = float(rng.uniform(0, W - bw)), float(rng.uniform(0, H - bh))
        box = [round(x, 2), round(y, 2), round(bw, 2), round(bh, 2)]
        if crowd[k]:
            seg = _crowd_rle(H, W, x, y, bw, bh)
        else:
            seg = [_polygon(rng, x, y, bw, bh, int(n_pts[k]))]
        anns.append({"segmentation": seg, "area": round(bw * bh * 0.7, 2), "iscrowd": int(crowd[k]),
                     "image_id": im["id"], "bbox": box, "category_id": int(labels[k]), "id": k + 1})
    return {"info": {"description": f"synthetic COCO-like, seed {seed}"}, "licenses": [], "images": images,
            "annotations": anns, "categories": cats}


def write_json(obj, path: Path) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(obj, separators=(",", ":")))
    tmp.rename(path)


def make_detections(gt: dict, per_image: int, seed: int) -> list[dict]:
    """``per_image`` detections per image: jittered copies of its objects and random boxes, each with
    the RLE of a polygon (pycocotools rasterises it; no dense mask is made), scores in (0, 1)."""
    from pycocotools import mask as mask_utils

    rng = np.random.default_rng(seed)
    by_image: dict[int, list[dict]] = {}
    for a in gt["annotations"]:
        by_image.setdefault(a["image_id"], []).append(a)
    cat_ids = [c["id"] for c in gt["categories"]]
    out = []
    for im in gt["images"]:
        W, H = im["width"], im["height"]
        objs = by_image.get(im["id"], [])
        polys, meta = [], []
        for j in range(per_image):
            if objs and j < 3 * len(objs):
                a = objs[j % len(objs)]
                x, y, bw, bh = a["bbox"]
                s = rng.uniform(0.85, 1.15)
                x, y = x + rng.normal(0, 0.05 * bw), y + rng.normal(0, 0.05 * bh)
                bw, bh = bw * s, bh * s
                cat = a["category_id"] if rng.random() < 0.7 else int(rng.choice(cat_ids))
            else:
                bw, bh = rng.uniform(4, W / 2), rng.uniform(4, H / 2)
                x, y = rng.uniform(0, W - bw), rng.uniform(0, H - bh)
                cat = int(rng.choice(cat_ids))
            x, y = float(np.clip(x, 0, W - 2)), float(np.clip(y, 0, H - 2))
            bw, bh = float(min(bw, W - x)), float(min(bh, H - y))
            polys.append(_polygon(rng, x, y, bw, bh, 12))
            meta.append((cat, [round(x, 2), round(y, 2), round(bw, 2), round(bh, 2)], float(rng.random())))
        rles = mask_utils.frPyObjects(polys, H, W)
        for (cat, box, score), r in zip(meta, rles):
            out.append({"image_id": im["id"], "category_id": cat, "bbox": box, "score": round(score, 5),
                        "segmentation": {"size": [H, W], "counts": r["counts"].decode("ascii")}})
    return out


def write_pixels(coco: dict, folder: Path, seed: int) -> None:
    """Small PNGs for a file made with ``small``: a grey texture with each object filled in its class colour."""
    from PIL import Image, ImageDraw

    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    colours = rng.integers(40, 256, (200, 3))
    by_image: dict[int, list[dict]] = {}
    for a in coco["annotations"]:
        by_image.setdefault(a["image_id"], []).append(a)
    for im in coco["images"]:
        base = rng.integers(0, 40, (im["height"] // 4, im["width"] // 4, 3), dtype=np.uint8)
        picture = Image.fromarray(base).resize((im["width"], im["height"]), Image.NEAREST)
        draw = ImageDraw.Draw(picture)
        for a in by_image.get(im["id"], []):
            if isinstance(a["segmentation"], list):
                pts = a["segmentation"][0]
                draw.polygon(list(zip(pts[::2], pts[1::2])), fill=tuple(int(v) for v in colours[a["category_id"]]))
        picture.save(folder / im["file_name"], compress_level=1)


# ---------------------------------------------------------------------------------------- measurement


def uss_mib(pid: int | str = "self") -> float:
    """A process's own memory (MiB): the private pages of /proc/PID/smaps_rollup."""
    total = 0
    with open(f"/proc/{pid}/smaps_rollup") as f:
        for line in f:
            if line.startswith(("Private_Clean:", "Private_Dirty:")):
                total += int(line.split()[1])
    return total / 1024


def rss_mib() -> float:
    """This process's resident memory (MiB), shared pages included (VmRSS)."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def child(stage: str, *args: str) -> tuple[float, float, str]:
    """Run ``stage`` of this script in a fresh process: (wall s, its peak RSS MiB, its stdout)."""
    return command([sys.executable, str(HERE), "--stage", stage, *args])


def command(cmd: list[str]) -> tuple[float, float, str]:
    """Run ``cmd``: (wall s, peak RSS MiB of that process from its own rusage, its stdout)."""
    import tempfile

    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        t = time.perf_counter()
        proc = subprocess.Popen(cmd, stdout=out, stderr=err, cwd=ROOT,
                                env={**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT / "src")})
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - t
        proc.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        if proc.returncode:
            sys.exit(f"failed ({proc.returncode}): {' '.join(cmd)}\n{err.read().decode()[-3000:]}")
        return wall, usage.ru_maxrss / 1024, out.read().decode().strip()


# ---------------------------------------------------------------------------------------------- stages
# each runs in its own process (``--stage NAME ...``) and prints one json line


def stage_make_train(path: str, n_images: str, n_annotations: str, seed: str) -> None:
    write_json(make_coco(int(n_images), int(n_annotations), int(seed)), Path(path))


def stage_make_val(folder: str, n_images: str, per_image: str, seed: str) -> None:
    gt = make_coco(int(n_images), int(n_images) * 7, int(seed))
    write_json(gt, Path(folder) / "val.json")
    write_json(make_detections(gt, int(per_image), int(seed) + 1), Path(folder) / "detections.json")


def stage_make_slice(folder: str, n_images: str, n_annotations: str, seed: str) -> None:
    coco = make_coco(int(n_images), int(n_annotations), int(seed), small=(160, 120))
    write_json(coco, Path(folder) / "slice.json")
    write_pixels(coco, Path(folder) / "images", int(seed))


def stage_headers(folder: str) -> None:
    """The data set of the slice (real images) built without and with reading every image's header."""
    from noisyseg.data.coco import CocoInstances

    f = Path(folder)
    times = {}
    for check in (False, True, False, True):  # interleaved; the second of each counts (files cached)
        t = time.perf_counter()
        ds = CocoInstances(f / "slice.json", f / "images", train=True, check_files=check)
        times[check] = time.perf_counter() - t
    print(json.dumps({"without": times[False], "with": times[True], "images": len(ds)}))


def stage_roundtrip(src: str, dst: str) -> None:
    with open(src) as f:
        d = json.load(f)
    with open(dst, "w") as f:
        f.write(json.dumps(d, separators=(",", ":")))


def stage_load(src: str) -> None:
    t = time.perf_counter()
    with open(src, "rb") as f:
        json.load(f)
    print(json.dumps({"seconds": time.perf_counter() - t}))


def stage_build(src: str) -> None:
    from noisyseg.data.coco import CocoInstances

    before = uss_mib()  # torch and the package, imported
    t = time.perf_counter()
    ds = CocoInstances(src, "/nonexistent", train=True, check_files=False)
    print(json.dumps({"seconds": time.perf_counter() - t, "images": len(ds), "uss_mib": uss_mib() - before}))


class _Epoch:
    """Targets of a data set, as a DataLoader worker makes them; each worker reports its USS now and then."""

    def __init__(self, target, n: int, every: int) -> None:
        self.target, self.n, self.every = target, n, every

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int):
        import torch

        t = self.target(i)
        worker = torch.utils.data.get_worker_info()
        mem = (uss_mib(), rss_mib()) if i % self.every == 0 or i == self.n - 1 else None
        return worker.id, mem, int(t["labels"].sum())


def _dict_targets(src: str):
    """The layout before the flat records: per image a list of its annotation dicts (as json made them),
    and a target made field by field from them, as the former ``CocoInstances.target`` did (no masks)."""
    import torch

    with open(src, "rb") as f:
        coco = json.load(f)
    index = {cid: i + 1 for i, cid in enumerate(sorted(c["id"] for c in coco["categories"]))}
    by_image = {im["id"]: [] for im in coco["images"]}
    for a in coco["annotations"]:
        if not a.get("iscrowd", 0) and a["bbox"][2] >= 1 and a["bbox"][3] >= 1:
            by_image[a["image_id"]].append(a)
    records = [(im["id"], im["file_name"], im["height"], im["width"], by_image[im["id"]])
               for im in coco["images"] if by_image[im["id"]]]
    del coco, by_image

    def target(i: int) -> dict:
        image_id, _, _, _, anns = records[i]
        boxes = torch.zeros((len(anns), 4), dtype=torch.float32)
        labels = torch.zeros(len(anns), dtype=torch.int64)
        for j, a in enumerate(anns):
            x, y, w, h = a["bbox"]
            boxes[j] = torch.tensor([x, y, x + w, y + h])
            labels[j] = index[a["category_id"]]
        return {"boxes": boxes, "labels": labels, "image_id": image_id}

    return target, len(records)


def stage_workers(src: str, layout: str) -> None:
    import torch

    if layout == "flat":
        from noisyseg.data.coco import CocoInstances

        ds = CocoInstances(src, "/nonexistent", train=True, check_files=False, load_masks=False)
        target, n = ds.target, len(ds)
    else:
        target, n = _dict_targets(src)
    loader = torch.utils.data.DataLoader(_Epoch(target, n, every=500), batch_size=32, num_workers=2,
                                         collate_fn=lambda b: b)
    first: dict[int, float] = {}
    last: dict[int, float] = {}
    t = time.perf_counter()
    for batch in loader:
        for worker, mem, _ in batch:
            if mem is not None:
                first.setdefault(worker, mem)
                last[worker] = mem
    print(json.dumps({"seconds": time.perf_counter() - t, "images": n, "parent_uss_mib": uss_mib(),
                      "start": [first[w][0] for w in sorted(first)], "end": [last[w][0] for w in sorted(last)],
                      "start_rss": [first[w][1] for w in sorted(first)], "end_rss": [last[w][1] for w in sorted(last)]}))


def stage_eval_pycocotools(folder: str) -> None:
    """Plain pycocotools, as its README drives it: COCO(), loadRes(), COCOeval per IoU type."""
    import contextlib
    import io

    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    t = time.perf_counter()
    stats = {}
    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO(str(Path(folder) / "val.json"))
        with open(Path(folder) / "detections.json") as f:
            dets = json.load(f)
        for iou_type in ("segm", "bbox"):
            # segm results without their box, so the area ranges use the mask area, as noisyseg does
            res = [{k: v for k, v in d.items() if k != "bbox"} for d in dets] if iou_type == "segm" else \
                [{k: v for k, v in d.items() if k != "segmentation"} for d in dets]
            ev = COCOeval(gt, gt.loadRes(res), iou_type)
            ev.evaluate()
            ev.accumulate()
            ev.summarize()
            stats[iou_type] = [float(v) for v in ev.stats]
    print(json.dumps({"seconds": time.perf_counter() - t, "stats": stats}))


def stage_eval_noisyseg(folder: str) -> None:
    from noisyseg.eval.coco import coco_evaluators

    t = time.perf_counter()
    with open(Path(folder) / "detections.json") as f:
        dets = json.load(f)
    evaluators, _ = coco_evaluators(str(Path(folder) / "val.json"), dets, ("segm", "bbox"), backend="faster")
    stats = {k: [float(v) for v in ev.stats] for k, ev in evaluators.items()}
    print(json.dumps({"seconds": time.perf_counter() - t, "stats": stats}))


def stage_train_tiny(folder: str) -> None:
    """A maskrcnn_tiny checkpoint for the audit: 2 CE epochs on the first 64 images of the slice."""
    import yaml

    from noisyseg.cli import main as cli

    f = Path(folder)
    coco = json.loads((f / "slice.json").read_text())
    keep = {im["id"] for im in coco["images"][:64]}
    part = {**coco, "images": [im for im in coco["images"] if im["id"] in keep],
            "annotations": [a for a in coco["annotations"] if a["image_id"] in keep]}
    write_json(part, f / "train64.json")
    cfg = {"seed": 0,
           "data": {"train_json": str(f / "train64.json"), "val_json": str(f / "train64.json"),
                    "image_root": str(f / "images"), "train_min_size": [112, 128], "test_min_size": 120,
                    "max_size": 160, "num_workers": 0},
           "model": {"name": "maskrcnn_tiny", "rois_per_image": 64},
           "loss": {"name": "ce", "warmup_epochs": 0},
           "train": {"epochs": 2, "batch_size": 4, "lr": 0.01, "warmup_iters": 2, "lr_steps": [], "threads": 1,
                     "device": "cpu"}}
    (f / "tiny.yaml").write_text(yaml.safe_dump(cfg))
    code = cli(["train", str(f / "tiny.yaml"), "--out", str(f / "run"), "--no-progress"])
    if code:
        sys.exit(f"training the audit's model failed ({code})")


def stage_audit(folder: str, n_annotations: str) -> None:
    """The public audit over the first ``n_annotations`` annotations' images of the slice."""
    import contextlib
    import io

    from noisyseg.audit import audit

    f = Path(folder)
    coco = json.loads((f / "slice.json").read_text())
    n = int(n_annotations)
    # whole images, in file order, until about n annotations: images and annotations grow together
    per_image: dict[int, int] = {}
    for a in coco["annotations"]:
        per_image[a["image_id"]] = per_image.get(a["image_id"], 0) + 1
    ids, total = set(), 0
    for im in coco["images"]:
        if total >= n:
            break
        ids.add(im["id"])
        total += per_image.get(im["id"], 0)
    part = {**coco, "images": [im for im in coco["images"] if im["id"] in ids],
            "annotations": [a for a in coco["annotations"] if a["image_id"] in ids]}
    data = f / f"slice_{n}.json"
    write_json(part, data)
    n_images = len(part["images"])
    del coco, part, per_image  # the audit reads its own copy: this process holds only what the audit holds
    import gc

    gc.collect()
    out = f / f"audit_{n}"
    t = time.perf_counter()
    with contextlib.redirect_stderr(io.StringIO()):
        result = audit(f / "run", data, image_root=f / "images", out_dir=out, device="cpu", batch_size=8,
                       progress=False)
    seconds = time.perf_counter() - t
    scored = len(result.issues.rank)
    print(json.dumps({"seconds": seconds, "scored": scored, "images": n_images,
                      "scoring_seconds": result.issues.scores.seconds,
                      "flagged": int(result.issues.is_issue.sum())}))


def stage_noise_stats(noisy: str) -> None:
    from noisyseg.cli import main as cli

    with open(os.devnull, "w") as devnull:
        import contextlib

        with contextlib.redirect_stdout(devnull):
            code = cli(["noise", "--stats", noisy])
    if code:
        sys.exit(code)


def stage_review(noisy: str, folder: str, crops: str, mode: str = "page") -> None:
    """The audit's outputs after scoring, at the size of ``noisy``: cleanlab's flags and ranks, the table,
    the summary and the review page, from random class probabilities (scoring is step 5's business).

    Holds what :func:`noisyseg.audit.audit` holds: the file as :class:`noisyseg.audit.flat.AuditData` (the
    parsed json freed), the (N, K) probabilities, the table and crop sheets spooled to disk as it does.
    ``mode`` "fix": the table and summary, then ``--fix --action relabel`` as the audit makes it (the file
    read again once the arrays are freed) instead of the page, so its own peak is measured."""
    import gc

    from noisyseg.audit.api import file_sha256
    from noisyseg.audit.fix import repaired_file
    from noisyseg.audit.flat import AuditData
    from noisyseg.audit.issues import (
        find_issues,
        summary_data,
        summary_markdown,
        write_table,
    )
    from noisyseg.audit.outputs import Spool
    from noisyseg.audit.review import (
        page_data,
        page_indices,
        page_pictures,
        sheet_files,
    )
    from noisyseg.audit.review_page import render
    from noisyseg.audit.score import AnnotationScores
    from noisyseg.data.coco import LabelMap

    t = time.perf_counter()
    data = AuditData.load(noisy)
    sha = file_sha256(noisy)
    gc.collect()
    load_seconds = time.perf_counter() - t
    lm = LabelMap.from_categories(data.categories)
    index = np.asarray(lm.category_ids, dtype=np.int64)
    n = len(data)
    rng = np.random.default_rng(0)
    given = np.searchsorted(index, data.category_ids).astype(np.int64)
    clean = np.searchsorted(index, data.clean_category_ids if data.clean_category_ids is not None
                            else data.category_ids).astype(np.int64)
    probs = rng.normal(0, 1, (n, lm.num_classes))  # logits, turned into probabilities in place
    probs[np.arange(n), clean] += 3.0  # a model that mostly knows the clean class
    probs -= probs.max(1, keepdims=True)
    np.exp(probs, out=probs)
    probs /= probs.sum(1, keepdims=True)
    before = rss_mib()  # the file's arrays and the (N, K) float64 probabilities
    scores = AnnotationScores(
        annotation_ids=data.ann_ids.copy(), image_ids=data.ann_image_ids, given_labels=given,
        clean_labels=clean, pred_probs=probs, background_prob=rng.random(n) * 0.1, label_map=lm,
        checkpoints=[], image_root=Path(folder) / "images", seconds=1.0)
    times = {"file -> flat arrays (json freed)": load_seconds}
    t = time.perf_counter()
    issues = find_issues(scores)
    times["cleanlab flags + ranks"] = time.perf_counter() - t
    Path(folder).mkdir(parents=True, exist_ok=True)
    spools = [Spool(Path(folder)) for _ in range(3)]
    t = time.perf_counter()
    csv_out, json_out = spools[0].writer(), spools[1].writer()
    write_table(issues, {"data": noisy, "checkpoints": [], "rule": issues.rule}, csv_out, json_out)
    times["table csv + json (streamed)"] = time.perf_counter() - t
    t = time.perf_counter()
    summary = summary_data(issues, {"data": noisy})
    summary_markdown(summary)
    times["summary"] = time.perf_counter() - t
    if mode == "fix":
        del data
        gc.collect()
        t = time.perf_counter()
        fixed, report = repaired_file(noisy, issues, "relabel", sha, spool=Spool(Path(folder)))
        times["--fix relabel: read again, repair, dump"] = time.perf_counter() - t
        t = time.perf_counter()
        fixed.read()  # what the audit holds while it writes the repaired file
        times["--fix: read back from the spool"] = time.perf_counter() - t
        print(json.dumps({"rows": n, "flagged": int(issues.is_issue.sum()), "times": times, "inputs_mib": before,
                          "fix_mib": fixed.length / 2**20, "changed": report["n_changed"]}))
        return
    t = time.perf_counter()
    indices = page_indices(issues, None)
    page = render(page_data(issues, indices, data, folder, summary, {"id": "bench"}, "0" * 64))
    times["review page data (every flagged row)"] = time.perf_counter() - t
    # crops need pixels: small flat images for the images of the first suspects only
    first = indices[: int(crops)]
    from PIL import Image

    (Path(folder) / "images").mkdir(parents=True, exist_ok=True)
    rss_before_crops = rss_mib()
    for m in sorted({int(data.ann_image[i]) for i in first.tolist()}):
        im = data.image(m)
        path = Path(folder) / "images" / im["file_name"]
        if not path.exists():
            Image.new("RGB", (im["width"], im["height"]), (90, 90, 90)).save(path, compress_level=1)
    t = time.perf_counter()
    from noisyseg.audit.review import PAGE_SIZE, SHEETS_AT_ONCE

    sheets = 0
    step = SHEETS_AT_ONCE * PAGE_SIZE  # in chunks, as review_files makes them
    for start in range(0, len(first), step):
        for jpeg in sheet_files(page_pictures(issues, first[start:start + step], data, noisy),
                                first=start // PAGE_SIZE).values():
            spools[2].add(jpeg)
            sheets += 1
    times[f"crops + sheets for {len(first)} suspects"] = time.perf_counter() - t
    print(json.dumps({"rows": n, "flagged": int(issues.is_issue.sum()), "times": times, "inputs_mib": before,
                      "rss_crops": [rss_before_crops, rss_mib()],
                      "csv_mib": csv_out.file.length / 2**20, "page_mib": len(page) / 2**20, "sheets": sheets}))


STAGES = {name[len("stage_"):]: fn for name, fn in globals().items() if name.startswith("stage_")}


# -------------------------------------------------------------------------------------------------- main


def _ratio_line(name: str, value: float, anchor_name: str, anchor: float, goal: str, unit: str = "s") -> str:
    return (f"{name:<52} {value:8.1f} {unit}   vs {anchor_name:<30} {anchor:8.1f} {unit}   "
            f"ratio {value / anchor:5.2f}  (goal {goal})")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dir", help="work folder (made; inputs are kept there and reused)")
    ap.add_argument("--images", type=int, default=118_287)
    ap.add_argument("--annotations", type=int, default=860_001)
    ap.add_argument("--scale", type=float, default=1.0, help="multiply --images and --annotations (smoke tests)")
    ap.add_argument("--val-images", type=int, default=5000)
    ap.add_argument("--detections", type=int, default=100, help="detections per val image")
    ap.add_argument("--audit", default="12500,50000", help="annotations of the two audit slices")
    ap.add_argument("--page-crops", type=int, default=2400, help="review page crops made at full size")
    ap.add_argument("--repeats", type=int, default=2, help="runs of the load/build pair (best of)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--only", default="1,2,3,4,5,6,7,8", help="the numbered steps to run (default all)")
    ap.add_argument("--stage", help=argparse.SUPPRESS)
    ap.add_argument("args", nargs="*", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.stage:
        STAGES[args.stage](*args.args)
        return

    if not args.dir:
        ap.error("--dir is required")
    d = Path(args.dir)
    d.mkdir(parents=True, exist_ok=True)
    n_img, n_ann = round(args.images * args.scale), round(args.annotations * args.scale)
    slices = sorted(int(v) for v in args.audit.split(","))
    print(f"# coco_scale: {n_img} images, {n_ann} annotations; val {args.val_images} x {args.detections} "
          f"detections; audit slices {slices}; seed {args.seed}; python {sys.version.split()[0]}, "
          f"numpy {np.__version__}, {os.cpu_count()} cpus", flush=True)
    train = d / f"train_{n_img}_{n_ann}_{args.seed}.json"
    t = time.perf_counter()
    if not train.exists():
        child("make_train", str(train), str(n_img), str(n_ann), str(args.seed))
    val = d / f"val_{args.val_images}_{args.detections}_{args.seed}"
    if not (val / "detections.json").exists():
        val.mkdir(exist_ok=True)
        child("make_val", str(val), str(args.val_images), str(args.detections), str(args.seed))
    pix = d / f"slice_{slices[-1]}_{args.seed}"
    if not (pix / "slice.json").exists():
        pix.mkdir(exist_ok=True)
        child("make_slice", str(pix), str(-(-slices[-1] // 7)), str(slices[-1]), str(args.seed + 2))
    print(f"inputs made or reused in {time.perf_counter() - t:.0f} s: {train.name} "
          f"{train.stat().st_size / 2**20:.0f} MiB, val {(val / 'val.json').stat().st_size / 2**20:.0f} MiB + "
          f"detections {(val / 'detections.json').stat().st_size / 2**20:.0f} MiB, slice images "
          f"{len(list((pix / 'images').iterdir()))}", flush=True)

    only = {int(v) for v in args.only.split(",")}
    print(f"steps run: {sorted(only)}", flush=True)
    noisy = d / "noisy.json"
    if (only & {6, 7}) and not noisy.exists():
        only.add(1)  # steps 6 and 7 read the noisy file that step 1 writes
    if 2 in only:
        step_build(args, train)
    if 1 in only:
        step_noise(train, noisy, d)
    if 6 in only:
        step_stats(noisy, n_ann)
    if 3 in only:
        step_workers(train)
    if 4 in only:
        step_eval(args, val)
    if 5 in only:
        step_audit(pix, slices, n_ann)
    if 7 in only:
        step_review(args, noisy, d, n_ann)
    if 8 in only:
        step_headers(pix, n_img)


def step_headers(pix: Path, n_img: int) -> None:
    print("\n## 8. reading every image's header before work (the check of CocoInstances(check_files=True))",
          flush=True)
    _, _, out = child("headers", str(pix))
    r = json.loads(out)
    per = (r["with"] - r["without"]) / r["images"]
    print(f"   {r['images']} images (160x120 PNG, in the page cache): data set {r['without']:.2f} s without, "
          f"{r['with']:.2f} s with the header check: {1e6 * per:.0f} us per image, about {per * n_img:.0f} s "
          f"for {n_img} images (more from a cold disk: one small read per file)", flush=True)


def step_build(args, train: Path) -> None:
    print("\n## 2. data set build vs json load (best of %d)" % args.repeats, flush=True)
    loads, builds = [], []
    for _ in range(args.repeats):
        w, p_load, out = child("load", str(train))
        loads.append((json.loads(out)["seconds"], w, p_load))
        w, p_build, out = child("build", str(train))
        builds.append((json.loads(out)["seconds"], w, p_build, json.loads(out)))
    load_s = min(x[0] for x in loads)
    build_s = min(x[0] for x in builds)
    print(_ratio_line("CocoInstances(train=True, check_files=False)", build_s, "json.load", load_s, "<= 1.5"))
    print(f"   peak RSS: json.load {loads[0][2]:.0f} MiB, build {builds[-1][2]:.0f} MiB; the built data set "
          f"adds {builds[-1][3]['uss_mib']:.0f} MiB to the process (torch imported) once the json is freed ({builds[-1][3]['images']} images)",
          flush=True)



def step_noise(train: Path, noisy: Path, d: Path) -> None:
    print("\n## 1. noise vs json round trip", flush=True)
    w_trip, p_trip, _ = child("roundtrip", str(train), str(d / "trip.json"))
    if noisy.exists():
        noisy.unlink()
    w_noise, p_noise, said = command([sys.executable, "-m", "noisyseg", "noise", str(train), "-o", str(noisy),
                                      "--kind", "symmetric", "--rate", "0.4", "--seed", "0"])
    (d / "trip.json").unlink()
    print(_ratio_line("noisyseg noise symmetric 0.4", w_noise, "json.load + json.dumps", w_trip, "<= 1.3"))
    print(f"   peak RSS: round trip {p_trip:.0f} MiB, noise {p_noise:.0f} MiB", flush=True)



def step_stats(noisy: Path, n_ann: int) -> None:
    print("\n## 6. noise --stats vs json load", flush=True)
    w_stats, p_stats, _ = child("noise_stats", str(noisy))
    w_nl, _, out = child("load", str(noisy))
    print(_ratio_line(f"noisyseg noise --stats ({n_ann} rows)", w_stats, "json.load (process)", w_nl, "linear, ~1"))
    print(f"   peak RSS: --stats {p_stats:.0f} MiB", flush=True)



def step_workers(train: Path) -> None:
    print("\n## 3. DataLoader worker memory over one epoch of targets, 2 workers", flush=True)
    for layout in ("flat", "dicts"):
        w, p, out = child("workers", str(train), layout)
        r = json.loads(out)
        growth = [(e - s) for s, e in zip(r["start"], r["end"])]
        label = "flat records (now)" if layout == "flat" else "lists of dicts (before; anchor)"
        print(f"{label:<34} worker USS start {' / '.join(f'{v:.0f}' for v in r['start'])} MiB -> end "
              f"{' / '.join(f'{v:.0f}' for v in r['end'])} MiB: growth "
              f"{' / '.join(f'{g:+.0f} MiB ({100 * g / s:+.0f}%)' for g, s in zip(growth, r['start']))}; "
              f"parent USS {r['parent_uss_mib']:.0f} MiB; epoch {r['seconds']:.0f} s over {r['images']} images",
              flush=True)
        # RSS counts the pages a worker shares with its parent, so a copy-on-write copy does not change it:
        # the private memory (USS) is the figure to judge; RSS is printed for the size it is measured against
        print(f"   worker RSS (shared pages included) {' / '.join(f'{v:.0f}' for v in r['start_rss'])} MiB -> "
              f"{' / '.join(f'{v:.0f}' for v in r['end_rss'])} MiB; USS growth as a share of the worker's RSS "
              f"{' / '.join(f'{100 * g / b:+.1f}%' for g, b in zip(growth, r['start_rss']))} (goal <= 5%)",
              flush=True)



def step_eval(args, val: Path) -> None:
    print(f"\n## 4. evaluation, {args.val_images} images x {args.detections} detections with masks, segm + bbox",
          flush=True)
    w_py, p_py, out_py = child("eval_pycocotools", str(val))
    w_ns, p_ns, out_ns = child("eval_noisyseg", str(val))
    py, ns = json.loads(out_py), json.loads(out_ns)
    print(_ratio_line("noisyseg.eval (faster-coco-eval)", ns["seconds"], "pycocotools COCOeval", py["seconds"],
                      "<= 0.4"))
    equal = all(np.allclose(py["stats"][k], ns["stats"][k], rtol=0, atol=1e-12) for k in ("segm", "bbox"))
    worst = max(abs(a - b) for k in ("segm", "bbox") for a, b in zip(py["stats"][k], ns["stats"][k]))
    print(f"   the 12 figures of each IoU type equal: {equal} (largest difference {worst:.2e}); segm AP "
          f"{100 * ns['stats']['segm'][0]:.2f} vs {100 * py['stats']['segm'][0]:.2f}; peak RSS pycocotools "
          f"{p_py:.0f} MiB, noisyseg {p_ns:.0f} MiB", flush=True)



def step_audit(pix: Path, slices: list[int], n_ann: int) -> None:
    print("\n## 5. audit (maskrcnn_tiny, 160x120 images, 1 thread)", flush=True)
    if not (pix / "run" / "checkpoints" / "last.pt").exists():
        child("train_tiny", str(pix))
    rates = []
    for n in slices:
        out_dir = pix / f"audit_{n}"
        if out_dir.exists():
            import shutil

            shutil.rmtree(out_dir)
        w, p, out = child("audit", str(pix), str(n))
        r = json.loads(out)
        rates.append((r["scored"], r["seconds"], p))
        print(f"audit of {r['scored']:>7} annotations ({r['images']} images): {r['seconds']:7.1f} s "
              f"({r['scored'] / r['seconds']:.0f} annotations/s; scoring {r['scoring_seconds']:.1f} s), "
              f"peak RSS {p:.0f} MiB, {r['flagged']} flagged", flush=True)
    (n0, s0, _), (n1, s1, _) = rates[0], rates[-1]
    per = (s1 - s0) / (n1 - n0) if n1 > n0 else s1 / n1
    (_, _, p0), (_, _, p1) = rates[0], rates[-1]
    print(f"   linear: {n1 / n0:.1f}x the annotations took {s1 / s0:.2f}x the time and {p1 - p0:+.0f} MiB; at {n_ann} "
          f"annotations about {per * n_ann / 60:.0f} min on one core of this machine at these image sizes, and "
          f"{p1 + (p1 - p0) / (n1 - n0) * (n_ann - n1):.0f} MiB if memory grows as between the two slices", flush=True)



SHEETS_AT_ONCE_TEXT = "a chunk of sheets at a time (review.SHEETS_AT_ONCE x PAGE_SIZE crops)"


def step_review(args, noisy: Path, d: Path, n_ann: int) -> None:
    print(f"\n## 7. audit table, summary and review page at {n_ann} rows", flush=True)
    w, p, out = child("review", str(noisy), str(d / "review"), str(args.page_crops))
    r = json.loads(out)
    for name, s in r["times"].items():
        print(f"   {name:<40} {s:7.1f} s")
    print(f"   {r['rows']} rows, {r['flagged']} flagged; csv {r['csv_mib']:.0f} MiB, page {r['page_mib']:.0f} MiB, "
          f"{r['sheets']} crop sheets; peak RSS {p:.0f} MiB (goal <= 4096), of which {r['inputs_mib']:.0f} MiB "
          f"held before flagging (the file's flat arrays, probabilities: what an audit holds too); process {w:.0f} s",
          flush=True)
    print(f"   RSS before the crops {r['rss_crops'][0]:.0f} MiB, after {r['rss_crops'][1]:.0f} MiB (crops made "
          f"{SHEETS_AT_ONCE_TEXT}, sheets spooled to disk)", flush=True)
    w, p, out = child("review", str(noisy), str(d / "review"), str(args.page_crops), "fix")
    r = json.loads(out)
    for name, s in r["times"].items():
        if name.startswith("--fix"):
            print(f"   {name:<40} {s:7.1f} s")
    print(f"   --fix relabel at {r['rows']} rows ({r['changed']} changed, {r['fix_mib']:.0f} MiB written): peak RSS "
          f"{p:.0f} MiB (goal <= 4096) in a process that also flagged and wrote the table; process {w:.0f} s",
          flush=True)


if __name__ == "__main__":
    main()
