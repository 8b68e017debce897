"""``noisyseg noise``: inject class-label noise into a COCO json, or show a noisy file's statistics."""

from __future__ import annotations

import argparse
import json

from noisyseg.errors import NoisysegError


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "noise", help="inject seeded class-label noise into a COCO json (or --stats of a noisy one)",
        description="Change the category_id of a seeded fraction of annotations; every annotation keeps its "
                    "label before the call in clean_category_id and info.noise records what was done.",
        epilog="examples:\n"
               "  noisyseg noise train.json -o train_sym40.json --kind symmetric --rate 0.4 --seed 0\n"
               "  noisyseg noise train.json -o train_asym20.json --kind asymmetric --preset cityscapes --rate 0.2\n"
               "  noisyseg noise train.json -o t.json --kind pairs --pairs \"bus>car,cat>dog,dog>cat\" --rate 0.3\n"
               "  noisyseg noise --stats train_sym40.json",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("input", nargs="?", help="COCO instance json to corrupt")
    p.add_argument("-o", "--out", help="output json (written atomically)")
    p.add_argument("--kind", choices=["symmetric", "asymmetric", "pairs", "matrix"], default="symmetric")
    p.add_argument("--rate", type=float, help="fraction of eligible annotations that change class, in [0, 1]")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--preset", help="asymmetric preset: cityscapes | voc | supercategory")
    p.add_argument("--pairs", help="source>target pairs by class name, comma-separated")
    p.add_argument("--matrix", help="json file {\"classes\": [names], \"matrix\": K x K, rows sum to 1}")
    p.add_argument("--classes", help="comma-separated class names to corrupt (default: every class with an annotation)")
    p.add_argument("--sampling", choices=["exact", "bernoulli"], default="exact",
                   help="exact: round(rate x n) per class (default); bernoulli: a coin per annotation")
    p.add_argument("--include-crowd", action="store_true", help="also corrupt iscrowd annotations")
    p.add_argument("--report", help="also write the report as json here")
    p.add_argument("--force", action="store_true", help="allow overwriting the input file")
    p.add_argument("--stats", metavar="FILE", help="print the realised clean -> noisy matrix of a noisy file")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from noisyseg.utils.io import atomic_write_text, check_not_overwriting_input, read_json

    if args.stats:
        print(format_stats(read_json(args.stats, "COCO annotation file"), args.stats))
        return 0
    if not args.input or not args.out or args.rate is None:
        raise NoisysegError("needs IN.json, -o OUT.json and --rate (or --stats FILE)")
    check_not_overwriting_input(args.out, [args.input], args.force)
    from noisyseg.noise.inject import inject

    coco = read_json(args.input, "COCO annotation file")
    matrix = read_json(args.matrix, "noise matrix file") if args.matrix else None
    classes = [c.strip() for c in args.classes.split(",") if c.strip()] if args.classes else None
    try:
        noisy, report = inject(coco, kind=args.kind, rate=args.rate, seed=args.seed, preset=args.preset,
                               pairs=args.pairs, matrix=matrix, classes=classes, sampling=args.sampling,
                               include_crowd=args.include_crowd, in_place=True)
    except NoisysegError as e:
        raise NoisysegError(f"{args.input}: {e}") from None
    atomic_write_text(args.out, json.dumps(noisy, separators=(",", ":")))
    if args.report:
        atomic_write_text(args.report, json.dumps(report, indent=2))
    print(f"{args.out}: {report['n_changed']} of {report['n_eligible']} eligible annotations changed class "
          f"(realised rate {report['realised_rate']:.4f}, {args.kind}, seed {args.seed})")
    return 0


def format_stats(coco: dict, source: str = "") -> str:
    """The realised clean -> noisy matrix as an aligned table, with per-class and overall noise rates."""
    from noisyseg.noise.inject import realised_matrix

    try:
        names, counts = realised_matrix(coco)
    except NoisysegError as e:
        raise NoisysegError(f"{source}: {e}") from None
    keep = [i for i in range(len(names)) if counts[i].sum() or counts[:, i].sum()]
    names = [names[i] for i in keep]
    counts = counts[keep][:, keep]
    corner = "clean \\ noisy"
    w = max([len(corner)] + [len(n) for n in names])
    cw = max([6] + [len(n) for n in names] + [len(str(int(counts.max()))) if counts.size else 1])
    lines = [f"{corner:<{w}} " + " ".join(f"{n:>{cw}}" for n in names) + f" {'noise':>7}"]
    for i, n in enumerate(names):
        total = counts[i].sum()
        rate = 1 - counts[i, i] / total if total else 0.0
        lines.append(f"{n:<{w}} " + " ".join(f"{int(v):>{cw}}" for v in counts[i]) + f" {rate:7.1%}")
    total = counts.sum()
    changed = total - counts.trace()
    lines.append(f"overall: {int(changed)} of {int(total)} annotations differ from their clean class "
                 f"({changed / total if total else 0:.2%})")
    return "\n".join(lines)
