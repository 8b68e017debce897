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
