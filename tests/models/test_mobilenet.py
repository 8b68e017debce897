"""maskrcnn_mobilenet_v2_fpn: MobileNetV2 stage ends at strides 4-32, torchvision's freezing, weights files."""

import pytest
import torch
from torchvision.models import mobilenet_v2

from noisyseg.errors import NoisysegError
from noisyseg.models import maskrcnn_mobilenet_v2_fpn
from noisyseg.models.mobilenet import stage_ends, stage_starts


@pytest.fixture(scope="module")
def imagenet_like_file(tmp_path_factory):
    """A MobileNetV2 state dict file (random weights, the ImageNet file's names and shapes)."""
    torch.manual_seed(3)
    net = mobilenet_v2()
    with torch.no_grad():  # non-trivial batch-norm statistics, so frozen BN must really use them
        for m in net.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 2.0)
    path = tmp_path_factory.mktemp("weights") / "mobilenet_v2.pth"
    torch.save(net.state_dict(), path)
    return path, net.eval()


def test_stage_indices_are_where_the_resolution_changes():
    features = mobilenet_v2().features
    assert stage_starts(features) == [0, 2, 4, 7, 14, 18]
    assert stage_ends(features) == [3, 6, 13, 18]
    x = torch.rand(1, 3, 64, 64)
    sizes = []
    with torch.no_grad():
        for block in features:
            x = block(x)
            sizes.append(x.shape[-1])
    strides = [64 // s for s in sizes]
    # a stage end is the last block before the stride doubles (or the last block)
    assert [i for i in range(len(strides)) if i + 1 == len(strides) or strides[i + 1] > strides[i]] == [1, 3, 6, 13, 18]
    assert [strides[i] for i in stage_ends(features)] == [4, 8, 16, 32]


def test_builds_from_a_state_dict_file_with_frozen_bn_and_early_stages(imagenet_like_file):
    path, reference = imagenet_like_file
    model = maskrcnn_mobilenet_v2_fpn(num_classes=10, backbone_weights=str(path))
    body = model.backbone.body
    for i, block in enumerate(reference.features):
        for name, value in block.state_dict().items():
            if not name.endswith("num_batches_tracked"):
                assert torch.equal(body[str(i)].state_dict()[name], value), (i, name)
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in model.modules())
    assert sum(type(m).__name__ == "FrozenBatchNorm2d" for m in body.modules()) == 52
    # torchvision's trainable_layers = 3 of 6 stages: features[0..6] frozen, features[7..18] train
    frozen = {n for n, p in model.named_parameters() if not p.requires_grad}
    expected = {n for n, _ in model.named_parameters()
                if n.startswith("backbone.body.") and int(n.split(".")[2]) < 7}
    assert frozen == expected and len(expected) > 0
    # the tiny model's heads on a 64-channel FPN: 3,441,297 parameters for 10 classes
    assert sum(p.numel() for p in model.parameters()) == 3_441_297
    # the backbone computes what torchvision's MobileNetV2 computes (frozen BN = eval-mode BN)
    x = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        assert torch.allclose(body(x)["3"], reference.features(x), atol=1e-5, rtol=1e-4)


def test_trainable_backbone_layers_follow_torchvision(imagenet_like_file):
    path, _ = imagenet_like_file
    every = maskrcnn_mobilenet_v2_fpn(num_classes=2, backbone_weights=str(path), trainable_backbone_layers=6)
    assert all(p.requires_grad for p in every.parameters())
    none = maskrcnn_mobilenet_v2_fpn(num_classes=2, backbone_weights=str(path), trainable_backbone_layers=0)
    assert not any(p.requires_grad for p in none.backbone.body.parameters())
    scratch = maskrcnn_mobilenet_v2_fpn(num_classes=2, backbone_weights="none")
    assert all(p.requires_grad for p in scratch.parameters())
    assert any(isinstance(m, torch.nn.BatchNorm2d) for m in scratch.backbone.body.modules())
    with pytest.raises(NoisysegError, match=r"^trainable_backbone_layers: expected 0\.\.6 for MobileNetV2, got 7$"):
        maskrcnn_mobilenet_v2_fpn(num_classes=2, trainable_backbone_layers=7)


@pytest.mark.parametrize("size", [96, 128])
def test_trains_and_predicts_on_small_images(imagenet_like_file, size):
    path, _ = imagenet_like_file
    torch.manual_seed(0)
    model = maskrcnn_mobilenet_v2_fpn(num_classes=3, backbone_weights=str(path), rois_per_image=64,
                                      train_sizes=(size,), test_size=size, max_size=2 * size)
    features = model.backbone(torch.rand(1, 3, size, size))
    assert {k: v.shape[-1] for k, v in features.items()} == {
        "0": size // 4, "1": size // 8, "2": size // 16, "3": size // 32, "pool": -(-size // 64)}
    masks = torch.zeros(1, size, size, dtype=torch.uint8)
    masks[0, 10:60, 20:70] = 1
    target = {"boxes": torch.tensor([[20.0, 10, 70, 60]]), "labels": torch.tensor([2]), "masks": masks}
    model.train()
    losses = model([torch.rand(3, size, size)], [target])
    sum(losses.values()).backward()
    assert all(torch.isfinite(v) for v in losses.values())
    assert model.backbone.body["18"][0].weight.grad is not None
    assert model.backbone.body["0"][0].weight.grad is None  # frozen stage
    model.eval()
    with torch.no_grad():
        out = model([torch.rand(3, size, size)])[0]
    assert out["masks"].shape[1:] == (1, size, size) and len(out["boxes"]) == len(out["labels"])


def test_a_state_dict_of_another_network_is_a_one_line_error(tmp_path):
    wrong = tmp_path / "r18.pth"
    from torchvision.models import resnet18

    torch.save(resnet18().state_dict(), wrong)
    with pytest.raises(NoisysegError, match=r"^backbone_weights: .*r18\.pth is not a MobileNetV2 state dict \(missing"):
        maskrcnn_mobilenet_v2_fpn(num_classes=2, backbone_weights=str(wrong))
    narrow = tmp_path / "narrow.pth"
    torch.save(mobilenet_v2(width_mult=0.5).state_dict(), narrow)
    with pytest.raises(NoisysegError, match=r"^backbone_weights: .*narrow\.pth does not fit a MobileNetV2 \(size mismatch"):
        maskrcnn_mobilenet_v2_fpn(num_classes=2, backbone_weights=str(narrow))


def test_imagenet_weights_missing_offline_say_to_run_weights_fetch(tmp_path, monkeypatch, capsys):
    import sys
    from urllib.error import URLError

    from torchvision.models import MobileNet_V2_Weights

    def offline(*args, **kwargs):
        sys.stderr.write('Downloading: "https://download.pytorch.org/models/mobilenet_v2-b0353104.pth"\n')  # as torch's hub does
        raise URLError("no network")

    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    monkeypatch.setattr(MobileNet_V2_Weights.IMAGENET1K_V1.__class__, "get_state_dict", offline)
    with pytest.raises(NoisysegError) as e:
        maskrcnn_mobilenet_v2_fpn(num_classes=2, backbone_weights="imagenet")
    assert str(e.value) == (
        f"backbone_weights=imagenet: mobilenet_v2-b0353104.pth is not in {tmp_path}/hub/checkpoints and cannot be "
        "downloaded from https://download.pytorch.org/models/mobilenet_v2-b0353104.pth (URLError); run "
        "`noisyseg weights fetch mobilenet_v2`, or set backbone_weights to a state dict file"
    )
    assert capsys.readouterr().err == ""  # the hub's "Downloading:" line is not left before the one-line error


def test_imagenet_weights_from_the_hub_cache(tmp_path, monkeypatch, imagenet_like_file):
    """The weights API reads the hub cache: a file placed there (as `weights fetch` does) is what loads."""
    path, reference = imagenet_like_file
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    cached = tmp_path / "hub" / "checkpoints" / "mobilenet_v2-b0353104.pth"
    cached.parent.mkdir(parents=True)
    cached.write_bytes(path.read_bytes())
    model = maskrcnn_mobilenet_v2_fpn(num_classes=2, backbone_weights="imagenet")
    assert torch.equal(model.backbone.body["18"][0].weight, reference.features[18][0].weight)
    cached.write_bytes(b"damaged")
    with pytest.raises(NoisysegError, match=r"^backbone_weights=imagenet: cannot load .*mobilenet_v2-b0353104\.pth "
                                            r"\(.*\); delete it and run `noisyseg weights fetch mobilenet_v2`$"):
        maskrcnn_mobilenet_v2_fpn(num_classes=2, backbone_weights="imagenet")


def test_the_real_imagenet_file_when_installed():
    from noisyseg.models.weights import is_installed

    if not is_installed("mobilenet_v2"):
        pytest.skip("run `noisyseg weights fetch mobilenet_v2` to test with the real ImageNet file")
    model = maskrcnn_mobilenet_v2_fpn(num_classes=10, backbone_weights="imagenet")
    from torchvision.models import MobileNet_V2_Weights

    state = MobileNet_V2_Weights.IMAGENET1K_V1.get_state_dict(progress=False, weights_only=True)
    assert torch.equal(model.backbone.body["0"][0].weight, state["features.0.0.weight"])
