"""The ``noisyseg`` command line: one entry point, one sub-command per job.

Each sub-command lives next to the code it drives and exposes ``register(subparsers)``, which adds its
parser and sets ``func(args) -> int``. Errors the user can fix (:class:`NoisysegError`) print one line
and exit with code 2.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from noisyseg.errors import NoisysegError

# module path -> its register() adds one or more sub-commands. Imported lazily so `noisyseg --help`
# and light commands (noise) do not pay for importing torch.
_COMMAND_MODULES = [
    "noisyseg.noise.cli",
    "noisyseg.data.cli",
    "noisyseg.data.convert.cli",
    "noisyseg.engine.cli",
    "noisyseg.models.cli",
    "noisyseg.audit.cli",
    "noisyseg.demo",
    "noisyseg.bench",
]


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("noisyseg")
    except PackageNotFoundError:  # running from a source tree that was never installed
        return "unknown (not installed)"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="noisyseg",
        description="Instance segmentation with noisy class labels: noise injection, robust training, evaluation.",
    )
    parser.add_argument("--version", action="version", version=f"noisyseg {_version()}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for name in _COMMAND_MODULES:
        importlib.import_module(name).register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
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


if __name__ == "__main__":
    sys.exit(main())
