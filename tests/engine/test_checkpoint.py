"""Checkpoints: plain-data round trips of the random streams, and files that are refused without running."""

import io
import pickle
import random
from pathlib import Path

import numpy as np
import pytest
import torch

from noisyseg.engine.checkpoint import (FORMAT_VERSION, load_checkpoint, load_model_weights, rng_state,
                                        save_checkpoint, set_rng_state)
from noisyseg.errors import NoisysegError


def _draws():
    return random.random(), float(np.random.rand()), float(torch.rand(()))


def test_rng_states_round_trip_through_a_weights_only_checkpoint(tmp_path):
    random.seed(1)
    np.random.seed(2)
    torch.manual_seed(3)
    _draws()
    np.random.randn()  # leaves a cached gaussian in numpy's state
    save_checkpoint(tmp_path / "c.pt", {"model": {}, "label_map": {}, "rng": [rng_state()]})
    expected = _draws()
    random.seed(99)
    np.random.seed(99)
    torch.manual_seed(99)
    ckpt = load_checkpoint(tmp_path / "c.pt")
    assert ckpt["format_version"] == FORMAT_VERSION
    set_rng_state(ckpt["rng"][0])
    assert _draws() == expected
    assert np.random.get_state()[3] == 1  # the cached gaussian came back too


class _RunsCode:
    """Unpickling this creates a file: what a crafted checkpoint could do with any command."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return Path.touch, (self.marker,)


def _write_pickled(path, payload):
    buf = io.BytesIO()
    torch.save(payload, buf)
    path.write_bytes(buf.getvalue())


def test_a_checkpoint_holding_a_pickled_object_is_refused_without_running_it(tmp_path):
    marker = tmp_path / "ran"
    path = tmp_path / "evil.pt"
    _write_pickled(path, {"model": {}, "label_map": {}, "format_version": 2, "x": _RunsCode(marker)})
    with pytest.raises(NoisysegError, match="holds pickled Python objects"):
        load_checkpoint(path)
    assert not marker.exists()


def test_an_old_checkpoint_with_numpy_random_state_gets_one_clear_line(tmp_path):
    path = tmp_path / "old.pt"
    _write_pickled(path, {"format_version": 1, "model": {}, "label_map": {}, "rng": [{"numpy": np.random.get_state()}]})
    with pytest.raises(NoisysegError) as e:
        load_checkpoint(path)
    assert str(e.value).startswith(f"{path}: refused") and "\n" not in str(e.value)


@pytest.mark.parametrize("content, message", [
    (b"not a zip file", "cannot read checkpoint"),
    (None, "checkpoint not found"),
])
def test_unreadable_and_missing_files(tmp_path, content, message):
    path = tmp_path / "x.pt"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(NoisysegError, match=message):
        load_checkpoint(path)


def test_foreign_and_newer_checkpoints(tmp_path):
    torch.save({"state_dict": {"w": torch.zeros(1)}}, tmp_path / "foreign.pt")
    with pytest.raises(NoisysegError, match="not a noisyseg checkpoint"):
        load_checkpoint(tmp_path / "foreign.pt")
    torch.save({"format_version": FORMAT_VERSION + 1, "model": {}, "label_map": {}}, tmp_path / "new.pt")
    with pytest.raises(NoisysegError, match=f"reads formats up to {FORMAT_VERSION}"):
        load_checkpoint(tmp_path / "new.pt")


def test_weights_that_do_not_fit_the_model_are_one_line_errors():
    model = torch.nn.Sequential(torch.nn.Linear(2, 3))
    state = model.state_dict()
    with pytest.raises(NoisysegError, match=r"x.pt: the checkpoint's weights do not fit the model \(1 missing, e.g. 0.bias\)"):
        load_model_weights(model, {"0.weight": state["0.weight"]}, "x.pt")
    with pytest.raises(NoisysegError, match="do not fit the model") as e:
        load_model_weights(model, {"0.weight": torch.zeros(4, 2), "0.bias": state["0.bias"]}, "x.pt")
    assert "\n" not in str(e.value)
    load_model_weights(model, state, "x.pt")  # a fitting state loads


def test_what_the_trainer_writes_is_plain_data(trained_run):
    ckpt = load_checkpoint(trained_run.folder / "checkpoints" / "last.pt")
    assert set(ckpt) == {"format_version", "model", "optimizer", "scheduler", "scaler", "epoch", "stage", "rng",
                         "train_seconds", "config", "label_map"}
    raw = (trained_run.folder / "checkpoints" / "last.pt").read_bytes()
    torch.load(io.BytesIO(raw), weights_only=True)  # the strict loader accepts it as is
    assert isinstance(ckpt["rng"][0]["python"], tuple) and ckpt["train_seconds"] > 0
    assert pickle.loads(pickle.dumps(ckpt["config"])) == ckpt["config"]
