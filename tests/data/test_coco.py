import json

import numpy as np
import pytest
import torch

from noisyseg.data.coco import CocoInstances, LabelMap, collate, decode_mask
from noisyseg.errors import NoisysegError


def test_label_map_is_sorted_by_category_id_and_round_trips():
    lm = LabelMap.from_categories([{"id": 9, "name": "c"}, {"id": 2, "name": "a"}, {"id": 5, "name": "b"}])
    assert lm.category_ids == (2, 5, 9) and lm.names == ("a", "b", "c")
    assert [lm.label_of(i) for i in (2, 5, 9)] == [1, 2, 3]
    assert lm.num_classes == 3
    assert LabelMap.from_dict(lm.to_dict()) == lm


def test_every_mask_format_decodes_to_the_drawn_rectangle(tiny_coco):
    coco = json.loads(tiny_coco["val_json"].read_text())
    formats = set()
    for a in coco["annotations"]:
        seg = a["segmentation"]
        formats.add("poly" if isinstance(seg, list) else "rle" if isinstance(seg["counts"], str) else "raw")
        m = decode_mask(seg, 64, 64)
        x, y, w, h = a["bbox"]
        expected = np.zeros((64, 64), np.uint8)
        expected[y:y + h, x:x + w] = 1
        # pycocotools rasterises polygons with boundary pixels included on one side only
        assert np.abs(m.astype(int) - expected).sum() <= w + h + 1
    assert formats == {"poly", "rle", "raw"}


def test_training_set_drops_crowd_degenerate_and_empty_images(tiny_coco):
    ds = CocoInstances(tiny_coco["train_json"], tiny_coco["image_root"], train=True)
    assert ds.num_crowd == 1 and ds.num_degenerate == 1
    assert len(ds) == 8 and ds.num_skipped_images == 1
    image, target = ds[0]
    assert image.dtype == torch.uint8 and image.shape == (3, 64, 64)
    assert target["boxes"].shape == (2, 4) and target["masks"].shape == (2, 64, 64)
    assert target["labels"].tolist() == [1, 2]  # category ids 2 and 5
    x0, y0, x1, y1 = target["boxes"][0].tolist()
    ys, xs = torch.where(target["masks"][0] > 0)
    assert abs(xs.min().item() - x0) <= 1 and abs(ys.max().item() + 1 - y1) <= 1


def test_evaluation_set_keeps_every_image(tiny_coco):
    ds = CocoInstances(tiny_coco["train_json"], tiny_coco["image_root"], train=False)
    assert len(ds) == 9


def test_clean_labels_are_carried_for_analysis(tiny_coco, tmp_path):
    coco = json.loads(tiny_coco["val_json"].read_text())
    coco["annotations"][0]["clean_category_id"] = 9
    path = tmp_path / "noisy.json"
    path.write_text(json.dumps(coco))
    ds = CocoInstances(path, tiny_coco["image_root"], train=True)
    _, target = ds[0]
    assert target["clean_labels"].tolist() == [3, 2]
    assert target["labels"].tolist() == [1, 2]


def test_collate_keeps_lists():
    images, targets = collate([(1, {"a": 1}), (2, {"a": 2})])
    assert images == [1, 2] and targets == [{"a": 1}, {"a": 2}]


@pytest.mark.parametrize(
    "mutate, message",
    [
        (lambda c: c.pop("annotations"), "missing 'annotations'"),
        (lambda c: c["annotations"][0].update(category_id=77), "category_id 77, not a listed category"),
        (lambda c: c["annotations"][0].update(image_id=12345), "image_id 12345"),
        (lambda c: c["images"][0].pop("file_name"), r"images\[0\] has no 'file_name'"),
        (lambda c: c["images"][0].update(file_name="nope.png"), "image not found"),
    ],
)
def test_bad_files_give_one_line_errors(tiny_coco, tmp_path, mutate, message):
    coco = json.loads(tiny_coco["val_json"].read_text())
    mutate(coco)
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(coco))
    with pytest.raises(NoisysegError, match=message) as e:
        CocoInstances(path, tiny_coco["image_root"], train=True)
    assert "\n" not in str(e.value) and str(path) in str(e.value)


def test_malformed_json_names_the_file(tmp_path, tiny_coco):
    path = tmp_path / "broken.json"
    path.write_text("{not json")
    with pytest.raises(NoisysegError, match="not valid JSON"):
        CocoInstances(path, tiny_coco["image_root"], train=True)


def test_val_with_other_classes_is_refused(tiny_coco, tmp_path):
    train = CocoInstances(tiny_coco["train_json"], tiny_coco["image_root"], train=True)
    coco = json.loads(tiny_coco["val_json"].read_text())
    coco["categories"].append({"id": 40, "name": "extra"})
    path = tmp_path / "val2.json"
    path.write_text(json.dumps(coco))
    with pytest.raises(NoisysegError, match="differ from the training set"):
        CocoInstances(path, tiny_coco["image_root"], train=False, label_map=train.label_map)


def _write(tmp_path, coco, name="edited.json"):
    path = tmp_path / name
    path.write_text(json.dumps(coco))
    return path


def test_class_ignored_is_a_bool_tensor_aligned_with_labels(tiny_coco, tmp_path):
    from noisyseg.data.transforms import DetectionTransform

    coco = json.loads(tiny_coco["val_json"].read_text())
    flagged = {coco["annotations"][1]["id"], coco["annotations"][4]["id"]}
    for a in coco["annotations"]:
        if a["id"] in flagged:
            a["class_ignored"] = True
    coco["annotations"][0]["class_ignored"] = False
    ds = CocoInstances(_write(tmp_path, coco), tiny_coco["image_root"], train=False,
                       transforms=DetectionTransform(hflip_prob=1.0))
    seen = 0
    for idx, r in enumerate(ds.records):
        _, target = ds[idx]
        expected = [a["id"] in flagged for a in r.annotations]
        assert target["class_ignored"].dtype == torch.bool
        assert target["class_ignored"].tolist() == expected  # survives the transform, one per label
        assert len(target["class_ignored"]) == len(target["labels"])
        seen += sum(expected)
    assert seen == 2
    plain = CocoInstances(tiny_coco["val_json"], tiny_coco["image_root"], train=False)
    assert "class_ignored" not in plain[0][1]


def test_load_masks_false_skips_the_masks_and_keeps_the_rest(tiny_coco):
    from noisyseg.data.transforms import DetectionTransform

    full = CocoInstances(tiny_coco["val_json"], tiny_coco["image_root"], train=False, transforms=DetectionTransform())
    light = CocoInstances(tiny_coco["val_json"], tiny_coco["image_root"], train=False, transforms=DetectionTransform(),
                          load_masks=False)
    for i in range(len(full)):
        (im_a, t_a), (im_b, t_b) = full[i], light[i]
        assert "masks" in t_a and "masks" not in t_b
        assert torch.equal(im_a, im_b) and torch.equal(t_a["boxes"], t_b["boxes"])
        assert torch.equal(t_a["labels"], t_b["labels"]) and t_a["image_id"] == t_b["image_id"]


def test_val_with_other_class_names_is_refused(tiny_coco, tmp_path):
    train = CocoInstances(tiny_coco["train_json"], tiny_coco["image_root"], train=True)
    coco = json.loads(tiny_coco["val_json"].read_text())
    coco["categories"][1]["name"] = "pole"
    path = _write(tmp_path, coco, "val_renamed.json")
    with pytest.raises(NoisysegError) as e:
        CocoInstances(path, tiny_coco["image_root"], train=False, label_map=train.label_map)
    assert str(e.value) == (f"{path}: category 5 is named 'pole', but 'bar' in the training set "
                            "(same ids, different class names)")


def test_16_bit_images_are_scaled_in_the_data_set(tiny_coco, tmp_path):
    from PIL import Image

    coco = json.loads(tiny_coco["val_json"].read_text())
    name = coco["images"][0]["file_name"]
    rgb = np.asarray(Image.open(tiny_coco["image_root"] / name).convert("L")).astype(np.uint16) * 257
    Image.fromarray(rgb).save(tiny_coco["image_root"] / name)  # same picture, now a 16-bit greyscale PNG
    ds = CocoInstances(tiny_coco["val_json"], tiny_coco["image_root"], train=False)
    image, _ = ds[0]
    assert image.dtype == torch.uint8
    assert torch.equal(image[0], torch.from_numpy((rgb // 256).astype(np.uint8)))
    assert int(image.float().mean()) < 128  # not the all-white image Pillow's convert("RGB") gives


@pytest.mark.parametrize("mutate, message", [
    (lambda c: c["annotations"][0].update(bbox=[1, 2, 3]), r"annotations\[0\] \(id 1\) has bbox \[1, 2, 3\]"),
    (lambda c: c["annotations"][0].update(bbox=[1, 2, float("nan"), 3]), "holds a NaN or infinite number"),
    (lambda c: c["annotations"][0].update(bbox=[1, 2, 1e9, 3]), "reaches far outside its 64x64 image"),
    (lambda c: c["annotations"][1].update(id=1), r"annotations\[1\] repeats annotation id 1"),
    (lambda c: c["images"][1].update(id=1), r"images\[1\] repeats image id 1 \(already used by images\[0\]\)"),
    (lambda c: c["annotations"][0].update(category_id=True), "not a listed category .category ids are integers, not bool"),
    (lambda c: c["images"][0].update(width=64.5), r"images\[0\] \(id 1\) has width 64.5, expected a positive integer"),
])
def test_malformed_fields_are_refused_when_the_data_set_is_made(tiny_coco, tmp_path, mutate, message):
    coco = json.loads(tiny_coco["train_json"].read_text())
    mutate(coco)
    path = _write(tmp_path, coco)
    with pytest.raises(NoisysegError, match=message) as e:
        CocoInstances(path, tiny_coco["image_root"], train=True)
    assert str(e.value).startswith(f"{path}: ") and "\n" not in str(e.value)
