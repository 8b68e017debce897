"""``noisyseg audit`` (likely wrong class labels: :func:`noisyseg.audit.api.audit`) and ``noisyseg
apply-decisions`` (a reviewer's decisions from review.html: :func:`noisyseg.audit.decisions.apply_file`).

``apply-decisions`` is its own verb, not ``audit apply``: ``audit`` takes a run folder as its first
argument, and a run folder may be called anything, ``apply`` included.
"""

from __future__ import annotations

import argparse

from noisyseg.audit import ACTIONS, FILTERS
from noisyseg.audit.decisions import DECISION_ACTIONS
from noisyseg.errors import NoisysegError


def register(sub: argparse._SubParsersAction) -> None:
    """Add the ``audit`` command to the top-level sub-parsers ``sub``."""
    p = sub.add_parser(
        "audit", help="find likely wrong class labels with a trained model; review and repair them",
        description="Score every non-crowd annotation of DATA with the trained model's RoI box head (its\n"
                    "ground-truth box as the proposal), flag likely wrong labels (cleanlab's find_label_issues,\n"
                    "or --filter-by noise_posterior with a noise matrix), and write to -o DIR: label_issues.csv/\n"
                    ".json (one row per annotation, rank 1 = most suspicious), summary.md/.json (with AUROC/AP\n"
                    "and right labels flagged per class against clean_category_id when the file has it),\n"
                    "noise_matrix.json (the estimated noise transition matrix, for loss.params.transition),\n"
                    "review.html (an offline page to review every flagged annotation and export decisions; its\n"
                    "crops in review_files/), contact_sheet.png and audit_manifest.json. --fix writes a\n"
                    "repaired copy of DATA with one action on every flag; `noisyseg apply-decisions` applies a\n"
                    "review's decisions instead. Outputs are checked before scoring: none may be an input or a\n"
                    "file no audit wrote, and one audit at a time writes a folder.",
        epilog="actions (on the flagged annotations only; nothing else in the file changes):\n"
               "  relabel  category_id := the suggested class\n"
               "  ignore   keep the annotation, add \"class_ignored\": true (trains objectness, box and mask,\n"
               "           no class supervision)\n"
               "  drop     remove the annotation\n"
               "examples:\n"
               "  noisyseg audit runs/lncis --data data/shapes/train_sym40.json\n"
               "  noisyseg audit runs/lncis --data train.json --checkpoint 'epoch_*' -o audit_ens\n"
               "  noisyseg audit runs/lncis --data train.json --fix train_relabelled.json --action relabel\n"
               "  noisyseg apply-decisions decisions_0123abcd.json --data train.json -o train_reviewed.json",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("source", metavar="RUN_DIR_OR_CHECKPOINT",
                   help="a run folder (uses checkpoints/last.pt) or a checkpoint file")
    p.add_argument("--data", required=True, metavar="TRAIN.json", help="COCO instance json to audit")
    p.add_argument("--image-root", metavar="DIR", help="image folder (default: the checkpoint's data.image_root)")
    p.add_argument("--checkpoint", action="append", metavar="NAME|PATH",
                   help="checkpoint in RUN_DIR/checkpoints (last, ce_stage_end, epoch_12, a glob like "
                        "'epoch_*') or a path; repeat to average several models' probabilities")
    p.add_argument("-o", "--out", metavar="DIR", help="output folder (default: RUN_DIR/audit)")
    p.add_argument("--fix", metavar="OUT.json", help="write DATA with --action applied to the flagged annotations")
    p.add_argument("--action", choices=ACTIONS, help="what --fix does to a flagged annotation")
    p.add_argument("--top", type=int, default=None, metavar="K",
                   help="review.html shows the K most suspicious annotations, flagged or not "
                        "(default: every flagged one)")
    p.add_argument("--sheet", type=int, default=24, metavar="N", help="suspects on contact_sheet.png (default 24)")
    p.add_argument("--filter-by", choices=FILTERS, default="prune_by_noise_rate",
                   help="cleanlab find_label_issues rule (default prune_by_noise_rate), or noise_posterior: flag "
                        "a label whose posterior under the noise matrix --transition is below 0.5, or noise_budget: "
                        "in each class flag as many labels as the matrix says are wrong, lowest posterior first, or "
                        "noise_budget_learned: that in the classes the model has learned (mean p of their labels "
                        ">= 1/K), noise_posterior in the others, or noise_budget_trusted: the count only where the "
                        "class is learned and its own objects are its labels' largest source under the matrix, no "
                        "flag in the others")
    p.add_argument("--transition", metavar="T", default=None,
                   help="with --filter-by noise_posterior, noise_budget, noise_budget_learned or noise_budget_trusted: data (DATA's "
                        "own matrix, from clean_category_id: injected noise), estimate (real noise: cleanlab's confident joint of "
                        "this audit's own scores, the matrix it writes to noise_matrix.json), uniform (real noise: one rate from that "
                        "joint, spread evenly over the other classes) or a matrix file such as an earlier "
                        "audit's noise_matrix.json (default data)")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda[:N] (default auto)")
    p.add_argument("--batch-size", type=int, default=8, metavar="B", help="images per forward pass (default 8)")
    p.add_argument("--workers", type=int, default=0, metavar="W", help="image-reading processes (default 0)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=run)

    a = sub.add_parser(
        "apply-decisions", help="apply the decisions exported from review.html to the audited file",
        description="Write a copy of DATA with the decisions a reviewer exported from the audit's review.html\n"
                    "applied: keep, relabel (to the class chosen), ignore (class_ignored: true) or drop, for\n"
                    "exactly the annotations decided; nothing else changes. info.audit records what was done.\n"
                    "DATA must be the very file that was audited (its sha256 is in the decisions file); an\n"
                    "entry naming an annotation or class DATA lacks is refused, naming the entry.",
        epilog="example:\n"
               "  noisyseg audit runs/lncis --data train.json            # then open runs/lncis/audit/review.html\n"
               "  noisyseg apply-decisions ~/Downloads/decisions_0123abcd.json --data train.json -o train_reviewed.json",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    a.add_argument("decisions", metavar="DECISIONS.json", help="the file review.html exported")
    a.add_argument("--data", required=True, metavar="TRAIN.json", help="the audited COCO file (never written)")
    a.add_argument("-o", "--out", required=True, metavar="FIXED.json", help="where the repaired copy goes")
    a.add_argument("--undecided", choices=DECISION_ACTIONS, default="keep",
                   help="what happens to the annotations on the page nobody decided: keep (default: left as "
                        "they are), relabel (to the suggested class), ignore or drop")
    a.set_defaults(func=run_apply)


def run_apply(args: argparse.Namespace) -> int:
    """Run ``noisyseg apply-decisions`` with parsed ``args``; returns the exit code."""
    from noisyseg.audit.decisions import apply_file

    r = apply_file(args.decisions, args.data, args.out, args.undecided)
    c = r["counts"]
    print(f"{args.out}: {r['n_decided']} decisions applied (keep {c['keep']}, relabel {c['relabel']}, ignore "
          f"{c['ignore']}, drop {c['drop']}); {r['n_undecided']} undecided ({r['undecided_action']}); "
          f"{r['n_changed']} annotations changed")
    return 0


def run(args: argparse.Namespace) -> int:
    """Run ``noisyseg audit`` with parsed ``args``; returns the exit code."""
    if args.action and not args.fix:
        raise NoisysegError("--action needs --fix OUT.json")
    if args.fix and not args.action:
        raise NoisysegError(f"--fix needs --action ({' | '.join(ACTIONS)})")
    from noisyseg.audit.api import audit, default_out_dir

    out = args.out or default_out_dir(args.source)
    result = audit(args.source, args.data, checkpoints=args.checkpoint, image_root=args.image_root, out_dir=out,
                   device=args.device, batch_size=args.batch_size, num_workers=args.workers,
                   filter_by=args.filter_by, transition=args.transition, top=args.top, sheet=args.sheet,
                   fix=args.fix, action=args.action, progress=not args.no_progress)
    s = result.summary
    print(f"{args.data}: {s['n_flagged']} of {s['n_annotations']} annotations flagged "
          f"({s['annotations_per_second']:.1f} annotations/s on {s['device']})")
    if s.get("transition"):
        print(f"noise matrix T: {s['transition']}")
    if s.get("spared_classes"):
        from noisyseg.audit.issues import spared_class_action

        print(f"spared from the count, {spared_class_action(args.filter_by)}: {', '.join(s['spared_classes'])}")
    truth = s.get("truth")
    if truth:
        print(f"against clean_category_id: {truth['n_wrong']} wrong; AUROC {truth['auroc']:.3f}, "
              f"AP {truth['average_precision']:.3f}, precision {truth['flagged_precision']:.3f}, "
              f"recall {truth['flagged_recall']:.3f}, precision at recall 0.8 "
              f"{truth['precision_at_recall_0.8']:.3f}")
    written = [name for name in result.files if name != "fix" and "/" not in name]
    sheets = len(result.files) - len(written) - ("fix" in result.files)
    print(f"wrote {', '.join(written)} and {sheets} crop sheet(s) in {out}")
    print(f"review: open {out}/review.html, export the decisions, then `noisyseg apply-decisions "
          f"DECISIONS.json --data {args.data} -o FIXED.json`")
    if result.fix_report is not None:
        r = result.fix_report
        print(f"{args.fix}: {args.action} on {r['n_flagged']} flagged annotations ({r['n_changed']} changed)")
    return 0
