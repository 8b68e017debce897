import numpy as np
import pytest

from noisyseg.noise import inject
from noisyseg.noise.presets import CITYSCAPES, VOC

CITYSCAPES_CLASSES = ["person", "rider", "car", "truck", "bus", "train", "motorcycle", "bicycle"]
VOC_CLASSES = ["aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow", "diningtable",
               "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa", "train", "tvmonitor"]


def _by_name(coco):
    names = {c["id"]: c["name"] for c in coco["categories"]}
    return [(names[a["clean_category_id"]], names[a["category_id"]]) for a in coco["annotations"]]


@pytest.mark.parametrize("preset, classes, mapping", [("cityscapes", CITYSCAPES_CLASSES, CITYSCAPES),
                                                       ("voc", VOC_CLASSES, VOC)])
def test_preset_flips_exactly_its_pairs(make, preset, classes, mapping):
    coco = make({n: 50 for n in classes})
    noisy, report = inject(coco, "asymmetric", 1.0, seed=0, preset=preset)
    for clean, new in _by_name(noisy):
        assert new == mapping.get(clean, clean)
    assert set(report["eligible"]) == set(mapping)


def test_cityscapes_leaves_car_and_train_alone(make):
    noisy, _ = inject(make({n: 40 for n in CITYSCAPES_CLASSES}), "asymmetric", 0.5, seed=1, preset="cityscapes")
    for clean, new in _by_name(noisy):
        if clean in ("car", "train"):
            assert new == clean


def test_supercategory_noise_stays_inside_and_skips_singletons(make):
    supercats = {"person": "human", "cat": "animal", "dog": "animal", "horse": "animal", "car": "vehicle",
                 "bus": "vehicle", "tv": "electronic"}
    coco = make({n: 300 for n in supercats}, supercats=supercats)
    noisy, report = inject(coco, "asymmetric", 1.0, seed=0, preset="supercategory")
    pairs = _by_name(noisy)
    for clean, new in pairs:
        if clean in ("person", "tv"):
            assert new == clean
        else:
            assert new != clean and supercats[new] == supercats[clean]
    cats = [new for clean, new in pairs if clean == "cat"]
    assert 100 < cats.count("dog") < 200  # uniform over the two other animals
    assert "person" not in report["eligible"] and "tv" not in report["eligible"]
