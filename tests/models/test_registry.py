"""The name -> builder registry, and the models layer's independence from the config schema."""

import ast
from pathlib import Path

import pytest

import noisyseg.models
from noisyseg.errors import NoisysegError
from noisyseg.models import available_models, get_model_builder, maskrcnn_tiny, register_model


def test_the_registry_lists_every_preset():
    assert available_models() == ["maskrcnn_mobilenet_v2_fpn", "maskrcnn_r50_fpn", "maskrcnn_tiny"]
    assert get_model_builder("maskrcnn_tiny") is maskrcnn_tiny


def test_an_unknown_name_is_a_one_line_error_listing_the_names():
    with pytest.raises(NoisysegError) as e:
        get_model_builder("nope")
    assert str(e.value) == "unknown model 'nope'; available: maskrcnn_mobilenet_v2_fpn, maskrcnn_r50_fpn, maskrcnn_tiny"


def test_a_name_cannot_be_registered_twice():
    def maskrcnn_tiny(**kwargs):
        return None

    with pytest.raises(ValueError, match="registered twice"):
        register_model(maskrcnn_tiny)


def test_the_models_layer_imports_neither_the_config_nor_the_engine():
    root = Path(noisyseg.models.__file__).parent
    for path in sorted(root.glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            for name in names:
                assert not name.startswith(("noisyseg.config", "noisyseg.engine")), (path.name, name)
