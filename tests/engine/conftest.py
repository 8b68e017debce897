import pytest
import yaml


def tiny_config(data: dict, **train) -> dict:
    """A seconds-long CPU run on the tiny fixture data: maskrcnn_tiny at 64 px, CE then lncis."""
    return {
        "seed": 3,
        "data": {"train_json": str(data["train_json"]), "val_json": str(data["val_json"]),
                 "image_root": str(data["image_root"]), "train_min_size": [56, 72], "test_min_size": 64,
                 "max_size": 128, "num_workers": 0},
        "model": {"name": "maskrcnn_tiny", "rois_per_image": 32},
        "loss": {"name": "lncis", "warmup_epochs": 1},
        "train": {"epochs": 2, "batch_size": 2, "lr": 0.01, "warmup_iters": 2, "lr_steps": [1],
                  "log_interval": 1, "threads": 2, "device": "cpu", **train},
    }


@pytest.fixture
def tiny_config_file(tiny_coco, tmp_path):
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(tiny_config(tiny_coco)))
    return path
