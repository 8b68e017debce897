"""``noisyseg audit``: argument parsing over :func:`noisyseg.audit.api.audit` (likely wrong class labels)."""

from __future__ import annotations

import argparse

from noisyseg.audit import ACTIONS, FILTERS
from noisyseg.errors import NoisysegError


def register(sub: argparse._SubParsersAction) -> None:
    """Add the ``audit`` command to the top-level sub-parsers ``sub``."""
    p = sub.add_parser(
        "audit", help="find likely wrong class labels with a trained model; review and repair them",
        description="Score every non-crowd annotation of DATA with the trained model's RoI box head (its\n"
                    "ground-truth box as the proposal), flag likely wrong labels with cleanlab's\n"
                    "find_label_issues, and write to -o DIR: label_issues.csv/.json (one row per annotation,\n"
                    "rank 1 = most suspicious), summary.md/.json (with AUROC/AP against clean_category_id\n"
                    "when the file has it), review.html (the top suspects, self-contained) and\n"
                    "contact_sheet.png. --fix writes a repaired copy of DATA.",
        epilog="actions (on the flagged annotations only; nothing else in the file changes):\n"
               "  relabel  category_id := the suggested class\n"
               "  ignore   keep the annotation, add \"class_ignored\": true (trains objectness, box and mask,\n"
               "           no class supervision)\n"
               "  drop     remove the annotation\n"
               "examples:\n"
               "  noisyseg audit runs/lncis --data data/shapes/train_sym40.json\n"
               "  noisyseg audit runs/lncis --data train.json --checkpoint 'epoch_*' -o audit_ens\n"
               "  noisyseg audit runs/lncis --data train.json --fix train_relabelled.json --action relabel",
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
    p.add_argument("--top", type=int, default=100, metavar="K", help="suspects on review.html (default 100)")
    p.add_argument("--sheet", type=int, default=24, metavar="N", help="suspects on contact_sheet.png (default 24)")
    p.add_argument("--filter-by", choices=FILTERS, default="prune_by_noise_rate",
                   help="cleanlab find_label_issues rule (default prune_by_noise_rate)")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda[:N] (default auto)")
    p.add_argument("--batch-size", type=int, default=8, metavar="B", help="images per forward pass (default 8)")
    p.add_argument("--workers", type=int, default=0, metavar="W", help="image-reading processes (default 0)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


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
                   filter_by=args.filter_by, top=args.top, sheet=args.sheet, fix=args.fix, action=args.action,
                   progress=not args.no_progress)
    s = result.summary
    print(f"{args.data}: {s['n_flagged']} of {s['n_annotations']} annotations flagged "
          f"({s['annotations_per_second']:.1f} annotations/s on {s['device']})")
    truth = s.get("truth")
    if truth:
        print(f"against clean_category_id: {truth['n_wrong']} wrong; AUROC {truth['auroc']:.3f}, "
              f"AP {truth['average_precision']:.3f}, precision {truth['flagged_precision']:.3f}, "
              f"recall {truth['flagged_recall']:.3f}, precision at recall 0.8 "
              f"{truth['precision_at_recall_0.8']:.3f}")
    written = [name for name in result.files if name != "fix"]
    print(f"wrote {', '.join(written)} in {out}")
    if result.fix_report is not None:
        r = result.fix_report
        print(f"{args.fix}: {args.action} on {r['n_flagged']} flagged annotations ({r['n_changed']} changed)")
    return 0
