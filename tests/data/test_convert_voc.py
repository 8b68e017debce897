"""PASCAL VOC 2012 segmentation PNGs -> COCO json, on small fixture trees in the real VOC2012 layout."""

import json
import shutil

import numpy as np
import pytest
from PIL import Image
from pycocotools import mask as mask_utils

from noisyseg.cli import main
from noisyseg.data.convert import convert_voc
from noisyseg.data.convert.voc import CATEGORIES

H, W = 20, 30
CAT, DOG, PERSON, CAR = 8, 12, 15, 7


def _palette_png(path, array):
    """Save index values as a real palette ("P") PNG, like the VOC files."""
    im = Image.fromarray(np.asarray(array, np.uint8), mode="P")
    im.putpalette([v for i in range(256) for v in (i, (255 - i) % 256, (i * 7) % 256)])
    im.save(path)


def _add_image(root, name, obj, cls):
    Image.fromarray(np.zeros(obj.shape + (3,), np.uint8)).save(root / "JPEGImages" / f"{name}.jpg")
    _palette_png(root / "SegmentationObject" / f"{name}.png", obj)
    _palette_png(root / "SegmentationClass" / f"{name}.png", cls)


def _tree(root, train=("2007_000032",), val=("2007_000033",)):
    """Image 2007_000032 (20 x 30): a cat with a void boundary column, a mostly-dog instance, a person whose
    class map is partly void, an instance that is void in the class map only, and a background-only one.
    Image 2007_000033 (12 x 16): one car."""
    for d in ("JPEGImages", "SegmentationObject", "SegmentationClass", "ImageSets/Segmentation"):
        (root / d).mkdir(parents=True, exist_ok=True)
    obj = np.zeros((H, W), np.uint8)
    cls = np.zeros((H, W), np.uint8)
    obj[2:8, 2:10] = 1
    cls[2:8, 2:10] = CAT
    obj[2:8, 9] = 255             # boundary column: void in both maps
    cls[2:8, 9] = 255
    obj[10:18, 5:25] = 2          # 160 px, 157 dog + 3 cat -> dog
    cls[10:18, 5:25] = DOG
    cls[10, 5:8] = CAT
    obj[0:4, 20:28] = 3           # person, 32 px, of which 8 are void in the class map only
    cls[0:4, 20:28] = PERSON
    cls[0, 20:28] = 255
    obj[19, 0:3] = 4              # class map says void everywhere: nothing left, dropped
    cls[19, 0:3] = 255
    obj[19, 10:12] = 5            # class map says background: no class, dropped
    _add_image(root, "2007_000032", obj, cls)

    obj2 = np.zeros((12, 16), np.uint8)
    cls2 = np.zeros((12, 16), np.uint8)
    obj2[3:6, 4:12] = 1
    cls2[3:6, 4:12] = CAR
    _add_image(root, "2007_000033", obj2, cls2)
    lists = root / "ImageSets/Segmentation"
    (lists / "train.txt").write_text("".join(f"{n}\n" for n in train))
    (lists / "val.txt").write_text("".join(f"{n}\n" for n in val))


def _load(path):
    return json.loads(path.read_text())


def test_categories_ids_and_supercategories():
    names = ["aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow", "diningtable",
             "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa", "train", "tvmonitor"]
    assert [(c["id"], c["name"]) for c in CATEGORIES] == list(enumerate(names, 1))
    groups = {c["name"]: c["supercategory"] for c in CATEGORIES}
    assert {n for n, g in groups.items() if g == "vehicle"} == {"aeroplane", "bicycle", "boat", "bus", "car",
                                                                "motorbike", "train"}
    assert {n for n, g in groups.items() if g == "animal"} == {"bird", "cat", "cow", "dog", "horse", "sheep"}
    assert {n for n, g in groups.items() if g == "indoor"} == {"bottle", "chair", "diningtable", "pottedplant",
                                                               "sofa", "tvmonitor"}
    assert groups["person"] == "person"


def test_instances_majority_class_and_void(tmp_path, capsys):
    root = tmp_path / "VOC2012"
    _tree(root)
    paths = convert_voc(root, tmp_path / "out", progress=False)
    assert paths == {"train": tmp_path / "out" / "train.json", "val": tmp_path / "out" / "val.json"}
    coco = _load(paths["train"])
    assert coco["categories"] == CATEGORIES
    assert coco["images"] == [{"id": 1, "file_name": "2007_000032.jpg", "height": H, "width": W}]
    cat, dog, person = coco["annotations"]
    assert [a["id"] for a in (cat, dog, person)] == [1, 2, 3]
    assert all(a["image_id"] == 1 and a["iscrowd"] == 0 for a in (cat, dog, person))

    assert cat["category_id"] == CAT and cat["area"] == 6 * 7 and cat["bbox"] == [2.0, 2.0, 7.0, 6.0]
    assert dog["category_id"] == DOG and dog["area"] == 8 * 20 and dog["bbox"] == [5.0, 10.0, 20.0, 8.0]
    assert person["category_id"] == PERSON and person["area"] == 3 * 8 and person["bbox"] == [20.0, 1.0, 8.0, 3.0]

    expected = {id(cat): (slice(2, 8), slice(2, 9)), id(dog): (slice(10, 18), slice(5, 25)),
                id(person): (slice(1, 4), slice(20, 28))}
    for ann in (cat, dog, person):
        want = np.zeros((H, W), np.uint8)
        want[expected[id(ann)]] = 1
        assert isinstance(ann["segmentation"]["counts"], str) and ann["segmentation"]["size"] == [H, W]
        np.testing.assert_array_equal(mask_utils.decode(ann["segmentation"]), want)

    val = _load(paths["val"])
    assert val["images"] == [{"id": 1, "file_name": "2007_000033.jpg", "height": 12, "width": 16}]
    assert [(a["category_id"], a["area"], a["bbox"]) for a in val["annotations"]] == [(CAR, 24, [4.0, 3.0, 8.0, 3.0])]

    out = capsys.readouterr().out
    assert "[train] 1 images, 3 instances" in out and "cat 1" in out and "dog 1" in out and "person 1" in out
    assert "2 dropped" in out
    assert "[val] 1 images, 1 instances" in out and "0 dropped" in out


def test_image_ids_follow_the_split_list(tmp_path):
    root = tmp_path / "VOC2012"
    _tree(root, train=("2007_000033", "2007_000032"))
    coco = _load(convert_voc(root, tmp_path / "out", splits=["train"], progress=False)["train"])
    assert [(i["id"], i["file_name"]) for i in coco["images"]] == [(1, "2007_000033.jpg"), (2, "2007_000032.jpg")]
    assert [(a["id"], a["image_id"], a["category_id"]) for a in coco["annotations"]] == [
        (1, 1, CAR), (2, 2, CAT), (3, 2, DOG), (4, 2, PERSON)]


def test_tie_warns_and_takes_lower_class(tmp_path, capsys):
    root = tmp_path / "VOC2012"
    _tree(root)
    obj = np.zeros((4, 4), np.uint8)
    cls = np.zeros((4, 4), np.uint8)
    obj[0:2, 0:4] = 1
    cls[0, 0:4] = DOG
    cls[1, 0:4] = CAT
    _add_image(root, "2008_000001", obj, cls)
    (root / "ImageSets/Segmentation/train.txt").write_text("2008_000001\n")
    coco = _load(convert_voc(root, tmp_path / "out", splits=["train"], progress=False)["train"])
    assert [a["category_id"] for a in coco["annotations"]] == [CAT]
    err = capsys.readouterr().err
    assert "warning" in err and "tie" in err and "2008_000001" in err


def test_cli_success_and_progress_on_stderr(tmp_path, capsys):
    root = tmp_path / "VOC2012"
    _tree(root)
    assert main(["convert", "voc", str(root), "-o", str(tmp_path / "o"), "--splits", "val"]) == 0
    cap = capsys.readouterr()
    assert f"wrote {tmp_path / 'o' / 'val.json'}" in cap.out
    assert "voc val" in cap.err  # the tqdm bar
    assert not (tmp_path / "o" / "train.json").exists()


def _one_line_error(capsys, argv, *needles):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1, err
    assert "Traceback" not in err
    for needle in needles:
        assert needle in err, err


@pytest.mark.parametrize("folder", ["JPEGImages", "SegmentationObject", "SegmentationClass",
                                    "ImageSets/Segmentation"])
def test_missing_folder_is_named(tmp_path, capsys, folder):
    root = tmp_path / "VOC2012"
    _tree(root)
    shutil.rmtree(root / folder)
    _one_line_error(capsys, ["convert", "voc", str(root), "-o", str(tmp_path / "o"), "--no-progress"],
                    f"{folder} folder not found")
    assert not (tmp_path / "o").exists()


def test_missing_root(tmp_path, capsys):
    _one_line_error(capsys, ["convert", "voc", str(tmp_path / "nothing"), "-o", str(tmp_path / "o")],
                    str(tmp_path / "nothing"), "VOC2012 folder not found")


@pytest.mark.parametrize("remove", ["JPEGImages/2007_000033.jpg", "SegmentationObject/2007_000033.png",
                                    "SegmentationClass/2007_000033.png", "ImageSets/Segmentation/val.txt"])
def test_missing_listed_files_are_named(tmp_path, capsys, remove):
    root = tmp_path / "VOC2012"
    _tree(root)
    (root / remove).unlink()
    _one_line_error(capsys, ["convert", "voc", str(root), "-o", str(tmp_path / "o"), "--no-progress"],
                    str(root / remove), "not found")
    assert not (tmp_path / "o" / "val.json").exists()


def test_bad_pngs_are_named(tmp_path, capsys):
    root = tmp_path / "VOC2012"
    _tree(root, train=("2007_000033",))
    cls_png = root / "SegmentationClass/2007_000033.png"
    argv = ["convert", "voc", str(root), "-o", str(tmp_path / "o"), "--splits", "train", "--no-progress"]

    bad = np.zeros((12, 16), np.uint8)
    bad[0, 0] = 42
    _palette_png(cls_png, bad)
    _one_line_error(capsys, argv, str(cls_png), "class index 42")

    _palette_png(cls_png, np.zeros((5, 5), np.uint8))
    _one_line_error(capsys, argv, str(cls_png), "differs from")

    Image.fromarray(np.zeros((12, 16, 3), np.uint8)).save(cls_png)
    _one_line_error(capsys, argv, str(cls_png), "expected a palette")

    cls_png.write_bytes(b"not a png")
    _one_line_error(capsys, argv, str(cls_png), "cannot read")
    assert not (tmp_path / "o").exists()
