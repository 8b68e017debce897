"""Several processes on CPU (gloo): equal steps, exact resume after a kill, errors stop every rank once."""

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

from helpers import tiny_config
from noisyseg.cli import main
from noisyseg.engine.checkpoint import load_checkpoint
from noisyseg.engine.distributed import DistInfo, raise_if_any_failed, run_processes, select_device
from noisyseg.errors import NoisysegError

needs_dist = pytest.mark.skipif(not torch.distributed.is_available(), reason="torch.distributed unavailable")


def test_select_device_names_and_errors():
    assert select_device("cpu") == torch.device("cpu")
    with pytest.raises(NoisysegError, match=r"^--device=gpu0: unknown device; expected auto, cpu, cuda or cuda:N$"):
        select_device("gpu0")
    if torch.cuda.is_available():
        assert select_device("auto").type == "cuda"
        with pytest.raises(NoisysegError, match="GPU 99 asked for"):
            select_device("cuda:99")
    else:
        assert select_device("auto") == torch.device("cpu")
        with pytest.raises(NoisysegError, match=r"^train.device=cuda: CUDA is not available on this machine"):
            select_device("cuda", "train.device")


def test_an_error_at_an_agreement_point_is_raised_in_a_single_process_too():
    raise_if_any_failed(None, DistInfo())
    error = NoisysegError("x: bad")
    with pytest.raises(NoisysegError) as e:
        raise_if_any_failed(error, DistInfo())
    assert e.value is error and not getattr(e.value, "silent", False)


def _torchrun(nproc, *args):
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
           "-m", "noisyseg", "train", *args, "--no-progress"]
    proc = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"}, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


def _twin_image_data(root):
    """Two training images with the same pixels and boxes but swapped class labels.

    Every per-image count (anchors, proposals, positive RoIs) is then equal, so the mean over 2 images in
    one process equals the average of two 1-image processes; the gradients still differ per image (the
    labels pick other classifier targets and mask channels), so a missing gradient all-reduce would show.
    """
    (root / "images").mkdir(parents=True)
    rng = np.random.default_rng(0)
    img = (rng.random((64, 64, 3)) * 80).astype(np.uint8)
    img[8:30, 10:40] = [220, 60, 60]
    img[36:60, 30:60] = [60, 200, 90]
    Image.fromarray(img).save(root / "images" / "a.png")
    Image.fromarray(img).save(root / "images" / "b.png")
    anns = []
    for image_id in (1, 2):
        cats = (1, 2) if image_id == 1 else (2, 1)
        for k, (x, y, w, h, cat) in enumerate([(10, 8, 30, 22, cats[0]), (30, 36, 30, 24, cats[1])]):
            anns.append({"id": image_id * 10 + k, "image_id": image_id, "category_id": cat, "iscrowd": 0,
                         "bbox": [x, y, w, h], "area": w * h,
                         "segmentation": [[x, y, x + w, y, x + w, y + h, x, y + h]]})
    coco = {"images": [{"id": 1, "file_name": "a.png", "height": 64, "width": 64},
                       {"id": 2, "file_name": "b.png", "height": 64, "width": 64}],
            "annotations": anns, "categories": [{"id": 1, "name": "red"}, {"id": 2, "name": "green"}]}
    (root / "train.json").write_text(json.dumps(coco))
    return {"train_json": root / "train.json", "val_json": root / "train.json", "image_root": root / "images"}


@needs_dist
def test_two_processes_of_one_image_step_like_one_process_of_two(tmp_path):
    data = _twin_image_data(tmp_path / "twin")
    tree = tiny_config(data, epochs=1, batch_size=2, warmup_iters=0, lr=0.02, threads=1)
    tree["data"].update(hflip_prob=0.0, train_min_size=[64, 64])
    # sample every anchor and every proposal, so no random subset differs between the two layouts
    tree["model"].update(rois_per_image=100000, positive_fraction=1.0, rpn_batch_size_per_image=1000000)
    tree["loss"]["warmup_epochs"] = 0
    cfg = tmp_path / "twin.yaml"
    cfg.write_text(yaml.safe_dump(tree))
    assert main(["train", str(cfg), "--out", str(tmp_path / "one"), "--no-progress"]) == 0
    _torchrun(2, str(cfg), "--out", str(tmp_path / "two"))  # torchrun's own launcher works too
    a = load_checkpoint(tmp_path / "one" / "checkpoints" / "last.pt")["model"]
    b = load_checkpoint(tmp_path / "two" / "checkpoints" / "last.pt")["model"]
    for k in a:
        assert torch.allclose(a[k], b[k], rtol=1e-4, atol=1e-6), k
    # a real step happened: non-zero loss at a non-zero learning rate
    step = [json.loads(x) for x in (tmp_path / "one" / "metrics.jsonl").read_text().splitlines()][0]
    assert step["event"] == "train" and step["lr"] > 0 and step["loss"] > 0


# A training command with one fault planted through the trainer's own functions (run as each process).
_FAULTY_TRAIN = textwrap.dedent("""
    import os, signal, sys
    from noisyseg.engine import trainer

    if os.environ.get("THREADS_AT_EXIT"):  # this process's native threads when Python exits, to a file
        import atexit

        def write_threads():
            names = []
            for t in os.listdir("/proc/self/task"):
                try:
                    names.append(open(f"/proc/self/task/{t}/comm").read().strip())
                except FileNotFoundError:  # a thread that ended in between
                    pass
            with open(os.environ["THREADS_AT_EXIT"] + os.environ["RANK"], "w") as f:
                f.write(" ".join(sorted(names)))

        atexit.register(write_threads)
    if os.environ.get("KILL_AT_STEP"):  # kill -9 every process at this training step (1-based)
        real_step, calls = trainer.train_step, []

        def step(*args, **kwargs):
            calls.append(1)
            if len(calls) == int(os.environ["KILL_AT_STEP"]):
                os.kill(os.getpid(), signal.SIGKILL)
            return real_step(*args, **kwargs)

        trainer.train_step = step
    if os.environ.get("NAN_ON_RANK") == os.environ["RANK"]:  # this process's CE-stage loss is NaN
        real_loss = trainer.build_stage_loss

        def build(stage, cfg):
            loss = real_loss(stage, cfg)
            if stage == trainer.CE_STAGE:
                return lambda logits, labels: (loss(logits, labels)[0] * float("nan"), {})
            return loss

        trainer.build_stage_loss = build
    if os.environ.get("BUG_ON_RANK") == os.environ["RANK"]:  # a bug (not a NoisysegError) while setting up
        def broken(stage, cfg):
            raise RuntimeError("planted bug")

        trainer.build_stage_loss = broken
    from noisyseg.cli import main

    sys.exit(main(["train", *sys.argv[1:], "--no-progress"]))
""")


def _faulty(tmp_path, *args, grace_seconds=10.0):
    script = tmp_path / "faulty_train.py"
    script.write_text(_FAULTY_TRAIN)
    return run_processes(2, [sys.executable, str(script), *args], grace_seconds=grace_seconds)


def _records(run):
    return [{k: v for k, v in json.loads(x).items() if k not in ("seconds", "images_per_second")}
            for x in (run / "metrics.jsonl").read_text().splitlines()]


@needs_dist
def test_two_process_run_resumes_exactly_after_a_kill_while_evaluating_every_epoch(tiny_coco, tmp_path, monkeypatch,
                                                                                   capfd):
    cfg = tmp_path / "ddp.yaml"
    cfg.write_text(yaml.safe_dump(tiny_config(tiny_coco, threads=1, epochs=2, eval_interval=1)))
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    full, split = tmp_path / "full", tmp_path / "split"
    assert main(["train", str(cfg), "--out", str(full), "--nproc", "2", "--no-progress"]) == 0
    ckpt = load_checkpoint(full / "checkpoints" / "last.pt")
    assert len(ckpt["rng"]) == 2  # one random state per process
    lines = _records(full)
    assert [r["epoch"] for r in lines if r["event"] == "eval"] == [1, 2]  # rank 0 alone logs
    # 4 steps per epoch and process: killed at the 2nd step of epoch 2, after epoch 1's checkpoint and eval
    monkeypatch.setenv("KILL_AT_STEP", "6")
    capfd.readouterr()
    assert _faulty(tmp_path, str(cfg), "--out", str(split)) == 2
    assert "was killed by SIGKILL" in capfd.readouterr().err
    monkeypatch.delenv("KILL_AT_STEP")
    assert load_checkpoint(split / "checkpoints" / "last.pt")["epoch"] == 1
    assert main(["train", str(cfg), "--out", str(split), "--nproc", "2", "--no-progress", "--resume"]) == 0
    a, b = ckpt["model"], load_checkpoint(split / "checkpoints" / "last.pt")["model"]
    for k in a:
        assert torch.equal(a[k], b[k]), k
    assert _records(split) == lines


@needs_dist
def test_a_non_finite_loss_on_one_process_stops_both_with_one_line(tiny_coco, tmp_path, monkeypatch, capfd):
    cfg = tmp_path / "ddp.yaml"
    cfg.write_text(yaml.safe_dump(tiny_config(tiny_coco, threads=1)))
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    monkeypatch.setenv("NAN_ON_RANK", "1")
    monkeypatch.setenv("THREADS_AT_EXIT", str(tmp_path / "threads_of_rank"))
    assert _faulty(tmp_path, str(cfg), "--out", str(tmp_path / "run")) == 2
    err = capfd.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    assert err[0].startswith("noisyseg train: error: non-finite loss at epoch 1, iteration 1 on process 1 (")
    assert err[0].endswith("no checkpoint was written yet; try a lower train.lr or train.grad_clip")
    # the process group ended with the run, not at exit, where a group thread still running can abort the
    # process (SIGABRT, "terminate called without an active exception") and add lines to the one above
    for rank in (0, 1):
        threads = (tmp_path / f"threads_of_rank{rank}").read_text().split()
        assert "python" in threads and not [t for t in threads if "gloo" in t], (rank, threads)


@needs_dist
def test_an_error_under_nproc_is_printed_once_and_leaves_no_run_folder(tiny_config_file, tmp_path, monkeypatch, capfd):
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    run = tmp_path / "new" / "run"
    assert main(["train", str(tiny_config_file), "--out", str(run), "--nproc", "2", "--no-progress",
                 "--set", f"data.image_root={tmp_path / 'nowhere'}"]) == 2
    err = capfd.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("noisyseg train: error: ") and "image not found" in err[0], err
    assert not (tmp_path / "new").exists()


@needs_dist
def test_a_bug_on_one_process_stops_the_other_instead_of_hanging(tiny_coco, tmp_path, monkeypatch, capfd):
    """Before, the other rank waited for the failed one in a collective until gloo's 30-minute timeout. Had
    that come back, the launcher would stop it after the grace period and say it was killed."""
    cfg = tmp_path / "ddp.yaml"
    cfg.write_text(yaml.safe_dump(tiny_config(tiny_coco, threads=1)))
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    monkeypatch.setenv("BUG_ON_RANK", "1")
    assert _faulty(tmp_path, str(cfg), "--out", str(tmp_path / "run"), grace_seconds=120) != 0
    err = capfd.readouterr().err
    assert "noisyseg train: error: process 1 failed: RuntimeError: planted bug" in err
    assert "was killed by" not in err  # both stopped by themselves, within the grace period
