"""noisyseg.eval.results: model outputs -> COCO result dicts."""

import json

import numpy as np
import pytest
import torch
from pycocotools import mask as mask_utils

from noisyseg.eval import detections_to_coco, evaluate


def _outputs():
    """Two detections on a 20 x 30 image: probability masks (N, 1, H, W), xyxy boxes, scores, labels."""
    masks = np.zeros((2, 1, 20, 30), np.float32)
    masks[0, 0, 2:8, 3:9] = 0.9
    masks[0, 0, 10, 10] = 0.4  # below the threshold
    masks[0, 0, 11, 11] = 0.5  # exactly at it: background
    masks[1, 0, 5:15, 20:28] = 0.6
    boxes = np.array([[3.0, 2.0, 9.0, 8.0], [20.25, 5.5, 28.125, 15.0]])
    return boxes, np.array([0.9, 0.3]), np.array([2, 1]), masks


@pytest.mark.parametrize("as_torch", [False, True])
def test_round_trip(as_torch):
    boxes, scores, labels, masks = _outputs()
    args = [boxes, scores, labels, masks]
    if as_torch:
        args = [torch.as_tensor(a) for a in args]
    out = detections_to_coco(5, *args, label_to_category_id=[10, 20])
    json.dumps(out)  # plain python types only
    assert [r["category_id"] for r in out] == [20, 10]
    assert [r["image_id"] for r in out] == [5, 5]
    assert out[0]["bbox"] == [3.0, 2.0, 6.0, 6.0]
    assert out[1]["bbox"] == [20.25, 5.5, 7.88, 9.5]  # x, y, w, h rounded to 2 decimals
    assert [r["score"] for r in out] == pytest.approx([0.9, 0.3])
    for r, m in zip(out, masks[:, 0] > 0.5):
        assert r["segmentation"]["size"] == [20, 30] and isinstance(r["segmentation"]["counts"], str)
        assert (mask_utils.decode(r["segmentation"]) == m).all()


@pytest.mark.parametrize("kind", ["numpy_bool", "numpy_uint8", "torch_bool", "torch_uint8", "torch_float_nhw"])
def test_binary_and_three_dimensional_masks(kind):
    m = np.zeros((3, 7, 5), bool)
    m[0, 1:3, 1:4] = True
    m[2, :, 4] = True  # mask 1 stays empty
    masks = {"numpy_bool": m, "numpy_uint8": m.astype(np.uint8), "torch_bool": torch.from_numpy(m),
             "torch_uint8": torch.from_numpy(m.astype(np.uint8)),
             "torch_float_nhw": torch.from_numpy(m.astype(np.float32))}[kind]
    out = detections_to_coco(1, np.zeros((3, 4)), [0.5, 0.4, 0.3], [1, 1, 2], masks, {1: 99, 2: 4})
    assert [r["category_id"] for r in out] == [99, 99, 4]
    assert [int(mask_utils.area(r["segmentation"])) for r in out] == [6, 0, 7]
    for r, expected in zip(out, m):
        assert (mask_utils.decode(r["segmentation"]) == expected).all()


def test_mask_threshold_and_box_only():
    _, _, _, masks = _outputs()
    out = detections_to_coco(1, np.zeros((2, 4)), [0.5, 0.4], [1, 1], masks, [7], mask_threshold=0.3)
    assert int(mask_utils.area(out[0]["segmentation"])) == 36 + 2
    out = detections_to_coco(1, [[1, 1, 4, 3]], [0.5], [1], None, [7])
    assert "segmentation" not in out[0] and out[0]["bbox"] == [1.0, 1.0, 3.0, 2.0]


def test_no_detections():
    assert detections_to_coco(1, torch.zeros(0, 4), torch.zeros(0), torch.zeros(0, dtype=torch.int64),
                              torch.zeros(0, 1, 8, 8), [1]) == []
    assert detections_to_coco(1, np.zeros((0, 4)), [], [], None, {1: 3}) == []


def test_bad_inputs():
    with pytest.raises(ValueError, match="label 0"):
        detections_to_coco(1, [[0, 0, 1, 1]], [0.5], [0], None, [7])
    with pytest.raises(ValueError, match="label 3"):
        detections_to_coco(1, [[0, 0, 1, 1]], [0.5], [3], None, {1: 7})
    with pytest.raises(ValueError, match="masks"):
        detections_to_coco(1, [[0, 0, 1, 1]], [0.5], [1], np.zeros((2, 4, 4), bool), [7])
    with pytest.raises(ValueError, match="labels"):
        detections_to_coco(1, [[0, 0, 1, 1]], [0.5, 0.4], [1], None, [7])


def test_converted_ground_truth_scores_100():
    masks = np.zeros((2, 1, 40, 50), np.float32)
    masks[0, 0, 5:25, 5:35] = 1.0
    masks[1, 0, 30:38, 40:48] = 0.8
    boxes = torch.tensor([[5.0, 5.0, 35.0, 25.0], [40.0, 30.0, 48.0, 38.0]])
    gt = {"images": [{"id": 4, "height": 40, "width": 50}],
          "categories": [{"id": 8, "name": "p"}, {"id": 2, "name": "q"}],
          "annotations": [{"id": 1, "image_id": 4, "category_id": 8, "bbox": [5, 5, 30, 20], "area": 600, "iscrowd": 0,
                           "segmentation": [[5, 5, 35, 5, 35, 25, 5, 25]]},
                          {"id": 2, "image_id": 4, "category_id": 2, "bbox": [40, 30, 8, 8], "area": 64, "iscrowd": 0,
                           "segmentation": [[40, 30, 48, 30, 48, 38, 40, 38]]}]}
    # label 1 -> id 2 and label 2 -> id 8 (sorted-id order)
    res = detections_to_coco(4, boxes, torch.tensor([0.9, 0.8]), torch.tensor([2, 1]), torch.from_numpy(masks), [2, 8])
    m = evaluate(gt, res)
    assert m["bbox"]["AP"] == pytest.approx(100.0) and m["segm"]["AP"] == pytest.approx(100.0)


def test_evaluation_alone_does_not_import_torch():
    """Scoring json results needs no torch: importing it costs seconds and ~700 MB per process."""
    import subprocess
    import sys

    code = ("import sys, numpy as np, noisyseg.eval\n"
            "r = noisyseg.eval.detections_to_coco(1, np.zeros((1, 4)), [0.5], [1], np.ones((1, 2, 2), bool), [7])\n"
            "assert r[0]['category_id'] == 7 and 'torch' not in sys.modules\n")
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0
