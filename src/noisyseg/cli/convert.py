"""``noisyseg convert cityscapes|voc ROOT -o DIR [--splits train,val]``: public data sets -> COCO json.

Writes ``DIR/{split}.json`` per split (see :mod:`noisyseg.data.convert.cityscapes` and
:mod:`noisyseg.data.convert.voc` for the exact conventions), prints a summary line per split on stdout and
shows a progress bar over the images on stderr.
"""

from __future__ import annotations

import argparse
from pathlib import Path

_DATASETS = {
    "cityscapes": ("Cityscapes gtFine polygons -> COCO json with the 8 instance classes",
                   "CITYSCAPES_ROOT", "the Cityscapes root holding leftImg8bit/ and gtFine/"),
    "voc": ("PASCAL VOC 2012 SegmentationObject/SegmentationClass -> COCO json with the 20 classes",
            "VOC_ROOT", "the VOC2012 folder holding JPEGImages/, SegmentationObject/, SegmentationClass/ "
                        "and ImageSets/Segmentation/"),
}


def register(sub: argparse._SubParsersAction) -> None:
    """Add the ``convert`` command with its ``cityscapes`` and ``voc`` sub-commands."""
    p = sub.add_parser("convert", help="convert Cityscapes or PASCAL VOC 2012 to COCO instance json",
                       description="Convert a public instance-segmentation data set to COCO instance json.")
    conv = p.add_subparsers(dest="dataset", metavar="DATASET")
    conv.required = True
    for name, (helptext, metavar, root_help) in _DATASETS.items():
        q = conv.add_parser(name, help=helptext, description=helptext + ". Writes OUT/{split}.json per split.")
        q.add_argument("root", type=Path, metavar=metavar, help=root_help)
        q.add_argument("-o", "--out", type=Path, required=True, metavar="DIR",
                       help="output folder; one DIR/{split}.json per split")
        q.add_argument("--splits", default="train,val", help="comma-separated splits (default: train,val)")
        q.add_argument("--no-progress", action="store_true", help="do not show the progress bar")
        q.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Run the converter chosen by ``args.dataset``; returns the exit code (0)."""
    from noisyseg.data.convert import convert_cityscapes, convert_voc

    convert = convert_cityscapes if args.dataset == "cityscapes" else convert_voc
    splits = tuple(s.strip() for s in args.splits.split(",") if s.strip())
    for path in convert(args.root, args.out, splits=splits, progress=not args.no_progress).values():
        print(f"wrote {path}")
    return 0
