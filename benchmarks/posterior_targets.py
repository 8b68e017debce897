"""How right are the ``posterior`` loss's soft targets, per class? Issue 22, item 5 (targets fixed at the
switch against targets refreshed every epoch, ``target_momentum``).

Reads each run's ``class_targets.npz`` (``runs/<RUN>/<setting>/seed<S>/``: the targets the run trained on
last: made at the switch for ``posterior``, after the last refresh with ``target_momentum`` < 1) and the
noisy file's ``clean_category_id``, and prints per class (most frequent first in the clean training file),
pooled over the seeds: the mean target mass on the true class, for the class's right labels and for the wrong
labels it carries, and the mass the wrong labels keep on the label itself. A target that follows the truth
puts mass 1 on the true class for both. Nothing is written.

    .venv/bin/python benchmarks/posterior_targets.py benchmarks/results/fashion_lt --setting sym0.4 \\
        --runs posterior,posterior_target_momentum=0.7
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from lt_classes import bench_parser, class_counts


def main() -> None:
    parser = bench_parser(__doc__)
    parser.add_argument("--runs", default="posterior", help="comma-separated run folder names under runs/")
    args = parser.parse_args()
    bench = Path(args.bench)
    seeds = [int(s) for s in args.seeds.split(",")]
    for run in args.runs.split(","):
        given, clean, on_true, on_label, made_after = [], [], [], [], []
        for seed in seeds:
            coco = json.loads((bench / "noisy" / f"{args.setting}_seed{seed}.json").read_text())
            classes = sorted(c["id"] for c in coco["categories"])
            names = {c["id"]: c["name"] for c in coco["categories"]}
            by_id = {a["id"]: a for a in coco["annotations"]}
            with np.load(bench / "runs" / run / args.setting / f"seed{seed}" / "class_targets.npz",
                         allow_pickle=False) as saved:
                ids, targets = saved["annotation_ids"], saved["targets"]
                made_after.append(int(saved["epoch"]) if "epoch" in saved.files else "the switch")
            g = np.array([classes.index(by_id[int(i)]["category_id"]) for i in ids])
            c = np.array([classes.index(by_id[int(i)]["clean_category_id"]) for i in ids])
            rows = np.arange(len(ids))
            given.append(g)
            clean.append(c)
            on_true.append(targets[rows, c])
            on_label.append(targets[rows, g])
        g, c, t_true, t_label = map(np.concatenate, (given, clean, on_true, on_label))
        right = g == c
        counts = class_counts(args.train_json, [names[k] for k in classes])
        print(f"\n{run}, {args.setting}, seeds {args.seeds} (targets made after epoch "
              f"{' / '.join(map(str, made_after))}); {len(g)} labels, {right.mean():.0%} right")
        print("| class (clean count) | right labels | target on the true class, right labels | wrong labels carried | "
              "target on the true class, wrong labels | target on the label, wrong labels |")
        print("|---|---|---|---|---|---|")
        for k in np.argsort(-counts, kind="stable"):
            r, w = (g == k) & right, (g == k) & ~right
            print(f"| {names[classes[k]]} ({int(counts[k])}) | {r.sum()} | {_mean(t_true[r])} | {w.sum()} | "
                  f"{_mean(t_true[w])} | {_mean(t_label[w])} |")
        print(f"| all | {right.sum()} | {_mean(t_true[right])} | {(~right).sum()} | {_mean(t_true[~right])} | "
              f"{_mean(t_label[~right])} |")


def _mean(values: np.ndarray) -> str:
    return f"{values.mean():.2f}" if len(values) else "–"


if __name__ == "__main__":
    main()
