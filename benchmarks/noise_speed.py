"""`noisyseg noise` on a COCO-train-sized file vs a bare json.load + json.dump round trip.

Builds a synthetic file shaped like COCO train2017 (118k images, 860k annotations with 20-30-point
polygons, 80 classes in 12 supercategories), then times, each as a fresh subprocess:

  - the CLI: ``python -m noisyseg noise IN -o OUT --kind symmetric --rate 0.4 --seed 0``
    (reads with json.load, writes compact json with json.dumps, atomically: temp file, fsync, rename);
  - round trip A: ``json.load`` then ``json.dump(d, f, separators=(",", ":"))`` into an open file;
  - round trip B: ``json.load`` then ``f.write(json.dumps(d, separators=(",", ":")))``.

json.dump streams through the pure-Python encoder (the C encoder only runs for one-shot dumps), so A is
much slower than B; B is the like-for-like baseline (same reader, same encoder, same output bytes
format as the CLI) and the ratio is taken against the faster of the two. Prints wall time and peak RSS
(the child's own rusage) for each, and the ratio; goal: CLI <= 1.3 x the round trip. Timings are the
best of ``--repeats`` runs.

    .venv/bin/python benchmarks/noise_speed.py [--annotations 860000] [--images 118000] [--repeats 2]
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

ROUND_TRIPS = {
    "json.load + json.dump ": ("import json, sys\n"
                               "with open(sys.argv[1]) as f: d = json.load(f)\n"
                               "with open(sys.argv[2], 'w') as f: json.dump(d, f, separators=(',', ':'))\n"),
    "json.load + json.dumps": ("import json, sys\n"
                               "with open(sys.argv[1]) as f: d = json.load(f)\n"
                               "with open(sys.argv[2], 'w') as f: f.write(json.dumps(d, separators=(',', ':')))\n"),
}


def build(path: Path, n_ann: int, n_img: int, seed: int = 0) -> None:
    """Write a COCO-train-like json: ``n_ann`` polygon annotations over ``n_img`` images, 80 classes."""
    rng = np.random.default_rng(seed)
    # COCO's ids have gaps (1..90 for 80 classes); 12 supercategories
    cats = [{"supercategory": f"super{i % 12}", "id": i + 1 + i // 10, "name": f"class{i}"} for i in range(80)]
    cat_ids = np.array([c["id"] for c in cats])
    images = [{"license": 1, "file_name": f"{i + 1:012d}.jpg", "coco_url": "", "height": 480, "width": 640,
               "date_captured": "2013-11-14 11:18:45", "flickr_url": "", "id": i + 1} for i in range(n_img)]
    labels = rng.choice(cat_ids, size=n_ann, p=rng.dirichlet(np.ones(80))).tolist()
    img_ids = rng.integers(1, n_img + 1, size=n_ann).tolist()
    n_pts = rng.integers(20, 31, size=n_ann)
    ends = np.cumsum(2 * n_pts).tolist()
    coords = np.round(rng.random(ends[-1]) * 400 + 20, 2).tolist()
    boxes = np.round(rng.random((n_ann, 4)) * 300, 2).tolist()
    areas = np.round(rng.random(n_ann) * 5000, 2).tolist()
    anns, start = [], 0
    for k in range(n_ann):
        anns.append({"segmentation": [coords[start:ends[k]]], "area": areas[k], "iscrowd": 0,
                     "image_id": img_ids[k], "bbox": boxes[k], "category_id": labels[k], "id": k + 1})
        start = ends[k]
    with open(path, "w") as f:
        f.write(json.dumps({"info": {"description": "synthetic COCO-train-sized"}, "licenses": [],
                            "images": images, "annotations": anns, "categories": cats}, separators=(",", ":")))


LAST_STDOUT = [""]


def timed(cmd: list[str]) -> tuple[float, float]:
    """Wall seconds and peak RSS (MiB) of the child process running ``cmd`` (from its own rusage)."""
    t = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE)  # a line or two at most
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t
    if os.waitstatus_to_exitcode(status):
        sys.exit(proc.stderr.read().decode())
    LAST_STDOUT[0] = proc.stdout.read().decode().strip()
    return wall, usage.ru_maxrss / 1024


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--annotations", type=int, default=860_000)
    ap.add_argument("--images", type=int, default=118_000)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--tmp", help="folder for the temporary files (default: the system's)")
    ap.add_argument("--build-only", metavar="PATH", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.build_only:
        build(Path(args.build_only), args.annotations, args.images)
        return
    with tempfile.TemporaryDirectory(prefix="noisyseg-noise-", dir=args.tmp) as d:
        d = Path(d)
        src = d / "train.json"
        t = time.perf_counter()
        # built in a child: a child's peak RSS counts what it inherited at fork, so this process stays small
        subprocess.run([sys.executable, __file__, "--build-only", str(src), "--annotations", str(args.annotations),
                        "--images", str(args.images)], check=True)
        print(f"built {src.stat().st_size / 2**20:.0f} MiB: {args.annotations} annotations, {args.images} images, "
              f"80 classes in 12 supercategories ({time.perf_counter() - t:.0f} s)")
        cli_cmd = [sys.executable, "-m", "noisyseg", "noise", str(src), "-o", str(d / "noisy.json"),
                   "--kind", "symmetric", "--rate", "0.4", "--seed", "0"]
        runs: dict[str, list[tuple[float, float]]] = {name: [] for name in ROUND_TRIPS}
        runs["cli"] = []
        for _ in range(args.repeats):  # interleaved, so a slow spell on a shared machine hits all alike
            for name, code in ROUND_TRIPS.items():
                runs[name].append(timed([sys.executable, "-c", code, str(src), str(d / "trip.json")]))
            runs["cli"].append(timed(cli_cmd))

        def best(name: str) -> tuple[float, float]:
            return min(w for w, _ in runs[name]), max(m for _, m in runs[name])

        for name in ROUND_TRIPS:
            wall, rss = best(name)
            print(f"round trip {name}  : {wall:6.1f} s   peak RSS {rss:6.0f} MiB")
        wall, rss = best("cli")
        print(f"noisyseg noise (symmetric 0.4)       : {wall:6.1f} s   peak RSS {rss:6.0f} MiB")
        trip = min(best(name)[0] for name in ROUND_TRIPS)
        print(f"ratio CLI / fastest round trip: {wall / trip:.2f}  (goal <= 1.3; best of {args.repeats})")
        print(f"CLI said: {LAST_STDOUT[0].split(': ', 1)[-1]}")
        print(f"python {sys.version.split()[0]}, numpy {np.__version__}, {os.cpu_count()} cpus")


if __name__ == "__main__":
    main()
