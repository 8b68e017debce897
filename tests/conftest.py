"""Shared fixtures (helpers live in tests/helpers.py, importable as ``helpers``)."""

import pytest
import yaml

from helpers import tiny_config, write_tiny_coco


@pytest.fixture
def tiny_coco(tmp_path) -> dict:
    return write_tiny_coco(tmp_path / "tiny")


@pytest.fixture
def tiny_config_file(tiny_coco, tmp_path):
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(tiny_config(tiny_coco)))
    return path
