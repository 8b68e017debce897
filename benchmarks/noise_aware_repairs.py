"""What the noise-aware audit's repairs do to a long-tailed training file, before any retraining (issue 22).

For each scorer (``RUN:CHECKPOINT`` inside the bench's ``runs/``, e.g. ``ce:last``, ``posterior:last``, or
``forward-warmup:ce_stage_end``, the CE-stage model of the same noisy file) and each seed, audits the noisy
training file with ``--filter-by noise_posterior`` (``--transition data``: the injected noise is known) and
prints, summed over the seeds:

- the audit against the truth: AUROC, flagged precision and recall, how often the suggestion is the true
  class on the flagged wrong labels, and the share of right labels in the file before and after
  ``--action relabel``;
- per class, classes most frequent first: right labels in the file as given, after relabel and after
  ignore (the flagged ones lose their class), and label precision as given and after relabel;
- with ``--thresholds``: right labels flagged and wrong labels found when a label is flagged below each
  threshold of r[given] instead of 0.5 (the rule's 0.5 is fixed; this shows what moving it would trade).

With ``--denoise`` each scorer is also read a second way: a model trained on noisy labels estimates the
*noisy* label's distribution, p~[j] = sum_c p[c] T[c, j], so the audit's r[c] ~ p~[c] T[c, given] counts
the noise twice (at 40% symmetric noise a perfectly fitted model gives a wrong label r[given] near 0.5, the
flagging threshold). The denoised read solves T^T p = p~ for each annotation, clips at 0 and renormalises,
and audits with that p (the rule, matrix and threshold unchanged).

Nothing is written (the audit API without an output folder).

    .venv/bin/python benchmarks/noise_aware_repairs.py benchmarks/results/fashion_lt --setting sym0.4 \\
        --scorers ce:last,posterior:last,forward-warmup:ce_stage_end --thresholds 0.5,0.6,0.7,0.8
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np


def main() -> None:
    from noisyseg.audit.api import audit
    from noisyseg.audit.issues import truth_metrics

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("bench", help="the bench folder (runs/ and noisy/ inside)")
    ap.add_argument("--setting", default="sym0.4")
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--scorers", default="ce:last", help="comma-separated RUN:CHECKPOINT, RUN a method folder of runs/")
    ap.add_argument("--thresholds", default="", help="comma-separated thresholds of r[given] to compare")
    ap.add_argument("--denoise", action="store_true", help="also audit with the scorer's probabilities denoised by T")
    args = ap.parse_args()
    bench = Path(args.bench)
    seeds = [int(s) for s in args.seeds.split(",")]
    thresholds = [float(t) for t in args.thresholds.split(",") if t]

    reads = [False, True] if args.denoise else [False]
    for scorer in args.scorers.split(","):
        run_name, checkpoint = scorer.split(":")
        truth: dict[bool, dict[str, list[float]]] = {d: {} for d in reads}
        counts: dict[bool, np.ndarray] = {}
        swept = {d: {t: np.zeros(4, dtype=np.int64) for t in thresholds} for d in reads}
        for seed in seeds:
            noisy_json = bench / "noisy" / f"{args.setting}_seed{seed}.json"
            result = audit(bench / "runs" / run_name / args.setting / f"seed{seed}", noisy_json,
                           checkpoints=[checkpoint], filter_by="noise_posterior", progress=False, device="cpu",
                           sheet=0)
            for denoise in reads:  # the model scores once; the denoised read re-audits its probabilities
                issues = denoised_issues(result.issues, noisy_json) if denoise else result.issues
                for key, value in truth_metrics(issues).items():
                    truth[denoise].setdefault(key, []).append(value)
                s = issues.scores
                names, k = list(s.label_map.names), len(s.label_map.names)
                given, clean, flagged = s.given_labels, s.clean_labels, issues.is_issue
                relabelled = np.where(flagged, issues.suggested_labels, given)
                right = given == clean
                add = np.stack([np.bincount(clean, minlength=k), np.bincount(given[right], minlength=k),
                                np.bincount(given, minlength=k),
                                np.bincount(relabelled[relabelled == clean], minlength=k),
                                np.bincount(relabelled, minlength=k),
                                np.bincount(given[right & ~flagged], minlength=k)])
                counts[denoise] = add if denoise not in counts else counts[denoise] + add
                for t in thresholds:
                    low = issues.label_quality < t
                    swept[denoise][t] += [int((low & right).sum()), int(right.sum()), int((low & ~right).sum()),
                                          int((~right).sum())]
        for denoise in reads:
            print_read(f"{scorer}{' denoised by T' if denoise else ''} on {args.setting}, seeds {args.seeds}",
                       truth[denoise], counts[denoise], names, swept[denoise])


def print_read(title: str, truth: dict[str, list[float]], counts: np.ndarray, names: list[str],
               swept: dict[float, np.ndarray]) -> None:
    """One read's tables: the audit against the truth, per class, and the threshold sweep."""
    mean = {key: float(np.mean(v)) for key, v in truth.items()}
    print(f"\n{title}: AUROC {mean['auroc']:.3f}, flagged precision "
          f"{mean['flagged_precision']:.3f}, recall {mean['flagged_recall']:.3f}, suggestion right on the "
          f"flagged wrong {mean['suggestion_accuracy_flagged_wrong']:.3f}, right labels "
          f"{mean['label_accuracy_given']:.3f} given -> {mean['label_accuracy_relabelled']:.3f} relabelled "
          f"(means over seeds; per seed recall {' / '.join(f'{v:.3f}' for v in truth['flagged_recall'])})")
    print("| class (true count) | right labels: given | relabel | ignore | label precision: given | relabel |")
    print("|---|---|---|---|---|---|")
    for c in np.argsort(-counts[0], kind="stable"):
        print(f"| {names[c]} ({counts[0][c]}) | {counts[1][c]} | {counts[3][c]} | {counts[5][c]} | "
              f"{counts[1][c] / max(counts[2][c], 1):.2f} | {counts[3][c] / max(counts[4][c], 1):.2f} |")
    if swept:
        print("| flag below | right labels flagged | wrong labels found | precision |")
        print("|---|---|---|---|")
        for t, (rf, r, wf, w) in swept.items():
            print(f"| {t:g} | {rf} of {r} | {wf} of {w} ({wf / w:.2f}) | {wf / max(rf + wf, 1):.3f} |")


def denoised_issues(issues, noisy_json: Path):
    """``issues`` audited again with each annotation's probabilities p~ replaced by the clean-class estimate
    p (T^T p = p~, clipped at 0, renormalised; p~ kept where the solve leaves nothing)."""
    import dataclasses

    from noisyseg.audit.issues import find_issues
    from noisyseg.losses.transition import transition_matrix

    s = issues.scores
    matrix = transition_matrix("data", noisy_json, s.label_map.names)
    noisy = s.pred_probs.astype(np.float64)
    clean = np.clip(np.linalg.solve(matrix.T, noisy.T).T, 0.0, None)
    total = clean.sum(axis=1, keepdims=True)
    clean = np.where(total > 0, clean / np.where(total > 0, total, 1.0), noisy)
    return find_issues(dataclasses.replace(s, pred_probs=clean), issues.filter_by, matrix)


if __name__ == "__main__":
    main()
