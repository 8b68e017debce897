"""How the task-specific loss splits the sampled RoIs over training, from a bench folder's run logs.

For every lncis* run under ``BENCH/runs``, prints per epoch the mean share of sampled RoIs in NEG
(background label), PSN (labelled object the model calls background: CE), OS (robust loss) and PON,
and the share of *foreground* RoIs that get the robust loss. A small OS share means the robust term
rarely acts: most foreground RoIs are still learned with CE on their (noisy) label.

    .venv/bin/python benchmarks/partition_counts.py benchmarks/results/shapes [--noise sym0.4]
"""

from __future__ import annotations

import argparse
import json
from collections import defaultdict
from pathlib import Path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("bench", type=Path)
    ap.add_argument("--noise", help="only this noise setting (e.g. sym0.4)")
    args = ap.parse_args()
    found = False
    for method_dir in sorted((args.bench / "runs").glob("lncis*")):
        for noise_dir in sorted(method_dir.iterdir()):
            if args.noise and noise_dir.name != args.noise:
                continue
            per_epoch: dict[int, dict[str, list[int]]] = defaultdict(lambda: defaultdict(list))
            for log in noise_dir.glob("seed*/metrics.jsonl"):
                for line in log.read_text().splitlines():
                    r = json.loads(line)
                    if r.get("event") == "train" and "rois_os" in r:
                        for k in ("neg", "psn", "os", "pon"):
                            per_epoch[r["epoch"]][k].append(r[f"rois_{k}"])
            if not per_epoch:
                continue
            found = True
            print(f"{method_dir.name} / {noise_dir.name}")
            print("  epoch   NEG    PSN    OS     PON    OS/foreground")
            for epoch in sorted(per_epoch):
                sums = {k: sum(v) for k, v in per_epoch[epoch].items()}
                total = sum(sums.values()) or 1
                fg = sums["psn"] + sums["os"] + sums["pon"]
                print(f"  {epoch:5d}  " + "  ".join(f"{sums[k] / total:5.1%}" for k in ("neg", "psn", "os", "pon"))
                      + f"   {sums['os'] / fg if fg else 0:6.1%}")
    if not found:
        print(f"no lncis run with logged partition counts under {args.bench / 'runs'}")


if __name__ == "__main__":
    main()
