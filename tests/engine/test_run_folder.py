"""The run folder's one owner: layout, checkpoint names, the final record, and what a start may write over."""

import json
import shutil

import pytest
import yaml

from helpers import assert_one_line, cli, snapshot
from noisyseg.engine.run_folder import CONFIG_HEADER, RunFolder, RunFolderLocked, RunLock, ce_stage_end_epoch
from noisyseg.errors import NoisysegError


def _touch_checkpoints(run: RunFolder, names):
    run.checkpoints_dir.mkdir(parents=True)
    for name in names:
        run.checkpoint(name).write_bytes(b"x")


def test_checkpoint_names_globs_and_paths_resolve_in_order(tmp_path):
    run = RunFolder(tmp_path / "run")
    _touch_checkpoints(run, ["last", "ce_stage_end", "epoch_2", "epoch_10", "epoch_9"])
    other = tmp_path / "elsewhere.pt"
    other.write_bytes(b"y")
    got = run.resolve_checkpoints(["epoch_*", "last.pt", str(other), "epoch_10"])
    assert [p.name for p in got] == ["epoch_2.pt", "epoch_9.pt", "epoch_10.pt", "last.pt", "elsewhere.pt"]
    assert run.resolve_checkpoints() == [run.last_checkpoint.resolve()]
    assert run.checkpoint_names() == ["ce_stage_end", "epoch_2", "epoch_9", "epoch_10", "last"]
    with pytest.raises(NoisysegError, match=r"epoch_3.pt: checkpoint not found \(this run has: ce_stage_end, "):
        run.resolve_checkpoints(["epoch_3"])
    with pytest.raises(NoisysegError, match="no checkpoint matches 'snap_\\*'"):
        run.resolve_checkpoints(["snap_*"])


def test_a_glob_in_the_folder_name_is_taken_literally(tmp_path):
    run = RunFolder(tmp_path / "run[1]")
    _touch_checkpoints(run, ["epoch_1", "epoch_2"])
    assert [p.name for p in run.resolve_checkpoints(["epoch_*"])] == ["epoch_1.pt", "epoch_2.pt"]


@pytest.mark.parametrize("warmup, epochs, loss, expected", [
    (1, 8, "lncis", 1), (0, 8, "lncis", None), (8, 8, "lncis", None), (3, 8, "ce", None), (7, 8, "sce", 7)])
def test_the_ce_stage_ends_only_where_another_loss_follows(warmup, epochs, loss, expected):
    assert ce_stage_end_epoch(warmup, epochs, loss) == expected


def test_the_final_record_needs_both_ap_blocks_and_the_run_s_epoch(tmp_path):
    run = RunFolder(tmp_path)
    assert run.final_record() is None
    run.record_path.write_text('{"epoch": 8, "segm": {"AP": 1.0}')  # torn
    assert run.final_record() is None
    run.record_path.write_text(json.dumps({"segm": {"AP": 1.0}, "bbox": {"AP": 2.0}, "checkpoint": "x"}))
    assert run.final_record() is not None and run.final_record(epochs=8) is None  # what the old eval bug left
    run.write_final_record(8, 12.5, {"segm": {"AP": 1.0}, "bbox": {"AP": 2.0}})
    assert run.final_record(epochs=8) == {"epoch": 8, "train_seconds": 12.5, "segm": {"AP": 1.0}, "bbox": {"AP": 2.0}}
    assert run.recorded_train_seconds() == 12.5


def test_a_fresh_start_refuses_files_it_did_not_make_and_accepts_its_own(tmp_path):
    run = RunFolder(tmp_path / "exp")
    run.path.mkdir()
    run.config_path.write_text("train:\n  epochs: 3  # my comment\n")
    with pytest.raises(NoisysegError, match="config.yaml: not made by a noisyseg run"):
        run.check_can_start(resume=False)
    run.config_path.write_text(CONFIG_HEADER + "seed: 0\n")  # a run of ours killed before its first checkpoint
    run.check_can_start(resume=False)
    run.config_path.unlink()
    run.record_path.write_text("{}")
    with pytest.raises(NoisysegError, match="metrics.json: not made by a noisyseg run"):
        run.check_can_start(resume=False)


def test_a_second_lock_on_a_run_folder_is_refused_and_released_on_close(tmp_path):
    run = RunFolder(tmp_path / "new" / "run")
    first = RunLock(run)
    with pytest.raises(RunFolderLocked, match="another process is training this run"):
        RunLock(run)
    assert run.path.is_dir()  # the refused lock removed nothing it did not make
    first.close(failed=True)  # a failed start removes the (empty) folders its lock made
    assert not (tmp_path / "new").exists()
    RunLock(run).close()  # released: the folder can be locked again


def test_train_into_the_folder_of_its_own_config_is_refused_before_work(tiny_coco, tmp_path, capsys):
    """`train exp/config.yaml -o exp` used to write over the user's config (comments gone, overrides baked in)."""
    from helpers import tiny_config

    exp = tmp_path / "exp"
    exp.mkdir()
    config = exp / "config.yaml"
    config.write_text("# my experiment\n" + yaml.safe_dump(tiny_config(tiny_coco)))
    (exp / "metrics.json").write_text('{"mine": true}')
    before = snapshot(exp)
    rc, _, err = cli(capsys, "train", config, "-o", exp, "--set", "train.lr=0.02", "--no-progress")
    assert rc == 2
    assert_one_line(err, "train", f"{config}: is an input of this run and would be written over")
    assert snapshot(exp) == before
    config.rename(tmp_path / "elsewhere.yaml")
    before = snapshot(exp)
    rc, _, err = cli(capsys, "train", tmp_path / "elsewhere.yaml", "-o", exp, "--no-progress")
    assert rc == 2
    assert_one_line(err, "train", f"{exp / 'metrics.json'}: not made by a noisyseg run")
    assert snapshot(exp) == before


def test_eval_of_another_checkpoint_keeps_the_run_s_record(trained_run, tmp_path, capsys):
    run = tmp_path / "run"
    shutil.copytree(trained_run.folder, run)
    record = (run / "metrics.json").read_bytes()
    rc, out, _ = cli(capsys, "eval", run, "--checkpoint", "epoch_1", "--device", "cpu", "--no-progress")
    assert rc == 0 and (run / "metrics.json").read_bytes() == record
    beside = run / "eval" / "epoch_1" / "metrics.json"
    assert f"wrote {beside}" in out
    assert json.loads(beside.read_text())["checkpoint"].endswith("epoch_1.pt")
    # on another val set, even the final checkpoint goes beside
    rc, out, _ = cli(capsys, "eval", run, "--set", f"data.val_json={trained_run.data['val_json']}", "--device", "cpu",
                     "--no-progress")
    assert rc == 0 and (run / "metrics.json").read_bytes() == record and "/eval/last-" in out
    # pointing --out at the run folder is refused before any work
    rc, _, err = cli(capsys, "eval", run, "--checkpoint", run / "checkpoints" / "epoch_1.pt", "--out", run,
                     "--device", "cpu", "--no-progress")
    assert rc == 2
    assert_one_line(err, "eval", f"would write over {run / 'metrics.json'}, the run's final record")
    assert (run / "metrics.json").read_bytes() == record


def test_eval_of_the_final_checkpoint_rewrites_the_record_keeping_epoch_and_time(trained_run, tmp_path, capsys):
    run = tmp_path / "run"
    shutil.copytree(trained_run.folder, run)
    before = json.loads((run / "metrics.json").read_text())
    assert cli(capsys, "eval", run, "--device", "cpu", "--no-progress")[0] == 0
    after = json.loads((run / "metrics.json").read_text())
    assert after["epoch"] == before["epoch"] == trained_run.epochs
    assert after["train_seconds"] == before["train_seconds"]
    assert after["segm"] == before["segm"] and after["bbox"] == before["bbox"]  # the trainer's own evaluation


def test_resume_re_evaluates_a_finished_run_whose_record_lost_its_epoch(trained_run, tmp_path, capsys):
    """What the old `eval --checkpoint epoch_1` left behind: epoch 1's AP in metrics.json, no `epoch` key."""
    run = tmp_path / "run"
    shutil.copytree(trained_run.folder, run)
    good = json.loads((run / "metrics.json").read_text())
    (run / "metrics.json").write_text(json.dumps({"checkpoint": "epoch_1.pt", "segm": {"AP": 99.0},
                                                  "bbox": {"AP": 99.0}}))
    assert cli(capsys, "train", trained_run.config, "-o", run, "--resume", "--no-progress")[0] == 0
    again = json.loads((run / "metrics.json").read_text())
    assert again["epoch"] == trained_run.epochs and again["segm"] == good["segm"]
