import pytest
import torch

from noisyseg.config import DataConfig, ModelConfig
from noisyseg.errors import NoisysegError
from noisyseg.losses import available_losses, build_loss
from noisyseg.models import available_models, build_model
from noisyseg.models.registry import ScaleRangeTransform

DATA = DataConfig(train_json="t.json", val_json="v.json", image_root=".", train_min_size=(56, 72),
                  test_min_size=64, max_size=128)


def _batch(n=2, size=64):
    images = [torch.rand(3, size, size) for _ in range(n)]
    targets = []
    for i in range(n):
        masks = torch.zeros(2, size, size, dtype=torch.uint8)
        masks[0, 8:30, 10:40] = 1
        masks[1, 36:60, 30:60] = 1
        targets.append({"boxes": torch.tensor([[10.0, 8, 40, 30], [30, 36, 60, 60]]),
                        "labels": torch.tensor([1, 3 - i]), "masks": masks})
    return images, targets


@pytest.mark.parametrize("loss_name", available_losses())
@pytest.mark.parametrize("class_agnostic", [False, True])
def test_tiny_model_trains_and_predicts_with_every_loss(loss_name, class_agnostic):
    torch.manual_seed(0)
    model = build_model(ModelConfig(name="maskrcnn_tiny", rois_per_image=64, class_agnostic=class_agnostic),
                        DATA, 3, build_loss(loss_name))
    images, targets = _batch()
    model.train()
    losses = model(images, targets)
    assert set(losses) == {"loss_classifier", "loss_box_reg", "loss_mask", "loss_objectness", "loss_rpn_box_reg"}
    total = sum(losses.values())
    assert torch.isfinite(total)
    total.backward()
    cls_grad = model.roi_heads.box_predictor.cls_score.weight.grad
    assert cls_grad is not None and torch.isfinite(cls_grad).all()
    stats = model.roi_heads.last_loss_stats
    if loss_name == "lncis":
        # every sampled RoI lands in exactly one partition
        assert sum(int(v) for v in stats.values()) == 2 * 64
    model.eval()
    with torch.no_grad():
        out = model(images)
    assert len(out) == 2
    for o in out:
        n = len(o["boxes"])
        assert o["masks"].shape == (n, 1, 64, 64) and o["labels"].shape == (n,)
        assert ((o["labels"] >= 1) & (o["labels"] <= 3)).all()


def test_loss_can_be_swapped_between_epochs():
    model = build_model(ModelConfig(name="maskrcnn_tiny", rois_per_image=32), DATA, 3, build_loss("ce"))
    images, targets = _batch()
    model.train()
    model(images, targets)
    assert model.roi_heads.last_loss_stats == {}
    model.roi_heads.set_classification_loss(build_loss("lncis"))
    model(images, targets)
    assert set(model.roi_heads.last_loss_stats) >= {"neg", "psn", "os"}


def test_class_agnostic_heads_have_one_mask_and_box_channel():
    model = build_model(ModelConfig(name="maskrcnn_tiny", class_agnostic=True), DATA, 5, build_loss("ce"))
    assert model.roi_heads.box_predictor.bbox_pred.out_features == 4
    assert model.roi_heads.box_predictor.cls_score.out_features == 6
    assert model.roi_heads.mask_predictor.mask_fcn_logits.out_channels == 1


def test_scale_range_transform_draws_train_sizes_and_tests_at_one_size():
    t = ScaleRangeTransform(tuple(range(56, 73)), 64, 1000, image_mean=[0.0] * 3, image_std=[1.0] * 3)
    t.train()
    torch.manual_seed(0)
    sizes = {t(([torch.rand(3, 100, 100)]))[0].image_sizes[0][0] for _ in range(40)}
    assert sizes <= set(range(56, 73)) and len(sizes) > 5
    t.eval()
    assert t([torch.rand(3, 100, 200)])[0].image_sizes[0] == (64, 128)


def test_r50_preset_builds_from_a_local_weights_file(tmp_path):
    from torchvision.models import resnet50

    path = tmp_path / "r50.pth"
    torch.save(resnet50().state_dict(), path)
    model = build_model(ModelConfig(name="maskrcnn_r50_fpn", backbone_weights=str(path)), DATA, 8, build_loss("ce"))
    assert model.roi_heads.box_predictor.cls_score.out_features == 9
    # ImageNet start: frozen batch norm and a frozen stem, as in torchvision's detection models
    assert not model.backbone.body.conv1.weight.requires_grad


def test_bad_model_settings_are_one_line_errors(tmp_path, monkeypatch):
    with pytest.raises(NoisysegError, match="unknown model 'nope'; available: maskrcnn_r50_fpn, maskrcnn_tiny"):
        build_model(ModelConfig(name="nope"), DATA, 3, build_loss("ce"))
    with pytest.raises(NoisysegError, match="not 'imagenet', 'none' or an existing file"):
        build_model(ModelConfig(name="maskrcnn_r50_fpn", backbone_weights=str(tmp_path / "x.pth")), DATA, 3,
                    build_loss("ce"))
    bad = tmp_path / "bad.pth"
    torch.save({"foo": torch.zeros(1)}, bad)
    with pytest.raises(NoisysegError, match="not a ResNet-50 state dict"):
        build_model(ModelConfig(name="maskrcnn_r50_fpn", backbone_weights=str(bad)), DATA, 3, build_loss("ce"))


def test_imagenet_weights_offline_say_how_to_provide_them(monkeypatch):
    from torchvision.models import ResNet50_Weights

    def offline(*args, **kwargs):
        raise OSError("no network")

    monkeypatch.setattr(ResNet50_Weights.IMAGENET1K_V1.__class__, "get_state_dict", offline)
    with pytest.raises(NoisysegError, match="cannot download .* copy that file to .*checkpoints"):
        build_model(ModelConfig(name="maskrcnn_r50_fpn", backbone_weights="imagenet"), DATA, 3, build_loss("ce"))


def test_registry_lists_both_presets():
    assert available_models() == ["maskrcnn_r50_fpn", "maskrcnn_tiny"]


def test_roi_pooler_scales_are_the_fpn_strides_whatever_the_first_batch():
    from noisyseg.models.registry import KnownStrideRoIAlign

    pool = KnownStrideRoIAlign(["0", "1", "2", "3"], output_size=7, sampling_ratio=2)
    feats = {str(i): torch.rand(1, 4, 96 // s, 96 // s) for i, s in enumerate((4, 8, 16, 32))}
    pool(feats, [torch.tensor([[0.0, 0, 20, 20]])], [(58, 58)])  # 58 px padded to 96: torchvision guesses 1/2
    assert pool.scales == [0.25, 0.125, 0.0625, 0.03125]
