"""noisyseg.data.validate.validate_coco: each malformed field is one line naming the entry and the field."""

import copy
import math
import subprocess
import sys

import numpy as np
import pytest

from noisyseg.data.validate import validate_coco
from noisyseg.errors import NoisysegError


def good() -> dict:
    return {
        "images": [{"id": 1, "file_name": "a.png", "height": 40, "width": 60},
                   {"id": 2, "file_name": "b.png", "height": 30, "width": 30}],
        "annotations": [
            {"id": 10, "image_id": 1, "category_id": 3, "bbox": [1, 2, 10.5, 5], "area": 50.0, "iscrowd": 0,
             "segmentation": [[1, 2, 11, 2, 11, 7]]},
            {"id": 11, "image_id": 2, "category_id": 4, "bbox": [0, 0, 30, 30], "iscrowd": 1,
             "segmentation": {"size": [30, 30], "counts": "\\9\\9\\9"}, "clean_category_id": 3, "class_ignored": True},
            {"id": 12, "image_id": 2, "category_id": 3, "bbox": [-3, 28, 4, 4],  # a little outside: fine
             "segmentation": {"size": [30, 30], "counts": [0, 900]}},
        ],
        "categories": [{"id": 3, "name": "a"}, {"id": 4, "name": "b"}],
    }


def edited(path: str, value) -> dict:
    """good() with the field at ``path`` ("annotations.1.bbox") set to ``value`` (or removed for ...)."""
    coco = good()
    *parents, last = path.split(".")
    node = coco
    for p in parents:
        node = node[int(p)] if p.isdigit() else node[p]
    key = int(last) if last.isdigit() else last
    if value is ...:
        del node[key]
    else:
        node[key] = value
    return coco


def test_a_good_file_passes_both_modes():
    validate_coco(good())
    validate_coco(good(), dataset=False)
    coco = good()
    validate_coco(coco)
    assert coco == good()  # not modified


CASES = [
    # (path, value, message) -- message is the whole error line
    ("annotations.1.bbox", [1, 2, 3], "annotations[1] (id 11) has bbox [1, 2, 3], expected a list of 4 numbers "
                                      "[x, y, width, height]"),
    ("annotations.1.bbox", [1, 2, 3, "4"], "annotations[1] (id 11) has bbox [1, 2, 3, '4'], expected a list of 4 "
                                           "numbers [x, y, width, height]"),
    ("annotations.1.bbox", [1, 2, True, 4], "annotations[1] (id 11) has bbox [1, 2, True, 4], expected a list of 4 "
                                            "numbers [x, y, width, height]"),
    ("annotations.1.bbox", [0, 0, math.nan, 4], "annotations[1] (id 11) has bbox [0, 0, nan, 4]: holds a NaN or "
                                                "infinite number; expected [x, y, width, height] in pixels"),
    ("annotations.0.bbox", [0, math.inf, 3, 4], "annotations[0] (id 10) has bbox [0, inf, 3, 4]: holds a NaN or "
                                                "infinite number; expected [x, y, width, height] in pixels"),
    ("annotations.0.bbox", [0, 0, 10**400, 4], None),  # too large for a float: infinite
    ("annotations.0.bbox", [0, 0, 1e9, 4], "annotations[0] (id 10) has bbox [0, 0, 1000000000.0, 4]: reaches far "
                                           "outside its 60x40 image (a box must lie within one image width and "
                                           "height of the image's edges); expected [x, y, width, height] in pixels"),
    ("annotations.2.bbox", [-31, 0, 5, 5], "annotations[2] (id 12) has bbox [-31, 0, 5, 5]: reaches far outside "
                                           "its 30x30 image (a box must lie within one image width and height of "
                                           "the image's edges); expected [x, y, width, height] in pixels"),
    ("annotations.0.bbox", [5, 5, -2, 4], "annotations[0] (id 10) has bbox [5, 5, -2, 4]: has a negative width or "
                                          "height; expected [x, y, width, height] in pixels"),
    ("annotations.0.bbox", ..., "annotations[0] has no 'bbox'"),
    ("annotations.2.id", 10, "annotations[2] repeats annotation id 10 (already used by annotations[0])"),
    ("annotations.2.id", "12", "annotations[2] has id '12', expected an integer"),
    ("images.1.id", 1, "images[1] repeats image id 1 (already used by images[0])"),
    ("categories.1.id", 3, "categories[1] repeats category id 3 (already used by categories[0])"),
    ("categories.1.id", 4.0, "categories[1] has id 4.0, expected an integer"),
    ("annotations.0.category_id", True, "annotations[0] (id 10) has category_id True, not a listed category "
                                        "(category ids are integers, not bool)"),
    ("annotations.0.category_id", "3", "annotations[0] (id 10) has category_id '3', not a listed category "
                                       "(category ids are integers, not str)"),
    ("annotations.0.category_id", 7, "annotations[0] (id 10) has category_id 7, not a listed category"),
    ("annotations.1.clean_category_id", 8, "annotations[1] (id 11) has clean_category_id 8, not a listed category"),
    ("annotations.0.image_id", 9, "annotations[0] (id 10) has image_id 9, not a listed image"),
    ("annotations.0.image_id", "1", "annotations[0] (id 10) has image_id '1', expected an integer image id"),
    ("images.0.width", 60.5, "images[0] (id 1) has width 60.5, expected a positive integer"),
    ("images.0.height", "40", "images[0] (id 1) has height '40', expected a positive integer"),
    ("images.0.height", 0, "images[0] (id 1) has height 0, expected a positive integer"),
    ("images.0.file_name", ..., "images[0] has no 'file_name'"),
    ("images.0.file_name", 5, "images[0] (id 1) has file_name 5, expected a file path"),
    ("annotations.0.iscrowd", 2, "annotations[0] (id 10) has iscrowd 2, expected 0 or 1"),
    ("annotations.0.area", math.nan, "annotations[0] (id 10) has area nan, expected a finite number >= 0"),
    ("annotations.1.class_ignored", "yes", "annotations[1] (id 11) has class_ignored 'yes', expected true or false"),
    ("annotations.1.segmentation", {"size": [40, 60], "counts": "x"},
     "annotations[1] (id 11): segmentation RLE has size [40, 60], but its image is 30x30 (height x width)"),
    ("annotations.1.segmentation", {"counts": "x"}, "annotations[1] (id 11): segmentation RLE needs 'size' "
                                                    "[height, width]"),
    ("annotations.0.segmentation", [[1, 2, 3]], "annotations[0] (id 10): segmentation[0] must be a polygon "
                                                "[x1, y1, x2, y2, ...] of an even number of numbers"),
    ("annotations.0.segmentation", [[1, 2, 3, math.nan, 5, 6]], "annotations[0] (id 10): segmentation[0] holds a "
                                                                "NaN or infinite coordinate"),
    # malformed RLE: pycocotools would decode these into uninitialised memory or read past the string
    ("annotations.1.segmentation", {"size": [30, 30], "counts": ""},
     "annotations[1] (id 11): segmentation RLE has runs covering 0 pixels, expected runs of 0s and 1s covering "
     "its 30x30 = 900 pixels"),
    ("annotations.1.segmentation", {"size": [30, 30], "counts": "PPYo0"},
     "annotations[1] (id 11): segmentation RLE has runs covering 1025024 pixels, expected runs of 0s and 1s "
     "covering its 30x30 = 900 pixels"),
    ("annotations.1.segmentation", {"size": [30, 30], "counts": "\\9\\9\\"},
     "annotations[1] (id 11): segmentation RLE has malformed counts, expected runs of 0s and 1s covering its "
     "30x30 = 900 pixels"),
    ("annotations.1.segmentation", {"size": [30, 30], "counts": "\\9 9"},
     "annotations[1] (id 11): segmentation RLE has malformed counts, expected runs of 0s and 1s covering its "
     "30x30 = 900 pixels"),
    ("annotations.2.segmentation", {"size": [30, 30], "counts": [0, 899]},
     "annotations[2] (id 12): segmentation RLE has runs covering 899 pixels, expected runs of 0s and 1s "
     "covering its 30x30 = 900 pixels"),
    ("annotations.2.segmentation", {"size": [30, 30], "counts": [1000, -100]},
     "annotations[2] (id 12): segmentation RLE has malformed counts, expected runs of 0s and 1s covering its "
     "30x30 = 900 pixels"),
    # fewer than 3 points: pycocotools fails on it (or takes 4 numbers for a box) inside a data worker
    ("annotations.0.segmentation", [[1, 2, 3, 4]], "annotations[0] (id 10): segmentation[0] has 4 numbers, "
                                                   "expected a polygon of at least 3 points (6 numbers)"),
    ("annotations.0.segmentation", [[1, 2, 11, 2, 11, 7], []],
     "annotations[0] (id 10): segmentation[1] has 0 numbers, expected a polygon of at least 3 points (6 numbers)"),
    ("annotations.0.segmentation", [[1, 2, 3, 10**400, 5, 6]], "annotations[0] (id 10): segmentation[0] holds a "
                                                               "NaN or infinite coordinate"),
    # ids travel as int64: one past the range fails after training otherwise
    ("images.1.id", 2**63, "images[1] has id 9223372036854775808, expected an integer in -2^63 .. 2^63-1"),
    ("categories.1.id", 2**64 + 4, "categories[1] has id 18446744073709551620, expected an integer in "
                                   "-2^63 .. 2^63-1"),
    ("annotations.2.id", -(2**63) - 1, "annotations[2] has id -9223372036854775809, expected an integer in "
                                       "-2^63 .. 2^63-1"),
    ("annotations.0.segmentation", "oops", "annotations[0] (id 10): segmentation must be a polygon list or an RLE "
                                           "object, found str"),
    ("annotations.0", 7, "annotations[0] has no 'category_id' (found 7, not an object)"),
    ("categories", [], "'categories' is empty"),
    ("images", {}, "'images' must be a list"),
    ("info", "x", "'info' must be an object"),
]


@pytest.mark.parametrize("path, value, message", CASES)
def test_each_problem_is_one_exact_line(path, value, message):
    with pytest.raises(NoisysegError) as e:
        validate_coco(edited(path, value))
    if message is None:
        assert "holds a NaN or infinite number" in str(e.value)
    else:
        assert str(e.value) == message
    assert "\n" not in str(e.value)


def test_noise_mode_needs_less_but_checks_what_is_there():
    coco = {"annotations": [{"id": 1, "category_id": 1}, {"id": 2, "category_id": 2}],
            "categories": [{"id": 1, "name": "a"}, {"id": 2, "name": "b"}]}
    validate_coco(coco, dataset=False)  # no images, no boxes: fine for noise
    with pytest.raises(NoisysegError, match="missing 'images'"):
        validate_coco(coco)
    with pytest.raises(NoisysegError, match=r"categories\[0\] needs an 'id' and a 'name'"):
        validate_coco({**coco, "categories": [{"id": 1}]}, dataset=False)
    # noise reads neither masks nor file names nor needs boxes; an empty category list fails later in noise
    not_for_noise = {"annotations.0.segmentation", "annotations.1.segmentation", "annotations.2.segmentation",
                     "images.0.file_name",
                     "categories", "annotations.0"}
    checked = 0
    for path, value, message in CASES:
        if path in not_for_noise or message is None or value is ...:
            continue
        with pytest.raises(NoisysegError) as e:
            validate_coco(edited(path, value), dataset=False)
        assert str(e.value) == message, path
        checked += 1
    assert checked >= 25


def test_largest_int64_ids_are_accepted():
    coco = good()
    coco["images"][1]["id"] = 2**63 - 1
    coco["annotations"][1]["image_id"] = coco["annotations"][2]["image_id"] = 2**63 - 1
    coco["categories"][1]["id"] = -(2**63)
    coco["annotations"][1]["category_id"] = -(2**63)
    validate_coco(coco)


def test_boxes_come_back_as_an_array_in_file_order():
    boxes = validate_coco(good())
    assert boxes.dtype == np.float64 and boxes.shape == (3, 4)
    np.testing.assert_array_equal(boxes, [[1, 2, 10.5, 5], [0, 0, 30, 30], [-3, 28, 4, 4]])
    coco = good()
    del coco["annotations"][1]["bbox"]
    assert np.isnan(validate_coco(coco, dataset=False)[1]).all()


def test_rle_counts_agree_with_pycocotools_on_random_masks():
    from pycocotools import mask as mask_utils

    from noisyseg.data.validate import rle_counts

    rng = np.random.default_rng(0)
    for t in range(200):
        h, w = rng.integers(1, 80, 2)
        m = (rng.random((h, w)) < rng.random()).astype(np.uint8)
        if t % 5 == 0:
            m[:] = t % 2
        runs = rle_counts(mask_utils.encode(np.asfortranarray(m))["counts"])
        flat = np.repeat(np.arange(len(runs)) % 2, runs).astype(np.uint8)  # column-major, starting with 0s
        np.testing.assert_array_equal(flat.reshape(w, h).T, m)


def test_numpy_numbers_are_accepted():
    coco = good()
    coco["annotations"][0]["bbox"] = [np.float32(1), np.int64(2), np.float64(3), 4]
    coco["annotations"][0]["category_id"] = np.int64(3)
    validate_coco(coco)


def test_the_module_does_not_import_torch():
    code = "import sys, noisyseg.data.validate; assert 'torch' not in sys.modules"
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0


def test_first_problem_in_file_order_is_reported():
    coco = good()
    coco["annotations"][0]["bbox"] = [0, 0, math.nan, 1]
    coco["annotations"][2]["category_id"] = 99
    # the category check runs in the pass over the annotations, the numbers after it: both are reported
    # one at a time, the structural one first
    with pytest.raises(NoisysegError, match=r"annotations\[2\] \(id 12\) has category_id 99"):
        validate_coco(coco)
    coco["annotations"][2]["category_id"] = 3
    with pytest.raises(NoisysegError, match=r"annotations\[0\] \(id 10\) has bbox"):
        validate_coco(copy.deepcopy(coco))
