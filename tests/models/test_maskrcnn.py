"""The Mask R-CNN presets: every registered builder trains and predicts; weights and keys stay as they were."""

import hashlib
import inspect

import pytest
import torch
from torchvision.models.detection import MaskRCNN

from noisyseg.errors import NoisysegError
from noisyseg.losses import available_losses, build_loss
from noisyseg.models import NoisyLabelRoIHeads, ScaleRangeTransform, available_models, get_model_builder
from noisyseg.models import maskrcnn_r50_fpn, maskrcnn_tiny

SMALL = dict(rois_per_image=32, train_sizes=(56, 64, 72), test_size=64, max_size=128)


def _batch(n=2, size=64):
    g = torch.Generator().manual_seed(0)
    images = [torch.rand(3, size, size, generator=g) for _ in range(n)]
    targets = []
    for i in range(n):
        masks = torch.zeros(2, size, size, dtype=torch.uint8)
        masks[0, 8:30, 10:40] = 1
        masks[1, 36:60, 30:60] = 1
        targets.append({"boxes": torch.tensor([[10.0, 8, 40, 30], [30, 36, 60, 60]]),
                        "labels": torch.tensor([1, 3 - i]), "masks": masks})
    return images, targets


def _build(name, **kwargs):
    builder = get_model_builder(name)
    if "backbone_weights" in inspect.signature(builder).parameters:
        kwargs.setdefault("backbone_weights", "none")
    return builder(num_classes=3, **{**SMALL, **kwargs})


@pytest.mark.parametrize("name", available_models())
def test_every_builder_is_keyword_only_and_typed(name):
    builder = get_model_builder(name)
    assert builder.__name__ == name
    params = inspect.signature(builder).parameters
    assert all(p.kind in (inspect.Parameter.KEYWORD_ONLY, inspect.Parameter.VAR_KEYWORD) for p in params.values())
    assert all(p.annotation is not inspect.Parameter.empty for p in params.values())
    assert {"num_classes", "classification_loss", "options"} <= set(params)
    with pytest.raises(TypeError, match=r"unexpected keyword argument\(s\) rois, test_sizes; the presets take "
                                        r"class_agnostic, rois_per_image, .*, max_size$"):
        builder(num_classes=2, rois=4, test_sizes=5)


@pytest.mark.parametrize("name", available_models())
def test_every_builder_takes_its_shared_defaults_from_the_one_settings_object(name, monkeypatch):
    """The builders hold no default of their own for the shared settings: DetectionSettings does."""
    from noisyseg.models.settings import DetectionSettings

    changed = {"rois_per_image": 77, "positive_fraction": 0.5, "rpn_batch_size_per_image": 33,
               "detections_per_image": 9, "score_threshold": 0.3}
    defaults = tuple(changed.get(n, getattr(DetectionSettings(), n)) for n in DetectionSettings.names())
    monkeypatch.setattr(DetectionSettings.__init__, "__defaults__", defaults)
    model = get_model_builder(name)(num_classes=3, test_size=64, max_size=128)
    heads = model.roi_heads
    assert (heads.fg_bg_sampler.batch_size_per_image, heads.fg_bg_sampler.positive_fraction) == (77, 0.5)
    assert (heads.detections_per_img, heads.score_thresh, model.rpn.fg_bg_sampler.batch_size_per_image) == (9, 0.3, 33)


@pytest.mark.parametrize("name", available_models())
@pytest.mark.parametrize("class_agnostic", [False, True])
def test_every_builder_trains_and_predicts(name, class_agnostic):
    torch.manual_seed(0)
    # few RoIs and detections: r50's mask head (4 convs of 256 channels) runs once per positive RoI and detection
    model = _build(name, class_agnostic=class_agnostic, classification_loss=build_loss("lncis"),
                   rois_per_image=16, detections_per_image=5)
    assert isinstance(model, MaskRCNN) and isinstance(model.roi_heads, NoisyLabelRoIHeads)
    assert isinstance(model.transform, ScaleRangeTransform)
    assert model.roi_heads.box_predictor.cls_score.out_features == 4  # K + 1
    images, targets = _batch(n=1)
    model.train()
    losses = model(images, targets)
    assert set(losses) == {"loss_classifier", "loss_box_reg", "loss_mask", "loss_objectness", "loss_rpn_box_reg"}
    total = sum(losses.values())
    assert torch.isfinite(total)
    total.backward()
    grad = model.roi_heads.box_predictor.cls_score.weight.grad
    assert grad is not None and torch.isfinite(grad).all() and grad.abs().sum() > 0
    assert sum(int(v) for v in model.roi_heads.last_loss_stats.values()) == 16  # every sampled RoI in one set
    model.eval()
    # fewer test-time proposals than r50's 1000 per image, so its box head stays cheap on a CPU here
    model.rpn._post_nms_top_n["testing"] = min(model.rpn._post_nms_top_n["testing"], 100)
    with torch.no_grad():
        out = model(images)
    assert len(out) == 1
    for o in out:
        n = len(o["boxes"])
        assert 0 < n <= 5
        assert o["masks"].shape == (n, 1, 64, 64) and o["labels"].shape == (n,) and o["scores"].shape == (n,)
        assert ((o["labels"] >= 1) & (o["labels"] <= 3)).all()


@pytest.mark.parametrize("loss_name", available_losses())
def test_the_tiny_model_trains_with_every_loss(loss_name):
    torch.manual_seed(0)
    loss = build_loss(loss_name)
    if loss.needs_transition_matrix:  # forward correction: 3 classes, 0.8 kept, the rest spread evenly
        loss.set_transition_matrix(torch.full((3, 3), 0.1).fill_diagonal_(0.8))
    model = maskrcnn_tiny(num_classes=3, classification_loss=loss, **SMALL)
    images, targets = _batch()
    if loss.needs_class_targets:  # the posterior loss: each annotation's soft target, here its label one-hot
        for t in targets:
            t["class_target"] = torch.nn.functional.one_hot(t["labels"] - 1, 3).float()
    losses = model(images, targets)
    assert torch.isfinite(sum(losses.values()))


def test_the_default_loss_is_noisysegs_cross_entropy():
    model = maskrcnn_tiny(num_classes=2)
    assert model.roi_heads.classification_loss.name == "ce"


def test_the_settings_reach_torchvisions_parts():
    model = maskrcnn_tiny(num_classes=5, rois_per_image=96, positive_fraction=0.5, rpn_batch_size_per_image=64,
                          detections_per_image=7, score_threshold=0.2, train_sizes=(60, 70), test_size=80, max_size=99)
    heads = model.roi_heads
    assert (heads.fg_bg_sampler.batch_size_per_image, heads.fg_bg_sampler.positive_fraction) == (96, 0.5)
    assert (heads.detections_per_img, heads.score_thresh) == (7, 0.2)
    assert model.rpn.fg_bg_sampler.batch_size_per_image == 64
    assert model.transform.train_sizes == (60, 70) and model.transform.test_size == 80
    assert model.transform.max_size == 99
    assert heads.box_predictor.cls_score.out_features == 6


# Fingerprints of the models as built before the builders became keyword functions (same seed, K = 3):
# the state dict's names and shapes (old checkpoints must still load) and a few initial weights (the
# random stream must reach the same modules in the same order, so a run's weights do not change).
_KEYS = {
    ("maskrcnn_tiny", False): (68, "16a234ae8cd12883"),
    ("maskrcnn_tiny", True): (68, "ab88ee6f9deefbfd"),
    ("maskrcnn_r50_fpn", False): (360, "0a8515fae9b6c90a"),
}
_WEIGHTS = {
    ("maskrcnn_tiny", False): {
        "backbone.fpn.layer_blocks.0.0.weight": -0.01245148, "rpn.head.conv.0.0.weight": 0.01688782,
        "roi_heads.box_head.fc6.weight": 0.01178254, "roi_heads.box_predictor.cls_score.weight": -0.01977269,
        "roi_heads.box_predictor.bbox_pred.weight": 0.00143299, "roi_heads.mask_head.0.0.weight": -0.01807441,
        "roi_heads.mask_predictor.mask_fcn_logits.weight": 0.95763135},
    ("maskrcnn_tiny", True): {
        "rpn.head.conv.0.0.weight": 0.00810295, "roi_heads.box_head.fc6.weight": -0.01225463,
        "roi_heads.box_predictor.bbox_pred.weight": -0.03110522, "roi_heads.mask_head.0.0.weight": 0.02555786,
        "roi_heads.mask_predictor.mask_fcn_logits.weight": -0.84161454},
    ("maskrcnn_r50_fpn", False): {
        "backbone.fpn.layer_blocks.0.0.weight": 0.00514952, "rpn.head.conv.0.0.weight": -0.0001799,
        "roi_heads.box_head.fc6.weight": 0.00439612, "roi_heads.box_predictor.bbox_pred.weight": -0.03026445,
        "roi_heads.mask_predictor.mask_fcn_logits.weight": 0.73503733},
}


@pytest.mark.parametrize("name,class_agnostic", list(_KEYS))
def test_state_dict_names_and_initial_weights_are_those_of_earlier_versions(name, class_agnostic):
    torch.manual_seed(0)
    state = _build(name, class_agnostic=class_agnostic).state_dict()
    text = "\n".join(f"{k}:{tuple(v.shape)}" for k, v in state.items())
    assert (len(state), hashlib.sha256(text.encode()).hexdigest()[:16]) == _KEYS[(name, class_agnostic)]
    for key, value in _WEIGHTS[(name, class_agnostic)].items():
        assert state[key].flatten()[1].item() == pytest.approx(value, rel=1e-5, abs=1e-8), key


def test_r50_builds_from_a_local_weights_file_with_torchvisions_freezing(tmp_path):
    from torchvision.models import resnet50

    torch.manual_seed(1)
    reference = resnet50()
    path = tmp_path / "r50.pth"
    torch.save(reference.state_dict(), path)
    model = maskrcnn_r50_fpn(num_classes=8, backbone_weights=str(path))
    body = model.backbone.body
    assert torch.equal(body.layer3[0].conv1.weight, reference.layer3[0].conv1.weight)
    # ImageNet start: frozen batch norm; conv1 and layer1 frozen, layer2-4 train (trainable_layers 3)
    assert type(body.bn1).__name__ == "FrozenBatchNorm2d"
    frozen = {n.split(".")[0] for n, p in body.named_parameters() if not p.requires_grad}
    trained = {n.split(".")[0] for n, p in body.named_parameters() if p.requires_grad}
    assert frozen == {"conv1", "layer1"} and trained == {"layer2", "layer3", "layer4"}
    all_train = maskrcnn_r50_fpn(num_classes=8, backbone_weights=str(path), trainable_backbone_layers=5)
    assert all(p.requires_grad for p in all_train.backbone.body.parameters())


def test_r50_weights_errors_are_one_line(tmp_path, monkeypatch):
    with pytest.raises(NoisysegError, match=r"^backbone_weights: .*x\.pth is not 'imagenet', 'none' or an existing file$"):
        maskrcnn_r50_fpn(num_classes=3, backbone_weights=str(tmp_path / "x.pth"))
    bad = tmp_path / "bad.pth"
    torch.save({"foo": torch.zeros(1)}, bad)
    with pytest.raises(NoisysegError, match=r"is not a ResNet-50 state dict \(missing \d+ keys, e\.g\. conv1\.weight\)$"):
        maskrcnn_r50_fpn(num_classes=3, backbone_weights=str(bad))
    with pytest.raises(NoisysegError, match=r"^trainable_backbone_layers: expected 0\.\.5 for ResNet-50, got 6$"):
        maskrcnn_r50_fpn(num_classes=3, trainable_backbone_layers=6)


def test_r50_imagenet_weights_offline_say_where_to_put_the_file(monkeypatch, tmp_path):
    from torchvision.models import ResNet50_Weights

    def offline(*args, **kwargs):
        raise OSError("no network")

    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    monkeypatch.setattr(ResNet50_Weights.IMAGENET1K_V1.__class__, "get_state_dict", offline)
    with pytest.raises(NoisysegError) as e:
        maskrcnn_r50_fpn(num_classes=3, backbone_weights="imagenet")
    message = str(e.value)
    assert "\n" not in message
    assert message.startswith("backbone_weights=imagenet: resnet50-0676ba61.pth is not in ")
    assert f"copy that file to {tmp_path}/hub/checkpoints/resnet50-0676ba61.pth" in message


def test_the_posterior_loss_routes_each_annotation_s_target_to_its_rois():
    """With one-hot targets on the given labels the posterior loss is CE, to the last bit of the same step;
    moving one annotation's target to another class changes the classification term and nothing else."""
    def step(loss_name, shift_first=False):
        torch.manual_seed(0)
        model = maskrcnn_tiny(num_classes=3, classification_loss=build_loss(loss_name), **SMALL)
        images, targets = _batch()
        for t in targets:
            t["class_target"] = torch.nn.functional.one_hot(t["labels"] - 1, 3).float()
        if shift_first:
            first = targets[0]["class_target"][0]
            targets[0]["class_target"][0] = first.roll(1)
        torch.manual_seed(1)
        return model(images, targets)

    ce, posterior, shifted = step("ce"), step("posterior"), step("posterior", shift_first=True)
    assert {k: v.item() for k, v in posterior.items()} == {k: v.item() for k, v in ce.items()}
    assert shifted["loss_classifier"].item() != ce["loss_classifier"].item()
    assert all(shifted[k].item() == ce[k].item() for k in ce if k != "loss_classifier")
