"""noisyseg.eval.coco: faster-coco-eval and pycocotools give the same figures; edge cases do not crash."""

import contextlib
import copy
import io
import json
import math

import numpy as np
import pytest
import torch
from pycocotools import mask as mask_utils

from helpers import random_tiny_maskrcnn, rle
from noisyseg.errors import NoisysegError
from noisyseg.eval import detections_to_coco, evaluate, format_metrics_table
from noisyseg.eval.coco import STAT_NAMES, coco_evaluators

SIZE = 160
CATS = [{"id": 3, "name": "a", "supercategory": "x"}, {"id": 7, "name": "b", "supercategory": "x"},
        {"id": 11, "name": "c", "supercategory": "y"}]


def _square(x, y, side):
    m = np.zeros((SIZE, SIZE), np.uint8)
    m[y:y + side, x:x + side] = 1
    return m


def _gt_and_predictions(seed=0, tie_scores=False):
    """A small COCO set and noisy predictions for it.

    Seven 160 px images; categories 3/7/11; squares of side 20 (small), 50 (medium) and 110 (large) stored
    as polygons or RLE; annotations carry ``clean_category_id``; one crowd region (uncompressed RLE); image
    6 has no annotations; category 11 (id) is never annotated in image 7. Predictions: two jittered copies
    of every object (20% of them with a wrong class), one false positive per image, random scores
    (rounded to one decimal with ``tie_scores``, so many are equal).
    """
    rng = np.random.default_rng(seed)
    images, anns, results = [], [], []
    aid = 0
    for i in range(1, 8):
        images.append({"id": i, "file_name": f"{i}.png", "height": SIZE, "width": SIZE, "license": 1})
        if i == 6:
            continue  # an image without annotations
        for side in (20, 50, 110)[: 1 + i % 3]:
            aid += 1
            x, y = (int(v) for v in rng.integers(0, SIZE - side, 2))
            m = _square(x, y, side)
            cat = CATS[aid % 3]["id"]
            poly = [[x, y, x + side, y, x + side, y + side, x, y + side]]
            anns.append({"id": aid, "image_id": i, "category_id": cat, "bbox": [x, y, side, side],
                         "area": float(side * side), "iscrowd": 0, "segmentation": poly if aid % 2 else rle(m),
                         "clean_category_id": CATS[(aid + 1) % 3]["id"], "attributes": {"occluded": False}})
            for _ in range(2):
                dx, dy = (int(v) for v in rng.integers(-4, 5, 2))
                pm = np.roll(np.roll(m, dx, axis=1), dy, axis=0)
                wrong = rng.random() < 0.2
                score = float(rng.random())
                results.append({"image_id": i, "category_id": CATS[(aid + 1) % 3]["id"] if wrong else cat,
                                "bbox": [float(x + dx), float(y + dy), float(side), float(side)],
                                "score": round(score, 1) if tie_scores else score, "segmentation": rle(pm)})
        fx, fy = (int(v) for v in rng.integers(0, SIZE - 30, 2))
        score = float(rng.random())
        results.append({"image_id": i, "category_id": 7, "bbox": [float(fx), float(fy), 30.0, 30.0],
                        "score": round(score, 1) if tie_scores else score, "segmentation": rle(_square(fx, fy, 30))})
    anns.append({"id": 999, "image_id": 1, "category_id": 3, "bbox": [0.0, 0.0, 40.0, 40.0], "area": 1600.0,
                 "iscrowd": 1, "segmentation": rle(_square(0, 0, 40), compressed=False)})
    return {"info": {"description": "synthetic"}, "images": images, "annotations": anns, "categories": CATS}, results


def _pycocotools_precision(gt, results, iou_type, max_dets=None):
    """A pycocotools COCOeval, evaluated and summarised directly, as an independent reference."""
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    with contextlib.redirect_stdout(io.StringIO()):
        coco = COCO()
        coco.dataset = copy.deepcopy(gt)
        coco.createIndex()
        dets = copy.deepcopy(results)
        if iou_type == "segm":
            for d in dets:
                d.pop("bbox")
        ev = COCOeval(coco, coco.loadRes(dets), iou_type)
        if max_dets is not None:
            ev.params.maxDets = max_dets
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return ev


def _gt_and_model_predictions():
    """Real model output on three images of different sizes, and ground truth made to be found by it.

    The detections are a randomly initialised tiny Mask R-CNN's, through :func:`detections_to_coco`, so
    masks are blobs, not boxes, and mask IoU differs from box IoU. Labels 1 and 2 both map to category 3,
    so each image has well over 100 detections of category 3: COCO AP keeps the 100 best of each image
    and category (``maxDets``), and this case exercises that cap. The ground truth of each image: the masks of the detections ranked 3rd, 40th
    and 120th by score (RLE; the last one can only be found if the cap is ignored), the 40th's with another
    class, a polygon triangle, and a crowd region over the best detection's box (uncompressed RLE).
    """
    model = random_tiny_maskrcnn(3, box_score_thresh=0.0, box_detections_per_img=300, box_nms_thresh=0.7)
    gen = torch.Generator().manual_seed(0)
    images, anns, results = [], [], []
    for i, (h, w) in enumerate([(64, 80), (72, 64), (64, 64)], start=1):
        images.append({"id": i, "file_name": f"{i}.png", "height": h, "width": w})
        with torch.no_grad():
            out = model([torch.rand(3, h, w, generator=gen)])[0]
        res = detections_to_coco(i, out["boxes"], out["scores"], out["labels"], out["masks"], {1: 3, 2: 3, 3: 7})
        assert sum(r["category_id"] == 3 for r in res) > 120  # over the cap, and enough for rank 120
        results += res
        order = np.argsort([-r["score"] for r in res], kind="stable")
        of_3 = [j for j in order if res[j]["category_id"] == 3]
        for k, rank in enumerate((3, 40, 120)):
            det = res[of_3[rank]]
            m = mask_utils.decode(det["segmentation"])
            cat = det["category_id"] if k != 1 else {3: 7, 7: 11, 11: 3}[det["category_id"]]  # a wrong class
            anns.append({"id": len(anns) + 1, "image_id": i, "category_id": cat, "iscrowd": 0,
                         "segmentation": rle(m), "area": float(m.sum()),
                         "bbox": [float(v) for v in mask_utils.toBbox(mask_utils.encode(np.asfortranarray(m)))]})
        x, y = 10 * i, 8
        anns.append({"id": len(anns) + 1, "image_id": i, "category_id": CATS[i % 3]["id"], "iscrowd": 0,
                     "segmentation": [[x, y, x + 30, y, x, y + 40]], "area": 600.0, "bbox": [x, y, 30, 40]})
        x0, y0, bw, bh = (int(round(v)) for v in res[order[0]]["bbox"])
        crowd = np.zeros((h, w), np.uint8)
        crowd[y0:y0 + max(bh, 1), x0:x0 + max(bw, 1)] = 1
        anns.append({"id": len(anns) + 1, "image_id": i, "category_id": res[order[0]]["category_id"], "iscrowd": 1,
                     "segmentation": rle(crowd, compressed=False), "area": float(crowd.sum()),
                     "bbox": [float(x0), float(y0), float(max(bw, 1)), float(max(bh, 1))]})
    return {"images": images, "annotations": anns, "categories": CATS}, results


@pytest.fixture(scope="module")
def model_case():
    return _gt_and_model_predictions()


def _top(results, n):
    """The ``n`` best-scoring results of every image and category."""
    groups = {}
    for r in results:
        groups.setdefault((r["image_id"], r["category_id"]), []).append(r)
    return [r for rs in groups.values() for r in sorted(rs, key=lambda r: -r["score"])[:n]]


def test_real_model_output_equals_pycocotools_and_the_cap_is_applied(model_case):
    gt, results = model_case
    for iou_type in ("segm", "bbox"):
        ours = evaluate(gt, results, iou_types=(iou_type,))[iou_type]
        ref = _pycocotools_precision(gt, results, iou_type)
        for s, v in zip(STAT_NAMES, ref.stats[:6]):  # pycocotools says -1 where nothing is in range
            assert ours[s] == (None if v == -1 else pytest.approx(v * 100, abs=1e-9)), (iou_type, s)
        precision = ref.eval["precision"]
        for k, name in enumerate(["a", "b", "c"]):
            p = precision[:, :, k, 0, 2]
            expected = p[p > -1].mean() * 100 if (p > -1).any() else None
            assert ours["per_class"][name] == (pytest.approx(expected, abs=1e-9) if expected is not None else None)
        fast, slow = coco_evaluators(gt, results, backend="faster")[0], coco_evaluators(gt, results, backend="pycocotools")[0]
        np.testing.assert_allclose(fast[iou_type].stats[:12], slow[iou_type].stats[:12], rtol=0, atol=1e-9)
        # only the 100 best detections of an image and category count ...
        assert len(_top(results, 100)) < len(results)
        assert evaluate(gt, _top(results, 100), iou_types=(iou_type,))[iou_type] == ours
        # ... and the cap matters: the rank-120 ground truth is found only without it
        uncapped = _pycocotools_precision(gt, results, iou_type, max_dets=[1, 10, 1000])
        assert uncapped.stats[8] > ref.stats[8]  # AR with 1000 detections > AR with 100
    segm, bbox = evaluate(gt, results)["segm"], evaluate(gt, results)["bbox"]
    assert 0 < segm["AP"] < 100 and segm["AP"] != bbox["AP"]  # masks are not boxes


@pytest.mark.parametrize("tie_scores", [False, True])
def test_faster_backend_equals_pycocotools(tie_scores):
    gt, results = _gt_and_predictions(seed=0, tie_scores=tie_scores)
    fast, _ = coco_evaluators(gt, results, backend="faster")
    slow, _ = coco_evaluators(gt, results, backend="pycocotools")
    for iou_type in ("segm", "bbox"):
        a, b = np.asarray(fast[iou_type].stats[:12]), np.asarray(slow[iou_type].stats[:12])
        assert a.shape == b.shape == (12,)
        np.testing.assert_allclose(a, b, rtol=0, atol=1e-9, err_msg=iou_type)
        np.testing.assert_allclose(fast[iou_type].eval["precision"], slow[iou_type].eval["precision"],
                                   rtol=0, atol=1e-12)
    m_fast, m_slow = evaluate(gt, results, backend="faster"), evaluate(gt, results, backend="pycocotools")
    for iou_type in ("segm", "bbox"):
        for s in STAT_NAMES:
            assert m_fast[iou_type][s] == pytest.approx(m_slow[iou_type][s], abs=1e-9), (iou_type, s)
        assert m_fast[iou_type]["per_class"].keys() == {"a", "b", "c"}
        for name, v in m_fast[iou_type]["per_class"].items():
            assert v == pytest.approx(m_slow[iou_type]["per_class"][name], abs=1e-9), (iou_type, name)
    assert 0 < m_fast["segm"]["AP"] < 100 and 0 < m_fast["bbox"]["AP"] < 100


@pytest.mark.parametrize("iou_type", ["segm", "bbox"])
def test_figures_and_per_class_ap_match_plain_pycocotools(iou_type):
    gt, results = _gt_and_predictions(seed=1)
    ours = evaluate(gt, results, iou_types=(iou_type,))
    ref = _pycocotools_precision(gt, results, iou_type)
    for s, v in zip(STAT_NAMES, ref.stats[:6]):
        assert ours[iou_type][s] == pytest.approx(v * 100, abs=1e-9)
    precision = ref.eval["precision"]  # (T, R, K, A, M); K in sorted category-id order 3, 7, 11
    for k, name in enumerate(["a", "b", "c"]):
        p = precision[:, :, k, 0, 2]
        assert ours[iou_type]["per_class"][name] == pytest.approx(p[p > -1].mean() * 100, abs=1e-9)


def test_gt_is_not_modified_and_iou_types_are_independent():
    gt, results = _gt_and_predictions()
    gt_before, results_before = copy.deepcopy(gt), copy.deepcopy(results)
    both = evaluate(gt, results, backend="pycocotools")
    both_fast = evaluate(gt, results)
    assert gt == gt_before and results == results_before
    assert evaluate(gt, results, iou_types=("bbox",)) == {"bbox": both_fast["bbox"]}
    assert both["bbox"]["AP"] == pytest.approx(both_fast["bbox"]["AP"], abs=1e-9)


@pytest.mark.parametrize("backend", ["faster", "pycocotools"])
def test_perfect_predictions_score_100(backend):
    gt, _ = _gt_and_predictions()
    perfect = []
    for a in gt["annotations"]:
        if a["iscrowd"]:
            continue
        seg = a["segmentation"]
        if isinstance(seg, list):
            seg = rle(mask_utils.decode(mask_utils.merge(mask_utils.frPyObjects(seg, SIZE, SIZE))))
        perfect.append({"image_id": a["image_id"], "category_id": a["category_id"], "bbox": a["bbox"],
                        "score": 1.0, "segmentation": seg})
    m = evaluate(gt, perfect, backend=backend)
    for iou_type in ("segm", "bbox"):
        assert all(m[iou_type][s] == pytest.approx(100.0) for s in STAT_NAMES), m[iou_type]
        assert all(v == pytest.approx(100.0) for v in m[iou_type]["per_class"].values())


@pytest.mark.parametrize("backend", ["faster", "pycocotools"])
def test_no_results_give_zero(backend):
    gt, _ = _gt_and_predictions()
    m = evaluate(gt, [], backend=backend)
    for iou_type in ("segm", "bbox"):
        assert all(m[iou_type][s] == 0.0 for s in STAT_NAMES)
        assert m[iou_type]["per_class"] == {"a": 0.0, "b": 0.0, "c": 0.0}


def test_class_without_ground_truth_is_none_and_annotation_id_zero_is_fine():
    gt, results = _gt_and_predictions()
    gt["categories"] = gt["categories"] + [{"id": 20, "name": "unused"}]
    results = results + [dict(results[0], category_id=20)]
    for a in gt["annotations"]:
        a["id"] -= 1  # one annotation now has id 0, which both libraries would treat as "unmatched"
    fast, slow = evaluate(gt, results), evaluate(gt, results, backend="pycocotools")
    assert fast["segm"]["per_class"]["unused"] is None and slow["bbox"]["per_class"]["unused"] is None
    assert fast["bbox"]["AP"] == pytest.approx(slow["bbox"]["AP"], abs=1e-9)


@pytest.mark.parametrize("backend", ["faster", "pycocotools"])
def test_annotation_id_zero_still_matches(backend):
    # Both libraries store matched annotation ids and read 0 as "unmatched"; fed this ground truth
    # directly, they score the perfect detection as a false positive (AP 0). Renumbering avoids that.
    gt = {"images": [{"id": 1, "height": 50, "width": 50}], "categories": [{"id": 1, "name": "a"}],
          "annotations": [{"id": 0, "image_id": 1, "category_id": 1, "bbox": [5, 5, 20, 20], "area": 400,
                           "iscrowd": 0}]}
    res = [{"image_id": 1, "category_id": 1, "bbox": [5, 5, 20, 20], "score": 0.9}]
    assert evaluate(gt, res, iou_types=("bbox",), backend=backend)["bbox"]["AP"] == pytest.approx(100.0)


def test_bad_results_raise_one_line_errors():
    gt, results = _gt_and_predictions()
    with pytest.raises(NoisysegError, match="image_id 77"):
        evaluate(gt, results + [dict(results[0], image_id=77)])
    with pytest.raises(NoisysegError, match="category_id 5"):
        evaluate(gt, results + [dict(results[0], category_id=5)])
    no_mask = [{k: v for k, v in r.items() if k != "segmentation"} for r in results]
    with pytest.raises(NoisysegError, match="segmentation"):
        evaluate(gt, no_mask)
    assert evaluate(gt, no_mask, iou_types=("bbox",))["bbox"]["AP"] > 0
    small = dict(results[0], segmentation=rle(np.ones((8, 8), np.uint8)))
    with pytest.raises(NoisysegError, match="mask size"):
        evaluate(gt, [small])
    with pytest.raises(NoisysegError, match="IoU type"):
        evaluate(gt, results, iou_types=("keypoints",))
    with pytest.raises(NoisysegError, match="backend"):
        evaluate(gt, results, backend="nope")


def test_gt_from_a_path(tmp_path):
    gt, results = _gt_and_predictions()
    path = tmp_path / "gt.json"
    path.write_text(json.dumps(gt))
    assert evaluate(str(path), results) == evaluate(gt, results)
    assert evaluate(path, results, iou_types=("bbox",), backend="pycocotools")["bbox"]["AP"] > 0
    with pytest.raises(NoisysegError, match="not found"):
        evaluate(tmp_path / "missing.json", results)
    bad = copy.deepcopy(gt)
    del bad["annotations"][0]["area"]
    with pytest.raises(NoisysegError, match=r"annotations\[0\] has no 'area'"):
        evaluate(bad, results)


def test_quiet_unless_verbose(capsys):
    gt, results = _gt_and_predictions()
    evaluate(gt, results, backend="pycocotools")
    evaluate(gt, results)
    assert capsys.readouterr().out == ""
    evaluate(gt, results, iou_types=("bbox",), verbose=True)
    assert "Average Precision" in capsys.readouterr().out


def test_metrics_table():
    table = format_metrics_table({"bbox": {"AP": 12.345, "AP50": 50.0, "AP75": None, "APs": 1.0, "APm": 2.0,
                                           "APl": math.nan, "per_class": {}},
                                  "segm": {s: 10.0 for s in STAT_NAMES}})
    lines = table.splitlines()
    assert lines[0].split() == list(STAT_NAMES)
    assert lines[1].split() == ["segm"] + ["10.0"] * 6
    assert lines[2].split() == ["bbox", "12.3", "50.0", "-", "1.0", "2.0", "-"]
    assert len({len(line) for line in lines}) == 1  # aligned
