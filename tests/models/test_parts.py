"""ScaleRangeTransform and KnownStrideRoIAlign."""

import torch

from noisyseg.models import KnownStrideRoIAlign, ScaleRangeTransform


def test_scale_range_transform_draws_train_sizes_and_tests_at_one_size():
    t = ScaleRangeTransform(tuple(range(56, 73)), 64, 1000, image_mean=[0.0] * 3, image_std=[1.0] * 3)
    t.train()
    torch.manual_seed(0)
    sizes = [t([torch.rand(3, 100, 100)])[0].image_sizes[0][0] for _ in range(40)]
    assert set(sizes) <= set(range(56, 73)) and len(set(sizes)) > 5
    torch.manual_seed(0)
    assert [t([torch.rand(3, 100, 100)])[0].image_sizes[0][0] for _ in range(40)] == sizes  # seeded draw
    t.eval()
    assert t([torch.rand(3, 100, 200)])[0].image_sizes[0] == (64, 128)
    t.train()
    assert t.min_size == tuple(range(56, 73))


def test_the_transform_keeps_extra_target_keys_such_as_class_ignored():
    t = ScaleRangeTransform((50,), 50, 1000, image_mean=[0.0] * 3, image_std=[1.0] * 3).train()
    target = {"boxes": torch.tensor([[0.0, 0, 10, 10]]), "labels": torch.tensor([1]),
              "class_ignored": torch.tensor([True])}
    _, (out,) = t([torch.rand(3, 100, 100)], [target])
    assert torch.equal(out["boxes"], torch.tensor([[0.0, 0, 5, 5]]))
    assert torch.equal(out["class_ignored"], torch.tensor([True]))


def test_roi_pooler_scales_are_the_fpn_strides_whatever_the_first_batch():
    pool = KnownStrideRoIAlign(["0", "1", "2", "3"], output_size=7, sampling_ratio=2)
    feats = {str(i): torch.rand(1, 4, 96 // s, 96 // s) for i, s in enumerate((4, 8, 16, 32))}
    pool(feats, [torch.tensor([[0.0, 0, 20, 20]])], [(58, 58)])  # 58 px padded to 96: torchvision guesses 1/2
    assert pool.scales == [0.25, 0.125, 0.0625, 0.03125]
