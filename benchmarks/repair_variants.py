"""Repairs the bench does not offer, retrained exactly like a bench fix cell: what would they buy?

The audit-based bench methods (``ce+fix:retrain=ce`` and the like) recover part of the AP lost to noise.
Two things can hold them back: the audit flags the wrong annotations imperfectly, or the repair itself
(for ``ignore``: fewer class labels to learn from) caps what a retrain can reach. For each seed this
script takes a finished fix cell of a bench folder, writes a repaired file from the cell's noisy training
file, and retrains with exactly that cell's retrain config (same seed, model, schedule), changing only the
training file. Variants:

- ``oracle-ignore``: every annotation whose given class differs from ``clean_category_id`` gets
  ``class_ignored: true``: the flagged set of a perfect audit, nothing right flagged. (Relabelling by
  truth gives the clean file, whose AP the bench's clean CE cell has.)
- ``relabel-above:P``: from the cell's own audit (``audits/<cell>/<noise>/seed<S>/label_issues.json``),
  the flagged annotations whose suggested class has probability >= P are relabelled to it and the other
  flagged ones ignored (the label structure analysis showed that relabelling every flagged annotation
  makes ~100 right labels wrong; confident suggestions are mostly right).

It prints, per seed and as mean +- std, mask AP of CE on the noisy file, of the cell's repair, of the
variant and of CE on clean labels, the variant minus the cell, the share of the lost AP each repair
recovers (in the mean row from the means over seeds, as the bench's recovered row) and the variant file's
label counts, and writes the table to ``--report``. Runs resume (a finished one is read back).

    .venv/bin/python benchmarks/repair_variants.py benchmarks/results/fashion --variant oracle-ignore \\
        --cell ce+fix:retrain=ce --noise sym0.4 --seeds 0,1,2 --report benchmarks/results/fashion/oracle_repair.md
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

from noisyseg.bench.grid import method_dir
from noisyseg.bench.report import read_rows
from noisyseg.bench.records import audit_dir_of, fixed_file_of, run_dir_of
from noisyseg.engine.trainer import train_to_end
from noisyseg.config import config_from_dict
from noisyseg.utils.io import atomic_write_text, read_json


def _truth(ann: dict) -> int:
    if "clean_category_id" not in ann:
        raise SystemExit(f"annotation {ann.get('id')} has no clean_category_id: this needs a file made by noisyseg noise")
    return ann["clean_category_id"]


def oracle_ignore(noisy: dict) -> tuple[dict, str]:
    """``noisy`` with ``class_ignored: true`` on each annotation whose label is wrong."""
    n = 0
    for ann in noisy["annotations"]:
        if ann["category_id"] != _truth(ann):
            ann["class_ignored"] = True
            n += 1
    return noisy, f"{n} ignored"


def relabel_above(noisy: dict, issues: dict, threshold: float) -> tuple[dict, str]:
    """``noisy`` with the flagged annotations of ``issues`` relabelled when the suggestion's probability is
    at least ``threshold``, ignored otherwise."""
    by_id = {a["id"]: a for a in noisy["annotations"]}
    relabelled = ignored = made_right = made_wrong = 0
    for row in issues["annotations"]:
        if not row["is_issue"]:
            continue
        ann = by_id[row["annotation_id"]]
        if row["suggested_prob"] >= threshold:
            was_right = ann["category_id"] == _truth(ann)
            ann["category_id"] = row["suggested_category_id"]
            now_right = ann["category_id"] == _truth(ann)
            made_right += now_right and not was_right
            made_wrong += was_right and not now_right
            relabelled += 1
        else:
            ann["class_ignored"] = True
            ignored += 1
    return noisy, f"{relabelled} relabelled ({made_right} made right, {made_wrong} made wrong), {ignored} ignored"


def mask_ap(rows: list[dict], method: str, noise: str, seed: int) -> float | None:
    for r in rows:
        if r["method"] == method and r["noise"] == noise and int(r["seed"]) == seed:
            return float(r["mask_AP"])
    return None


def train_variant(bench: Path, variant: str, cell: str, noise: str, seed: int,
                  progress: bool) -> tuple[float, str, float]:
    """(mask AP, what the repair did, train seconds) of the variant's retrain for one seed."""
    record = read_json(bench / "cells" / method_dir(cell) / noise / f"seed{seed}.json", "bench cell record")
    noisy = read_json(Path(record["first_run"]["config"]["data"]["train_json"]), "noisy training file")
    if variant == "oracle-ignore":
        repaired, what = oracle_ignore(noisy)
    else:
        issues = read_json(audit_dir_of(bench, cell, noise, seed) / "label_issues.json", "label issues")
        repaired, what = relabel_above(noisy, issues, float(variant.split(":", 1)[1]))
    name = f"repair-{variant.replace(':', '')}"
    repaired_json = fixed_file_of(bench, name, noise, seed)
    repaired_json.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(repaired_json, json.dumps(repaired, separators=(",", ":")))
    tree = record["config"]
    tree["data"]["train_json"] = str(repaired_json)
    cfg = config_from_dict(tree, source=f"{name}[{noise}/seed{seed}]")
    # the bench's own finish-or-resume step: reads a finished run back, re-evaluates one that lost its final AP
    outcome = train_to_end(cfg, run_dir_of(bench, name, noise, seed), progress=progress,
                           label=f"[{name}] {noise} seed {seed}: {what}")
    return outcome.metrics["segm"]["AP"], what, outcome.train_seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("bench", type=Path, help="bench output folder (results.csv, cells/, noisy/, audits/)")
    parser.add_argument("--variant", required=True, help="oracle-ignore | relabel-above:P (P in [0, 1])")
    parser.add_argument("--cell", default="ce+fix:retrain=ce", help="the fix method whose retrain config is reused")
    parser.add_argument("--noise", default="sym0.4")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--report", type=Path, help="also write the table here (markdown)")
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args()
    if args.variant != "oracle-ignore":
        kind, _, value = args.variant.partition(":")
        try:
            ok = kind == "relabel-above" and 0.0 <= float(value) <= 1.0
        except ValueError:
            ok = False
        if not ok:
            parser.error(f"--variant: expected oracle-ignore or relabel-above:P with P in [0, 1], got {args.variant!r}")
    seeds = [int(s) for s in args.seeds.split(",")]
    rows = read_rows(args.bench / "results.csv")

    lines = [f"# Repair variant `{args.variant}`: {args.noise}, retrain config of `{args.cell}` (mask AP)", "",
             "Recovered = (AP - AP of CE on the noisy file) / (AP of CE on clean labels - AP of CE on the noisy "
             "file); the mean row takes it from the means over seeds, as the bench's recovered row does.", "",
             f"| seed | CE noisy | `{args.cell}` | `{args.variant}` | CE clean | variant minus cell | "
             "recovered: cell | recovered: variant | what the variant did |", "|---|---|---|---|---|---|---|---|---|"]
    table: dict[str, list[float]] = {"noisy": [], "cell": [], "variant": [], "clean": []}

    def recovered(ap: float, noisy: float, clean: float) -> str:
        return f"{100 * (ap - noisy) / (clean - noisy):.0f}%" if clean > noisy else "-"

    for seed in seeds:
        noisy = mask_ap(rows, "ce", args.noise, seed)
        repaired = mask_ap(rows, args.cell, args.noise, seed)
        clean = mask_ap(rows, "ce", "clean", seed)
        if None in (noisy, repaired, clean):
            raise SystemExit(f"{args.bench}/results.csv lacks ce/{args.noise}, {args.cell}/{args.noise} or ce/clean "
                             f"for seed {seed}")
        variant, what, seconds = train_variant(args.bench, args.variant, args.cell, args.noise, seed,
                                               not args.no_progress)
        for key, value in zip(table, (noisy, repaired, variant, clean)):
            table[key].append(value)
        lines.append(f"| {seed} | {noisy:.1f} | {repaired:.1f} | {variant:.1f} | {clean:.1f} | "
                     f"{variant - repaired:+.1f} | {recovered(repaired, noisy, clean)} | "
                     f"{recovered(variant, noisy, clean)} | {what} |")
        print(f"[repair] {args.variant} {args.noise} seed {seed}: {variant:.1f} mask AP ({seconds:.0f} s of training)",
              flush=True)

    def mean_std(values: list[float]) -> str:
        spread = statistics.stdev(values) if len(values) > 1 else 0.0
        return f"{statistics.mean(values):.1f} ± {spread:.1f}"

    means = {key: statistics.mean(values) for key, values in table.items()}
    lines.append(f"| mean ± std | {mean_std(table['noisy'])} | {mean_std(table['cell'])} | {mean_std(table['variant'])} "
                 f"| {mean_std(table['clean'])} | {means['variant'] - means['cell']:+.1f} | "
                 f"{recovered(means['cell'], means['noisy'], means['clean'])} | "
                 f"{recovered(means['variant'], means['noisy'], means['clean'])} | |")
    text = "\n".join(lines) + "\n"
    print(text, end="")
    if args.report:
        atomic_write_text(args.report, text)


if __name__ == "__main__":
    main()
