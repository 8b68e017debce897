"""Asymmetric noise presets: class-dependent flips written with category *names*.

Names, not ids, because converters number the same data set differently. Each preset maps a source
class name to the one class its changed annotations move to; a pair written in both directions swaps
the two classes. The ``supercategory`` preset has no fixed table: it is built from the file being
corrupted (see :func:`noisyseg.noise.inject.inject`).
"""

from __future__ import annotations

from types import MappingProxyType
from typing import Mapping

#: Cityscapes instance classes: person<->rider, truck<->bus, motorcycle<->bicycle; car and train stay.
CITYSCAPES: Mapping[str, str] = MappingProxyType({
    "person": "rider", "rider": "person",
    "truck": "bus", "bus": "truck",
    "motorcycle": "bicycle", "bicycle": "motorcycle",
})

#: Pascal VOC classes: bird->aeroplane, diningtable->chair, bus->car, sheep->horse, bicycle<->motorbike,
#: cat<->dog. The other eleven classes stay.
VOC: Mapping[str, str] = MappingProxyType({
    "bird": "aeroplane",
    "diningtable": "chair",
    "bus": "car",
    "sheep": "horse",
    "bicycle": "motorbike", "motorbike": "bicycle",
    "cat": "dog", "dog": "cat",
})

#: Preset name -> source name -> target name. ``supercategory`` maps to None: its table comes from the
#: file (uniform over the other classes sharing a ``supercategory``; a class alone in its group stays).
PRESETS: Mapping[str, Mapping[str, str] | None] = MappingProxyType({
    "cityscapes": CITYSCAPES,
    "voc": VOC,
    "supercategory": None,
})
