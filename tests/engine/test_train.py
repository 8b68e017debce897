import json

import pytest
import torch
import yaml

from noisyseg.cli import main
from noisyseg.engine.checkpoint import load_checkpoint


def _records(run):
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def test_two_epoch_run_writes_checkpoint_metrics_and_switches_loss(tiny_config_file, tmp_path):
    run = tmp_path / "run"
    assert main(["train", str(tiny_config_file), "--out", str(run), "--no-progress"]) == 0
    ckpt = load_checkpoint(run / "checkpoints" / "last.pt")
    assert ckpt["epoch"] == 2 and ckpt["stage"] == "robust"
    assert ckpt["label_map"]["category_ids"] == [2, 5, 9]
    train_lines = [r for r in _records(run) if r["event"] == "train"]
    by_epoch = {r["epoch"]: r for r in train_lines}
    assert by_epoch[1]["stage"] == "ce" and "rois_os" not in by_epoch[1]
    assert by_epoch[2]["stage"] == "robust"
    counts = [by_epoch[2][f"rois_{k}"] for k in ("neg", "psn", "os", "pon")]
    assert sum(counts) == 2 * 32
    metrics = json.loads((run / "metrics.json").read_text())
    assert 0.0 <= metrics["segm"]["AP"] <= 100.0 and "per_class" in metrics["bbox"]
    saved = yaml.safe_load((run / "config.yaml").read_text())
    assert saved["train"]["momentum"] == 0.9  # defaults are written out


def test_resume_gives_the_same_weights_as_an_uninterrupted_run(tiny_config_file, tmp_path):
    full, split = tmp_path / "full", tmp_path / "split"
    assert main(["train", str(tiny_config_file), "--out", str(full), "--no-progress"]) == 0
    assert main(["train", str(tiny_config_file), "--out", str(split), "--no-progress",
                 "--set", "train.epochs=1"]) == 0
    assert load_checkpoint(split / "checkpoints" / "last.pt")["epoch"] == 1
    assert main(["train", str(tiny_config_file), "--out", str(split), "--no-progress", "--resume"]) == 0
    a = load_checkpoint(full / "checkpoints" / "last.pt")["model"]
    b = load_checkpoint(split / "checkpoints" / "last.pt")["model"]
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


def test_existing_run_is_not_overwritten_without_resume(tiny_config_file, tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["train", str(tiny_config_file), "--out", str(run), "--no-progress", "--set", "train.epochs=1",
                 "--set", "loss.warmup_epochs=0"]) == 0
    capsys.readouterr()
    assert main(["train", str(tiny_config_file), "--out", str(run), "--no-progress"]) == 2
    assert "already holds a run; pass --resume" in capsys.readouterr().err


def test_non_finite_loss_stops_with_a_message_and_keeps_the_last_good_checkpoint(
        tiny_config_file, tmp_path, capsys, monkeypatch):
    from noisyseg.engine import trainer

    real = trainer.build_stage_loss

    def poisoned(stage, cfg):
        loss = real(stage, cfg)
        if stage == trainer.ROBUST_STAGE:
            return lambda logits, labels: (loss(logits, labels)[0] * float("nan"), {})
        return loss

    monkeypatch.setattr(trainer, "build_stage_loss", poisoned)
    run = tmp_path / "run"
    assert main(["train", str(tiny_config_file), "--out", str(run), "--no-progress"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert "non-finite loss at epoch 2, iteration 1" in err and "last good checkpoint" in err
    assert load_checkpoint(run / "checkpoints" / "last.pt")["epoch"] == 1


@pytest.mark.parametrize(
    "override, message",
    [
        ("train.foo=1", "train.foo: unknown key"),
        ("train.lr=abc", "train.lr: Input should be a valid number"),
        ("loss.warmup_epochs=5", "loss.warmup_epochs (5) is larger than train.epochs (2)"),
        ("data.train_min_size=[90,80]", "expected [low, high]"),
        ("train.amp=fp8", "train.amp: Input should be 'off', 'fp16' or 'bf16'"),
    ],
)
def test_bad_config_values_are_one_line_errors(tiny_config_file, tmp_path, capsys, override, message):
    assert main(["train", str(tiny_config_file), "--out", str(tmp_path / "r"), "--set", override]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1
    assert not (tmp_path / "r").exists()


def test_unknown_loss_name_is_refused_before_training(tiny_config_file, tmp_path, capsys):
    assert main(["train", str(tiny_config_file), "--out", str(tmp_path / "r"), "--set", "loss.name=focal"]) == 2
    assert "focal" in capsys.readouterr().err


def test_missing_and_malformed_config_files(tmp_path, capsys):
    assert main(["train", str(tmp_path / "none.yaml")]) == 2
    assert "config file not found" in capsys.readouterr().err
    bad = tmp_path / "bad.yaml"
    bad.write_text("data: [unclosed")
    assert main(["train", str(bad)]) == 2
    assert "not valid YAML" in capsys.readouterr().err


def test_eval_and_predict_on_a_finished_run(tiny_config_file, tiny_coco, tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["train", str(tiny_config_file), "--out", str(run), "--no-progress"]) == 0
    trained = json.loads((run / "metrics.json").read_text())
    (run / "metrics.json").unlink()
    assert main(["eval", str(run), "--no-progress", "--device", "cpu"]) == 0
    again = json.loads((run / "metrics.json").read_text())
    assert again["segm"]["AP"] == pytest.approx(trained["segm"]["AP"])
    assert again["bbox"]["AP"] == pytest.approx(trained["bbox"]["AP"])
    detections = json.loads((run / "detections.json").read_text())
    assert detections and {d["category_id"] for d in detections} <= {2, 5, 9}
    out = tmp_path / "pred"
    images = [str(tiny_coco["image_root"] / "0000.png"), str(tiny_coco["image_root"] / "0001.png")]
    assert main(["predict", str(run / "checkpoints" / "last.pt"), *images, "-o", str(out),
                 "--score-threshold", "0.0"]) == 0
    assert (out / "0000.png").is_file() and (out / "0001.png").is_file()
    results = json.loads((out / "results.json").read_text())
    assert all(r["category_id"] in (2, 5, 9) for r in results)
    assert {r["image_id"] for r in results} <= {0, 1}


@pytest.mark.parametrize("amp", ["bf16", "fp16"])
def test_mixed_precision_runs_on_cpu_and_keeps_scaler_state(tiny_config_file, tmp_path, amp):
    run = tmp_path / amp
    assert main(["train", str(tiny_config_file), "--out", str(run), "--no-progress", "--set", f"train.amp={amp}",
                 "--set", "train.epochs=1", "--set", "loss.warmup_epochs=0"]) == 0
    ckpt = load_checkpoint(run / "checkpoints" / "last.pt")
    losses = [r["loss"] for r in _records(run) if r["event"] == "train"]
    assert losses and all(l == l and l < 1e6 for l in losses)  # finite
    if amp == "fp16":
        assert "scale" in ckpt["scaler"]  # the GradScaler state travels with the checkpoint
    else:
        assert ckpt["scaler"] == {}
