"""Engine overhead: seconds per training iteration of `noisyseg train` vs a bare torchvision loop.

Both run the same model (maskrcnn_tiny; the bare loop uses torchvision's own RoIHeads over the same
modules), the same data, batch and DataLoader settings, for one epoch each, alternating, best of
``--repeats``. Also prints data-loading throughput alone and model-step throughput on preloaded batches.

    .venv/bin/python benchmarks/train_overhead.py [--train 160] [--repeats 2]
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import time
from pathlib import Path

import torch
from torchvision.models.detection.roi_heads import RoIHeads

from noisyseg.config import config_from_dict
from noisyseg.configs import packaged_config
from noisyseg.data.shapes import make_shapes
from noisyseg.engine.build import model_from_config
from noisyseg.engine.distributed import DistInfo
from noisyseg.engine.trainer import _train_loader, make_datasets, train
from noisyseg.losses import build_loss
import yaml


def bare_roi_heads(h) -> RoIHeads:
    return RoIHeads(h.box_roi_pool, h.box_head, h.box_predictor, h.proposal_matcher.high_threshold,
                    h.proposal_matcher.low_threshold, h.fg_bg_sampler.batch_size_per_image,
                    h.fg_bg_sampler.positive_fraction, h.box_coder.weights, h.score_thresh, h.nms_thresh,
                    h.detections_per_img, h.mask_roi_pool, h.mask_head, h.mask_predictor)


def bare_model_and_optimizer(cfg, train_set):
    """The config's model with torchvision's own RoIHeads (plain CE), in train mode, and a plain SGD."""
    torch.manual_seed(cfg.seed)
    model = model_from_config(cfg, train_set.label_map.num_classes, build_loss("ce"))
    model.roi_heads = bare_roi_heads(model.roi_heads)
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=cfg.train.lr, momentum=0.9,
                          weight_decay=cfg.train.weight_decay)
    return model.train(), opt


def bare_epoch(cfg, train_set) -> tuple[float, int]:
    model, opt = bare_model_and_optimizer(cfg, train_set)
    t = time.perf_counter()
    n = 0
    for images, targets in _train_loader(train_set, cfg, DistInfo(), 0):
        loss = sum(model(images, targets).values())
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        n += 1
    return time.perf_counter() - t, n


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--train", type=int, default=160)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--loss", default="lncis", help="RoI loss of the engine run (lncis from the first epoch)")
    args = ap.parse_args()
    torch.set_num_threads(2)
    work = Path(tempfile.mkdtemp(prefix="noisyseg-overhead-"))
    try:
        data = make_shapes(work / "shapes", n_train=args.train, n_val=8, size=128, seed=0, progress=False)
        tree = yaml.safe_load(packaged_config("shapes_tiny").read_text())
        tree["data"].update(train_json=str(data.train_json), val_json=str(data.val_json), image_root=str(data.image_root))
        tree["train"].update(epochs=1, eval_interval=0, log_interval=10**6)
        tree["loss"].update(name=args.loss, warmup_epochs=0)
        cfg = config_from_dict(tree)
        train_set, _ = make_datasets(cfg)
        engine_times, bare_times = [], []
        for r in range(args.repeats):
            run = work / f"run{r}"
            train(cfg, run, progress=False)
            rec = [json.loads(l) for l in (run / "metrics.jsonl").read_text().splitlines()]
            ep = next(x for x in rec if x["event"] == "epoch")
            iters = len(train_set) // cfg.train.batch_size
            engine_times.append(ep["seconds"] / iters)
            sec, n = bare_epoch(cfg, train_set)
            bare_times.append(sec / n)
        e, b = min(engine_times), min(bare_times)
        print(f"model maskrcnn_tiny, 128 px, batch {cfg.train.batch_size}, {cfg.model.rois_per_image} RoIs/image, "
              f"{len(train_set)} images, {torch.get_num_threads()} threads, engine loss {args.loss}")
        print(f"engine   : {e * 1000:7.1f} ms/iter  ({cfg.train.batch_size / e:5.1f} images/s)")
        print(f"bare loop: {b * 1000:7.1f} ms/iter  ({cfg.train.batch_size / b:5.1f} images/s)")
        print(f"ratio engine/bare: {e / b:.3f}  (goal <= 1.05)")

        # data loading alone vs model steps on preloaded batches
        loader = _train_loader(train_set, cfg, DistInfo(), 0)
        t = time.perf_counter()
        batches = list(loader)
        load_s = time.perf_counter() - t
        torch.manual_seed(0)
        model = model_from_config(cfg, train_set.label_map.num_classes, build_loss("ce"))
        opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
        model.train()
        t = time.perf_counter()
        for images, targets in batches:
            loss = sum(model(images, targets).values())
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        step_s = time.perf_counter() - t
        n_img = len(batches) * cfg.train.batch_size
        print(f"data loading alone ({cfg.data.num_workers} worker): {n_img / load_s:6.1f} images/s")
        print(f"model steps on preloaded batches  : {n_img / step_s:6.1f} images/s")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
