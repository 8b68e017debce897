"""`noisyseg noise` on a COCO-train-sized file vs a bare json.load + json.dump round trip.

Builds a synthetic file shaped like COCO train2017 (118k images, 860k annotations with 20-30-point
polygons, 80 classes in 12 supercategories), then times, each in a fresh subprocess:
  - the CLI: `python -m noisyseg noise IN -o OUT --kind symmetric --rate 0.4 --seed 0`
  - the round trip: `json.load` then `json.dump(separators=(",", ":"))` (the CLI's output format)
and prints wall time, peak memory (max RSS) and the ratio. Goal: CLI <= 1.3x the round trip.

    .venv/bin/python benchmarks/noise_speed.py [--annotations 860000] [--repeats 2]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

# json.dump streams through the pure-Python iterencode; json.dumps runs the C encoder in one go and is
# the faster bare baseline, so the goal is checked against the faster of the two.
ROUND_TRIPS = {
    "json.load + json.dump ": ("import json, sys\n"
                               "with open(sys.argv[1]) as f: d = json.load(f)\n"
                               "with open(sys.argv[2], 'w') as f: json.dump(d, f, separators=(',', ':'))\n"),
    "json.load + json.dumps": ("import json, sys\n"
                               "with open(sys.argv[1]) as f: d = json.load(f)\n"
                               "with open(sys.argv[2], 'w') as f: f.write(json.dumps(d, separators=(',', ':')))\n"),
}


def build(path: Path, n_ann: int, n_img: int, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    cats = [{"supercategory": f"super{i % 12}", "id": i + 1 + (i // 10), "name": f"class{i}"} for i in range(80)]
    cat_ids = np.array([c["id"] for c in cats])
    images = [{"license": 1, "file_name": f"{i:012d}.jpg", "height": 480, "width": 640, "id": i + 1}
              for i in range(n_img)]
    anns = []
    labels = rng.choice(cat_ids, size=n_ann, p=rng.dirichlet(np.ones(80)))
    img_ids = rng.integers(1, n_img + 1, size=n_ann)
    for k in range(n_ann):
        n_pts = int(rng.integers(20, 31))
        poly = np.round(rng.random(2 * n_pts) * 400 + 20, 2).tolist()
        anns.append({"segmentation": [poly], "area": float(round(rng.random() * 5000, 2)), "iscrowd": 0,
                     "image_id": int(img_ids[k]), "bbox": [10.0, 20.0, 100.5, 80.25], "category_id": int(labels[k]),
                     "id": k + 1})
    with open(path, "w") as f:
        json.dump({"info": {"description": "synthetic COCO-sized"}, "licenses": [], "images": images,
                   "annotations": anns, "categories": cats}, f, separators=(",", ":"))


def timed(cmd: list[str]) -> tuple[float, float]:
    """Wall seconds and the peak RSS (MiB) of the child process running ``cmd`` (its own rusage)."""
    t = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t
    if os.waitstatus_to_exitcode(status):
        sys.exit(proc.stderr.read().decode())
    return wall, usage.ru_maxrss / 1024


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--annotations", type=int, default=860_000)
    ap.add_argument("--images", type=int, default=118_000)
    ap.add_argument("--repeats", type=int, default=2)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="noisyseg-noise-") as d:
        d = Path(d)
        src = d / "train.json"
        t = time.perf_counter()
        build(src, args.annotations, args.images)
        print(f"built {src.stat().st_size / 2**20:.0f} MiB: {args.annotations} annotations, {args.images} images, "
              f"80 classes ({time.perf_counter() - t:.0f} s)")
        cli_runs = []
        trips = {}
        for name, code in ROUND_TRIPS.items():
            trips[name] = [timed([sys.executable, "-c", code, str(src), str(d / "trip.json")]) for _ in range(args.repeats)]
        for _ in range(args.repeats):
            cli_runs.append(timed([sys.executable, "-m", "noisyseg", "noise", str(src), "-o", str(d / "noisy.json"),
                                   "--kind", "symmetric", "--rate", "0.4", "--seed", "0"]))
        cli = min(w for w, _ in cli_runs)
        for name, runs in trips.items():
            print(f"round trip {name}   : {min(w for w, _ in runs):6.1f} s   peak RSS {max(m for _, m in runs):6.0f} MiB")
        print(f"noisyseg noise (symmetric 0.4)        : {cli:6.1f} s   peak RSS {max(m for _, m in cli_runs):6.0f} MiB")
        trip = min(min(w for w, _ in runs) for runs in trips.values())
        print(f"ratio CLI / fastest round trip: {cli / trip:.2f}  (goal <= 1.3; best of {args.repeats})")
        print(f"python {sys.version.split()[0]}, {os.cpu_count()} cpus")


if __name__ == "__main__":
    main()
