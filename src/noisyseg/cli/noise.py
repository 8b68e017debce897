"""``noisyseg noise``: inject class-label noise into a COCO json, show a noisy file's statistics (--stats), or
predict the label precision per class that a noise call would leave (--predict).

Over :mod:`noisyseg.noise.files`. Imports only the standard library at module level (numpy when the
command runs), never torch, so the command starts fast.
"""

from __future__ import annotations

import argparse
import math

from noisyseg.errors import NoisysegError

# option -> the noise kind it belongs to (without --kind, the first option given picks the kind)
_KIND_OF_OPTION = (("preset", "asymmetric"), ("pairs", "pairs"), ("matrix", "matrix"))


def register(sub: argparse._SubParsersAction) -> None:
    """Add the ``noise`` command to the top-level sub-parsers ``sub``."""
    p = sub.add_parser(
        "noise", help="inject seeded class-label noise into a COCO json (or --stats of a noisy one)",
        description="Change the category_id of a seeded fraction of annotations and nothing else.\n"
                    "Every annotation keeps its label before the call in clean_category_id (an existing\n"
                    "one is kept, so noise can be layered); info.noise records what was done and the\n"
                    "realised transitions (an earlier info.noise moves to the list info.noise_history).",
        epilog="kinds:\n"
               "  symmetric   a changed annotation moves uniformly to one of the other target classes\n"
               "  asymmetric  --preset cityscapes | voc | fashion | supercategory (flips by class name)\n"
               "  pairs       --pairs \"bus>car,cat>dog\" (uniform over the targets of a repeated source)\n"
               "  matrix      --matrix T.json {\"classes\": [K names], \"matrix\": K x K}; row = P(new | old),\n"
               "              diagonal = P(stay); an eligible annotation is hit with probability --rate\n"
               "              and a hit one draws its new class from its row\n"
               "  Without --kind, --preset/--pairs/--matrix pick their kind; otherwise symmetric.\n"
               "examples:\n"
               "  noisyseg noise train.json -o train_sym40.json --kind symmetric --rate 0.4 --seed 0\n"
               "  noisyseg noise train.json -o train_asym20.json --kind asymmetric --preset cityscapes --rate 0.2\n"
               "  noisyseg noise train.json -o t.json --kind pairs --pairs \"bus>car,cat>dog\" --rate 0.3\n"
               "  noisyseg noise --stats train_sym40.json\n"
               "  noisyseg noise --predict train.json --kind symmetric --rate 0.4",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("input", nargs="?", metavar="IN.json", help="COCO instance json to corrupt")
    p.add_argument("-o", "--out", metavar="OUT.json", help="output json (written atomically)")
    p.add_argument("--kind", choices=["symmetric", "asymmetric", "pairs", "matrix"],
                   help="noise kind (default: from --preset/--pairs/--matrix, else symmetric)")
    p.add_argument("--rate", metavar="R",
                   help="in [0, 1]: the fraction of eligible annotations hit (for every kind but matrix, "
                        "the fraction that change class)")
    p.add_argument("--seed", type=int, default=0, metavar="S", help="random seed (default 0)")
    p.add_argument("--preset", help="asymmetric preset: cityscapes | voc | fashion | supercategory")
    p.add_argument("--pairs", help="source>target pairs by class name, comma-separated")
    p.add_argument("--matrix", metavar="T.json",
                   help="json {\"classes\": [names], \"matrix\": K x K}, rows sum to 1")
    p.add_argument("--classes", help="comma-separated names of the classes to corrupt "
                                     "(default: every class with at least one annotation)")
    p.add_argument("--sampling", choices=["exact", "bernoulli"], default="exact",
                   help="exact: round(rate x n_c) of each class c (default); bernoulli: a coin per annotation")
    p.add_argument("--include-crowd", action="store_true", help="also corrupt iscrowd annotations")
    p.add_argument("--report", metavar="REPORT.json", help="also write the report as json here")
    p.add_argument("--force", action="store_true", help="allow overwriting the input file")
    p.add_argument("--stats", metavar="FILE.json",
                   help="print the realised clean -> noisy matrix of a noisy file, its noise rates and the label "
                        "precision per class (share of the annotations labelled k whose clean class is k)")
    p.add_argument("--predict", metavar="FILE.json",
                   help="inject nothing: print the label precision per class that --kind/--rate (and the other "
                        "noise options) are expected to leave in FILE, from its own class counts")
    p.set_defaults(func=run)


def _parse_rate(text: str | None) -> float:
    if text is None:
        raise NoisysegError("needs --rate R (a number in [0, 1])")
    try:
        rate = float(text)
    except ValueError:
        raise NoisysegError(f"--rate: {text!r} is not a number") from None
    if not math.isfinite(rate) or not 0 <= rate <= 1:
        raise NoisysegError(f"rate must be a number in [0, 1], got {text}")
    return rate


def run(args: argparse.Namespace) -> int:
    """Run ``noisyseg noise`` with parsed ``args``; returns the exit code."""
    from noisyseg.noise.files import format_stats, inject_file
    from noisyseg.utils.io import read_json

    if args.stats and args.predict:
        raise NoisysegError("--stats and --predict are two different commands; give one")
    if args.stats:
        if args.input or args.out:
            raise NoisysegError("--stats FILE takes no other input or output")
        print(format_stats(read_json(args.stats, "COCO annotation file"), args.stats))
        return 0
    if args.predict:
        if args.input or args.out or args.report:
            raise NoisysegError("--predict FILE takes no other input or output (it writes nothing)")
    elif not args.input or not args.out:
        raise NoisysegError("needs IN.json and -o OUT.json (or --stats FILE.json, or --predict FILE.json)")
    rate = _parse_rate(args.rate)
    kind = args.kind or next((k for opt, k in _KIND_OF_OPTION if getattr(args, opt) is not None), "symmetric")
    for opt, owner in _KIND_OF_OPTION:
        if getattr(args, opt) is not None and kind != owner:
            raise NoisysegError(f"--{opt} only applies to --kind {owner}, not {kind}")
    classes = [c.strip() for c in args.classes.split(",") if c.strip()] if args.classes is not None else None
    if args.predict:
        from noisyseg.noise.files import format_prediction, predict_file

        prediction = predict_file(args.predict, kind=kind, rate=rate, preset=args.preset, pairs=args.pairs,
                                  matrix_path=args.matrix, classes=classes, sampling=args.sampling,
                                  include_crowd=args.include_crowd)
        what = f"{kind}" + (f" ({args.preset})" if args.preset else "") + f" noise at rate {rate:g}, {args.sampling}"
        print(format_prediction(prediction, args.predict, what))
        return 0
    report = inject_file(args.input, args.out, kind=kind, rate=rate, seed=args.seed, preset=args.preset,
                         pairs=args.pairs, matrix_path=args.matrix, classes=classes, sampling=args.sampling,
                         include_crowd=args.include_crowd, report_path=args.report, force=args.force)
    print(f"{args.out}: {report['n_changed']} of {report['n_eligible']} eligible annotations changed class "
          f"(realised rate {report['realised_rate']:.4f}, {kind}, {args.sampling}, seed {args.seed})")
    worst = sorted(report["label_precision"].items(), key=lambda kv: (kv[1]["precision"], kv[0]))[:3]
    print("lowest label precision: " + ", ".join(f"{name} {v['precision']:.1%} of its {v['n']} labels right"
                                                 for name, v in worst))
    return 0
