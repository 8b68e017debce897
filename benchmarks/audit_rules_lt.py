"""cleanlab's flagging rule against the noise-aware one, per class, on the long-tailed bench (issue 22).

For each seed, audits the bench's CE run (``runs/ce/<setting>/seed<S>``, final checkpoint) on its own noisy
training file four times, with ``--filter-by prune_by_noise_rate`` (cleanlab's default), with
``--filter-by noise_posterior`` (the label's posterior under the file's own noise matrix below 0.5,
``--transition data``: the injected noise is known), with ``--filter-by noise_budget`` (per class, as many
flags as that matrix says are wrong, lowest posterior first) and with ``--filter-by noise_budget_learned``
(that count only in the classes the model has learned, the posterior rule in the others), and prints per
class, classes most frequent first, the right labels flagged (a repair would damage them) and the wrong
labels flagged (found), summed over the seeds, then the totals, the flagged precision and recall, and per
seed the classes ``noise_budget_learned`` left on the posterior rule. Nothing is written (the audit API
without an output folder).

``--rules`` picks other rules; ``RULE@estimate`` runs a noise matrix rule with ``--transition estimate`` (T
from the audit's own confident joint, what a user with real noise has) instead of the known matrix, and then
also prints, per class, T's diagonal as estimated beside the file's realised one (mean over seeds).
``RULE@uniform`` runs it with ``--transition uniform``: one noise rate eps, the confident joint's off-diagonal
share, ``1 - eps`` on T's diagonal and ``eps / (K - 1)`` off it (symmetric noise's form; it borrows one rate
across classes instead of estimating each tail class's row from a model that has not learned it), and prints
each seed's eps. Each seed's CE run scores its file once; every rule reads those scores.

    .venv/bin/python benchmarks/audit_rules_lt.py benchmarks/results/fashion_lt --setting sym0.4 --seeds 0,1,2
    .venv/bin/python benchmarks/audit_rules_lt.py benchmarks/results/fashion_lt --setting sym0.4 \
        --rules noise_budget_learned,noise_budget_learned@estimate,noise_posterior,noise_posterior@estimate
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np


def main() -> None:
    from noisyseg.audit.api import audit

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("bench", help="the bench folder (runs/ and noisy/ inside)")
    ap.add_argument("--setting", default="sym0.4")
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--rules", default="prune_by_noise_rate,noise_posterior,noise_budget,noise_budget_learned",
                    help="comma-separated --filter-by rules; RULE@estimate: with --transition estimate; "
                         "RULE@uniform: with the one-rate estimate above")
    args = ap.parse_args()

    from noisyseg.audit.issues import NOISE_MATRIX_FILTERS, estimated_noise_matrix, find_issues, uniform_noise_matrix
    from noisyseg.losses.transition import transition_matrix

    rules = tuple(args.rules.split(","))
    fallback: dict[int, list[str]] = {}
    diagonals: dict[str, list[np.ndarray]] = {"estimated": [], "realised": []}
    estimated_seeds: set[tuple[str, int]] = set()
    counts: dict[str, dict[str, np.ndarray]] = {}
    names: list[str] = []
    true_counts = None
    for seed in [int(s) for s in args.seeds.split(",")]:
        run = Path(args.bench) / "runs" / "ce" / args.setting / f"seed{seed}"
        data = Path(args.bench) / "noisy" / f"{args.setting}_seed{seed}.json"
        s = audit(run, data, progress=False, device="cpu", sheet=0).issues.scores  # scored once per seed
        names = list(s.label_map.names)
        k = len(names)
        uniform, eps = uniform_noise_matrix(s)
        matrices = {"": transition_matrix("data", data, names),
                    "estimate": np.asarray(estimated_noise_matrix(s)["matrix"]), "uniform": uniform}
        for rule in rules:
            name, _, source = rule.partition("@")
            issues = find_issues(s, name, matrices[source] if name in NOISE_MATRIX_FILTERS else None)
            if rule == "noise_budget_learned":
                fallback[seed] = issues.spared_classes
            if source and (source, seed) not in estimated_seeds:
                estimated_seeds.add((source, seed))
                if source == "uniform":
                    print(f"seed {seed}: one-rate estimate eps {eps:.3f}, realised noise rate "
                          f"{np.mean(s.given_labels != s.clean_labels):.3f}")
                else:
                    diagonals["estimated"].append(np.diag(matrices["estimate"]))
                    diagonals["realised"].append(np.diag(matrices[""]))
            given, clean, flagged = s.given_labels, s.clean_labels, issues.is_issue
            right = given == clean
            add = {"right": np.bincount(given[right], minlength=k), "wrong": np.bincount(given[~right], minlength=k),
                   "right_flagged": np.bincount(given[right & flagged], minlength=k),
                   "wrong_flagged": np.bincount(given[~right & flagged], minlength=k)}
            c = counts.setdefault(rule, {key: np.zeros(k, dtype=np.int64) for key in add})
            for key, value in add.items():
                c[key] += value
            true_counts = np.bincount(clean, minlength=k)
    order = np.argsort(-true_counts, kind="stable")
    print(f"CE runs of {args.bench}, {args.setting}, seeds {args.seeds}: right / wrong labels flagged, summed over seeds")
    print("| class (given right / wrong) | " + " | ".join(f"{r}: right flagged | {r}: wrong flagged" for r in rules) + " |")
    print("|---|" + "---|---|" * len(rules))
    base = counts[rules[0]]
    for c in order:
        cells = " | ".join(f"{counts[r]['right_flagged'][c]} | {counts[r]['wrong_flagged'][c]}" for r in rules)
        print(f"| {names[c]} ({base['right'][c]} / {base['wrong'][c]}) | {cells} |")
    cells = " | ".join(f"{counts[r]['right_flagged'].sum()} | {counts[r]['wrong_flagged'].sum()}" for r in rules)
    print(f"| all ({base['right'].sum()} / {base['wrong'].sum()}) | {cells} |")
    for r in rules:
        found, damaged = counts[r]["wrong_flagged"].sum(), counts[r]["right_flagged"].sum()
        print(f"{r}: flagged precision {found / max(found + damaged, 1):.3f}, recall {found / max(base['wrong'].sum(), 1):.3f}")
    for seed, classes in fallback.items():
        print(f"noise_budget_learned, seed {seed}: not learned, on the posterior rule: {', '.join(classes) or 'none'}")
    if diagonals["estimated"]:
        est, real = (np.mean(diagonals[key], axis=0) for key in ("estimated", "realised"))
        print("T[k, k], the share of class k's objects that keep label k, mean over seeds: estimated (confident "
              "joint) / realised")
        print("| class | estimated | realised |")
        print("|---|---|---|")
        for c in order:
            print(f"| {names[c]} | {est[c]:.2f} | {real[c]:.2f} |")


if __name__ == "__main__":
    main()
