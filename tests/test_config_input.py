"""Config input as a hostile user gives it: bounded files, strict types, --set by field type, every size
checked at load, and each problem one line that names the file or the --set option, the key and what was
expected (exit code 2 through the CLI)."""

from __future__ import annotations

import pytest
import yaml
from helpers import assert_one_line, cli

from noisyseg.config import (
    MAX_CONFIG_BYTES,
    MAX_CONFIG_NODES,
    Config,
    config_from_dict,
    load_config,
    parse_override,
)
from noisyseg.errors import NoisysegError

BASE = {"data": {"train_json": "t.json", "val_json": "v.json", "image_root": "img"},
        "loss": {"name": "lncis", "warmup_epochs": 1}, "train": {"epochs": 2}}


def _write(path, text: str | bytes):
    (path.write_bytes if isinstance(text, bytes) else path.write_text)(text)
    return path


def _error(fn, *args, **kwargs) -> str:
    with pytest.raises(NoisysegError) as e:
        fn(*args, **kwargs)
    return str(e.value)


def _laughs(levels: int) -> str:
    """A YAML "billion laughs": each level an alias list of nine of the level above (9**levels strings)."""
    lines = ['l0: &l0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    lines += [f"l{i}: &l{i} [{', '.join([f'*l{i - 1}'] * 9)}]" for i in range(1, levels)]
    lines.append(f"data: {{train_json: t.json, val_json: v.json, image_root: img, val_image_root: *l{levels - 1}}}")
    return "\n".join(lines) + "\n"


def _count(value) -> int:
    """Values in a tree, every shared object counted at each use (an independent count for the bound)."""
    if isinstance(value, dict):
        return 1 + sum(_count(k) + _count(v) for k, v in value.items())
    if isinstance(value, (list, tuple)):
        return 1 + sum(_count(v) for v in value)
    return 1


# ------------------------------------------------------------------------------------- 1. bounded input


def test_nested_aliases_are_refused_before_they_expand(tmp_path, capsys):
    path = _write(tmp_path / "laughs.yaml", _laughs(6))  # 531441 strings from 0.5 KB
    assert path.stat().st_size < 600
    line = f"{path}: expands to more than {MAX_CONFIG_NODES} values (nested or recursive YAML aliases?); " \
           f"a config is at most that"
    assert _error(load_config, path) == line
    rc, out, err = cli(capsys, "train", path, "-o", tmp_path / "run")
    assert rc == 2 and out == ""
    assert_one_line(err, "train", line)
    assert not (tmp_path / "run").exists()


def test_a_recursive_alias_is_refused(tmp_path):
    path = _write(tmp_path / "loop.yaml", "data: &d {train_json: t.json, val_json: v.json, image_root: img, x: *d}\n")
    assert "expands to more than" in _error(load_config, path)


def test_the_node_bound_is_exact_and_holds_for_trees_and_set_values():
    fixed = _count({**BASE, "train": {"epochs": 2, "keep_epochs": []}})
    room = MAX_CONFIG_NODES - fixed  # list items that still fit
    at_limit = {**BASE, "train": {"epochs": 2, "keep_epochs": [1] * room}}
    assert _count(at_limit) == MAX_CONFIG_NODES
    assert config_from_dict(at_limit).train.keep_epochs == [1] * room
    over = {**BASE, "train": {"epochs": 2, "keep_epochs": [1] * (room + 1)}}
    assert "expands to more than" in _error(config_from_dict, over, source="c.yaml")
    shared = [0.0] * 200  # one list used 100 times: small in memory, 20000 values expanded
    assert "expands to more than" in _error(config_from_dict, {**BASE, "loss": {"params": {"w": [shared] * 100}}})
    anchors = "&a [" + ", ".join(["1"] * 50) + "]"
    assert "expands to more than" in _error(parse_override, f"loss.params.w=[{anchors}, " + ", ".join(["*a"] * 300) + "]")


def test_the_file_size_is_bounded(tmp_path):
    body = yaml.safe_dump(BASE)
    fits = _write(tmp_path / "fits.yaml", body + "#" * (MAX_CONFIG_BYTES - len(body)))
    assert load_config(fits).train.epochs == 2
    big = _write(tmp_path / "big.yaml", body + "#" * (MAX_CONFIG_BYTES - len(body) + 1))
    assert _error(load_config, big) == f"{big}: larger than {MAX_CONFIG_BYTES} bytes; a config file is at most that"


def test_a_config_that_is_not_utf8_is_one_line(tmp_path, capsys):
    path = _write(tmp_path / "latin1.yaml", "data: {train_json: t\u00e9.json}\n".encode("latin-1"))
    line = f"{path}: not UTF-8 text (byte 20 is 0xe9); save the config as UTF-8"
    assert _error(load_config, path) == line
    rc, _, err = cli(capsys, "train", path, "-o", tmp_path / "run")
    assert rc == 2
    assert_one_line(err, "train", line)


def test_yaml_nested_too_deeply_is_one_line(tmp_path):
    path = _write(tmp_path / "deep.yaml", "a: " + "[" * 5000 + "]" * 5000 + "\n")
    assert _error(load_config, path) == f"{path}: nested too deeply to be a config"


@pytest.mark.parametrize("make", [
    lambda tmp: (load_config, [_write(tmp / "c.yaml", _laughs(3).replace('"lol"', '"' + "lol" * 100 + '"'))], {}),
    lambda tmp: (config_from_dict, [{**BASE, "train": {"epochs": 2, "device": "x" * 700_000}}], {}),
    lambda tmp: (config_from_dict, [BASE], {"overrides": ["train.device=" + "y" * 700_000]}),
    lambda tmp: (config_from_dict, [BASE], {"overrides": ["loss.params.ascent_weights=[" + "1," * 3000 + "1]"]}),
    lambda tmp: (config_from_dict, [{**BASE, "loss": {"name": "z" * 700_000}}], {}),
    lambda tmp: (config_from_dict, [{**BASE, "loss": {"name": "gce", "params": {"q": "q" * 700_000}}}], {}),
    lambda tmp: (config_from_dict, [{**BASE, "train": {"epochs": 2, "keep_epochs": list(range(3, 3000))}}], {}),
])
def test_every_message_shows_a_value_cut_to_a_bounded_length(tmp_path, make):
    fn, args, kwargs = make(tmp_path)
    line = _error(fn, *args, **kwargs)
    assert len(line) < 600 and "\n" not in line
    assert " characters)" in line  # says that it was cut


# ------------------------------------------------------------------------------------------ 2. messages


@pytest.mark.parametrize("override, key, value", [
    ("data.image_root=2024", "image_root", "2024"),
    ("data.image_root=photos #2", "image_root", "photos #2"),
    ("data.val_json=a#b.json", "val_json", "a#b.json"),
    ("data.train_json= spaced .json", "train_json", " spaced .json"),
    ("data.val_image_root=true", "val_image_root", "true"),
    ("data.val_image_root=null", "val_image_root", None),
])
def test_a_string_field_takes_the_set_text_verbatim(override, key, value):
    assert getattr(config_from_dict(BASE, overrides=[override]).data, key) == value


@pytest.mark.parametrize("override, got", [
    ("train.lr_steps=[1, 2]", [1, 2]),
    ("train.lr=1e-3", 0.001),
    ("train.lr=2", 2.0),
    ("train.amp=off", "off"),
    ("model.class_agnostic=true", True),
    ("loss.params={robust: sce, beta: 1e-1}", {"robust": "sce", "beta": 0.1}),
    ("train.grad_clip=null", None),
])
def test_other_fields_read_the_set_value_as_yaml(override, got):
    key, _ = override.split("=", 1)
    cfg = config_from_dict(BASE, overrides=[override])
    section, name = key.split(".")
    assert getattr(getattr(cfg, section), name) == got


def test_a_set_value_that_is_only_a_comment_is_refused():
    assert _error(parse_override, "train.epochs=#3") == \
        "--set train.epochs=#3: train.epochs: a comment ('#') in a value; quote the value if it holds a '#'"


def test_the_bounded_yaml_reader_serves_other_options():
    from noisyseg.config import parse_yaml_text

    assert parse_yaml_text("[1, 1e-3, {a: b}]", "--methods") == [1, 0.001, {"a": "b"}]
    laughs = "[" + ", ".join(["&a0 [0, 0, 0, 0, 0, 0, 0, 0, 0, 0]"] + [f"&a{i} [{', '.join([f'*a{i - 1}'] * 10)}]"
                                                                       for i in range(1, 6)]) + "]"
    assert _error(parse_yaml_text, laughs, "--methods 'ce+fix:retrain=...'") == (
        f"--methods 'ce+fix:retrain=...': expands to more than {MAX_CONFIG_NODES} values (nested or recursive "
        "YAML aliases?); a config is at most that")
    assert _error(parse_yaml_text, "[1,", "--methods x") == \
        "--methods x: not valid YAML at line 1 (expected the node content, but found '<stream end>')"


def test_a_comment_in_a_set_value_is_refused_not_cut(tmp_path, capsys):
    line = "--set train.lr_steps=[1] # ,2]: train.lr_steps: a comment ('#') in a value; quote the value if it holds a '#'"
    assert _error(config_from_dict, BASE, overrides=["train.lr_steps=[1] # ,2]"]) == line
    path = _write(tmp_path / "c.yaml", yaml.safe_dump(BASE))
    rc, _, err = cli(capsys, "train", path, "-o", tmp_path / "run", "--set", "train.lr_steps=[1] # ,2]")
    assert rc == 2
    assert_one_line(err, "train", line)


def _typed_fields(model=Config, prefix=""):
    """(dotted key, annotation) of every leaf field of the schema; ``X | None`` as ``X | None`` of the bare X."""
    from typing import Annotated, Union, get_args, get_origin

    from pydantic import BaseModel

    for name, field in model.model_fields.items():
        ann = field.annotation
        if isinstance(ann, type) and issubclass(ann, BaseModel):
            yield from _typed_fields(ann, f"{prefix}{name}.")
            continue
        if get_origin(ann) is Union or type(ann).__name__ == "UnionType":
            bare = [get_args(a)[0] if get_origin(a) is Annotated else a for a in get_args(ann)]
            ann = Union[tuple(bare)]
        yield f"{prefix}{name}", ann


NUMBER_FIELDS = [key for key, ann in _typed_fields() if ann in (int, float, int | None, float | None)]


def test_the_schema_has_the_number_fields_the_strict_tests_walk():
    assert {"seed", "train.epochs", "train.lr", "data.test_min_size", "data.max_size", "train.threads",
            "model.rois_per_image", "model.score_threshold"} <= set(NUMBER_FIELDS)


@pytest.mark.parametrize("key", NUMBER_FIELDS)
def test_a_boolean_is_never_a_number_in_a_file_or_a_set(key, tmp_path):
    expected = "a valid integer" if dict(_typed_fields())[key] in (int, int | None) else "a valid number"
    assert _error(config_from_dict, BASE, source="c.yaml", overrides=[f"{key}=true"]) == \
        f"--set {key}=true: {key}: Input should be {expected} (got True)"
    tree = yaml.safe_load(yaml.safe_dump(BASE))
    section, _, name = key.rpartition(".")
    (tree.setdefault(section, {}) if section else tree)[name] = False
    assert _error(config_from_dict, tree, source="c.yaml") == f"c.yaml: {key}: Input should be {expected} (got False)"


@pytest.mark.parametrize("override, line", [
    ("model.class_agnostic=1", "--set model.class_agnostic=1: model.class_agnostic: Input should be a valid boolean (got 1)"),
    ("train.epochs=2.0", "--set train.epochs=2.0: train.epochs: Input should be a valid integer (got 2.0)"),
    ("train.lr=.nan", "--set train.lr=.nan: train.lr: Input should be a finite number (got nan)"),
    ("train.hflip=1", "--set train.hflip=1: train.hflip: unknown key; expected one of epochs, batch_size, lr, momentum, "
                      "weight_decay, warmup_iters, warmup_ratio, lr_steps, lr_gamma, grad_clip, amp, eval_interval, "
                      "log_interval, device, threads, keep_epochs"),
    ("train.lr_steps=[2, true]", "--set train.lr_steps=[2, true]: train.lr_steps[1]: Input should be a valid integer (got True)"),
    ("loss.name=focal", "--set loss.name=focal: loss.name: unknown loss 'focal'; expected one of ce, rce, sce, gce, apl, ls, lncis, good, forward, posterior"),
    ("loss.params.q=3", "--set loss.params.q=3: loss.params: loss lncis: unknown parameter(s) q with robust='rce'; "
                        "valid: ce_weight, ignore_confident, learned_at, log_zero, pon_threshold, robust, robust_weight"),
    ("data.image_root.x=1", "--set data.image_root.x=1: data.image_root is not a section"),
    ("train.epochs=", "--set train.epochs=: train.epochs: expected a value after '='"),
])
def test_a_set_error_names_the_set_option_not_the_file(tmp_path, capsys, override, line):
    path = _write(tmp_path / "c.yaml", yaml.safe_dump(BASE))
    assert _error(load_config, path, [override]) == line
    rc, _, err = cli(capsys, "train", path, "-o", tmp_path / "run", "--set", override)
    assert rc == 2
    assert_one_line(err, "train", line)


def test_an_error_across_keys_names_the_file_the_set_options_or_both():
    relation = "loss.warmup_epochs (3) is larger than train.epochs (2)"
    assert _error(config_from_dict, {**BASE, "loss": {"warmup_epochs": 3}}, source="c.yaml") == f"c.yaml: {relation}"
    assert _error(config_from_dict, BASE, source="c.yaml", overrides=["loss.warmup_epochs=3"]) == \
        f"c.yaml with --set loss.warmup_epochs=3: {relation}"
    assert _error(config_from_dict, BASE, source="c.yaml", overrides=["loss.warmup_epochs=3", "train.epochs=2"]) == \
        f"--set loss.warmup_epochs=3, --set train.epochs=2: {relation}"
    params = {**BASE, "loss": {"name": "gce", "params": {"q": 0.5}, "warmup_epochs": 1}}
    assert _error(config_from_dict, params, source="c.yaml", overrides=["loss.name=sce"]).startswith(
        "c.yaml with --set loss.name=sce: loss.params: loss sce: unknown parameter(s) q")


def test_an_unquoted_number_in_a_string_field_of_a_file_says_to_quote_it(tmp_path):
    tree = {**BASE, "data": {**BASE["data"], "image_root": 2024}}
    assert _error(config_from_dict, tree, source="c.yaml") == (
        "c.yaml: data.image_root: Input should be a valid string (got 2024); YAML reads this unquoted value as a "
        "number or boolean: quote it")


def test_yaml_1_2_floats_are_floats_in_a_file(tmp_path):
    path = _write(tmp_path / "c.yaml", yaml.safe_dump(BASE) + "model: {score_threshold: 5e-2}\n")
    assert load_config(path).model.score_threshold == 0.05


# ------------------------------------------------------------------------------- 3. checked before work


@pytest.mark.parametrize("override, line", [
    ("data.test_min_size=0", "data.test_min_size: Input should be greater than or equal to 16 (got 0)"),
    ("data.test_min_size=15", "data.test_min_size: Input should be greater than or equal to 16 (got 15)"),
    ("data.max_size=0", "data.max_size: Input should be greater than or equal to 16 (got 0)"),
    ("data.max_size=-5", "data.max_size: Input should be greater than or equal to 16 (got -5)"),
    ("data.max_size=100000", "data.max_size: Input should be less than or equal to 16384 (got 100000)"),
    ("data.train_min_size=[8,8]", "data.train_min_size: expected [low, high] with 16 <= low <= high <= 16384, got [8, 8]"),
    ("seed=-1", "seed: Input should be greater than or equal to 0 (got -1)"),
    ("seed=4294967296", "seed: Input should be less than or equal to 4294967295 (got 4294967296)"),
    ("train.threads=0", "train.threads: Input should be greater than or equal to 1 (got 0)"),
    ("train.threads=2147483648", "train.threads: Input should be less than or equal to 1024 (got 2147483648)"),
    ("data.num_workers=100000", "data.num_workers: Input should be less than or equal to 1024 (got 100000)"),
    ("train.lr_steps=[0, 3]", "train.lr_steps: expected epochs >= 1, got [0, 3]"),
])
def test_sizes_and_counts_that_would_crash_later_are_refused_at_load(tmp_path, capsys, override, line):
    path = _write(tmp_path / "c.yaml", yaml.safe_dump(BASE))
    assert _error(load_config, path, [override]) == f"--set {override}: {line}"
    rc, out, err = cli(capsys, "train", path, "-o", tmp_path / "run", "--set", override)
    assert rc == 2 and "[train]" not in out
    assert_one_line(err, "train", line)
    assert not (tmp_path / "run").exists()


def test_the_smallest_accepted_image_sides_train_and_predict():
    """16 pixels is the bound: a model at that scale still takes a training step and predicts."""
    import torch

    from noisyseg.config import MIN_IMAGE_SIDE
    from noisyseg.models import maskrcnn_tiny

    torch.manual_seed(0)
    model = maskrcnn_tiny(num_classes=2, train_sizes=(MIN_IMAGE_SIDE,), test_size=MIN_IMAGE_SIDE,
                          max_size=MIN_IMAGE_SIDE, rois_per_image=8)
    masks = torch.zeros(1, 48, 64, dtype=torch.uint8)
    masks[0, 10:30, 10:40] = 1
    target = {"boxes": torch.tensor([[10.0, 10, 40, 30]]), "labels": torch.tensor([1]), "masks": masks}
    losses = model([torch.rand(3, 48, 64)], [target])
    assert torch.isfinite(sum(losses.values()))
    model.eval()
    with torch.no_grad():
        out = model([torch.rand(3, 48, 64), torch.rand(3, 200, 30)])
    assert [o["masks"].shape[-2:] for o in out] == [(48, 64), (200, 30)]
