import json
from pathlib import Path

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
        expected = [a["id"] in flagged for a in coco["annotations"] if a["image_id"] == r.image_id]
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


# ------------------------------------------------------------------------------ flat records (issue 23)


def _reference_targets(json_path, train: bool, load_masks: bool = True) -> list[dict]:
    """Targets as the list-of-dicts data set made them before the flat records (kept here verbatim in
    substance: group the annotations by image in file order, drop crowd and degenerate boxes for
    training, convert each annotation field by field), to compare the flat data set with bit for bit."""
    from pycocotools import mask as mask_utils

    coco = json.loads(json_path.read_text())
    cats = sorted(c["id"] for c in coco["categories"])
    index = {cid: i + 1 for i, cid in enumerate(cats)}
    by_image = {im["id"]: [] for im in coco["images"]}
    for a in coco["annotations"]:
        if train and a.get("iscrowd", 0):
            continue
        x, y, w, h = a["bbox"]
        if train and (w < 1 or h < 1):
            continue
        by_image[a["image_id"]].append(a)
    has_clean = any("clean_category_id" in a for a in coco["annotations"])
    has_ignored = any("class_ignored" in a for a in coco["annotations"])
    out = []
    for im in coco["images"]:
        anns = by_image[im["id"]]
        if train and not anns:
            continue
        n, hh, ww = len(anns), im["height"], im["width"]
        boxes = torch.zeros((n, 4), dtype=torch.float32)
        labels = torch.zeros(n, dtype=torch.int64)
        clean = torch.zeros(n, dtype=torch.int64)
        ignored = torch.zeros(n, dtype=torch.bool)
        masks = np.zeros((n, hh, ww), dtype=np.uint8)
        for i, a in enumerate(anns):
            x, y, w, h = a["bbox"]
            boxes[i] = torch.tensor([x, y, x + w, y + h])
            labels[i] = index[a["category_id"]]
            clean[i] = index.get(a.get("clean_category_id", a["category_id"]), 0)
            ignored[i] = a.get("class_ignored", False)
            seg = a.get("segmentation")
            if seg is None or seg == []:
                continue
            if isinstance(seg, list):
                rle = mask_utils.merge(mask_utils.frPyObjects(seg, hh, ww))
            elif isinstance(seg["counts"], list):
                rle = mask_utils.frPyObjects(seg, hh, ww)
            else:
                rle = seg
            masks[i] = mask_utils.decode(rle)
        t = {"boxes": boxes, "labels": labels, "image_id": im["id"]}
        if load_masks:
            t["masks"] = torch.from_numpy(masks)
        if has_clean:
            t["clean_labels"] = clean
        if has_ignored:
            t["class_ignored"] = ignored
        out.append(t)
    return out


def _varied_coco(tmp_path, tiny_coco) -> Path:
    """The tiny train file (polygons, compressed and uncompressed RLE, crowd, a degenerate box, an image
    without annotations) plus what else a file can hold: fractional boxes and multi-polygon masks,
    annotations out of image order, without id or segmentation, clean ids and class_ignored flags."""
    from helpers import rle

    coco = json.loads(tiny_coco["train_json"].read_text())
    rng = np.random.default_rng(7)
    next_id = 1000
    for k in range(40):
        image = coco["images"][int(rng.integers(len(coco["images"]) - 1))]
        x, y = rng.uniform(0, 40, 2)
        w, h = rng.uniform(0.5, 20, 2)
        a = {"image_id": image["id"], "category_id": int(rng.choice([2, 5, 9])),
             "bbox": [round(float(x), 3), round(float(y), 3), round(float(w), 3), float(h)], "iscrowd": 0}
        kind = k % 5
        if kind < 2:  # one or two polygons of fractional points
            a["segmentation"] = [np.round(rng.uniform(0, 63, 2 * int(rng.integers(3, 9))), 2).tolist()
                                 for _ in range(kind + 1)]
        elif kind == 2:
            a["segmentation"] = rle(rng.random((64, 64)) < 0.3, compressed=bool(k % 2))
        elif kind == 3:
            a["iscrowd"] = int(k % 2)
            a["segmentation"] = rle(rng.random((64, 64)) < 0.1, compressed=False)
        if k % 7:
            a["id"] = next_id + k
        if k % 3 == 0:
            a["clean_category_id"] = int(rng.choice([2, 5, 9]))
        if k % 4 == 0:
            a["class_ignored"] = bool(k % 8)
        coco["annotations"].insert(int(rng.integers(len(coco["annotations"]) + 1)), a)
    path = tmp_path / "varied.json"
    path.write_text(json.dumps(coco))
    return path


@pytest.mark.parametrize("train", [True, False])
@pytest.mark.parametrize("load_masks", [True, False])
def test_flat_records_give_the_list_of_dicts_targets_bit_for_bit(tiny_coco, tmp_path, train, load_masks):
    for path in (tiny_coco["train_json"], tiny_coco["val_json"], _varied_coco(tmp_path, tiny_coco)):
        ds = CocoInstances(path, tiny_coco["image_root"], train=train, load_masks=load_masks)
        expected = _reference_targets(path, train, load_masks)
        assert len(ds) == len(expected)
        for i, want in enumerate(expected):
            got = ds.target(i)
            assert got.keys() == want.keys()
            assert got["image_id"] == want["image_id"] == ds.records[i].image_id
            for key in want.keys() - {"image_id"}:
                assert got[key].dtype == want[key].dtype and torch.equal(got[key], want[key]), (path, i, key)


def test_the_data_set_keeps_no_python_object_per_image(tmp_path):
    """Workers share the data set copy-on-write: per-item Python objects would be copied page by page as
    their reference counts change (pytorch#13246). The flat data set's objects do not grow with the file."""
    import gc

    def write(n: int) -> Path:
        images = [{"id": i + 1, "file_name": f"{i}.png", "height": 32, "width": 32} for i in range(n)]
        anns = [{"id": k + 1, "image_id": k // 3 + 1, "category_id": 1, "bbox": [1, 1, 10, 10],
                 "segmentation": [[1, 1, 11, 1, 11, 11, 1, 11]]} for k in range(3 * n)]
        path = tmp_path / f"n{n}.json"
        path.write_text(json.dumps({"images": images, "annotations": anns, "categories": [{"id": 1, "name": "a"}]}))
        return path

    def objects_kept(path: Path) -> int:
        gc.collect()
        before = len(gc.get_objects())
        ds = CocoInstances(path, tmp_path, train=True, check_files=False)
        gc.collect()
        kept = len(gc.get_objects()) - before
        assert len(ds) > 0
        return kept

    small, large = objects_kept(write(50)), objects_kept(write(2000))
    assert large - small < 20, (small, large)  # the list-of-dicts version kept about 5 objects per annotation


def _truncate_first_image(tiny_coco) -> Path:
    coco = json.loads(tiny_coco["train_json"].read_text())
    path = tiny_coco["image_root"] / coco["images"][0]["file_name"]
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])  # the header stays readable: only decoding finds it
    return path


@pytest.mark.parametrize("workers", [0, 1])
def test_a_broken_image_in_a_worker_is_one_line_naming_file_and_entry(tiny_coco, workers):
    from torch.utils.data import DataLoader

    from noisyseg.data.coco import DataLoadError

    broken = _truncate_first_image(tiny_coco)
    ds = CocoInstances(tiny_coco["train_json"], tiny_coco["image_root"], train=True)  # headers pass
    loader = DataLoader(ds, batch_size=2, num_workers=workers, collate_fn=collate)
    with pytest.raises(DataLoadError) as e:
        list(loader)
    message = str(e.value)
    assert "\n" not in message and "Traceback" not in message
    assert message.startswith(f"{broken}: cannot read image") and message.endswith(
        f"({tiny_coco['train_json']}: images[0] (id 1))")


def test_a_broken_image_stops_training_with_one_line_and_exit_2(tiny_coco, tmp_path, capsys):
    import yaml
    from helpers import tiny_config

    from noisyseg.cli import main

    broken = _truncate_first_image(tiny_coco)
    config = tmp_path / "c.yaml"
    cfg = tiny_config(tiny_coco)
    cfg["data"]["num_workers"] = 1
    config.write_text(yaml.safe_dump(cfg))
    assert main(["train", str(config), "--out", str(tmp_path / "run"), "--no-progress"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and str(broken) in err[0] and "images[0] (id 1)" in err[0], err


def test_a_val_image_of_another_size_is_found_before_training(tiny_coco, tmp_path, capsys):
    import yaml
    from PIL import Image
    from helpers import tiny_config

    from noisyseg.cli import main

    coco = json.loads(tiny_coco["val_json"].read_text())
    name = coco["images"][3]["file_name"]
    Image.new("RGB", (64, 48)).save(tiny_coco["image_root"] / name)
    config = tmp_path / "c.yaml"
    config.write_text(yaml.safe_dump(tiny_config(tiny_coco)))
    # the data set alone finds it from the header ...
    with pytest.raises(NoisysegError) as e:
        CocoInstances(tiny_coco["val_json"], tiny_coco["image_root"], train=False, load_masks=False)
    assert str(e.value) == (f"{tiny_coco['image_root'] / name}: image is 64x48 but {tiny_coco['val_json']} "
                            "says 64x64 (images[3] (id 4))")
    # ... so `train` stops before its first step (the train split holds that image too: use a copy)
    assert main(["train", str(config), "--out", str(tmp_path / "run"), "--no-progress"]) == 2
    assert "image is 64x48" in capsys.readouterr().err
    assert not (tmp_path / "run" / "checkpoints").exists()


def test_ids_past_int64_are_refused_when_the_data_set_is_made(tiny_coco, tmp_path):
    coco = json.loads(tiny_coco["val_json"].read_text())
    coco["images"][0]["id"] = 2**63
    for a in coco["annotations"]:
        if a["image_id"] == 1:
            a["image_id"] = 2**63
    path = _write(tmp_path, coco)
    with pytest.raises(NoisysegError) as e:
        CocoInstances(path, tiny_coco["image_root"], train=False)
    assert str(e.value) == f"{path}: images[0] has id 9223372036854775808, expected an integer in -2^63 .. 2^63-1"


def test_an_empty_rle_is_refused_when_the_data_set_is_made(tiny_coco, tmp_path):
    coco = json.loads(tiny_coco["val_json"].read_text())
    k = next(i for i, a in enumerate(coco["annotations"]) if isinstance(a["segmentation"], dict))
    coco["annotations"][k]["segmentation"]["counts"] = ""
    path = _write(tmp_path, coco)
    with pytest.raises(NoisysegError) as e:
        CocoInstances(path, tiny_coco["image_root"], train=True)
    assert str(e.value) == (f"{path}: annotations[{k}] (id {coco['annotations'][k]['id']}): segmentation RLE has "
                            "runs covering 0 pixels, expected runs of 0s and 1s covering its 64x64 = 4096 pixels")
