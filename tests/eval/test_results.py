import numpy as np
import pytest
import torch
from pycocotools import mask as mask_utils

from noisyseg.eval import detections_to_coco


@pytest.mark.parametrize("as_torch", [False, True])
def test_conversion_round_trip(as_torch):
    masks = np.zeros((2, 1, 20, 30), np.float32)
    masks[0, 0, 2:8, 3:9] = 0.9
    masks[0, 0, 10, 10] = 0.4  # below threshold
    masks[1, 0, 5:15, 20:28] = 0.6
    boxes = np.array([[3.0, 2.0, 9.0, 8.0], [20.0, 5.0, 28.0, 15.0]])
    scores, labels = np.array([0.9, 0.3]), np.array([2, 1])
    args = [boxes, scores, labels, masks]
    if as_torch:
        args = [torch.as_tensor(a) for a in args]
    out = detections_to_coco(5, *args, label_to_category_id=[10, 20])
    assert [r["category_id"] for r in out] == [20, 10]
    assert out[0]["bbox"] == [3.0, 2.0, 6.0, 6.0] and out[0]["image_id"] == 5 and out[0]["score"] == pytest.approx(0.9)
    for r, m in zip(out, masks[:, 0] > 0.5):
        assert (mask_utils.decode(r["segmentation"]) == m).all()
        assert r["segmentation"]["size"] == [20, 30]


def test_dict_mapping_boolean_masks_and_no_masks():
    masks = np.zeros((1, 6, 6), bool)
    masks[0, 1:3, 1:4] = True
    out = detections_to_coco(1, [[1, 1, 4, 3]], [0.5], [1], masks, {1: 99})
    assert out[0]["category_id"] == 99 and mask_utils.area(out[0]["segmentation"]) == 6
    out = detections_to_coco(1, [[1, 1, 4, 3]], [0.5], [1], None, [7])
    assert "segmentation" not in out[0]


def test_no_detections():
    assert detections_to_coco(1, torch.zeros(0, 4), torch.zeros(0), torch.zeros(0, dtype=torch.int64),
                              torch.zeros(0, 1, 8, 8), [1]) == []
