"""Data: COCO-format data sets, transforms, the built-in synthetic shapes benchmark and converters."""
