import torch

from noisyseg.data.coco import CocoInstances
from noisyseg.data.transforms import DetectionTransform


def test_flip_moves_image_boxes_and_masks_together(tiny_coco):
    ds = CocoInstances(tiny_coco["val_json"], tiny_coco["image_root"], train=False)
    image, target = ds[0]
    flipped, ft = DetectionTransform(hflip_prob=1.0)(image, target)
    w = image.shape[-1]
    assert torch.allclose(flipped, image.flip(-1).float() / 255)
    assert torch.equal(ft["masks"], target["masks"].flip(-1))
    expected = target["boxes"].clone()
    expected[:, 0], expected[:, 2] = w - target["boxes"][:, 2], w - target["boxes"][:, 0]
    assert torch.allclose(ft["boxes"], expected)
    assert type(ft["boxes"]) is torch.Tensor and type(ft["masks"]) is torch.Tensor
    assert torch.equal(ft["labels"], target["labels"])


def test_no_flip_only_scales_to_unit_range(tiny_coco):
    ds = CocoInstances(tiny_coco["val_json"], tiny_coco["image_root"], train=False)
    image, target = ds[1]
    out, ot = DetectionTransform(0.0)(image, target)
    assert out.dtype == torch.float32 and float(out.max()) <= 1.0
    assert torch.allclose(out * 255, image.float())
    assert torch.equal(ot["boxes"], target["boxes"]) and torch.equal(ot["masks"], target["masks"])
