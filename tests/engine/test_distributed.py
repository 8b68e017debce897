"""Multi-process training on CPU through torchrun (gloo)."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

from noisyseg.engine.checkpoint import load_checkpoint
from helpers import tiny_config

pytestmark = pytest.mark.skipif(not torch.distributed.is_available(), reason="torch.distributed unavailable")


def _torchrun(nproc, *args, env_extra=None):
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
           "-m", "noisyseg", "train", *args, "--no-progress"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", **(env_extra or {})}
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)
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


def test_two_processes_of_one_image_step_like_one_process_of_two(tmp_path):
    data = _twin_image_data(tmp_path / "twin")
    tree = tiny_config(data, epochs=1, batch_size=2, warmup_iters=0, lr=0.02, threads=1)
    tree["data"].update(hflip_prob=0.0, train_min_size=[64, 64])
    # sample every anchor and every proposal, so no random subset differs between the two layouts
    tree["model"].update(rois_per_image=100000, positive_fraction=1.0, rpn_batch_size_per_image=1000000)
    tree["loss"]["warmup_epochs"] = 0
    cfg = tmp_path / "twin.yaml"
    cfg.write_text(yaml.safe_dump(tree))
    from noisyseg.cli import main

    assert main(["train", str(cfg), "--out", str(tmp_path / "one"), "--no-progress"]) == 0
    _torchrun(2, str(cfg), "--out", str(tmp_path / "two"))
    a = load_checkpoint(tmp_path / "one" / "checkpoints" / "last.pt")["model"]
    b = load_checkpoint(tmp_path / "two" / "checkpoints" / "last.pt")["model"]
    for k in a:
        assert torch.allclose(a[k], b[k], rtol=1e-4, atol=1e-6), k
    # a real step happened: non-zero loss at a non-zero learning rate
    step = [json.loads(x) for x in (tmp_path / "one" / "metrics.jsonl").read_text().splitlines()][0]
    assert step["event"] == "train" and step["lr"] > 0 and step["loss"] > 0


def test_ddp_run_trains_evaluates_and_resumes_exactly(tiny_coco, tmp_path):
    tree = tiny_config(tiny_coco, threads=1)
    cfg = tmp_path / "ddp.yaml"
    cfg.write_text(yaml.safe_dump(tree))
    from noisyseg.cli import main

    full, split = tmp_path / "full", tmp_path / "split"
    assert main(["train", str(cfg), "--out", str(full), "--nproc", "2", "--no-progress"]) == 0
    metrics = json.loads((full / "metrics.json").read_text())
    assert "AP" in metrics["segm"] and "AP" in metrics["bbox"]
    lines = [json.loads(x) for x in (full / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in lines if r["event"] == "epoch"] == [1, 2]  # rank 0 alone logs
    ckpt = load_checkpoint(full / "checkpoints" / "last.pt")
    assert len(ckpt["rng"]) == 2  # one random state per process
    _torchrun(2, str(cfg), "--out", str(split), "--set", "train.epochs=1")
    _torchrun(2, str(cfg), "--out", str(split), "--resume")
    a, b = ckpt["model"], load_checkpoint(split / "checkpoints" / "last.pt")["model"]
    for k in a:
        assert torch.equal(a[k], b[k]), k
