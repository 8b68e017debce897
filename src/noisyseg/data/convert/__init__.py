"""Converters from public data set layouts to COCO instance json.

- :func:`convert_cityscapes` — Cityscapes gtFine polygons, 8 instance classes, visible (occlusion-aware)
  masks; writes ``out_dir/{split}.json``.
- :func:`convert_voc` — PASCAL VOC 2012 SegmentationObject/SegmentationClass PNGs, 20 classes; writes
  ``out_dir/{split}.json``.

Both store masks as compressed RLE and return ``{split: output path}``.
"""

from noisyseg.data.convert.cityscapes import convert_cityscapes
from noisyseg.data.convert.voc import convert_voc

__all__ = ["convert_cityscapes", "convert_voc"]
