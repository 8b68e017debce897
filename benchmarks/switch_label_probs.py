"""How much of a robust loss's pull each class's right labels get at the switch (issue 22, item 5).

The robust terms of ``lncis`` (RCE), ``gce`` and ``good`` push a RoI towards its label with a gradient
proportional to the model's p[label]: a right label the CE stage has not learned yet (p[label] near 0) gets
almost none. This prints, per class (most frequent first), for the models named by ``--scorers``
(``RUN:CHECKPOINT`` inside the bench's ``runs/``; ``ce_stage_end`` of a run with a CE stage is the model at
its switch) and summed over the seeds: the right labels of the class in the noisy training file, the mean
p[label] over them and over the wrong labels that carry the class, and the share of its right labels with
p[label] < 0.1 ("starved": the robust term gives them less than a tenth of the pull CE would).

p is the model's foreground class probability renormalised without background, as the audit scores it.
Nothing is written.

    .venv/bin/python benchmarks/switch_label_probs.py benchmarks/results/fashion_lt --setting sym0.4 \\
        --scorers lncis:ce_stage_end,lncis_warmup_epochs=18:ce_stage_end,ce:last
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

STARVED_BELOW = 0.1


def main() -> None:
    from noisyseg.audit.api import audit

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("bench", help="the bench folder (runs/ and noisy/ inside)")
    parser.add_argument("--setting", default="sym0.4")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--scorers", default="lncis:ce_stage_end",
                        help="comma-separated RUN:CHECKPOINT, RUN a method folder of runs/")
    args = parser.parse_args()
    bench = Path(args.bench)
    seeds = [int(s) for s in args.seeds.split(",")]

    for scorer in args.scorers.split(","):
        run_name, checkpoint = scorer.split(":")
        given_all, clean_all, prob_all, names = [], [], [], None
        for seed in seeds:
            run = bench / "runs" / run_name / args.setting / f"seed{seed}"
            scores = audit(run, bench / "noisy" / f"{args.setting}_seed{seed}.json", checkpoints=[checkpoint],
                           progress=False, device="cpu", sheet=0).issues.scores
            if scores.clean_labels is None:
                raise SystemExit(f"{scorer}: the noisy file records no clean_category_id; nothing to compare")
            names = list(scores.label_map.names)
            given_all.append(scores.given_labels)
            clean_all.append(scores.clean_labels)
            prob_all.append(scores.pred_probs[np.arange(len(scores.given_labels)), scores.given_labels])
        given, clean, p_given = (np.concatenate(a) for a in (given_all, clean_all, prob_all))
        right = given == clean
        order = np.argsort(-np.bincount(given, minlength=len(names)), kind="stable")
        print(f"\n{scorer}, {args.setting}, seeds {args.seeds} ({len(given)} labels, {right.mean():.0%} right)")
        print("| class | right labels | mean p[label], right | mean p[label], wrong | right labels starved "
              f"(p < {STARVED_BELOW}) |")
        print("|---|---|---|---|---|")
        for k in order:
            is_k = given == k
            r, w = p_given[is_k & right], p_given[is_k & ~right]
            wrong_mean = f"{w.mean():.3f}" if len(w) else "–"
            print(f"| {names[k]} | {len(r)} | {r.mean():.3f} | {wrong_mean} | "
                  f"{(r < STARVED_BELOW).mean():.0%} |")
        print(f"| all | {right.sum()} | {p_given[right].mean():.3f} | {p_given[~right].mean():.3f} | "
              f"{(p_given[right] < STARVED_BELOW).mean():.0%} |")


if __name__ == "__main__":
    main()
