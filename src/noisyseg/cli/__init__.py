"""The ``noisyseg`` command line: one entry point, one thin command file per verb group.

Each module of this package exposes ``register(subparsers)``, which adds its parsers and sets
``func(args) -> int``; it holds argument parsing only and calls library functions. The modules import
nothing heavy at module level (torch only inside the functions that run a command), so ``noisyseg
--help`` and light commands (``noise``) start fast. Errors the user can fix (:class:`NoisysegError`)
print one line ``noisyseg VERB: error: ...`` and exit with code 2.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from noisyseg.errors import NoisysegError

# Each module's register() adds one or more verbs, in this order in `noisyseg --help`.
COMMAND_MODULES = [
    "noisyseg.cli.noise",
    "noisyseg.cli.data",
    "noisyseg.cli.convert",
    "noisyseg.cli.train",
    "noisyseg.cli.weights",
    "noisyseg.cli.audit",
    "noisyseg.cli.demo",
    "noisyseg.cli.bench",
]


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("noisyseg")
    except PackageNotFoundError:  # running from a source tree that was never installed
        return "unknown (not installed)"


def build_parser() -> argparse.ArgumentParser:
    """The top-level parser with every verb of :data:`COMMAND_MODULES` registered."""
    parser = argparse.ArgumentParser(
        prog="noisyseg",
        description="Instance segmentation with noisy class labels: noise injection, robust training, evaluation.",
    )
    parser.add_argument("--version", action="version", version=f"noisyseg {_version()}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Parse ``argv`` (default ``sys.argv[1:]``), run the verb and return its exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except NoisysegError as e:
        if not getattr(e, "silent", False):  # silent: another process of the same run prints it
            print(f"noisyseg {args.command}: error: {e}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        print(f"noisyseg {args.command}: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # the reader of our output went away (`noisyseg noise --stats F | head`)
        import os

        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # so the exit flush cannot fail again
        return 0


if __name__ == "__main__":
    sys.exit(main())
