"""Cityscapes gtFine polygons -> COCO json, on small fixture trees in the real folder layout."""

import json
import shutil

import numpy as np
import pytest
from PIL import Image, ImageDraw
from pycocotools import mask as mask_utils

from noisyseg.cli import main
from noisyseg.data.convert import convert_cityscapes
from noisyseg.data.convert.cityscapes import CATEGORIES, fill_polygon

H, W = 40, 60


def _write_frame(root, split, city, frame, objects, size=(H, W)):
    """One image + polygons json; ``objects`` is [(label, polygon)] in drawing order."""
    h, w = size
    stem = f"{city}_000000_{frame:06d}"
    img_dir = root / "leftImg8bit" / split / city
    gt_dir = root / "gtFine" / split / city
    img_dir.mkdir(parents=True, exist_ok=True)
    gt_dir.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.zeros((h, w, 3), np.uint8)).save(img_dir / f"{stem}_leftImg8bit.png")
    gt = gt_dir / f"{stem}_gtFine_polygons.json"
    gt.write_text(json.dumps({"imgHeight": h, "imgWidth": w,
                              "objects": [{"label": label, "polygon": poly} for label, poly in objects]}))
    return gt


def _rect(x0, y0, x1, y1):
    """Corners of an axis-aligned rectangle; covers columns x0..x1 and rows y0..y1 inclusive."""
    return [[x0, y0], [x1, y0], [x1, y1], [x0, y1]]


def _box_mask(x0, y0, x1, y1, size=(H, W)):
    m = np.zeros(size, np.uint8)
    m[y0:y1 + 1, x0:x1 + 1] = 1
    return m


def _load(path):
    return json.loads(path.read_text())


def test_categories_ids_and_supercategories():
    assert CATEGORIES == [
        {"id": 1, "name": "person", "supercategory": "human"},
        {"id": 2, "name": "rider", "supercategory": "human"},
        {"id": 3, "name": "car", "supercategory": "vehicle"},
        {"id": 4, "name": "truck", "supercategory": "vehicle"},
        {"id": 5, "name": "bus", "supercategory": "vehicle"},
        {"id": 6, "name": "train", "supercategory": "vehicle"},
        {"id": 7, "name": "motorcycle", "supercategory": "vehicle"},
        {"id": 8, "name": "bicycle", "supercategory": "vehicle"},
    ]


def test_visible_masks_occlusion_groups_and_out_of_scope(tmp_path):
    root = tmp_path / "cs"
    _write_frame(root, "train", "aachen", 19, [
        ("road", _rect(0, 0, 59, 39)),             # stuff, drawn first: occludes nothing that matters
        ("car", _rect(10, 10, 29, 19)),            # 20 x 10 = 200 px
        ("rider", _rect(25, 5, 34, 24)),           # 10 x 20 = 200 px, covers car cols 25..29 rows 10..19 (50 px)
        ("license plate", _rect(12, 17, 15, 18)),  # out of scope, but hides 4 x 2 = 8 more car pixels
        ("person", _rect(40, 30, 49, 37)),         # 10 x 8 = 80 px
        ("persongroup", _rect(45, 30, 54, 39)),    # a group: no annotation, hides person cols 45..49 (5 x 8 = 40 px)
        ("cargroup", _rect(0, 30, 5, 35)),         # a group alone: nothing
        ("sky", _rect(0, 0, 5, 3)),                # stuff after everything: touches no instance
    ])
    paths = convert_cityscapes(root, tmp_path / "out", splits=["train"], progress=False)
    assert paths == {"train": tmp_path / "out" / "train.json"}
    coco = _load(paths["train"])
    assert coco["categories"] == CATEGORIES
    assert coco["images"] == [{"id": 1, "file_name": "train/aachen/aachen_000000_000019_leftImg8bit.png",
                               "height": H, "width": W}]
    car, rider, person = coco["annotations"]  # drawing order
    assert [a["category_id"] for a in (car, rider, person)] == [3, 2, 1]
    assert [a["id"] for a in (car, rider, person)] == [1, 2, 3]
    assert all(a["image_id"] == 1 and a["iscrowd"] == 0 for a in (car, rider, person))

    assert rider["area"] == 200 and rider["bbox"] == [25.0, 5.0, 10.0, 20.0]
    assert car["area"] == 200 - 50 - 8 and car["bbox"] == [10.0, 10.0, 15.0, 10.0]
    assert person["area"] == 80 - 40 and person["bbox"] == [40.0, 30.0, 5.0, 8.0]

    expected_car = _box_mask(10, 10, 24, 19)
    expected_car[17:19, 12:16] = 0
    for ann, expected in [(car, expected_car), (rider, _box_mask(25, 5, 34, 24)), (person, _box_mask(40, 30, 44, 37))]:
        assert isinstance(ann["segmentation"]["counts"], str)
        assert ann["segmentation"]["size"] == [H, W]
        decoded = mask_utils.decode(ann["segmentation"])
        np.testing.assert_array_equal(decoded, expected)
        assert int(decoded.sum()) == ann["area"]


def test_splits_cities_file_names_and_ids(tmp_path):
    root = tmp_path / "cs"
    _write_frame(root, "train", "bremen", 5, [("truck", _rect(0, 0, 9, 9))])
    _write_frame(root, "train", "aachen", 7, [("bus", _rect(0, 0, 4, 4)), ("train", _rect(20, 20, 24, 29))])
    _write_frame(root, "val", "lindau", 1, [("motorcycle", _rect(1, 1, 2, 3)), ("bicycle", _rect(5, 5, 5, 5))],
                 size=(16, 24))
    paths = convert_cityscapes(root, tmp_path / "out", progress=False)
    assert set(paths) == {"train", "val"}
    train, val = _load(paths["train"]), _load(paths["val"])
    assert [(i["id"], i["file_name"]) for i in train["images"]] == [
        (1, "train/aachen/aachen_000000_000007_leftImg8bit.png"),
        (2, "train/bremen/bremen_000000_000005_leftImg8bit.png")]
    assert [(a["id"], a["image_id"], a["category_id"], a["area"]) for a in train["annotations"]] == [
        (1, 1, 5, 25), (2, 1, 6, 50), (3, 2, 4, 100)]
    assert val["images"] == [{"id": 1, "file_name": "val/lindau/lindau_000000_000001_leftImg8bit.png",
                              "height": 16, "width": 24}]
    assert [(a["category_id"], a["area"], a["bbox"]) for a in val["annotations"]] == [
        (7, 6, [1.0, 1.0, 2.0, 3.0]), (8, 1, [5.0, 5.0, 1.0, 1.0])]  # a degenerate 1-px "rectangle" still counts
    # every written file referenced in file_name exists under leftImg8bit
    for img in train["images"] + val["images"]:
        assert (root / "leftImg8bit" / img["file_name"]).is_file()


def test_hidden_instances_dropped_and_summary(tmp_path, capsys):
    root = tmp_path / "cs"
    _write_frame(root, "train", "aachen", 1, [
        ("person", _rect(5, 5, 9, 9)),        # entirely covered by the car below
        ("rider", [[3, 3], [8, 3]]),          # fewer than 3 vertices: no area
        ("bicycle", _rect(70, 50, 80, 60)),   # entirely outside the image
        ("car", _rect(0, 0, 20, 20)),
    ])
    gt = root / "gtFine/train/aachen/aachen_000000_000001_gtFine_polygons.json"
    data = _load(gt)
    data["objects"].append({"label": "car", "polygon": _rect(0, 0, 59, 39), "deleted": 1})  # skipped entirely
    gt.write_text(json.dumps(data))
    paths = convert_cityscapes(root, tmp_path / "out", splits=("train",), progress=False)
    anns = _load(paths["train"])["annotations"]
    assert [(a["category_id"], a["area"]) for a in anns] == [(3, 21 * 21)]
    out = capsys.readouterr().out
    assert "[train] 1 images, 1 instances" in out
    assert "car 1" in out and "person 0" in out
    assert "3 dropped" in out


def test_clipping_and_vertex_rounding(tmp_path):
    root = tmp_path / "cs"
    _write_frame(root, "train", "aachen", 1, [
        ("bus", _rect(-5, -3, 4, 2)),                           # clipped to cols 0..4, rows 0..2
        ("truck", _rect(55.4, 35.6, 70, 45)),                   # rounds to (55, 36), clipped at the far corner
    ])
    ann_bus, ann_truck = _load(convert_cityscapes(root, tmp_path / "o", splits=["train"], progress=False)["train"])[
        "annotations"]
    assert ann_bus["area"] == 5 * 3 and ann_bus["bbox"] == [0.0, 0.0, 5.0, 3.0]
    assert ann_truck["area"] == 5 * 4 and ann_truck["bbox"] == [55.0, 36.0, 5.0, 4.0]


def test_cropped_fill_matches_full_image_fill():
    rng = np.random.default_rng(0)
    h, w = 30, 40
    for _ in range(200):
        n = int(rng.integers(3, 8))
        pts = [(int(x), int(y)) for x, y in zip(rng.integers(-10, w + 10, n), rng.integers(-10, h + 10, n))]
        canvas = Image.new("L", (w, h), 0)
        ImageDraw.Draw(canvas).polygon(pts, fill=1, outline=1)
        full = np.asarray(canvas, dtype=bool)
        got = np.zeros((h, w), bool)
        res = fill_polygon(pts, h, w)
        if res is not None:
            y0, x0, crop = res
            got[y0:y0 + crop.shape[0], x0:x0 + crop.shape[1]] = crop
        np.testing.assert_array_equal(got, full)


def test_cli_success_and_progress_on_stderr(tmp_path, capsys):
    root = tmp_path / "cs"
    _write_frame(root, "train", "aachen", 1, [("car", _rect(0, 0, 3, 3))])
    _write_frame(root, "val", "lindau", 1, [("car", _rect(0, 0, 3, 3))])
    assert main(["convert", "cityscapes", str(root), "-o", str(tmp_path / "o"), "--splits", "train,val"]) == 0
    cap = capsys.readouterr()
    assert "[train] 1 images, 1 instances" in cap.out and "[val] 1 images" in cap.out
    assert f"wrote {tmp_path / 'o' / 'train.json'}" in cap.out
    assert "cityscapes train" in cap.err  # the tqdm bar
    assert (tmp_path / "o" / "val.json").is_file()


def _one_line_error(capsys, argv, *needles):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1, err
    assert "Traceback" not in err
    for needle in needles:
        assert needle in err, err
    return err


@pytest.mark.parametrize("remove, message", [
    ("", "Cityscapes root folder not found"),
    ("leftImg8bit", "leftImg8bit folder not found"),
    ("gtFine", "gtFine folder not found"),
    ("gtFine/val", "gtFine/val folder not found"),
    ("leftImg8bit/val", "leftImg8bit/val folder not found"),
])
def test_missing_folders(tmp_path, capsys, remove, message):
    root = tmp_path / "cs"
    for split in ("train", "val"):
        _write_frame(root, split, "aachen", 1, [("car", _rect(0, 0, 3, 3))])
    shutil.rmtree(root / remove)
    _one_line_error(capsys, ["convert", "cityscapes", str(root), "-o", str(tmp_path / "o"), "--no-progress"],
                    str(root / remove) if remove else str(root), message)


def test_missing_image_names_the_file(tmp_path, capsys):
    root = tmp_path / "cs"
    _write_frame(root, "train", "aachen", 1, [("car", _rect(0, 0, 3, 3))])
    image = root / "leftImg8bit/train/aachen/aachen_000000_000001_leftImg8bit.png"
    image.unlink()
    _one_line_error(capsys, ["convert", "cityscapes", str(root), "-o", str(tmp_path / "o"), "--splits", "train",
                             "--no-progress"], str(image), "image not found")
    assert not (tmp_path / "o" / "train.json").exists()


def test_empty_split_is_an_error(tmp_path, capsys):
    root = tmp_path / "cs"
    _write_frame(root, "train", "aachen", 1, [("car", _rect(0, 0, 3, 3))])
    (root / "gtFine" / "val").mkdir()
    (root / "leftImg8bit" / "val").mkdir()
    _one_line_error(capsys, ["convert", "cityscapes", str(root), "-o", str(tmp_path / "o"), "--no-progress"],
                    "no {city}/*_gtFine_polygons.json files")


@pytest.mark.parametrize("content, message", [
    ("{not json", "cannot read the polygons json"),
    ("[]", "expected a JSON object"),
    ('{"imgHeight": 4, "imgWidth": 4}', "missing key 'objects'"),
    ('{"imgHeight": 0, "imgWidth": 4, "objects": []}', "'imgHeight' must be a positive integer"),
    ('{"imgHeight": 4, "imgWidth": 4, "objects": {}}', "'objects' must be a list"),
    ('{"imgHeight": 4, "imgWidth": 4, "objects": [{"polygon": []}]}', "objects[0]: expected an object"),
    ('{"imgHeight": 4, "imgWidth": 4, "objects": [{"label": "car", "polygon": [[1, 2, 3]]}]}',
     "objects[0]: 'polygon' must be a list of [x, y] number pairs"),
    ('{"imgHeight": 4, "imgWidth": 4, "objects": [{"label": "car", "polygon": [["a", 1]]}]}',
     "number pairs"),
])
def test_malformed_polygons_json(tmp_path, capsys, content, message):
    root = tmp_path / "cs"
    _write_frame(root, "train", "aachen", 1, [("car", _rect(0, 0, 3, 3))])
    bad = _write_frame(root, "train", "aachen", 2, [])
    bad.write_text(content)
    _one_line_error(capsys, ["convert", "cityscapes", str(root), "-o", str(tmp_path / "o"), "--splits", "train",
                             "--no-progress"], str(bad), message)
    assert not (tmp_path / "o").exists() or not any((tmp_path / "o").iterdir())  # nothing half-written


def test_bad_split_list(tmp_path, capsys):
    root = tmp_path / "cs"
    _write_frame(root, "train", "aachen", 1, [("car", _rect(0, 0, 3, 3))])
    _one_line_error(capsys, ["convert", "cityscapes", str(root), "-o", str(tmp_path / "o"), "--splits", ","],
                    "no splits given")
    _one_line_error(capsys, ["convert", "cityscapes", str(root), "-o", str(tmp_path / "o"), "--splits", "../x"],
                    "bad split name")


def test_a_bad_later_split_leaves_no_earlier_split_written(tmp_path, capsys):
    root = tmp_path / "cs"
    _write_frame(root, "train", "aachen", 1, [("car", _rect(0, 0, 3, 3))])
    bad = _write_frame(root, "val", "lindau", 1, [])
    bad.write_text("{not json")
    out = tmp_path / "o"
    _one_line_error(capsys, ["convert", "cityscapes", str(root), "-o", str(out), "--no-progress"], str(bad))
    assert not out.exists()  # train converted, but nothing is written until every split has


@pytest.mark.parametrize("case, message", [
    ("out_is_a_file", "the output folder is a file, expected a folder"),
    ("split_json_is_a_folder", "the val json is a folder, expected a file path"),
])
def test_output_problems_are_found_before_reading_the_data(tmp_path, capsys, case, message):
    out = tmp_path / "o"
    if case == "out_is_a_file":
        out.write_text("x")
    else:
        (out / "val.json").mkdir(parents=True)
    # no Cityscapes tree at all: the output is checked first
    _one_line_error(capsys, ["convert", "cityscapes", str(tmp_path / "missing"), "-o", str(out), "--no-progress"],
                    str(out), message)
