"""``noisyseg data shapes|fashion``: commands that create data sets.

``noisyseg data shapes -o DIR`` writes (or reuses) the synthetic shapes benchmark; see
:mod:`noisyseg.data.shapes`. ``noisyseg data fashion -o DIR`` writes scenes composed from Fashion-MNIST
photos; see :mod:`noisyseg.data.fashion`.
"""

from __future__ import annotations

import argparse
from pathlib import Path


def register(sub: argparse._SubParsersAction) -> None:
    """Add the ``data`` command and its sub-commands to the top-level sub-parsers ``sub``."""
    data = sub.add_parser("data", help="create data sets (synthetic shapes, Fashion-MNIST scenes)",
                          description="Create data sets.")
    data_sub = data.add_subparsers(dest="data_command", metavar="DATA_COMMAND")
    data_sub.required = True
    for add in _DATA_COMMANDS:
        add(data_sub)


def _add_shapes(data_sub: argparse._SubParsersAction) -> None:
    from noisyseg.data import shapes as S

    p = data_sub.add_parser(
        "shapes",
        help="write the seeded synthetic shapes data set (COCO format)",
        description="Write a deterministic synthetic instance-segmentation data set: 8 classes in 4 "
                    "confusable pairs (disc/striped_disc, square/dotted_square, triangle/striped_triangle, "
                    "star/dotted_star). A folder holding a set made with the same parameters is reused; "
                    "one holding a set made with other parameters, or files this command did not "
                    "write, is refused without --force; a file it did not write is never replaced or deleted.",
    )
    _add_set_options(p, S)
    p.add_argument("--class-colours", action="store_true",
                   help="give each class its own hue band (the CPU noise x method benchmark uses this)")
    _add_common_tail(p)
    p.set_defaults(func=_run_shapes)


def _add_set_options(p: argparse.ArgumentParser, generator) -> None:
    """-o, --train, --val, --size and --seed, with the defaults of ``generator`` (the data module)."""
    p.add_argument("-o", "--out", type=Path, required=True, help="output folder")
    for option, dest, default, what in (("--train", "n_train", generator.DEFAULT_N_TRAIN, "training images"),
                                        ("--val", "n_val", generator.DEFAULT_N_VAL, "validation images"),
                                        ("--size", "size", generator.DEFAULT_SIZE, "image width and height in pixels"),
                                        ("--seed", "seed", generator.DEFAULT_SEED, "random seed")):
        p.add_argument(option, type=int, default=default, dest=dest, help=f"{what} (default {default})")


def _add_common_tail(p: argparse.ArgumentParser) -> None:
    p.add_argument("--force", action="store_true",
                   help="regenerate even if a matching set exists, replace a set made with other parameters, "
                        "and write into a folder holding other files (a file this command did not write is "
                        "never replaced or deleted)")
    p.add_argument("--no-progress", action="store_false", dest="progress", help="no progress bar or status line")


def _run_shapes(args: argparse.Namespace) -> int:
    from noisyseg.data.shapes import make_shapes

    paths = make_shapes(args.out, n_train=args.n_train, n_val=args.n_val, size=args.size, seed=args.seed,
                        force=args.force, progress=args.progress, class_colours=args.class_colours)
    _print_paths(paths)
    return 0


def _add_fashion(data_sub: argparse._SubParsersAction) -> None:
    from noisyseg.data import fashion as F  # imports no torch at module level

    p = data_sub.add_parser(
        "fashion",
        help="write instance-segmentation scenes composed from Fashion-MNIST photos (COCO format)",
        description="Write a deterministic instance-segmentation data set: each image holds scaled, tinted, "
                    "partly occluding Fashion-MNIST items (10 classes: " + ", ".join(F.CLASS_NAMES) +
                    ") on a textured background. Train scenes use the Fashion-MNIST training split, val "
                    "scenes its test split. A folder holding a set made with the same parameters and "
                    "source files is reused; one holding another set, or files this command did not "
                    "write, is refused without --force; a file it did not write is never replaced or deleted. "
                    "--train-ratio / --train-weights make the training split long-tailed.",
    )
    _add_set_options(p, F)
    p.add_argument("--source", metavar="IDX_DIR",
                   help="folder holding the four Fashion-MNIST IDX files (.gz or not), or 'bundled' for the "
                        f"subset shipped with noisyseg (default: {F.DEBIAN_DIR}, then an earlier download "
                        "in the cache folder, then torchvision's download)")
    p.add_argument("--items", type=_pair(int, "--items"), default=F.DEFAULT_ITEMS, metavar="MIN,MAX",
                   help="items drawn per image (default {},{})".format(*F.DEFAULT_ITEMS))
    p.add_argument("--scale", type=_pair(float, "--scale"), default=F.DEFAULT_SCALE, metavar="MIN,MAX",
                   help="item side relative to the image side (default {},{}: 36-64 px at 128)".format(
                       *F.DEFAULT_SCALE))
    lt = p.add_mutually_exclusive_group()
    lt.add_argument("--train-ratio", type=float, metavar="R",
                    help="long-tailed training split: class k is drawn with frequency ~ R**rank(k) over "
                         "--class-order (0 < R <= 1; default: balanced)")
    lt.add_argument("--train-weights", type=_weights, metavar="W",
                    help="training class frequencies ~ these weights: NAME=W pairs naming every class "
                         "(e.g. \"T-shirt/top=5,Trouser=1,...\") or 10 numbers in label order (" +
                         ", ".join(F.CLASS_NAMES) + ")")
    p.add_argument("--class-order", type=_names, metavar="NAMES",
                   help="with --train-ratio: the 10 class names, comma-separated, most frequent first (default " +
                        ", ".join(F.DEFAULT_CLASS_ORDER) + ")")
    p.add_argument("--val-frequencies", choices=F.VAL_FREQUENCIES, default="balanced",
                   help="val split's class frequencies: balanced (default: every class's AP measured on about "
                        "the same number of objects) or train (as the training split)")
    _add_common_tail(p)
    p.set_defaults(func=_run_fashion)


def _names(text: str) -> list[str]:
    """argparse type: "A,B,C" -> ["A", "B", "C"] (names stripped; empty items dropped)."""
    return [t.strip() for t in text.split(",") if t.strip()]


def _weights(text: str) -> dict[str, float] | list[float]:
    """argparse type: "NAME=W,..." -> {name: weight}, or "W1,...,W10" -> [weights]; a usage error otherwise."""
    parts = _names(text)
    try:
        if parts and all("=" in t for t in parts):
            pairs = [t.split("=", 1) for t in parts]
            out = {name.strip(): float(w) for name, w in pairs}
            if len(out) != len(pairs):
                raise argparse.ArgumentTypeError(f"a class is given twice in {text!r}")
            return out
        return [float(t) for t in parts]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected NAME=W pairs or 10 numbers, got {text!r}") from None


def _pair(kind: type, option: str):
    """argparse type: "A,B" -> (kind(A), kind(B)), a one-line usage error otherwise."""
    def parse(text: str) -> tuple:
        parts = [t.strip() for t in text.split(",")]
        try:
            if len(parts) != 2:
                raise ValueError
            return tuple(kind(t) for t in parts)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected MIN,MAX ({kind.__name__}s), got {text!r}") from None

    parse.__name__ = option
    return parse


def _run_fashion(args: argparse.Namespace) -> int:
    from noisyseg.data.fashion import make_fashion_scenes

    paths = make_fashion_scenes(args.out, n_train=args.n_train, n_val=args.n_val, size=args.size, seed=args.seed,
                                items=args.items, scale=args.scale, source=args.source, force=args.force,
                                progress=args.progress, train_ratio=args.train_ratio, class_order=args.class_order,
                                train_weights=args.train_weights, val_frequencies=args.val_frequencies)
    _print_paths(paths)
    return 0


def _print_paths(paths) -> None:
    print(f"train_json: {paths.train_json}")
    print(f"val_json: {paths.val_json}")
    print(f"image_root: {paths.image_root}")


# Each entry adds one ``noisyseg data`` sub-command.
_DATA_COMMANDS = [_add_shapes, _add_fashion]
