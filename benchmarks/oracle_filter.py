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

``--method ce-agnostic`` retrains with class-agnostic box and mask heads instead (an ignored label then
picks no wrong box or mask channel: the ceiling of a filter whose retrain cannot be corrupted that way).

Runs go to ``BENCH/oracle/runs/<setting>/seed<S>`` (with ``--method M`` other than ce,
``BENCH/oracle/runs/<M>/<setting>/seed<S>``; resumed when cut short, read back when finished), the files to
``BENCH/oracle/<setting>_seed<S>.json``; each run takes as long as one bench cell.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np


def oracle_file(tree: dict) -> int:
    """Class-ignore every wrong label of the noisy COCO ``tree`` (in place); return how many."""
    n = 0
    for ann in tree["annotations"]:
        if "clean_category_id" not in ann:
            raise SystemExit("the noisy file has no clean_category_id: made by noisyseg noise, it records them")
        if ann["category_id"] != ann["clean_category_id"]:
            ann["class_ignored"] = True
            n += 1
    return n


def main() -> None:
    import yaml

    from noisyseg.bench.cells import per_class_rows
    from noisyseg.bench.grid import cell_config, method_dir
    from noisyseg.bench.report import class_differences, class_order, paired_differences, read_rows, recovered_fraction
    from noisyseg.config import config_from_dict
    from noisyseg.engine.trainer import train_to_end
    from noisyseg.utils.io import atomic_write_text

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("config", help="the bench's base config")
    ap.add_argument("bench", help="the bench folder (noisy/ and results.csv inside)")
    ap.add_argument("--setting", default="sym0.4")
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--method", default="ce", help="the bench method retrained on the oracle file (default ce)")
    args = ap.parse_args()
    bench = Path(args.bench)
    base = yaml.safe_load(Path(args.config).read_text())
    seeds = [int(s) for s in args.seeds.split(",")]

    # the bench's own rows, the oracle's beside them under the method name "oracle", so that the bench's
    # report functions pair them with CE
    rows = [r for r in read_rows(bench / "results.csv") if r["method"] == "ce" and int(r["seed"]) in seeds]
    per_class = [r for r in read_rows(bench / "per_class.csv")
                 if r["method"] == "ce" and r["noise"] == args.setting and int(r["seed"]) in seeds]
    counts = dict(class_order(per_class))
    for seed in seeds:
        noisy = bench / "noisy" / f"{args.setting}_seed{seed}.json"
        tree = json.loads(noisy.read_text())
        n_ignored = oracle_file(tree)
        out_json = bench / "oracle" / f"{args.setting}_seed{seed}.json"
        text = json.dumps(tree)
        if not out_json.is_file() or out_json.read_text() != text:
            atomic_write_text(out_json, text)
        print(f"{out_json}: {n_ignored} of {len(tree['annotations'])} labels class-ignored (the wrong ones)",
              flush=True)
        cfg = config_from_dict(cell_config(base, args.method, out_json, seed),
                               source=f"oracle {args.method} {args.setting} seed {seed}")
        runs = bench / "oracle" / "runs" if args.method == "ce" else bench / "oracle" / "runs" / method_dir(args.method)
        run_dir = runs / args.setting / f"seed{seed}"
        outcome = train_to_end(cfg, run_dir, progress=False, label=f"[oracle] {args.setting} seed {seed}")
        row = {"method": "oracle", "noise": args.setting, "seed": seed, "mask_AP": outcome.metrics["segm"]["AP"]}
        rows.append(row)
        per_class += per_class_rows(row, outcome.metrics, counts)

    ap_of = {(r["method"], r["noise"], int(r["seed"])): float(r["mask_AP"]) for r in rows}
    missing = [("ce", n, s) for s in seeds for n in (args.setting, "clean") if ("ce", n, s) not in ap_of]
    if missing:
        raise SystemExit(f"results.csv lacks the bench cells {missing}: run them with noisyseg bench first")
    diffs = paired_differences(rows, "oracle", args.setting)
    print(f"\n{args.setting}, mask AP per seed (CE from {bench / 'results.csv'})")
    print("| seed | CE clean | CE noisy | oracle filter | minus CE | recovered |")
    print("|---|---|---|---|---|---|")
    for s in seeds:
        clean, noisy = ap_of[("ce", "clean", s)], ap_of[("ce", args.setting, s)]
        print(f"| {s} | {clean:.1f} | {noisy:.1f} | {ap_of[('oracle', args.setting, s)]:.1f} | {diffs[s]:+.1f} | "
              f"{100 * diffs[s] / (clean - noisy):.0f}% |")
    oracle_all = [ap_of[("oracle", args.setting, s)] for s in seeds]
    print(f"| mean | {np.mean([ap_of[('ce', 'clean', s)] for s in seeds]):.1f} | "
          f"{np.mean([ap_of[('ce', args.setting, s)] for s in seeds]):.1f} | {np.mean(oracle_all):.1f} ± "
          f"{np.std(oracle_all, ddof=1) if len(seeds) > 1 else 0:.1f} | {np.mean(list(diffs.values())):+.1f} | "
          f"{100 * recovered_fraction(rows, 'oracle', args.setting):.0f}% (of the mean cost) |")

    print("\nper class, mean over seeds (training annotations in the clean file)")
    print("| class | CE noisy | oracle filter | minus CE |")
    print("|---|---|---|---|")
    difference = class_differences(per_class, "oracle", args.setting)
    for name, count in class_order(per_class):
        mean = {m: np.mean([float(r["mask_AP"]) for r in per_class
                            if r["method"] == m and r["class"] == name and r["mask_AP"] != ""]) for m in ("ce", "oracle")}
        print(f"| {name} ({count}) | {mean['ce']:.1f} | {mean['oracle']:.1f} | {difference[name]:+.1f} |")


if __name__ == "__main__":
    main()
