"""How close an estimated noise matrix is to the truth, per class (issue 22, item 5: T for real noise).

Compares a ``noise_matrix.json`` (written by ``noisyseg audit``, or by a run with ``loss.params.transition:
estimate``) with the realised matrix of a file written by ``noisyseg noise`` (its ``clean_category_id``):
per true class, classes most frequent first, the share of its annotations that keep their label (true and
estimated), the largest estimated flip and its target, then the mean absolute difference over all entries.

    noisyseg audit RUN --checkpoint ce_stage_end --data NOISY.json -o AUDIT --sheet 0
    .venv/bin/python benchmarks/noise_matrix_estimate.py AUDIT/noise_matrix.json NOISY.json
"""

from __future__ import annotations

import argparse

import numpy as np


def main() -> None:
    from noisyseg.losses.transition import transition_matrix, true_class_prior

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("estimate", help="noise_matrix.json")
    ap.add_argument("data", help="the noisy file, with clean_category_id")
    args = ap.parse_args()

    import json

    names = json.loads(open(args.estimate, encoding="utf-8").read())["classes"]
    estimated = transition_matrix(args.estimate, args.data, names)
    truth = transition_matrix("data", args.data, names)
    prior = true_class_prior("data", args.data, names, truth)
    print(f"{args.estimate} against the realised matrix of {args.data}")
    print("| true class (share) | keeps its label: true | estimated | largest estimated flip |")
    print("|---|---|---|---|")
    for c in np.argsort(-prior, kind="stable"):
        off = np.where(np.arange(len(names)) == c, -1.0, estimated[c])
        j = int(np.argmax(off))
        print(f"| {names[c]} ({prior[c]:.3f}) | {truth[c, c]:.2f} | {estimated[c, c]:.2f} | {off[j]:.2f} to {names[j]} |")
    print(f"mean |estimated - true| over all {len(names) ** 2} entries: {np.abs(estimated - truth).mean():.3f}")


if __name__ == "__main__":
    main()
