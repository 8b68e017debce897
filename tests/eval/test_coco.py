import copy

import numpy as np
import pytest
from pycocotools import mask as mask_utils

from noisyseg.errors import NoisysegError
from noisyseg.eval import evaluate, format_metrics_table
from noisyseg.eval.coco import STAT_NAMES


def _rle(m):
    r = mask_utils.encode(np.asfortranarray(m.astype(np.uint8)))
    r["counts"] = r["counts"].decode("ascii")
    return r


def _gt_and_predictions(seed=0):
    """Six 160 px images, categories with ids 3/7/11, small/medium/large objects, a crowd region, an
    empty image; predictions: jittered true boxes/masks, wrong classes and false positives."""
    rng = np.random.default_rng(seed)
    cats = [{"id": 3, "name": "a"}, {"id": 7, "name": "b"}, {"id": 11, "name": "c"}]
    images, anns, results = [], [], []
    aid = 0
    for i in range(1, 7):
        images.append({"id": i, "file_name": f"{i}.png", "height": 160, "width": 160})
        if i == 6:
            continue  # an image without annotations
        for side in (20, 50, 110)[: 1 + i % 3]:
            aid += 1
            x, y = rng.integers(0, 160 - side, 2)
            m = np.zeros((160, 160), np.uint8)
            m[y:y + side, x:x + side] = 1
            cat = cats[aid % 3]["id"]
            seg = [[float(x), float(y), float(x + side), float(y), float(x + side), float(y + side), float(x),
                    float(y + side)]] if aid % 2 else _rle(m)
            anns.append({"id": aid, "image_id": i, "category_id": cat, "bbox": [float(x), float(y), side, side],
                         "area": float(side * side), "iscrowd": 0, "segmentation": seg, "clean_category_id": cat})
            for _ in range(2):
                dx, dy = rng.integers(-4, 5, 2)
                pm = np.roll(np.roll(m, dx, axis=1), dy, axis=0)
                wrong = rng.random() < 0.2
                results.append({"image_id": i, "category_id": cats[(aid + 1) % 3]["id"] if wrong else cat,
                                "bbox": [float(x + dx), float(y + dy), side, side], "score": float(rng.random()),
                                "segmentation": _rle(pm)})
        fx, fy = rng.integers(0, 120, 2)
        fm = np.zeros((160, 160), np.uint8)
        fm[fy:fy + 30, fx:fx + 30] = 1
        results.append({"image_id": i, "category_id": 7, "bbox": [float(fx), float(fy), 30.0, 30.0],
                        "score": float(rng.random()), "segmentation": _rle(fm)})
    crowd = np.zeros((160, 160), np.uint8)
    crowd[0:40, 0:40] = 1
    anns.append({"id": 999, "image_id": 1, "category_id": 3, "bbox": [0.0, 0.0, 40.0, 40.0], "area": 1600.0,
                 "iscrowd": 1, "segmentation": _rle(crowd)})
    return {"images": images, "annotations": anns, "categories": cats}, results


def test_faster_coco_eval_equals_pycocotools():
    gt, results = _gt_and_predictions()
    fast = evaluate(gt, results, backend="faster")
    slow = evaluate(gt, results, backend="pycocotools")
    for iou_type in ("segm", "bbox"):
        for s in STAT_NAMES:
            a, b = fast[iou_type][s], slow[iou_type][s]
            assert (a is None and b is None) or a == pytest.approx(b, abs=1e-9), (iou_type, s)
        for name in ("a", "b", "c"):
            assert fast[iou_type]["per_class"][name] == pytest.approx(slow[iou_type]["per_class"][name], abs=1e-9)
    assert 0 < fast["segm"]["AP"] < 100


def test_per_class_ap_is_the_mean_of_that_class_precision():
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval
    import contextlib
    import io

    gt, results = _gt_and_predictions(seed=1)
    ours = evaluate(gt, results, iou_types=("bbox",))
    with contextlib.redirect_stdout(io.StringIO()):
        coco = COCO()
        coco.dataset = copy.deepcopy(gt)
        coco.createIndex()
        ev = COCOeval(coco, coco.loadRes(copy.deepcopy(results)), "bbox")
        ev.evaluate()
        ev.accumulate()
    precision = ev.eval["precision"]
    for k, name in enumerate(["a", "b", "c"]):
        p = precision[:, :, k, 0, 2]
        assert ours["bbox"]["per_class"][name] == pytest.approx(p[p > -1].mean() * 100)


def test_perfect_predictions_score_100_and_none_score_0():
    gt, _ = _gt_and_predictions()
    perfect = [{"image_id": a["image_id"], "category_id": a["category_id"], "bbox": a["bbox"], "score": 1.0,
                "segmentation": a["segmentation"] if isinstance(a["segmentation"], dict) else
                _rle(mask_utils.decode(mask_utils.merge(mask_utils.frPyObjects(a["segmentation"], 160, 160))))}
               for a in gt["annotations"] if not a["iscrowd"]]
    m = evaluate(gt, perfect)
    assert m["bbox"]["AP"] == pytest.approx(100.0) and m["segm"]["AP"] == pytest.approx(100.0)
    empty = evaluate(gt, [])
    assert empty["segm"]["AP"] == 0.0 and empty["bbox"]["per_class"]["b"] == 0.0


def test_unknown_image_and_table():
    gt, results = _gt_and_predictions()
    with pytest.raises(NoisysegError, match="image_id 77"):
        evaluate(gt, results + [dict(results[0], image_id=77)])
    table = format_metrics_table(evaluate(gt, results))
    assert table.splitlines()[0].split() == list(STAT_NAMES)
    assert table.splitlines()[1].startswith("segm")


def test_gt_from_a_path(tmp_path):
    import json

    gt, results = _gt_and_predictions()
    path = tmp_path / "gt.json"
    path.write_text(json.dumps(gt))
    assert evaluate(str(path), results)["segm"]["AP"] == pytest.approx(evaluate(gt, results)["segm"]["AP"])
