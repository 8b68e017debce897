"""Why forward correction erases a rare class, measured on a real model at the stage switch (issue 22).

The forward loss's gradient is ``p - r`` with ``r[c] ~ p[c] T[c, y] / prior[c]^b`` (b = ``balance``): the
loss trains every annotation toward ``r``, the posterior of its true class given the image and its label,
computed from the model's own probabilities. An annotation whose label keeps ``r[y] >= 0.5`` is trained
as right (toward its label); below, as noise (toward another class).

This scores every annotation of a noisy training file with a checkpoint (by default the run's
``ce_stage_end``: the model the forward loss starts from), takes T and the true-class prior from the file
(``clean_category_id``, as ``loss.params.transition: data`` does), and prints per class, for each balance:
how many of its *right* labels are trained as right (kept) and how many of its *wrong* labels are trained
as right (kept wrong), classes most frequent first.

    .venv/bin/python benchmarks/forward_posterior.py benchmarks/results/fashion_lt/runs/forward-warmup/sym0.4/seed0 \
        benchmarks/results/fashion_lt/noisy/sym0.4_seed0.json --balance 0,0.5,1

With ``--balance 0`` the "kept" columns are also what the ``posterior`` loss's targets do at the switch (its
``r`` is this posterior, fixed), and, read the other way, a noise-aware audit: flag a label when r[label] < 0.5.
"""

from __future__ import annotations

import argparse

import numpy as np


def posterior_at_label(probs: np.ndarray, given: np.ndarray, matrix: np.ndarray, prior: np.ndarray,
                       balance: float) -> np.ndarray:
    """``r[y]`` per annotation, r the true-class posterior through T balanced by the prior (the matrix the
    forward loss with this ``balance`` trains through; a column's scale cancels in r)."""
    from noisyseg.losses.transition import balanced_matrix, true_class_posterior

    used = balanced_matrix(matrix, prior, balance) if balance else matrix
    return true_class_posterior(probs, given, used)[np.arange(len(given)), given]


def main() -> None:
    from noisyseg.audit.score import resolve_checkpoints, score_annotations
    from noisyseg.losses.transition import transition_matrix, true_class_prior
    from noisyseg.utils.io import read_json

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("run", help="run folder")
    ap.add_argument("data", help="the noisy training file (with clean_category_id)")
    ap.add_argument("--checkpoint", default="ce_stage_end")
    ap.add_argument("--balance", default="0,1", help="comma-separated balance values")
    ap.add_argument("--transition", default="data",
                    help="the T the loss would use: data (the file's realised matrix) or a matrix file, e.g. the "
                         "noise_matrix.json an audit or a transition: estimate run wrote (right / wrong is always "
                         "judged by the file's clean_category_id)")
    args = ap.parse_args()

    paths = resolve_checkpoints(args.run, [args.checkpoint])
    coco = read_json(args.data, "training file")
    scores = score_annotations(paths, coco, args.data, progress=False)
    names = list(scores.label_map.names)
    matrix = transition_matrix(args.transition, args.data, names)
    prior = true_class_prior(args.transition, args.data, names, matrix)
    given, clean = scores.given_labels, scores.clean_labels
    right = given == clean
    order = np.argsort(-np.bincount(clean, minlength=len(names)), kind="stable")
    balances = [float(b) for b in args.balance.split(",")]
    kept = {b: posterior_at_label(scores.pred_probs, given, matrix, prior, b) >= 0.5 for b in balances}
    print(f"{paths[0]} on {args.data}: {len(given)} annotations, {int((~right).sum())} wrong; T: {args.transition}; "
          f"scoring {scores.seconds:.1f} s")
    head = " | ".join(f"b={b:g} right kept | b={b:g} wrong kept" for b in balances)
    print(f"| class (true count) | labels right / wrong | {head} |")
    print("|---|---|" + "---|---|" * len(balances))
    for c in order:
        mine_right, mine_wrong = (given == c) & right, (given == c) & ~right
        cells = " | ".join(f"{int((kept[b] & mine_right).sum())} / {int(mine_right.sum())} | "
                           f"{int((kept[b] & mine_wrong).sum())} / {int(mine_wrong.sum())}" for b in balances)
        print(f"| {names[c]} ({int((clean == c).sum())}) | {int(mine_right.sum())} / {int(mine_wrong.sum())} | {cells} |")
    cells = " | ".join(f"{int((kept[b] & right).sum())} / {int(right.sum())} | "
                       f"{int((kept[b] & ~right).sum())} / {int((~right).sum())}" for b in balances)
    print(f"| all | {int(right.sum())} / {int((~right).sum())} | {cells} |")


if __name__ == "__main__":
    main()
