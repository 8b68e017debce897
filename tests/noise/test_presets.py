from collections import Counter

import pytest

from noisyseg.errors import NoisysegError
from noisyseg.noise import PRESETS, inject
from noisyseg.noise.presets import CITYSCAPES, FASHION, VOC, target_names

CITYSCAPES_CLASSES = ["person", "rider", "car", "truck", "bus", "train", "motorcycle", "bicycle"]
VOC_CLASSES = ["aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow", "diningtable",
               "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa", "train", "tvmonitor"]


def _by_name(coco):
    """[(clean name, noisy name)] for every annotation."""
    names = {c["id"]: c["name"] for c in coco["categories"]}
    return [(names[a["clean_category_id"]], names[a["category_id"]]) for a in coco["annotations"]]


def test_the_preset_tables_are_the_published_ones():
    assert dict(CITYSCAPES) == {"person": "rider", "rider": "person", "truck": "bus", "bus": "truck",
                                "motorcycle": "bicycle", "bicycle": "motorcycle"}
    assert dict(VOC) == {"bird": "aeroplane", "diningtable": "chair", "bus": "car", "sheep": "horse",
                         "bicycle": "motorbike", "motorbike": "bicycle", "cat": "dog", "dog": "cat"}
    assert set(PRESETS) == {"cityscapes", "voc", "fashion", "supercategory"} and PRESETS["supercategory"] is None
    assert set(CITYSCAPES) | set(CITYSCAPES.values()) <= set(CITYSCAPES_CLASSES)
    assert set(VOC) | set(VOC.values()) <= set(VOC_CLASSES)


@pytest.mark.parametrize("preset, classes", [("cityscapes", CITYSCAPES_CLASSES), ("voc", VOC_CLASSES)])
def test_preset_at_rate_one_flips_exactly_its_pairs(make, preset, classes):
    mapping = PRESETS[preset]
    noisy, report = inject(make({n: 50 for n in classes}), "asymmetric", 1.0, seed=0, preset=preset)
    for clean, new in _by_name(noisy):
        assert new == mapping.get(clean, clean)
    assert set(report["eligible"]) == set(mapping) and report["realised_rate"] == 1.0
    assert report["preset"] == preset


@pytest.mark.parametrize("preset, classes", [("cityscapes", CITYSCAPES_CLASSES), ("voc", VOC_CLASSES)])
def test_preset_rate_is_the_fraction_of_eligible_annotations(make, preset, classes):
    mapping = PRESETS[preset]
    noisy, report = inject(make({n: 40 for n in classes}), "asymmetric", 0.25, seed=1, preset=preset)
    changed = Counter(clean for clean, new in _by_name(noisy) if new != clean)
    assert changed == {name: 10 for name in mapping}
    for clean, new in _by_name(noisy):
        assert new in (clean, mapping.get(clean, clean))
    assert report["n_eligible"] == 40 * len(mapping) and report["realised_rate"] == 0.25


def test_preset_works_with_any_category_ids(make):
    coco = make({n: 20 for n in CITYSCAPES_CLASSES})
    for i, c in enumerate(coco["categories"]):  # renumber: the preset goes by name
        c["id"] = 100 - 3 * i
    for a in coco["annotations"]:
        a["category_id"] = 100 - 3 * (a["category_id"] - 1)
    noisy, _ = inject(coco, "asymmetric", 1.0, seed=0, preset="cityscapes")
    for clean, new in _by_name(noisy):
        assert new == CITYSCAPES.get(clean, clean)


@pytest.mark.parametrize("preset, classes, missing", [("cityscapes", CITYSCAPES_CLASSES, "rider"),
                                                      ("voc", VOC_CLASSES, "aeroplane")])
def test_preset_naming_a_class_the_file_lacks_is_an_error(make, preset, classes, missing):
    with pytest.raises(NoisysegError, match=f"preset '{preset}': class '{missing}' is not a category of this file"):
        inject(make({n: 5 for n in classes if n != missing}), "asymmetric", 0.2, seed=0, preset=preset)


SUPERCATS = {"person": "human", "cat": "animal", "dog": "animal", "horse": "animal", "car": "vehicle",
             "bus": "vehicle", "tv": "electronic"}


def test_supercategory_noise_stays_inside_and_skips_singletons(make):
    coco = make({n: 300 for n in SUPERCATS}, supercats=SUPERCATS)
    noisy, report = inject(coco, "asymmetric", 1.0, seed=0, preset="supercategory")
    pairs = _by_name(noisy)
    for clean, new in pairs:
        if clean in ("person", "tv"):
            assert new == clean
        else:
            assert new != clean and SUPERCATS[new] == SUPERCATS[clean]
    cats = Counter(new for clean, new in pairs if clean == "cat")
    assert set(cats) == {"dog", "horse"} and 120 < cats["dog"] < 180  # uniform over the two other animals
    assert set(report["eligible"]) == {"cat", "dog", "horse", "car", "bus"}
    assert report["n_eligible"] == 1500 and report["realised_rate"] == 1.0


def test_supercategory_groups_only_hold_target_classes(make):
    # "bus" is listed but has no annotation: "car" is then alone in "vehicle" and never changes
    coco = make({n: 30 for n in SUPERCATS if n != "bus"}, supercats=SUPERCATS,
                extra_categories=[{"id": 50, "name": "bus", "supercategory": "vehicle"}])
    noisy, report = inject(coco, "asymmetric", 1.0, seed=0, preset="supercategory")
    assert all(new == clean for clean, new in _by_name(noisy) if clean == "car")
    assert "car" not in report["eligible"]


def test_supercategory_needs_the_field(make):
    coco = make({"a": 5, "b": 5})
    del coco["categories"][1]["supercategory"]
    with pytest.raises(NoisysegError, match="category 'b' .* has no 'supercategory'"):
        inject(coco, "asymmetric", 0.5, seed=0, preset="supercategory")


FASHION_CLASSES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag",
                   "Ankle boot"]


def test_the_fashion_table():
    assert dict(FASHION) == {"T-shirt/top": "Shirt", "Shirt": ("T-shirt/top", "Coat"),
                             "Pullover": "Coat", "Coat": "Pullover",
                             "Sneaker": "Sandal", "Sandal": "Sneaker", "Ankle boot": "Sneaker"}
    assert PRESETS["fashion"] is FASHION
    from noisyseg.data.fashion import CLASS_NAMES

    assert list(CLASS_NAMES) == FASHION_CLASSES
    assert target_names("Coat") == ("Coat",) and target_names(("T-shirt/top", "Coat")) == ("T-shirt/top", "Coat")


def test_fashion_preset_at_rate_one_moves_every_source_to_its_targets(make):
    noisy, report = inject(make({n: 400 for n in FASHION_CLASSES}), "asymmetric", 1.0, seed=0, preset="fashion")
    moves = Counter(_by_name(noisy))
    expected_single = {"T-shirt/top": "Shirt", "Pullover": "Coat", "Coat": "Pullover", "Sneaker": "Sandal",
                       "Sandal": "Sneaker", "Ankle boot": "Sneaker", "Trouser": "Trouser", "Dress": "Dress",
                       "Bag": "Bag"}
    for clean, new in expected_single.items():
        assert moves[(clean, new)] == 400
    shirt = {new: n for (clean, new), n in moves.items() if clean == "Shirt"}
    assert set(shirt) == {"T-shirt/top", "Coat"} and sum(shirt.values()) == 400
    assert 160 <= shirt["Coat"] <= 240  # uniform over the two targets: 200 expected, sd 10
    assert set(report["eligible"]) == set(FASHION) and report["realised_rate"] == 1.0
    assert report["transitions"]["Shirt"] == shirt


def test_fashion_preset_rate_is_the_fraction_of_each_source_class(make):
    noisy, report = inject(make({n: 50 for n in FASHION_CLASSES}), "asymmetric", 0.4, seed=3, preset="fashion")
    changed = Counter(clean for clean, new in _by_name(noisy) if new != clean)
    assert changed == {name: 20 for name in FASHION}
    for clean, new in _by_name(noisy):
        assert new == clean or new in target_names(FASHION[clean])
    assert report["n_eligible"] == 50 * len(FASHION) and report["realised_rate"] == 0.4


def test_fashion_preset_needs_every_named_class_including_second_targets(make):
    # "Coat" is only a target of Shirt's second choice and of Pullover; without it the preset is refused
    with pytest.raises(NoisysegError, match="preset 'fashion': class 'Coat' is not a category of this file"):
        inject(make({n: 5 for n in FASHION_CLASSES if n != "Coat"}), "asymmetric", 0.2, seed=0, preset="fashion")


def test_fashion_preset_through_the_cli(make, tmp_path, capsys):
    import json

    from noisyseg.cli import main

    src = tmp_path / "train.json"
    src.write_text(json.dumps(make({n: 10 for n in FASHION_CLASSES})))
    out = tmp_path / "noisy.json"
    assert main(["noise", str(src), "-o", str(out), "--preset", "fashion", "--rate", "1"]) == 0
    assert "70 of 70 eligible annotations changed class" in capsys.readouterr().out
    noisy = json.loads(out.read_text())
    assert noisy["info"]["noise"]["preset"] == "fashion"
    for clean, new in _by_name(noisy):
        assert new == clean if clean not in FASHION else new in target_names(FASHION[clean])
