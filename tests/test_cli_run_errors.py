"""Runs that must not start, or must not change, through the command line (issue 12 items 2-5, 7, 9, 11
and the one-line errors of train and eval): exit 2, one line, no run folder left behind, inputs untouched.
Every refusal here happens before a first training step; runs ``noisyseg.cli.main`` in-process."""

import fcntl
import io
import json
import os
import shutil
from contextlib import contextmanager
from pathlib import Path

import pytest
import torch
import yaml

from helpers import assert_one_line, cli, snapshot, tiny_config, unwritable_dir, write_tiny_coco
from noisyseg.cli import main
from noisyseg.engine import trainer


@contextmanager
def locked(folder: Path):
    """Hold the run folder's lock, as a training process does."""
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    fcntl.flock(fd, fcntl.LOCK_EX)
    try:
        yield
    finally:
        os.close(fd)


@pytest.fixture
def copied_run(trained_run, tmp_path) -> Path:
    run = tmp_path / "run"
    shutil.copytree(trained_run.folder, run)
    return run


# ------------------------------------------------------------------------------- refused before the first step


@pytest.mark.parametrize("override, message", [
    ("train.foo=1", "train.foo: unknown key"),
    ("train.lr=abc", "train.lr: Input should be a valid number"),
    ("loss.warmup_epochs=5", "loss.warmup_epochs (5) is larger than train.epochs (2)"),
    ("loss.warmup_epochs=2", "loss.warmup_epochs (2) equals train.epochs (2), so loss.name=lncis would never be used"),
    ("train.keep_epochs=[3]", "train.keep_epochs: [3] outside the epochs 1..2 of the run"),
    ("data.train_min_size=[90,80]", "expected [low, high]"),
    ("train.amp=fp8", "train.amp: Input should be 'off', 'fp16' or 'bf16'"),
    ("train.device=gpu", "train.device: expected auto, cpu, cuda or cuda:N, got 'gpu'"),
    ("loss.name=focal", "unknown loss 'focal'"),
    ("loss.params.robust=bogus", "robust"),
    ("model.name=bogus", "model.name: unknown model 'bogus'"),
])
def test_bad_settings_are_refused_before_anything_is_made(tiny_config_file, tmp_path, capsys, override, message):
    run = tmp_path / "new" / "run"
    rc, out, err = cli(capsys, "train", tiny_config_file, "--out", run, "--set", override, "--no-progress")
    assert rc == 2
    assert_one_line(err, "train", message)
    assert "[train]" not in out and not (tmp_path / "new").exists()


def test_a_bad_loss_is_refused_by_nproc_before_any_process_starts(tiny_config_file, tmp_path, capsys):
    run = tmp_path / "new" / "run"
    rc, out, err = cli(capsys, "train", tiny_config_file, "--out", run, "--nproc", "2", "--set", "loss.params.q=3")
    assert rc == 2
    assert_one_line(err, "train", "--set loss.params.q=3: loss.params: loss lncis: unknown parameter(s) q")
    assert out == "" and not (tmp_path / "new").exists()


def test_a_failed_start_leaves_no_run_folder(tiny_config_file, tmp_path, capsys):
    run = tmp_path / "a" / "b" / "run"
    rc, _, err = cli(capsys, "train", tiny_config_file, "--out", run, "--set", f"data.image_root={tmp_path / 'none'}")
    assert rc == 2
    assert_one_line(err, "train", "image not found")
    assert not (tmp_path / "a").exists()


def test_cuda_without_a_gpu(tiny_config_file, trained_run, tmp_path, capsys):
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    rc, _, err = cli(capsys, "train", tiny_config_file, "--out", tmp_path / "r", "--set", "train.device=cuda")
    assert rc == 2
    assert_one_line(err, "train", "train.device=cuda: CUDA is not available on this machine")
    rc, _, err = cli(capsys, "eval", trained_run.folder, "--out", tmp_path / "e", "--device", "cuda:1")
    assert rc == 2
    assert_one_line(err, "eval", "--device=cuda:1: CUDA is not available on this machine")
    assert not (tmp_path / "r").exists() and not (tmp_path / "e").exists()


def test_eval_refuses_an_unknown_device_name(trained_run, tmp_path, capsys):
    rc, _, err = cli(capsys, "eval", trained_run.folder, "--out", tmp_path / "e", "--device", "tpu")
    assert rc == 2
    assert_one_line(err, "eval", "--device=tpu: unknown device; expected auto, cpu, cuda or cuda:N")


# -------------------------------------------------------------------------------------------- output paths


def test_train_output_under_a_file_at_a_file_and_unwritable(tiny_config_file, tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("mine")
    for out, message in ((blocker / "run", "is a file, not a folder"), (blocker, "the run folder is a file"),
                         (unwritable_dir(tmp_path) / "run", "is not writable")):
        rc, _, err = cli(capsys, "train", tiny_config_file, "--out", out, "--no-progress")
        assert rc == 2
        assert_one_line(err, "train", message)
    assert blocker.read_text() == "mine"


def test_eval_output_under_a_file_and_unwritable_writes_nothing(trained_run, tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("mine")
    before = snapshot(trained_run.folder)
    for out, message in ((blocker / "eval", "is a file, not a folder"), (unwritable_dir(tmp_path) / "eval", "is not writable")):
        rc, _, err = cli(capsys, "eval", trained_run.folder, "--out", out, "--device", "cpu", "--no-progress")
        assert rc == 2
        assert_one_line(err, "eval", message)
    assert blocker.read_text() == "mine" and snapshot(trained_run.folder) == before


# ----------------------------------------------------------------------------------------------- one run folder


def test_a_second_process_cannot_train_a_locked_run_folder(tiny_config_file, copied_run, trained_run, tmp_path, capsys):
    fresh = tmp_path / "fresh"
    fresh.mkdir()
    with locked(fresh):
        rc, _, err = cli(capsys, "train", tiny_config_file, "--out", fresh, "--no-progress")
    assert rc == 2
    assert_one_line(err, "train", f"{fresh}: another process is training this run")
    assert list(fresh.iterdir()) == []
    from noisyseg.config import load_config

    with locked(fresh), pytest.raises(trainer.RunFolderLocked):  # its own type, so a bench can skip the cell
        trainer.train(load_config(tiny_config_file), fresh, progress=False)
    before = snapshot(copied_run)
    with locked(copied_run):
        rc, _, err = cli(capsys, "train", trained_run.config, "--out", copied_run, "--resume", "--no-progress")
    assert rc == 2
    assert_one_line(err, "train", "another process is training this run")
    assert snapshot(copied_run) == before


def test_a_run_is_not_overwritten_without_resume_and_resume_needs_a_run(trained_run, copied_run, tmp_path, capsys):
    before = snapshot(copied_run)
    rc, _, err = cli(capsys, "train", trained_run.config, "--out", copied_run, "--no-progress")
    assert rc == 2
    assert_one_line(err, "train", "already holds a run; pass --resume")
    assert snapshot(copied_run) == before
    rc, _, err = cli(capsys, "train", trained_run.config, "--out", tmp_path / "empty", "--resume")
    assert rc == 2
    assert_one_line(err, "train", "nothing to resume")
    assert not (tmp_path / "empty").exists()


def test_resume_with_a_changed_config_names_the_keys_and_changes_nothing(trained_run, copied_run, capsys):
    before = snapshot(copied_run)
    rc, _, err = cli(capsys, "train", trained_run.config, "--out", copied_run, "--resume", "--no-progress",
                     "--set", "train.lr=0.02", "--set", "loss.params.ce_weight=0.5", "--set", "data.num_workers=1")
    assert rc == 2
    assert_one_line(err, "train", "differs from the run's in loss.params.ce_weight, train.lr;")
    assert snapshot(copied_run) == before  # config.yaml included: never rewritten on resume


def test_resume_refuses_training_data_whose_class_names_changed(tmp_path, monkeypatch, capsys):
    data = write_tiny_coco(tmp_path / "tiny")
    cfg = tmp_path / "c.yaml"
    cfg.write_text(yaml.safe_dump(tiny_config(data, threads=1)))
    run = tmp_path / "run"
    real, calls = trainer.train_step, []

    def interrupted(*args, **kwargs):  # Ctrl-C at the first step of epoch 2
        calls.append(1)
        if len(calls) == 5:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(trainer, "train_step", interrupted)
    assert main(["train", str(cfg), "--out", str(run), "--no-progress"]) == 130
    monkeypatch.setattr(trainer, "train_step", real)
    for split in ("train_json", "val_json"):
        coco = json.loads(data[split].read_text())
        coco["categories"][2]["name"] = "disc"  # id 9 'dot' -> 'disc', same ids
        data[split].write_text(json.dumps(coco))
    capsys.readouterr()
    before = snapshot(run)
    rc, _, err = cli(capsys, "train", cfg, "--out", run, "--resume", "--no-progress")
    assert rc == 2
    assert_one_line(err, "train", "the checkpoint's classes differ from")
    assert "id 9 'dot' in the checkpoint, id 9 'disc' now" in err
    assert snapshot(run) == before


# ------------------------------------------------------------------------------------------- crafted checkpoints


class _RunsCode:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return Path.touch, (self.marker,)


def _crafted_checkpoint(path: Path, marker: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    buf = io.BytesIO()
    torch.save({"format_version": 2, "model": {}, "label_map": {}, "payload": _RunsCode(marker)}, buf)
    path.write_bytes(buf.getvalue())
    return path


def test_a_crafted_checkpoint_runs_nothing_in_eval_and_resume(trained_run, copied_run, tmp_path, capsys):
    marker = tmp_path / "code_ran"
    evil = _crafted_checkpoint(tmp_path / "evil.pt", marker)
    rc, _, err = cli(capsys, "eval", trained_run.config, "--checkpoint", evil, "--out", tmp_path / "e", "--device", "cpu")
    assert rc == 2
    assert_one_line(err, "eval", "holds pickled Python objects")
    _crafted_checkpoint(copied_run / "checkpoints" / "last.pt", marker)
    rc, _, err = cli(capsys, "train", trained_run.config, "--out", copied_run, "--resume", "--no-progress")
    assert rc == 2
    assert_one_line(err, "train", "holds pickled Python objects")
    assert not marker.exists() and not (tmp_path / "e").exists()


def test_a_checkpoint_with_missing_weights_is_one_line_in_eval_and_predict(trained_run, tmp_path, capsys):
    ckpt = torch.load(trained_run.folder / "checkpoints" / "last.pt", weights_only=True)
    dropped = sorted(ckpt["model"])[0]
    del ckpt["model"][dropped]
    broken = tmp_path / "broken.pt"
    torch.save(ckpt, broken)
    rc, _, err = cli(capsys, "eval", trained_run.config, "--checkpoint", broken, "--out", tmp_path / "e",
                     "--device", "cpu", "--no-progress")
    assert rc == 2
    assert_one_line(err, "eval", f"{broken}: the checkpoint's weights do not fit the model (1 missing, e.g. {dropped})")
    image = Path(trained_run.data["image_root"]) / json.loads(Path(trained_run.data["val_json"]).read_text())[
        "images"][0]["file_name"]
    rc, _, err = cli(capsys, "predict", broken, image, "-o", tmp_path / "p")
    assert rc == 2
    assert_one_line(err, "predict", f"{broken}: the checkpoint's weights do not fit the model (1 missing, e.g. {dropped})")
    assert not (tmp_path / "e").exists() and not (tmp_path / "p").exists()
