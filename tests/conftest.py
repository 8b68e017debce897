"""Shared fixtures (helpers live in tests/helpers.py, importable as ``helpers``)."""

import os
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from helpers import tiny_config, utf8_safe_report, write_tiny_coco


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item, call):
    """Reports whose text UTF-8 cannot encode are escaped (helpers.utf8_safe_report): such a report would
    otherwise end the run in an INTERNALERROR that hides which test failed and why."""
    report = yield
    utf8_safe_report(report)
    return report


@pytest.fixture(autouse=True)
def _torch_threads_restored():
    """Undo a test's ``torch.set_num_threads`` (a run's ``train.threads``), so later tests keep the session's
    thread count: with more threads than free cores, torch's CPU kernels get several times slower."""
    torch = sys.modules.get("torch")
    before = torch.get_num_threads() if torch is not None else None
    yield
    torch = sys.modules.get("torch")
    if torch is None:
        return
    if before is None:  # torch was first imported during this test: its default thread count
        before = int(os.environ.get("OMP_NUM_THREADS") or 0) or torch.get_num_threads()
    if torch.get_num_threads() != before:
        torch.set_num_threads(before)


@pytest.fixture
def tiny_coco(tmp_path) -> dict:
    return write_tiny_coco(tmp_path / "tiny")


@pytest.fixture
def tiny_config_file(tiny_coco, tmp_path):
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(tiny_config(tiny_coco)))
    return path


@dataclass(frozen=True)
class TrainedRun:
    """A finished run, trained once per test session. Read it; copy it (``shutil.copytree``) to change it."""

    folder: Path  # the run folder: config.yaml, metrics.json(l), checkpoints/{last,ce_stage_end,epoch_1}.pt
    config: Path  # the YAML config it was trained from
    data: dict  # train_json, val_json, image_root of its tiny data set
    epochs: int


@pytest.fixture(scope="session")
def trained_run(tmp_path_factory) -> TrainedRun:
    """``maskrcnn_tiny`` trained for 8 epochs (CE for 1, then lncis) on the tiny data set: about 10 s.

    Long enough that the loss falls well and val AP is above zero; ``train.keep_epochs: [1]`` and the CE
    stage also leave ``epoch_1.pt`` and ``ce_stage_end.pt``.
    """
    from noisyseg.cli import main

    root = tmp_path_factory.mktemp("trained_run")
    data = write_tiny_coco(root / "tiny")
    epochs = 8
    config = root / "tiny8.yaml"
    config.write_text(yaml.safe_dump(tiny_config(data, epochs=epochs, lr_steps=[7], keep_epochs=[1], threads=1)))
    folder = root / "run"
    assert main(["train", str(config), "--out", str(folder), "--no-progress"]) == 0
    return TrainedRun(folder, config, data, epochs)
