"""How far a seeded run trained again on another machine lands from its recorded row (bench reproducibility).

An audit method's cell audits its base cell's run; when that run is no longer on disk the bench trains it
again, seeded, and keeps the recorded row. On the machine that made it a seeded CPU run is repeatable to the
last digit; on another CPU (other float kernels) it is not. This script finds, in the git history of a bench
folder's ``curves.csv``, every curve that once ended at another final mask AP than its cell's row in
``results.csv`` (the curve of a base run made again, before ``--report-only`` kept recorded curves) and prints
recorded against rerun, their difference, and the mean absolute difference beside CE's seed spread.

    .venv/bin/python benchmarks/rerun_drift.py benchmarks/results/fashion_lt
"""

from __future__ import annotations

import argparse
import csv
import io
import statistics
import subprocess
from pathlib import Path


def _final_points(text: str) -> dict[tuple[str, str, int], tuple[int, float]]:
    """(method, noise, seed) -> (last epoch, its mask AP) of every curve in a curves.csv text."""
    from noisyseg.bench.report import cell_key

    last: dict[tuple[str, str, int], tuple[int, float]] = {}
    for c in csv.DictReader(io.StringIO(text)):
        key, epoch = cell_key(c), int(c["epoch"])
        if key not in last or epoch > last[key][0]:
            last[key] = (epoch, float(c["mask_AP"]))
    return last


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("folder", type=Path, help="a bench folder committed to this git repository")
    args = parser.parse_args()
    from noisyseg.bench.report import cell_key, read_rows

    folder = args.folder
    rows = {cell_key(r): float(r["mask_AP"]) for r in read_rows(folder / "results.csv", check=True)}
    path = str(folder / "curves.csv")
    commits = subprocess.run(["git", "log", "--format=%h", "--", path], capture_output=True, text=True,
                             check=True).stdout.split()
    final_epoch = {key: epoch for key, (epoch, _) in _final_points((folder / "curves.csv").read_text()).items()}
    reruns: dict[tuple[str, str, int], list[float]] = {}
    for commit in reversed(commits):  # oldest first
        text = subprocess.run(["git", "show", f"{commit}:{path}"], capture_output=True, text=True, check=True).stdout
        for key, (epoch, ap) in _final_points(text).items():
            # a finished run (its curve reaches the cell's last epoch) that is not the recorded one; a curve of
            # a run still going (a first run's epoch 12, say) is not a rerun's result
            if key in rows and epoch == final_epoch.get(key) and abs(ap - rows[key]) > 1e-9:
                seen = reruns.setdefault(key, [])
                if all(abs(ap - x) > 1e-9 for x in seen):
                    seen.append(ap)
    n = sum(len(v) for v in reruns.values())
    print(f"{folder}: {n} finished reruns of {len(reruns)} cells ended away from their rows (base runs trained "
          "again)\n")
    print("| cell | recorded mask AP | rerun | rerun - recorded |")
    print("|---|---|---|---|")
    diffs = []
    for key in sorted(reruns):
        for ap in reruns[key]:
            diffs.append(abs(ap - rows[key]))
            print(f"| {' / '.join(map(str, key))} | {rows[key]:.2f} | {ap:.2f} | {ap - rows[key]:+.2f} |")
    if diffs:
        print(f"\nmean |rerun - recorded| {statistics.mean(diffs):.2f}, largest {max(diffs):.2f}")
    spreads = {}
    for (method, noise, _), ap in rows.items():
        if method == "ce":
            spreads.setdefault(noise, []).append(ap)
    print("CE's seed std per setting: " + ", ".join(f"{n} {statistics.stdev(v):.2f}"
                                                   for n, v in spreads.items() if len(v) > 1))


if __name__ == "__main__":
    main()
