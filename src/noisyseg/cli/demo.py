"""``noisyseg demo``: argument parsing over :func:`noisyseg.demo.run_demo`."""

from __future__ import annotations

import argparse
from pathlib import Path


def register(sub: argparse._SubParsersAction) -> None:
    """Add the ``demo`` command to the top-level sub-parsers ``sub``."""
    import noisyseg.demo as demo  # imports no torch at module level
    from noisyseg.cli.help_text import plain_text

    d = demo.DEFAULTS
    p = sub.add_parser("demo", help="CE vs the task-specific loss under 40%% symmetric noise, on CPU",
                       description=plain_text(demo.__doc__), formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("-o", "--out", type=Path, default=demo.DEFAULT_OUT,
                   help=f"output folder (default {demo.DEFAULT_OUT})")
    p.add_argument("--noise", type=float, default=d["noise_rate"], dest="noise_rate",
                   help=f"symmetric noise rate in [0, 1] (default {d['noise_rate']})")
    p.add_argument("--seed", type=int, default=d["seed"], help=f"seed of the data, the noise and both runs (default {d['seed']})")
    p.add_argument("--epochs", type=int, default=d["epochs"],
                   help=f"epochs per run; the task-specific loss starts after half of them (default {d['epochs']})")
    p.add_argument("--train", type=int, default=d["n_train"], dest="n_train", help="training images")
    p.add_argument("--val", type=int, default=d["n_val"], dest="n_val", help="validation images")
    p.add_argument("--size", type=int, default=d["size"], help="image size in pixels")
    p.add_argument("--threads", type=int, default=None,
                   help="torch CPU threads (default: the packaged shapes_tiny config's train.threads)")
    p.add_argument("--no-progress", action="store_false", dest="progress", help="do not show progress bars")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Run ``noisyseg demo`` with parsed ``args``; returns the exit code."""
    from noisyseg.demo import run_demo

    run_demo(args.out, noise_rate=args.noise_rate, seed=args.seed, epochs=args.epochs, n_train=args.n_train,
             n_val=args.n_val, size=args.size, threads=args.threads, progress=args.progress)
    return 0
