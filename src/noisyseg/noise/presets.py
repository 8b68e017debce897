"""Asymmetric noise presets: class-dependent flips by category *name* (ids differ between converters)."""

from __future__ import annotations

# source name -> target name; a pair written both ways swaps the two classes.
CITYSCAPES = {
    "person": "rider", "rider": "person",
    "truck": "bus", "bus": "truck",
    "motorcycle": "bicycle", "bicycle": "motorcycle",
}
VOC = {
    "bird": "aeroplane",
    "diningtable": "chair",
    "bus": "car",
    "sheep": "horse",
    "bicycle": "motorbike", "motorbike": "bicycle",
    "cat": "dog", "dog": "cat",
}
#: name -> mapping; "supercategory" is computed from the file (uniform over the other classes of the
#: same supercategory) and so has no fixed mapping.
PRESETS: dict[str, dict[str, str] | None] = {"cityscapes": CITYSCAPES, "voc": VOC, "supercategory": None}
