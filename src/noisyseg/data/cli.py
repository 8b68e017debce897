"""``noisyseg data ...``: commands that create data sets.

``noisyseg data shapes -o DIR`` writes (or reuses) the synthetic shapes benchmark; see
:mod:`noisyseg.data.shapes`.
"""

from __future__ import annotations

import argparse
from pathlib import Path


def register(sub: argparse._SubParsersAction) -> None:
    """Add the ``data`` command and its sub-commands to the top-level sub-parsers ``sub``."""
    data = sub.add_parser("data", help="create data sets (the synthetic shapes benchmark)",
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
                    "star/dotted_star). A folder holding a set made with the same parameters is reused.",
    )
    p.add_argument("-o", "--out", type=Path, required=True, help="output folder")
    p.add_argument("--train", type=int, default=S.DEFAULT_N_TRAIN, dest="n_train",
                   help=f"training images (default {S.DEFAULT_N_TRAIN})")
    p.add_argument("--val", type=int, default=S.DEFAULT_N_VAL, dest="n_val",
                   help=f"validation images (default {S.DEFAULT_N_VAL})")
    p.add_argument("--size", type=int, default=S.DEFAULT_SIZE,
                   help=f"image width and height in pixels (default {S.DEFAULT_SIZE})")
    p.add_argument("--seed", type=int, default=S.DEFAULT_SEED, help=f"random seed (default {S.DEFAULT_SEED})")
    p.add_argument("--class-colours", action="store_true",
                   help="give each class its own hue band (the CPU noise x method benchmark uses this)")
    p.add_argument("--force", action="store_true", help="regenerate even if a matching set exists")
    p.add_argument("--no-progress", action="store_false", dest="progress", help="no progress bar or status line")
    p.set_defaults(func=_run_shapes)


def _run_shapes(args: argparse.Namespace) -> int:
    from noisyseg.data.shapes import make_shapes

    paths = make_shapes(args.out, n_train=args.n_train, n_val=args.n_val, size=args.size, seed=args.seed,
                        force=args.force, progress=args.progress, class_colours=args.class_colours)
    print(f"train_json: {paths.train_json}")
    print(f"val_json: {paths.val_json}")
    print(f"image_root: {paths.image_root}")
    return 0


# Each entry adds one ``noisyseg data`` sub-command.
_DATA_COMMANDS = [_add_shapes]
