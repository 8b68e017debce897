"""Check a long-tailed Fashion protocol by its CE runs on clean labels: per class, per seed, time.

For each group of finished runs (``noisyseg train ... -o runs/lt/GROUP_sSEED``, one per seed) this prints
every run's mask AP and per-class mask AP, classes ordered by their training instance count (read from
the run's own train.json ``info.instances_per_class``, else counted), its training seconds (metrics.json)
and CPU seconds (user + system, from ``/usr/bin/time -v`` output in ``runs/lt/NAME.log`` when there),
then the group's mean and sample std over seeds and the protocol's three bars:

- every class learnable: each of the ``--tail`` least frequent classes at least ``--min-tail-ap`` mask AP
  in every seed (default 3 classes, 10 AP);
- CE seed std of mask AP <= 1.5;
- one run <= 15 minutes on one core (900 s; CPU seconds when known, else training seconds).

    .venv/bin/python benchmarks/fashion_lt_protocol.py runs/lt --groups p1_ce
    .venv/bin/python benchmarks/fashion_lt_protocol.py runs/lt --groups p1_ce --eval runs/lt/eval_v450
"""

from __future__ import annotations

import argparse
import json
import math
import re
import statistics
from collections import defaultdict
from pathlib import Path

import yaml


def cpu_seconds(log: Path) -> float | None:
    """User + system seconds from ``/usr/bin/time -v`` output in ``log``, or None."""
    if not log.is_file():
        return None
    text = log.read_text(errors="replace")
    user = re.search(r"User time \(seconds\): ([\d.]+)", text)
    system = re.search(r"System time \(seconds\): ([\d.]+)", text)
    return float(user.group(1)) + float(system.group(1)) if user and system else None


def train_counts(run: Path) -> dict[str, int]:
    """Training instances per class name of the run's train.json."""
    cfg = yaml.safe_load((run / "config.yaml").read_text())
    coco = json.loads(Path(cfg["data"]["train_json"]).read_text())
    counts = (coco.get("info") or {}).get("instances_per_class")
    if counts:
        return counts
    names = {c["id"]: c["name"] for c in coco["categories"]}
    out: dict[str, int] = defaultdict(int)
    for a in coco["annotations"]:
        out[names[a["category_id"]]] += 1
    return dict(out)


def _val_size(run: Path) -> str:
    """"(val N)": how many images the run's own val set has."""
    cfg = yaml.safe_load((run / "config.yaml").read_text())
    try:
        return f"(val {len(json.loads(Path(cfg['data']['val_json']).read_text())['images'])})"
    except (OSError, KeyError, TypeError, ValueError):
        return ""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("root", type=Path, help="folder holding the run folders GROUP_sSEED (and NAME.log files)")
    ap.add_argument("--groups", help="comma-separated group names (default: every group found)")
    ap.add_argument("--tail", type=int, default=3, help="how many of the least frequent classes form the tail")
    ap.add_argument("--min-tail-ap", type=float, default=10.0, help="mask AP every tail class must reach")
    ap.add_argument("--eval", type=Path, help="read a run's AP from EVAL/<run name>/metrics.json (a `noisyseg "
                                              "eval RUN --out` on another val set) where there is one, else its own")
    ap.add_argument("--pool", action="store_true", help="treat the --groups given as one group (their seeds pooled)")
    args = ap.parse_args()
    groups: dict[str, list[Path]] = defaultdict(list)
    for run in sorted(args.root.glob("*_s[0-9]*")):
        if (run / "metrics.json").is_file():
            groups[run.name.rsplit("_s", 1)[0]].append(run)
    wanted = args.groups.split(",") if args.groups else sorted(groups)
    if args.pool:
        groups = {"+".join(wanted): sorted((r for g in wanted for r in groups.get(g, [])),
                                           key=lambda r: int(r.name.rsplit("_s", 1)[1]))}
        wanted = list(groups)
    for group in wanted:
        runs = groups.get(group, [])
        if not runs:
            print(f"{group}: no finished run")
            continue
        counts = train_counts(runs[0])
        order = sorted(counts, key=lambda n: (-counts[n], n))
        tail = order[-args.tail:]
        print(f"\n## {group}: {len(runs)} finished run(s); classes by training instances: "
              + ", ".join(f"{n} {counts[n]}" for n in order))
        head = "| run | AP from | mask AP | " + " | ".join(order) + " | train s | CPU s |"
        print(head)
        print("|" + "---|" * (len(order) + 5))
        aps, per_class, times, tail_min = [], defaultdict(list), [], []
        for run in runs:
            m = json.loads((run / "metrics.json").read_text())
            other = args.eval / run.name / "metrics.json" if args.eval else None
            source = other if other is not None and other.is_file() else run / "metrics.json"
            segm = json.loads(source.read_text())["segm"]
            pc = segm["per_class"]
            cpu = cpu_seconds(args.root / f"{run.name}.log")
            aps.append(segm["AP"])
            for n in order:
                per_class[n].append(pc.get(n) if pc.get(n) is not None else float("nan"))
            tail_min.append(min(pc.get(n) or 0.0 for n in tail))
            times.append(cpu if cpu is not None else m.get("train_seconds", float("nan")))
            label = f"{args.eval.name}/" if source != run / "metrics.json" else f"own {_val_size(run)}"
            print(f"| {run.name} | {label} | {segm['AP']:.1f} | " + " | ".join(f"{per_class[n][-1]:.1f}" for n in order)
                  + f" | {m.get('train_seconds', float('nan')):.0f} | " + (f"{cpu:.0f}" if cpu is not None else "–")
                  + " |")
        std = statistics.stdev(aps) if len(aps) > 1 else float("nan")
        print(f"| mean | | {statistics.fmean(aps):.1f} ± {std:.1f} | "
              + " | ".join(f"{statistics.fmean(per_class[n]):.1f}" for n in order) + " | | |")
        print(f"\nbars: tail ({', '.join(tail)}) min over seeds and tail classes {min(tail_min):.1f} AP "
              f"({'meets' if min(tail_min) >= args.min_tail_ap else 'below'} {args.min_tail_ap:g}); "
              f"seed std {std:.2f} ("
              + ("needs 2+ seeds for" if math.isnan(std) else "meets" if std <= 1.5 else "above") + " 1.5); "
              f"longest run {max(times):.0f} s ({'meets' if max(times) <= 900 else 'above'} 900 s)")


if __name__ == "__main__":
    main()
