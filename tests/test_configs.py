"""Every shipped YAML config validates, and the paper presets carry the paper's settings."""

from pathlib import Path

import pytest

from noisyseg.config import load_config
from noisyseg.losses import build_loss
from noisyseg.models import available_models

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = sorted((ROOT / "configs").glob("*.yaml")) + sorted((ROOT / "src/noisyseg/configs").glob("*.yaml"))


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_config_validates(path):
    cfg = load_config(path)
    assert cfg.model.name in available_models()
    build_loss(cfg.loss.name, **cfg.loss.params)
    assert cfg.loss.warmup_epochs <= cfg.train.epochs


@pytest.mark.parametrize("name", ["cityscapes_lncis_r50", "coco_lncis_r50", "voc_lncis_r50"])
def test_paper_presets(name):
    cfg = load_config(ROOT / "configs" / f"{name}.yaml")
    assert cfg.model.name == "maskrcnn_r50_fpn" and cfg.model.backbone_weights == "imagenet"
    assert cfg.model.rois_per_image == 512 and cfg.model.positive_fraction == 0.25
    assert (cfg.train.batch_size, cfg.train.lr, cfg.train.momentum, cfg.train.weight_decay) == (8, 0.01, 0.9, 1e-4)
    assert (cfg.train.warmup_iters, cfg.train.warmup_ratio) == (500, 0.001)
    assert cfg.loss.warmup_epochs * 2 == cfg.train.epochs  # stage switch at half the epochs
    assert len(cfg.train.lr_steps) == 1 and cfg.loss.warmup_epochs < cfg.train.lr_steps[0] < cfg.train.epochs


def test_each_shipped_config_has_one_copy():
    """The package's configs (the demo's base) live only in the package: no copy to keep in step."""
    from noisyseg.configs import packaged_config

    names = [p.name for p in CONFIGS]
    assert len(names) == len(set(names)), names
    assert packaged_config("shapes_tiny").is_file()


def test_cityscapes_preset_scales():
    cfg = load_config(ROOT / "configs" / "cityscapes_lncis_r50.yaml")
    assert cfg.data.train_min_size == (800, 1024) and cfg.data.max_size == 2048 and cfg.data.test_min_size == 1024


def _tree(**train):
    return {"data": {"train_json": "t.json", "val_json": "v.json", "image_root": "img"},
            "loss": {"name": "lncis", "warmup_epochs": 1}, "train": {"epochs": 2, **train}}


def test_differing_keys_names_dotted_keys_and_ignores_settings_that_change_no_result():
    from noisyseg.config import config_from_dict, differing_keys

    a = config_from_dict(_tree()).model_dump(mode="json")
    b = config_from_dict(_tree(lr=0.02, device="cpu", threads=3), overrides=["loss.params.ce_weight=0.5",
                                                                            "data.num_workers=7"]).model_dump(mode="json")
    assert differing_keys(a, b) == ["loss.params.ce_weight", "train.lr"]
    assert differing_keys(a, a) == []
    assert differing_keys(a, b, ignore=()) == ["data.num_workers", "loss.params.ce_weight", "train.device",
                                               "train.lr", "train.threads"]


@pytest.mark.parametrize("train, message", [
    ({"device": "cuda:x"}, "expected auto, cpu, cuda or cuda:N"),
    ({"keep_epochs": [0, 2]}, "train.keep_epochs: [0] outside the epochs 1..2"),
])
def test_train_settings_are_checked(train, message):
    from noisyseg.config import config_from_dict
    from noisyseg.errors import NoisysegError

    with pytest.raises(NoisysegError, match=message.replace("[", r"\[").replace("]", r"\]")):
        config_from_dict(_tree(**train))


def test_a_robust_loss_needs_an_epoch_after_the_ce_stage():
    from noisyseg.config import config_from_dict
    from noisyseg.errors import NoisysegError

    with pytest.raises(NoisysegError, match=r"loss.warmup_epochs \(2\) equals train.epochs \(2\)"):
        config_from_dict(_tree(), overrides=["loss.warmup_epochs=2"])
    assert config_from_dict(_tree(), overrides=["loss.warmup_epochs=2", "loss.name=ce"]).loss.warmup_epochs == 2
    for device in ("auto", "cpu", "cuda", "cuda:1"):
        assert config_from_dict(_tree(device=device)).train.device == device


@pytest.mark.parametrize("overrides, line", [
    (["loss.name=focal"],
     "--set loss.name=focal: loss.name: unknown loss 'focal'; expected one of ce, rce, sce, gce, apl, ls, lncis, good, forward, posterior"),
    (["loss.name=gce", "loss.params={q: 3}"],
     "--set loss.params={q: 3}: loss.params: loss gce: q must be in (0, 1], got 3"),
    (["loss.name=sce", "loss.params={gamma: 1}"],
     "--set loss.params={gamma: 1}: loss.params: loss sce: unknown parameter(s) gamma; valid: alpha, beta, log_zero"),
])
def test_a_bad_loss_is_refused_naming_the_file_and_the_key(overrides, line):
    from noisyseg.config import config_from_dict
    from noisyseg.errors import NoisysegError

    with pytest.raises(NoisysegError) as err:
        config_from_dict(_tree(), source="run.yaml", overrides=overrides)
    assert str(err.value) == line
