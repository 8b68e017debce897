"""The ceiling of every repair that filters: CE retrained with exactly the wrong labels class-ignored (issue 22).

An audit method (``ce+fix:...:action=ignore``) can at best find every wrong label and no right one. This
measures that best case on the bench's own noisy files: each annotation whose ``category_id`` differs from
its ``clean_category_id`` gets ``"class_ignored": true`` (its box and mask still train, its class does not,
as the audit's ``ignore`` repair does), and CE is trained on the result with the bench's own cell config
(``cell_config(base, "ce", ...)``: same model, schedule and seed as the bench's CE cell). It then prints,
per seed, mask AP beside the bench's CE on the noisy file and on clean labels (``results.csv``), the
difference paired by seed, the share of CE's loss to noise recovered, and per class (classes most frequent
first) the mean difference to CE. A filter that finds the wrong labels perfectly recovers this much and no
more; what is left is what the ignored labels' classes would have taught (only a relabel can recover it).

    .venv/bin/python benchmarks/oracle_filter.py configs/fashion_lt_bench.yaml benchmarks/results/fashion_lt \
        --setting sym0.4 --seeds 0,1,2

Runs go to ``BENCH/oracle/runs/<setting>/seed<S>`` (resumed when cut short, read back when finished), the
files to ``BENCH/oracle/<setting>_seed<S>.json``; each run takes as long as one bench cell.
"""

from __future__ import annotations

import argparse
import csv
import json
from pathlib import Path

import numpy as np


def oracle_file(noisy: dict) -> tuple[dict, int]:
    """The noisy COCO tree with every wrong label class-ignored, and how many were."""
    tree = json.loads(json.dumps(noisy))
    n = 0
    for ann in tree["annotations"]:
        if "clean_category_id" not in ann:
            raise SystemExit("the noisy file has no clean_category_id: made by noisyseg noise, it records them")
        if ann["category_id"] != ann["clean_category_id"]:
            ann["class_ignored"] = True
            n += 1
    return tree, n


def main() -> None:
    import yaml

    from noisyseg.bench.grid import cell_config
    from noisyseg.config import config_from_dict
    from noisyseg.engine.trainer import train_to_end
    from noisyseg.utils.io import atomic_write_text

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("config", help="the bench's base config")
    ap.add_argument("bench", help="the bench folder (noisy/ and results.csv inside)")
    ap.add_argument("--setting", default="sym0.4")
    ap.add_argument("--seeds", default="0,1,2")
    args = ap.parse_args()
    bench = Path(args.bench)
    base = yaml.safe_load(Path(args.config).read_text())
    seeds = [int(s) for s in args.seeds.split(",")]

    ap_of, per_class = {}, {}
    for seed in seeds:
        noisy = bench / "noisy" / f"{args.setting}_seed{seed}.json"
        tree, n_ignored = oracle_file(json.loads(noisy.read_text()))
        out_json = bench / "oracle" / f"{args.setting}_seed{seed}.json"
        text = json.dumps(tree)
        if not out_json.is_file() or out_json.read_text() != text:
            out_json.parent.mkdir(parents=True, exist_ok=True)
            atomic_write_text(out_json, text)
        print(f"{out_json}: {n_ignored} of {len(tree['annotations'])} labels class-ignored (the wrong ones)", flush=True)
        cfg = config_from_dict(cell_config(base, "ce", out_json, seed), source=f"oracle {args.setting} seed {seed}")
        run_dir = bench / "oracle" / "runs" / args.setting / f"seed{seed}"
        outcome = train_to_end(cfg, run_dir, progress=False, label=f"[oracle] {args.setting} seed {seed}")
        ap_of[("oracle", args.setting, seed)] = outcome.metrics["segm"]["AP"]
        per_class[("oracle", seed)] = outcome.metrics["segm"]["per_class"]

    with open(bench / "results.csv", newline="") as f:
        for row in csv.DictReader(f):
            if row["method"] == "ce" and row["noise"] in ("clean", args.setting):
                ap_of[("ce", row["noise"], int(row["seed"]))] = float(row["mask_AP"])
    counts: dict[str, int] = {}
    with open(bench / "per_class.csv", newline="") as f:
        for row in csv.DictReader(f):
            if row["method"] == "ce" and row["noise"] == args.setting and int(row["seed"]) in seeds:
                per_class[("ce", int(row["seed"]))] = {**per_class.get(("ce", int(row["seed"])), {}),
                                                       row["class"]: float(row["mask_AP"] or "nan")}
                counts[row["class"]] = int(row["train_count"])

    missing = [(m, n, s) for s in seeds for m, n in (("ce", args.setting), ("ce", "clean"))
               if (m, n, s) not in ap_of]
    if missing:
        raise SystemExit(f"results.csv lacks the bench cells {missing}: run them with noisyseg bench first")
    print(f"\n{args.setting}, mask AP per seed (CE from {bench / 'results.csv'})")
    print("| seed | CE clean | CE noisy | oracle filter | minus CE | recovered |")
    print("|---|---|---|---|---|---|")
    diffs, costs = [], []
    for s in seeds:
        clean, noisy, oracle = ap_of[("ce", "clean", s)], ap_of[("ce", args.setting, s)], ap_of[("oracle", args.setting, s)]
        diffs.append(oracle - noisy)
        costs.append(clean - noisy)
        print(f"| {s} | {clean:.1f} | {noisy:.1f} | {oracle:.1f} | {oracle - noisy:+.1f} | "
              f"{100 * (oracle - noisy) / (clean - noisy):.0f}% |")
    oracle_all = [ap_of[("oracle", args.setting, s)] for s in seeds]
    print(f"| mean | {np.mean([ap_of[('ce', 'clean', s)] for s in seeds]):.1f} | "
          f"{np.mean([ap_of[('ce', args.setting, s)] for s in seeds]):.1f} | {np.mean(oracle_all):.1f} ± "
          f"{np.std(oracle_all, ddof=1) if len(seeds) > 1 else 0:.1f} | {np.mean(diffs):+.1f} | "
          f"{100 * np.mean(diffs) / np.mean(costs):.0f}% (of the mean cost) |")

    print("\nper class, mean over seeds (training annotations in the clean file)")
    print("| class | CE noisy | oracle filter | minus CE |")
    print("|---|---|---|---|")
    for name in sorted(counts, key=lambda c: -counts[c]):
        ce = np.mean([per_class[("ce", s)][name] for s in seeds])
        oracle = np.mean([per_class[("oracle", s)][name] for s in seeds])
        print(f"| {name} ({counts[name]}) | {ce:.1f} | {oracle:.1f} | {oracle - ce:+.1f} |")


if __name__ == "__main__":
    main()
