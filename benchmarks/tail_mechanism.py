"""Why the robust losses lose the rare classes, measured on the bench's models (issue 22, item 5).

Two tables, each summed over the seeds, classes most frequent first (training labels: by the labels the noisy
file gives the class; val objects: by the clean training counts):

``--train-labels RUN:CHECKPOINT,...`` (models inside the bench's ``runs/``; ``ce_stage_end`` of a run with
a CE stage is its model at the switch) scores the noisy training file and prints per class: the right labels
of the class, the mean p[label] over them and over the wrong labels that carry the class, and the share of
its right labels with p[label] < 0.1 ("starved"). The robust terms of ``lncis`` (RCE), ``gce`` and ``good``
pull a RoI towards its label with a gradient proportional to p[label], so a right label the CE stage has not
learned gets almost none of it.

``--val-objects RUN:CHECKPOINT,...`` scores the clean val objects and prints per class k: the mean p[k] on
class-k objects, the mean p[k] on the other classes' objects, and the AUROC of p[k] separating the two. Mask
AP ranks a class's detections by that class's score, so a class loses AP as much when its score is high on
other objects as when it is low on its own; AUROC 0.5 means the class's score no longer names its objects.

Every annotation is scored with its true box as the proposal, as ``audit`` does; p is the foreground class
probability renormalised without background. Nothing is written.

    .venv/bin/python benchmarks/tail_mechanism.py benchmarks/results/fashion_lt --setting sym0.4 \\
        --train-labels lncis:ce_stage_end,lncis_warmup_epochs=18:ce_stage_end,ce:last \\
        --val-objects ce:last,lncis:last,lncis_warmup_epochs=18:last,lncis-learned:last
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from lt_classes import bench_parser, class_counts

STARVED_BELOW = 0.1


def main() -> None:
    parser = bench_parser(__doc__)
    parser.add_argument("--train-labels", default="", help="comma-separated RUN:CHECKPOINT scoring the noisy training file")
    parser.add_argument("--val-objects", default="", help="comma-separated RUN:CHECKPOINT scoring the clean val objects")
    parser.add_argument("--val-json", default="data/fashion_lt_bench/val.json")
    args = parser.parse_args()
    bench = Path(args.bench)
    seeds = [int(s) for s in args.seeds.split(",")]
    for spec in filter(None, args.train_labels.split(",")):
        noisy = [bench / "noisy" / f"{args.setting}_seed{s}.json" for s in seeds]
        train_label_table(spec, *scored(bench, args.setting, seeds, spec, noisy), args)
    for spec in filter(None, args.val_objects.split(",")):
        given, _, probs, names = scored(bench, args.setting, seeds, spec, [args.val_json] * len(seeds))
        val_object_table(spec, given, probs, names, class_counts(args.train_json, names), args)


def scored(bench: Path, setting: str, seeds: list[int], spec: str, files: list) -> tuple:
    """(given labels, clean labels or None, class probabilities, class names) of ``files[i]``'s annotations
    scored by the seed-i model of ``spec`` (``RUN:CHECKPOINT``), concatenated over the seeds."""
    from noisyseg.audit.api import audit

    run_name, checkpoint = spec.split(":")
    given, clean, probs = [], [], []
    for seed, data in zip(seeds, files):
        scores = audit(bench / "runs" / run_name / setting / f"seed{seed}", data, checkpoints=[checkpoint],
                       progress=False, device="cpu", sheet=0).issues.scores
        given.append(scores.given_labels)
        clean.append(scores.clean_labels)
        probs.append(scores.pred_probs)
    clean_all = None if any(c is None for c in clean) else np.concatenate(clean)
    return np.concatenate(given), clean_all, np.concatenate(probs), list(scores.label_map.names)


def train_label_table(spec: str, given: np.ndarray, clean: np.ndarray | None, probs: np.ndarray,
                      names: list[str], args) -> None:
    if clean is None:
        raise SystemExit(f"{spec}: the noisy files record no clean_category_id; nothing to compare")
    p_given = probs[np.arange(len(given)), given]
    right = given == clean
    print(f"\ntraining labels, {spec}, {args.setting}, seeds {args.seeds} ({len(given)} labels, {right.mean():.0%} right)")
    print(f"| class | right labels | mean p[label], right | mean p[label], wrong | right labels starved (p < {STARVED_BELOW}) |")
    print("|---|---|---|---|---|")
    for k in np.argsort(-np.bincount(given, minlength=len(names)), kind="stable"):
        r, w = p_given[(given == k) & right], p_given[(given == k) & ~right]
        wrong_mean = f"{w.mean():.3f}" if len(w) else "–"
        print(f"| {names[k]} | {len(r)} | {r.mean():.3f} | {wrong_mean} | {(r < STARVED_BELOW).mean():.0%} |")
    print(f"| all | {right.sum()} | {p_given[right].mean():.3f} | {p_given[~right].mean():.3f} | "
          f"{(p_given[right] < STARVED_BELOW).mean():.0%} |")


def val_object_table(spec: str, given: np.ndarray, probs: np.ndarray, names: list[str], train_counts: np.ndarray,
                     args) -> None:
    from noisyseg.audit.issues import auroc

    print(f"\nval objects, {spec}, {args.setting}, seeds {args.seeds} ({len(given)} objects)")
    print("| class | mean p[k], class-k objects | mean p[k], other objects | AUROC of p[k] |")
    print("|---|---|---|---|")
    rows = []
    for k in np.argsort(-train_counts, kind="stable"):
        mine = given == k
        rows.append((probs[mine, k].mean(), probs[~mine, k].mean(), auroc(probs[:, k], mine)))
        print(f"| {names[k]} | {rows[-1][0]:.3f} | {rows[-1][1]:.3f} | {rows[-1][2]:.3f} |")
    means = np.mean(rows, axis=0)
    print(f"| mean over classes | {means[0]:.3f} | {means[1]:.3f} | {means[2]:.3f} |")


if __name__ == "__main__":
    main()
