"""Fixtures for the audit tests: the tiny COCO fixture, noisy labels, and untrained checkpoints."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from helpers import tiny_config, write_tiny_coco


def save_untrained_run(run: Path, data: dict, test_size: int = 64, seed: int = 0, name: str = "last") -> Path:
    """A run folder holding a randomly initialised maskrcnn_tiny checkpoint in the engine's format."""
    from noisyseg.config import Config
    from noisyseg.data.coco import LabelMap
    from noisyseg.engine.build import model_from_config
    from noisyseg.engine.checkpoint import save_checkpoint

    raw = tiny_config(data)
    raw["data"]["test_min_size"] = test_size
    raw["data"]["max_size"] = max(raw["data"]["max_size"], 2 * test_size)
    cfg = Config.model_validate(raw)
    label_map = LabelMap.from_categories(json.loads(Path(data["train_json"]).read_text())["categories"])
    torch.manual_seed(seed)
    model = model_from_config(cfg, label_map.num_classes)
    with torch.no_grad():  # a sharper classifier than the default init, so probabilities differ per box
        model.roi_heads.box_predictor.cls_score.weight.mul_(8.0)
    return save_checkpoint(run / "checkpoints" / f"{name}.pt", {
        "model": model.state_dict(), "epoch": 1, "config": cfg.model_dump(mode="json"),
        "label_map": label_map.to_dict(),
    })


@pytest.fixture
def tiny_data(tmp_path) -> dict:
    """The tiny fixture with 3 of its train labels flipped (``clean_category_id`` recorded)."""
    from noisyseg.noise.inject import inject

    data = write_tiny_coco(tmp_path / "tiny", n_images=6)
    coco = json.loads(Path(data["train_json"]).read_text())
    noisy, _ = inject(coco, kind="symmetric", rate=0.3, seed=1)
    path = tmp_path / "tiny" / "train_noisy.json"
    path.write_text(json.dumps(noisy))
    return {**data, "noisy_json": path}


@pytest.fixture
def make_run():
    """``make_run(run, data, test_size=64, seed=0, name="last")`` -> the checkpoint path written."""
    return save_untrained_run


@pytest.fixture
def untrained_run(tiny_data, tmp_path) -> Path:
    run = tmp_path / "run"
    save_untrained_run(run, tiny_data)
    return run


def read_page_data(path: Path) -> dict:
    """The data a review.html carries (its <script id='audit-data'> element), parsed."""
    text = Path(path).read_text()
    tag = "<script id='audit-data' type='application/json'>"
    start = text.index(tag) + len(tag)
    return json.loads(text[start:text.index("</script>", start)])


@pytest.fixture
def page_json():
    """``page_json(review_html_path)`` -> the page's data (see :func:`noisyseg.audit.review.page_data`)."""
    return read_page_data
