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


def _imports(path):
    """Every noisyseg module ``path`` imports, at module level or inside a function."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found.update(f"{node.module}.{a.name}" for a in node.names)
    return {name for name in found if name.startswith("noisyseg.")}


def test_the_models_and_losses_modules_import_each_other_in_one_direction_only():
    """No import circle, not even through an import inside a function (the registry used to import the
    presets lazily while the presets imported the registry)."""
    src = Path(noisyseg.models.__file__).parents[1]
    modules = {}
    for package in ("models", "losses"):
        for path in sorted((src / package).glob("*.py")):
            if path.name != "__init__.py":
                modules[f"noisyseg.{package}.{path.stem}"] = path
    graph = {name: _imports(path) & set(modules) for name, path in modules.items()}

    def cycle_from(start, node, seen):
        for nxt in graph[node]:
            if nxt == start:
                return [*seen, nxt]
            if nxt not in seen:
                found = cycle_from(start, nxt, [*seen, nxt])
                if found:
                    return found
        return None

    cycles = [c for name in graph if (c := cycle_from(name, name, [name]))]
    assert cycles == []


def test_the_shared_settings_and_the_config_schema_import_no_torch():
    import subprocess
    import sys

    code = ("import sys, noisyseg.models.settings, noisyseg.config; "
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'torchvision')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_every_public_name_of_the_models_package_resolves():
    assert sorted(noisyseg.models.__all__) == sorted(noisyseg.models._HOMES)
    for name in noisyseg.models.__all__:
        assert getattr(noisyseg.models, name) is not None
    assert set(noisyseg.models.__all__) <= set(dir(noisyseg.models))
