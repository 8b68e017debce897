"""noisyseg.engine.build.model_from_config: the one adapter from a run config to the builders' arguments.

(It lives in the engine; its tests sit here, beside the builders it drives.)
"""

import pytest
import torch

from noisyseg.config import Config, DataConfig, ModelConfig
from noisyseg.engine.build import model_from_config, model_kwargs
from noisyseg.errors import NoisysegError
from noisyseg.losses import build_loss
from noisyseg.models import maskrcnn_tiny

DATA = DataConfig(train_json="t.json", val_json="v.json", image_root=".", train_min_size=(56, 72),
                  test_min_size=64, max_size=128)


def _cfg(**model):
    return Config(data=DATA, model=ModelConfig(**model))


def test_config_fields_become_the_builders_keyword_arguments():
    loss = build_loss("lncis")
    name, kwargs = model_kwargs(_cfg(name="maskrcnn_r50_fpn", rois_per_image=7, positive_fraction=0.5,
                                     rpn_batch_size_per_image=9, class_agnostic=True, detections_per_image=11,
                                     score_threshold=0.3, backbone_weights="imagenet"), 4, loss)
    assert name == "maskrcnn_r50_fpn"
    assert kwargs == dict(num_classes=4, classification_loss=loss, class_agnostic=True, rois_per_image=7,
                          positive_fraction=0.5, rpn_batch_size_per_image=9, detections_per_image=11,
                          score_threshold=0.3, train_sizes=tuple(range(56, 73)), test_size=64, max_size=128,
                          backbone_weights="imagenet", load_backbone_weights=True)
    name, kwargs = model_kwargs(_cfg(name="maskrcnn_tiny"), 3)
    assert name == "maskrcnn_tiny" and "backbone_weights" not in kwargs and kwargs["classification_loss"] is None


def test_the_adapter_builds_the_same_model_as_the_builder():
    torch.manual_seed(0)
    ours = model_from_config(_cfg(rois_per_image=64), 3, build_loss("ce"))
    torch.manual_seed(0)
    direct = maskrcnn_tiny(num_classes=3, rois_per_image=64, train_sizes=range(56, 73), test_size=64, max_size=128)
    assert ours.transform.train_sizes == tuple(range(56, 73)) and ours.roi_heads.fg_bg_sampler.batch_size_per_image == 64
    a, b = ours.state_dict(), direct.state_dict()
    assert list(a) == list(b) and all(torch.equal(a[k], b[k]) for k in a)


def test_config_errors_name_the_model_key():
    with pytest.raises(NoisysegError) as e:
        model_from_config(_cfg(name="nope"), 3)
    assert str(e.value) == ("model.name: unknown model 'nope'; available: maskrcnn_mobilenet_v2_fpn, "
                            "maskrcnn_r50_fpn, maskrcnn_tiny")
    with pytest.raises(NoisysegError, match=r"^model\.backbone_weights: maskrcnn_tiny has no pretrained backbone; "
                                            r"expected 'none', got 'imagenet'$"):
        model_from_config(_cfg(backbone_weights="imagenet"), 3)
    with pytest.raises(NoisysegError, match=r"^model\.backbone_weights: /no/such\.pth is not 'imagenet', 'none'"):
        model_from_config(_cfg(name="maskrcnn_mobilenet_v2_fpn", backbone_weights="/no/such.pth"), 3)


def test_for_a_checkpoint_the_pretrained_layout_is_built_without_reading_weights(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))  # an empty hub cache: reading ImageNet weights would fail
    cfg = _cfg(name="maskrcnn_mobilenet_v2_fpn", backbone_weights="imagenet")
    model = model_from_config(cfg, 3, load_backbone_weights=False)
    assert type(model.backbone.body["0"][1]).__name__ == "FrozenBatchNorm2d"
    assert not model.backbone.body["0"][0].weight.requires_grad
    with pytest.raises(NoisysegError, match="noisyseg weights fetch mobilenet_v2"):
        model_from_config(cfg, 3)
