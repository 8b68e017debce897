"""Training throughput of maskrcnn_r50_fpn at Cityscapes scale: `noisyseg train` vs a bare torchvision loop.

Writes ``--train`` synthetic 2048x1024 images (random texture with random polygon instances of the 8
Cityscapes classes) as a COCO file, then for each ``--amp`` mode trains two epochs with

- the engine: ``noisyseg.engine.train`` with configs/cityscapes_lncis_r50.yaml (the task-specific loss
  from the first epoch, 512 RoIs/image, short side 800-1024, random backbone weights: nothing is
  downloaded), and
- a bare loop: the same model modules with torchvision's own ``RoIHeads`` (cross-entropy), the same
  data loader, SGD, autocast and GradScaler (fp16) written out by hand,

and prints the images/s of the second epoch (the first one pays for cuDNN autotuning and allocator
warm-up), their ratio (goal: engine/bare >= 0.95) and the peak GPU memory of each. With ``--nproc N``
(N > 1) each mode also trains with ``noisyseg train --nproc N`` (N processes, one GPU each, the same
batch per GPU, so N times the batch in all) and prints its images/s against N times the one-GPU
engine's: the scaling efficiency (goal >= 0.9).

    .venv/bin/python benchmarks/gpu_throughput.py [--train 64] [--batch 2] [--amp off,fp16,bf16] [--nproc N] [--json OUT.json]

Output format (fixed; one row per mode, then one per mode for --nproc)::

    amp   engine img/s  bare img/s  ratio  engine GiB  bare GiB
    off          12.34       12.80  0.964        5.10      4.95
    ...
    amp   nproc  engine img/s  N x 1-GPU img/s  efficiency
    off       2         23.90            24.68       0.968

On a machine without CUDA it refuses unless ``--device cpu`` is given (a smoke test: use a small
``--size``, the figures mean nothing there).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import yaml
from PIL import Image

from noisyseg.config import config_from_dict
from noisyseg.engine.distributed import DistInfo
from noisyseg.engine.trainer import _to_device, _train_loader, make_datasets, train
from noisyseg.utils.io import atomic_write_json

sys.path.insert(0, str(Path(__file__).parent))
from train_overhead import bare_model_and_optimizer  # noqa: E402  (same folder)

ROOT = Path(__file__).resolve().parents[1]
CLASSES = ["person", "rider", "car", "truck", "bus", "train", "motorcycle", "bicycle"]


def write_synthetic_set(folder: Path, n: int, width: int, height: int, seed: int = 0) -> Path:
    """``n`` noisy-texture images with 3-12 random convex polygons each, as images/ + train.json."""
    rng = np.random.default_rng(seed)
    (folder / "images").mkdir(parents=True)
    images, anns = [], []
    for i in range(n):
        img = rng.integers(0, 256, (height // 8, width // 8, 3), dtype=np.uint8)
        Image.fromarray(img).resize((width, height), Image.BILINEAR).save(folder / "images" / f"{i:05d}.jpg", quality=90)
        images.append({"id": i + 1, "file_name": f"{i:05d}.jpg", "width": width, "height": height})
        for _ in range(int(rng.integers(3, 13))):
            cx, cy = rng.uniform(0.1, 0.9) * width, rng.uniform(0.1, 0.9) * height
            r = rng.uniform(0.02, 0.15) * height
            angles = np.sort(rng.uniform(0, 2 * np.pi, 8))
            xs = np.clip(cx + r * np.cos(angles), 0, width - 1)
            ys = np.clip(cy + r * np.sin(angles), 0, height - 1)
            x0, y0 = float(xs.min()), float(ys.min())
            w, h = float(xs.max() - x0), float(ys.max() - y0)
            anns.append({"id": len(anns) + 1, "image_id": i + 1, "category_id": int(rng.integers(1, 9)),
                         "segmentation": [np.stack([xs, ys], 1).ravel().round(1).tolist()],
                         "bbox": [x0, y0, w, h], "area": w * h * 0.7, "iscrowd": 0})
    coco = {"images": images, "annotations": anns,
            "categories": [{"id": i + 1, "name": c, "supercategory": "object"} for i, c in enumerate(CLASSES)]}
    atomic_write_json(folder / "train.json", coco)
    return folder / "train.json"


def make_config(data_json: Path, image_root: Path, args, amp: str):
    tree = yaml.safe_load((ROOT / "configs" / "cityscapes_lncis_r50.yaml").read_text())
    tree["data"].update(train_json=str(data_json), val_json=str(data_json), image_root=str(image_root),
                        num_workers=args.workers)
    if args.size:
        tree["data"].update(train_min_size=[args.size, args.size], test_min_size=args.size, max_size=2 * args.size)
    tree["model"]["backbone_weights"] = "none"
    tree["loss"]["warmup_epochs"] = 0
    tree["train"].update(epochs=2, batch_size=args.batch, amp=amp, eval_interval=0, log_interval=10**6,
                         device=args.device, warmup_iters=0, lr_steps=[])
    return config_from_dict(tree)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def reset_peak(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)


def peak_gib(device: torch.device) -> float:
    return torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else float("nan")


def engine_run(cfg, work: Path, device: torch.device) -> tuple[float, float]:
    reset_peak(device)
    out = work / f"engine-{cfg.train.amp}"
    with contextlib.redirect_stdout(io.StringIO()):  # the engine's epoch lines would break the table
        train(cfg, out, progress=False)
    epochs = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    second = [r for r in epochs if r.get("event") == "epoch"][1]
    return second["images_per_second"], peak_gib(device)


def nproc_run(cfg, work: Path, nproc: int) -> float:
    """images/s of the second epoch of ``noisyseg train --nproc N`` (a subprocess launching N ranks) with
    ``nproc`` times the batch of ``cfg`` (the same batch per process)."""
    import subprocess

    tree = cfg.model_dump(mode="json")
    tree["train"]["batch_size"] = cfg.train.batch_size * nproc
    out = work / f"nproc{nproc}-{cfg.train.amp}"
    config = work / f"nproc{nproc}-{cfg.train.amp}.yaml"
    config.write_text(yaml.safe_dump(tree))
    done = subprocess.run([sys.executable, "-m", "noisyseg", "train", str(config), "--out", str(out), "--nproc",
                           str(nproc), "--no-progress"], capture_output=True, text=True)
    if done.returncode:
        sys.exit(f"gpu_throughput.py: train --nproc {nproc} failed:\n{done.stderr[-2000:]}")
    epochs = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    return [r for r in epochs if r.get("event") == "epoch"][1]["images_per_second"]


def bare_run(cfg, device: torch.device) -> tuple[float, float]:
    reset_peak(device)
    train_set, _ = make_datasets(cfg)
    model, opt = bare_model_and_optimizer(cfg, train_set)
    model.to(device)  # moves the parameters in place, so the optimizer (no state yet) still holds them
    amp = cfg.train.amp
    scaler = torch.amp.GradScaler(device.type, enabled=amp == "fp16")
    dtype = torch.float16 if amp == "fp16" else torch.bfloat16
    rate = 0.0
    for epoch in range(2):
        sync(device)
        t, n = time.perf_counter(), 0
        for images, targets in _train_loader(train_set, cfg, DistInfo(), epoch):
            images, targets = _to_device(images, targets, device)
            with torch.autocast(device.type, dtype=dtype, enabled=amp != "off"):
                loss = sum(model(images, targets).values())
            opt.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.step(opt)
            scaler.update()
            loss.item()  # the engine reads every loss value each step too
            n += len(images)
        sync(device)
        rate = n / (time.perf_counter() - t)
    return rate, peak_gib(device)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--train", type=int, default=64, help="synthetic training images (default 64)")
    ap.add_argument("--batch", type=int, default=2, help="images per step (default 2)")
    ap.add_argument("--amp", default="off,fp16,bf16", help="comma-separated modes (default off,fp16,bf16)")
    ap.add_argument("--device", default="cuda", help="cuda (default), cuda:N or cpu")
    ap.add_argument("--size", type=int, help="train at this short side instead of the preset's 800-1024")
    ap.add_argument("--workers", type=int, default=4, help="data loader workers (default 4)")
    ap.add_argument("--nproc", type=int, default=1, help="also train with this many processes (GPUs), default 1")
    ap.add_argument("--json", type=Path, help="also write the figures here")
    args = ap.parse_args()
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        sys.exit("gpu_throughput.py: no CUDA device here; pass --device cpu for a smoke test")
    modes = args.amp.split(",")
    for m in modes:
        if m not in ("off", "fp16", "bf16"):
            sys.exit(f"gpu_throughput.py: --amp: unknown mode {m!r} (off, fp16, bf16)")
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    work = Path(tempfile.mkdtemp(prefix="noisyseg-gpu-"))
    try:
        t = time.perf_counter()
        data_json = write_synthetic_set(work / "data", args.train, 2048, 1024)
        print(f"wrote {args.train} synthetic 2048x1024 images in {time.perf_counter() - t:.0f} s", flush=True)
        name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
        print(f"maskrcnn_r50_fpn, batch {args.batch}, 512 RoIs/image, short side "
              f"{args.size or '800-1024'}, device {name}, torch {torch.__version__}")
        print(f"{'amp':5} {'engine img/s':>12} {'bare img/s':>11} {'ratio':>6} {'engine GiB':>11} {'bare GiB':>9}")
        rows = []
        for amp in modes:
            cfg = make_config(data_json, work / "data" / "images", args, amp)
            bare, bare_mem = bare_run(cfg, device)
            eng, eng_mem = engine_run(cfg, work, device)
            rows.append({"amp": amp, "engine_images_per_s": eng, "bare_images_per_s": bare, "ratio": eng / bare,
                         "engine_peak_gib": eng_mem, "bare_peak_gib": bare_mem})
            print(f"{amp:5} {eng:12.2f} {bare:11.2f} {eng / bare:6.3f} {eng_mem:11.2f} {bare_mem:9.2f}", flush=True)
        print("goal: ratio engine/bare >= 0.95")
        scaling = []
        if args.nproc > 1:
            print(f"{'amp':5} {'nproc':>5} {'engine img/s':>12} {'N x 1-GPU img/s':>16} {'efficiency':>10}")
            for amp, row in zip(modes, rows):
                cfg = make_config(data_json, work / "data" / "images", args, amp)
                rate = nproc_run(cfg, work, args.nproc)
                ideal = args.nproc * row["engine_images_per_s"]
                scaling.append({"amp": amp, "nproc": args.nproc, "engine_images_per_s": rate,
                                "ideal_images_per_s": ideal, "efficiency": rate / ideal})
                print(f"{amp:5} {args.nproc:5d} {rate:12.2f} {ideal:16.2f} {rate / ideal:10.3f}", flush=True)
            print("goal: efficiency >= 0.9")
        if args.json:
            atomic_write_json(args.json, {"device": name, "batch": args.batch, "size": args.size, "rows": rows,
                                          "nproc": scaling})
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
