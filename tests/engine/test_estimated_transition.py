"""``loss.params.transition: estimate``: the run estimates its noise matrix at the stage switch from its
own ce_stage_end model, writes it to the run folder, and trains the robust stage through it."""

import json
import shutil

import numpy as np
import yaml

from helpers import assert_train_keeps_a_user_s_file, assert_one_line, cli, tiny_config


def _config(tiny_coco, tmp_path, noisy, **loss):
    tree = tiny_config(tiny_coco, epochs=3, keep_epochs=[2])
    tree["data"]["train_json"] = str(noisy)
    tree["loss"] = {"name": "forward", "params": {"transition": "estimate", "balance": 1.0}, "warmup_epochs": 1, **loss}
    path = tmp_path / "estimate.yaml"
    path.write_text(yaml.safe_dump(tree))
    return path


def _noisy(tiny_coco, tmp_path, capsys):
    noisy = tmp_path / "noisy.json"
    assert cli(capsys, "noise", tiny_coco["train_json"], "-o", noisy, "--kind", "symmetric", "--rate", "0.4")[0] == 0
    return noisy


def test_the_run_writes_the_matrix_its_ce_stage_model_gives_and_a_resume_keeps_it(tiny_coco, tmp_path, capsys):
    noisy = _noisy(tiny_coco, tmp_path, capsys)
    config = _config(tiny_coco, tmp_path, noisy)
    run = tmp_path / "run"
    rc, out, err = cli(capsys, "train", config, "-o", run, "--no-progress")
    assert rc == 0, err
    written = json.loads((run / "noise_matrix.json").read_text())
    assert "scored by ce_stage_end.pt" in out and "[train] noise matrix estimated" in out
    # the same estimate, made independently by the audit of the same checkpoint on the same file
    audit = tmp_path / "audit"
    rc, _, err = cli(capsys, "audit", run, "--checkpoint", "ce_stage_end", "--data", noisy, "-o", audit,
                     "--no-progress", "--sheet", "0")
    assert rc == 0, err
    from_audit = json.loads((audit / "noise_matrix.json").read_text())
    assert written["classes"] == from_audit["classes"]
    np.testing.assert_allclose(written["matrix"], from_audit["matrix"], atol=1e-9)
    assert np.allclose(np.asarray(written["matrix"]).sum(axis=1), 1.0)
    # a run stopped after epoch 2 (after the switch) reads the file again on resume instead of estimating
    # anew: a file that is not a matrix then stops it with one line naming the file
    shutil.copyfile(run / "checkpoints" / "epoch_2.pt", run / "checkpoints" / "last.pt")
    (run / "noise_matrix.json").write_text(json.dumps({"classes": written["classes"], "matrix": [[2.0]]}))
    rc, out, err = cli(capsys, "train", config, "-o", run, "--resume", "--no-progress")
    assert rc == 2 and "scored" not in out
    assert_one_line(err, "train", f"{run / 'noise_matrix.json'}: matrix: must be")
    (run / "noise_matrix.json").write_text(json.dumps(written))
    rc, out, err = cli(capsys, "train", config, "-o", run, "--resume", "--no-progress")
    assert rc == 0, err
    assert "[train] epoch 3/3 (forward)" in out and "scored" not in out
    assert json.loads((run / "noise_matrix.json").read_text()) == written

def test_without_a_ce_stage_or_over_a_user_s_file_it_refuses_before_anything_is_made(tiny_coco, tmp_path, capsys):
    noisy = _noisy(tiny_coco, tmp_path, capsys)
    config = _config(tiny_coco, tmp_path, noisy, warmup_epochs=0)
    rc, _, err = cli(capsys, "train", config, "-o", tmp_path / "run", "--no-progress")
    assert rc == 2 and not (tmp_path / "run").exists()
    assert_one_line(err, "train", "loss.params.transition=estimate: the matrix is made by the model at the end "
                                  "of the CE stage; set loss.warmup_epochs between 1 and train.epochs - 1")
    assert_train_keeps_a_user_s_file(capsys, _config(tiny_coco, tmp_path, noisy), tmp_path / "mine", "noise_matrix.json")
