"""Asymmetric noise presets: class-dependent flips written with category *names*.

Names, not ids, because converters number the same data set differently. Each preset maps a source
class name to the class its changed annotations move to, or to a tuple of classes, one drawn uniformly
per changed annotation; a pair written in both directions swaps the two classes. The
``supercategory`` preset has no fixed table: it is built from the file being corrupted (see
:func:`noisyseg.noise.inject.inject`).
"""

from __future__ import annotations

from types import MappingProxyType
from typing import Mapping, Union

#: A preset's destination for one source class: one class name, or several drawn uniformly.
Targets = Union[str, tuple[str, ...]]

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

#: Fashion-MNIST classes (names as torchvision's ``FashionMNIST.classes`` spells them; the scenes of
#: :mod:`noisyseg.data.fashion`): T-shirt/top<->Shirt, Pullover<->Coat, Shirt also ->Coat (so a changed
#: Shirt becomes T-shirt/top or Coat with equal chance), Sneaker<->Sandal, Ankle boot->Sneaker. These are
#: the classes that classifiers of the 28-px photos confuse most: in softmax regression and a one-hidden-
#: layer MLP trained on the 60,000 training photos, Shirt->T-shirt/top, Shirt->Coat, Pullover<->Coat
#: and T-shirt/top->Shirt are among the largest off-diagonal cells of the test-set confusion matrix
#: (4-25% of a row each) and Sandal->Sneaker, Ankle boot->Sneaker the largest among the shoes.
#: Trouser, Dress and Bag stay.
FASHION: Mapping[str, Targets] = MappingProxyType({
    "T-shirt/top": "Shirt", "Shirt": ("T-shirt/top", "Coat"),
    "Pullover": "Coat", "Coat": "Pullover",
    "Sneaker": "Sandal", "Sandal": "Sneaker",
    "Ankle boot": "Sneaker",
})

#: Preset name -> source name -> target name(s). ``supercategory`` maps to None: its table comes from the
#: file (uniform over the other classes sharing a ``supercategory``; a class alone in its group stays).
PRESETS: Mapping[str, Mapping[str, Targets] | None] = MappingProxyType({
    "cityscapes": CITYSCAPES,
    "voc": VOC,
    "fashion": FASHION,
    "supercategory": None,
})


def target_names(targets: Targets) -> tuple[str, ...]:
    """The destination class names of one preset entry, as a tuple (a single name becomes a 1-tuple)."""
    return (targets,) if isinstance(targets, str) else tuple(targets)
