"""``noisyseg noise``: inject class-label noise into a COCO json, or show a noisy file's statistics.

Imports only the standard library at module level (numpy when a command runs), never torch, so the
command starts fast.
"""

from __future__ import annotations

import argparse
import json
import math

from noisyseg.errors import NoisysegError

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
               "  noisyseg noise --stats train_sym40.json",
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
                   help="print the realised clean -> noisy matrix of a noisy file and its noise rates")
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
    from noisyseg.utils.io import atomic_write_text, check_not_overwriting_input, ensure_output_file, read_json

    if args.stats:
        if args.input or args.out:
            raise NoisysegError("--stats FILE takes no other input or output")
        print(format_stats(read_json(args.stats, "COCO annotation file"), args.stats))
        return 0
    if not args.input or not args.out:
        raise NoisysegError("needs IN.json and -o OUT.json (or --stats FILE.json)")
    rate = _parse_rate(args.rate)
    kind = args.kind or next((k for opt, k in _KIND_OF_OPTION if getattr(args, opt) is not None), "symmetric")
    for opt, owner in _KIND_OF_OPTION:
        if getattr(args, opt) is not None and kind != owner:
            raise NoisysegError(f"--{opt} only applies to --kind {owner}, not {kind}")
    check_not_overwriting_input(args.out, [args.input] + ([args.matrix] if args.matrix else []), args.force)
    if args.report:
        check_not_overwriting_input(args.report, [args.input, args.out] + ([args.matrix] if args.matrix else []),
                                    False)
    # Both outputs are checked before any work, so a bad --report path cannot leave a written -o behind.
    ensure_output_file(args.out, "output file")
    if args.report:
        ensure_output_file(args.report, "report file")

    from noisyseg.noise.inject import check_matrix, inject, parse_pairs

    pairs = parse_pairs(args.pairs) if args.pairs is not None else None
    matrix = None
    if args.matrix:
        matrix = read_json(args.matrix, "noise matrix file")
        try:
            check_matrix(matrix)
        except NoisysegError as e:
            raise NoisysegError(f"{args.matrix}: {e}") from None
    classes = [c.strip() for c in args.classes.split(",") if c.strip()] if args.classes is not None else None
    coco = read_json(args.input, "COCO annotation file")
    try:
        noisy, report = inject(coco, kind=kind, rate=rate, seed=args.seed, preset=args.preset, pairs=pairs,
                               matrix=matrix, classes=classes, sampling=args.sampling,
                               include_crowd=args.include_crowd, in_place=True)
    except NoisysegError as e:
        raise NoisysegError(f"{args.input}: {e}") from None
    try:  # a NaN or Infinity anywhere (JSON has neither) must not produce an output that is not JSON
        text = json.dumps(noisy, separators=(",", ":"), allow_nan=False)
    except ValueError:
        raise NoisysegError(f"{args.input}: holds a NaN or Infinity number (not valid JSON); "
                            f"{args.out} not written") from None
    del noisy, coco  # free the parsed file before the encoded copy is made
    atomic_write_text(args.out, text)
    if args.report:
        atomic_write_text(args.report, json.dumps(report, indent=2) + "\n")
    print(f"{args.out}: {report['n_changed']} of {report['n_eligible']} eligible annotations changed class "
          f"(realised rate {report['realised_rate']:.4f}, {kind}, {args.sampling}, seed {args.seed})")
    return 0


def format_stats(coco: dict, source: str = "") -> str:
    """The realised clean -> noisy matrix as an aligned text table, with per-class and overall noise rates.

    Rows are clean classes, columns noisy classes, by name; classes with no annotation either way are
    left out. The last column is the fraction of each clean class whose label now differs.
    """
    from noisyseg.noise.inject import noise_stats

    try:
        st = noise_stats(coco)
    except NoisysegError as e:
        raise NoisysegError(f"{source}: {e}" if source else str(e)) from None
    counts = st["counts"]
    keep = [i for i in range(len(st["classes"])) if counts[i].sum() or counts[:, i].sum()]
    names = [st["classes"][i] for i in keep]
    counts = counts[keep][:, keep]
    corner = "clean \\ noisy"
    w = max([len(corner)] + [len(n) for n in names])
    cw = max([5, len(str(int(counts.max())))] + [len(n) for n in names])
    lines = []
    block = (coco.get("info") or {}).get("noise") if isinstance(coco.get("info"), dict) else None
    if isinstance(block, dict):
        desc = ", ".join(f"{k} {block[k]}" for k in ("kind", "preset", "rate", "seed", "sampling") if k in block)
        layers = len((coco["info"].get("noise_history") or [])) + 1
        lines.append(f"{source}: {desc}" + (f" (latest of {layers} noise calls)" if layers > 1 else ""))
    lines.append(f"{corner:<{w}} " + " ".join(f"{n:>{cw}}" for n in names) + f" {'noise':>7}")
    for i, n in enumerate(names):
        total = counts[i].sum()
        rate = 1 - counts[i, i] / total if total else 0.0
        cells = " ".join(f"{int(v):>{cw}}" for v in counts[i])
        lines.append(f"{n:<{w}} {cells} " + (f"{rate:7.1%}" if total else f"{'-':>7}"))
    lines.append(f"overall: {st['n_changed']} of {st['n']} annotations differ from their clean class "
                 f"({st['rate']:.2%})")
    return "\n".join(lines)
