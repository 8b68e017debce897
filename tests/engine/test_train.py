"""The trainer through the CLI: what a run writes, that it learns, and that resume is exact."""

import json
import math
import shutil

import pytest
import torch
import yaml

from helpers import tiny_config, write_tiny_coco
from noisyseg.cli import main
from noisyseg.engine import trainer
from noisyseg.engine.checkpoint import load_checkpoint

TIMING_KEYS = ("seconds", "images_per_second")


def _records(run):
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def _without_timing(records):
    return [{k: v for k, v in r.items() if k not in TIMING_KEYS} for r in records]


def _write_config(path, data, **train):
    path.write_text(yaml.safe_dump(tiny_config(data, threads=1, **train)))
    return path


def _interrupt_at_step(monkeypatch, step):
    """Make the ``step``-th training step of this process (1-based) raise KeyboardInterrupt, as Ctrl-C would."""
    real, calls = trainer.train_step, []

    def counting(*args, **kwargs):
        calls.append(1)
        if len(calls) == step:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(trainer, "train_step", counting)
    return lambda: monkeypatch.setattr(trainer, "train_step", real)


def test_a_run_writes_checkpoints_snapshots_metrics_and_switches_loss(trained_run):
    run = trained_run.folder
    ckpt = load_checkpoint(run / "checkpoints" / "last.pt")
    assert ckpt["epoch"] == trained_run.epochs and ckpt["stage"] == "robust"
    assert ckpt["label_map"] == {"category_ids": [2, 5, 9], "names": ["square", "bar", "dot"]}
    by_epoch = {r["epoch"]: r for r in _records(run) if r["event"] == "train"}
    assert by_epoch[1]["stage"] == "ce" and "rois_os" not in by_epoch[1]
    assert by_epoch[2]["stage"] == "robust" and by_epoch[2]["roi_loss"] == "lncis"
    assert sum(by_epoch[2][f"rois_{k}"] for k in ("neg", "psn", "os", "pon")) == 2 * 32  # 2 images x 32 RoIs
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["epoch"] == trained_run.epochs and 0.0 <= metrics["segm"]["AP"] <= 100.0
    assert "per_class" in metrics["bbox"]
    assert yaml.safe_load((run / "config.yaml").read_text())["train"]["momentum"] == 0.9  # defaults written out
    # the CE stage is epoch 1 here: its end and keep_epochs [1] are both a copy of epoch 1's checkpoint
    for name in ("ce_stage_end.pt", "epoch_1.pt"):
        snapshot = load_checkpoint(run / "checkpoints" / name)
        assert snapshot["epoch"] == 1 and snapshot["stage"] == "ce"
    assert not list((run / "checkpoints").glob("epoch_[2-8].pt"))


def test_training_learns_the_loss_falls_and_every_weight_moves(trained_run):
    losses = {}
    for r in _records(trained_run.folder):
        if r["event"] == "train":
            losses.setdefault(r["epoch"], []).append(r["loss"])
    first, last = (sum(losses[e]) / len(losses[e]) for e in (1, trained_run.epochs))
    # measured last/first: 0.31 / 0.27 / 0.28 under ATEN_CPU_CAPABILITY default / avx2 / avx512 (one machine)
    assert last < 0.7 * first, (first, last)
    after_one = load_checkpoint(trained_run.folder / "checkpoints" / "epoch_1.pt")["model"]
    final = load_checkpoint(trained_run.folder / "checkpoints" / "last.pt")["model"]
    from noisyseg.engine.build import model_from_config
    from noisyseg.config import load_config

    model = model_from_config(load_config(trained_run.config), 3)
    trainable = [name for name, p in model.named_parameters() if p.requires_grad]
    assert trainable
    unchanged = [name for name in trainable if torch.equal(after_one[name], final[name])]
    assert not unchanged


def test_the_trainer_tells_a_robust_stage_loss_its_epoch(tiny_coco, tmp_path, monkeypatch):
    """GOOD's ascent weight follows the robust-stage epoch: every call of the loss in epoch e (0-based) of
    a run with a CE stage of 1 epoch sees robust_epoch e - 1."""
    from noisyseg.losses.registry import RoIClassificationLoss

    seen, epoch_now = set(), []
    real_step, real_call = trainer.train_step, RoIClassificationLoss.__call__

    def step(run, images, targets, epoch, i):
        epoch_now[:] = [epoch]
        return real_step(run, images, targets, epoch, i)

    def call(self, logits, labels):
        seen.add((epoch_now[0], self.name, self.robust_epoch))
        return real_call(self, logits, labels)

    monkeypatch.setattr(trainer, "train_step", step)
    monkeypatch.setattr(RoIClassificationLoss, "__call__", call)
    config = _write_config(tmp_path / "good.yaml", tiny_coco, epochs=3, lr_steps=[])
    assert main(["train", str(config), "--out", str(tmp_path / "run"), "--no-progress",
                 "--set", "loss.name=good", "--set", "loss.params.pon_threshold=6.0"]) == 0
    assert seen == {(0, "ce", 0), (1, "good", 0), (2, "good", 1)}


def test_resume_after_an_interrupt_with_evaluation_every_epoch_is_exact(tmp_path, monkeypatch, capsys):
    data = write_tiny_coco(tmp_path / "tiny")
    cfg = _write_config(tmp_path / "c.yaml", data, epochs=2, eval_interval=1)
    full, split = tmp_path / "full", tmp_path / "split"
    assert main(["train", str(cfg), "--out", str(full), "--no-progress"]) == 0
    # 4 steps per epoch: stop at the 2nd step of epoch 2, after epoch 1's checkpoint and evaluation
    restore = _interrupt_at_step(monkeypatch, 6)
    assert main(["train", str(cfg), "--out", str(split), "--no-progress"]) == 130
    restore()
    assert load_checkpoint(split / "checkpoints" / "last.pt")["epoch"] == 1
    assert [r["epoch"] for r in _records(split)][-1] == 2  # a line of the interrupted epoch was logged
    stale = split / "checkpoints" / ".last.pt.abc123.tmp"  # what a write killed mid-way leaves
    stale.write_bytes(b"partial")
    config_before = (split / "config.yaml").read_bytes()
    capsys.readouterr()
    assert main(["train", str(cfg), "--out", str(split), "--no-progress", "--resume"]) == 0
    assert "continuing after epoch 1" in capsys.readouterr().out
    a = load_checkpoint(full / "checkpoints" / "last.pt")["model"]
    b = load_checkpoint(split / "checkpoints" / "last.pt")["model"]
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    # the log is the uninterrupted run's, line for line (the interrupted epoch's lines were dropped)
    assert _without_timing(_records(split)) == _without_timing(_records(full))
    assert json.loads((split / "metrics.json").read_text())["segm"] == json.loads((full / "metrics.json").read_text())["segm"]
    assert not stale.exists() and (split / "config.yaml").read_bytes() == config_before


def test_an_evaluation_cut_short_is_run_on_resume(tmp_path, monkeypatch):
    data = write_tiny_coco(tmp_path / "tiny")
    cfg = _write_config(tmp_path / "c.yaml", data, epochs=2, eval_interval=1)
    run = tmp_path / "run"
    real = trainer.evaluate_epoch

    def killed(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(trainer, "evaluate_epoch", killed)
    assert main(["train", str(cfg), "--out", str(run), "--no-progress"]) == 130
    monkeypatch.setattr(trainer, "evaluate_epoch", real)
    assert [r["event"] for r in _records(run)][-1] == "epoch"  # epoch 1 trained and saved, not evaluated
    assert main(["train", str(cfg), "--out", str(run), "--no-progress", "--resume"]) == 0
    assert [r["epoch"] for r in _records(run) if r["event"] == "eval"] == [1, 2]


def test_the_same_seed_gives_the_same_weights_whatever_the_number_of_workers(tmp_path):
    data = write_tiny_coco(tmp_path / "tiny")
    cfg = _write_config(tmp_path / "c.yaml", data, epochs=1)
    for workers in (0, 1):
        assert main(["train", str(cfg), "--out", str(tmp_path / f"w{workers}"), "--no-progress",
                     "--set", "loss.warmup_epochs=0", "--set", f"data.num_workers={workers}"]) == 0
    a = load_checkpoint(tmp_path / "w0" / "checkpoints" / "last.pt")["model"]
    b = load_checkpoint(tmp_path / "w1" / "checkpoints" / "last.pt")["model"]
    for k in a:
        assert torch.equal(a[k], b[k]), k


def test_augmentation_depends_only_on_seed_epoch_and_sample():
    assert trainer.sample_seed(0, 1, 5) == trainer.sample_seed(0, 1, 5)
    seeds = {trainer.sample_seed(s, e, i) for s in (0, 1) for e in (0, 1) for i in range(50)}
    assert len(seeds) == 200 and all(0 <= s < 2**64 for s in seeds)

    class Draw(torch.utils.data.Dataset):
        def __len__(self):
            return 4

        def __getitem__(self, i):
            return torch.rand(3)

    samples = trainer._EpochSamples(Draw(), seed=7, epoch=2)
    before = torch.get_rng_state()
    first = [samples[i] for i in (3, 0, 2)]
    assert torch.equal(torch.get_rng_state(), before)  # the caller's stream is untouched
    torch.rand(10)  # whatever happened in between
    assert all(torch.equal(x, samples[i]) for x, i in zip(first, (3, 0, 2)))
    assert not torch.equal(samples[0], trainer._EpochSamples(Draw(), seed=7, epoch=3)[0])


def test_resume_on_a_finished_run_keeps_its_results_and_reevaluates_only_when_they_are_missing(
        trained_run, tmp_path, capsys):
    run = tmp_path / "run"
    shutil.copytree(trained_run.folder, run)
    before = {p.name: p.read_bytes() for p in (run / "metrics.json", run / "metrics.jsonl", run / "config.yaml",
                                               run / "checkpoints" / "last.pt")}
    capsys.readouterr()
    assert main(["train", str(trained_run.config), "--out", str(run), "--no-progress", "--resume"]) == 0
    assert "finished after epoch 8; its results are kept" in capsys.readouterr().out
    assert {name: (run / name if name != "last.pt" else run / "checkpoints" / name).read_bytes()
            for name in before} == before
    (run / "metrics.json").unlink()
    assert main(["train", str(trained_run.config), "--out", str(run), "--no-progress", "--resume"]) == 0
    again = json.loads((run / "metrics.json").read_text())
    original = json.loads(before["metrics.json"])
    assert again["segm"] == original["segm"] and again["bbox"] == original["bbox"]
    assert (run / "checkpoints" / "last.pt").read_bytes() == before["last.pt"]  # no training happened
    assert (run / "metrics.jsonl").read_bytes() == before["metrics.jsonl"]  # its eval line was there already


def test_non_finite_loss_stops_with_a_message_and_keeps_the_last_good_checkpoint(
        tiny_config_file, tmp_path, capsys, monkeypatch):
    real = trainer.build_stage_loss

    class NaNLoss:  # the robust-stage loss, giving NaN
        def __init__(self, loss):
            self.set_robust_epoch = loss.set_robust_epoch
            self.loss = loss

        def __call__(self, logits, labels):
            return self.loss(logits, labels)[0] * float("nan"), {}

    def poisoned(stage, cfg):
        loss = real(stage, cfg)
        return NaNLoss(loss) if stage == trainer.ROBUST_STAGE else loss

    monkeypatch.setattr(trainer, "build_stage_loss", poisoned)
    run = tmp_path / "run"
    assert main(["train", str(tiny_config_file), "--out", str(run), "--no-progress"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert "non-finite loss at epoch 2, iteration 1" in err and "last good checkpoint" in err
    assert load_checkpoint(run / "checkpoints" / "last.pt")["epoch"] == 1


def test_no_progress_prints_one_summary_line_per_epoch(trained_run, tmp_path, capsys):
    cfg = _write_config(tmp_path / "c.yaml", trained_run.data, epochs=2)
    assert main(["train", str(cfg), "--out", str(tmp_path / "run"), "--no-progress"]) == 0
    lines = [x for x in capsys.readouterr().out.splitlines() if x.startswith("[train]")]
    assert [x.split(" (")[0] for x in lines] == ["[train] epoch 1/2", "[train] epoch 2/2"]
    assert "(ce): loss " in lines[0] and "(lncis): loss " in lines[1] and lines[1].endswith("images/s")


def test_eval_and_predict_on_a_finished_run(trained_run, tmp_path):
    out = tmp_path / "eval"
    assert main(["eval", str(trained_run.folder), "--out", str(out), "--no-progress", "--device", "cpu"]) == 0
    again = json.loads((out / "metrics.json").read_text())
    trained = json.loads((trained_run.folder / "metrics.json").read_text())
    assert again["segm"] == trained["segm"] and again["bbox"] == trained["bbox"]  # same path, same numbers
    detections = json.loads((out / "detections.json").read_text())
    assert detections and {d["category_id"] for d in detections} <= {2, 5, 9}
    pred = tmp_path / "pred"
    images = [str(trained_run.data["image_root"] / "0000.png"), str(trained_run.data["image_root"] / "0001.png")]
    assert main(["predict", str(trained_run.folder / "checkpoints" / "last.pt"), *images, "-o", str(pred),
                 "--score-threshold", "0.0"]) == 0
    assert (pred / "0000.png").is_file() and (pred / "0001.png").is_file()
    results = json.loads((pred / "results.json").read_text())
    assert results and all(r["category_id"] in (2, 5, 9) for r in results)


@pytest.mark.filterwarnings("error:Detected call of `lr_scheduler.step\\(\\)` before `optimizer.step\\(\\)`")
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
        # every overflowed batch halved the scale from 2**16 and was not a step; the schedule counts the steps
        skipped = round(math.log2(2.0 ** 16 / ckpt["scaler"]["scale"]))
        assert skipped >= 1 and ckpt["scheduler"]["last_epoch"] == len(losses) - skipped
    else:
        assert ckpt["scheduler"]["last_epoch"] == len(losses)
        assert ckpt["scaler"] == {}


def test_train_runs_with_its_threads_and_gives_the_callers_count_back(tiny_coco, tmp_path, monkeypatch):
    from noisyseg.config import config_from_dict
    from noisyseg.errors import NoisysegError

    real, seen = trainer.train_one_epoch, []

    def recording(*args, **kwargs):
        seen.append(torch.get_num_threads())
        return real(*args, **kwargs)

    monkeypatch.setattr(trainer, "train_one_epoch", recording)
    torch.set_num_threads(1)
    result = trainer.train(config_from_dict(tiny_config(tiny_coco, threads=2)), tmp_path / "run",
                           progress=False)
    assert seen == [2, 2] and result.metrics  # trained with the run's two threads
    assert torch.get_num_threads() == 1
    with pytest.raises(NoisysegError, match="fewer than train.batch_size"):  # a start refused after the switch
        trainer.train(config_from_dict(tiny_config(tiny_coco, threads=2, batch_size=64)), tmp_path / "refused",
                      progress=False)
    assert torch.get_num_threads() == 1
