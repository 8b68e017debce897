"""The training engine: epochs, the CE -> robust-loss stage switch, schedule, checkpoints, logging, DDP.

One run, one config: ``loss.warmup_epochs`` epochs of plain cross-entropy in the RoI classifier, then the
configured loss (DESIGN.md §1). Every epoch ends with an atomic checkpoint from which ``resume=True``
continues exactly (on CPU the final weights equal an uninterrupted run's).
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import random
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, DistributedSampler
from tqdm import tqdm

from noisyseg.config import Config, config_to_yaml
from noisyseg.data.coco import CocoInstances, LabelMap, collate
from noisyseg.data.transforms import DetectionTransform
from noisyseg.engine.build import model_from_config
from noisyseg.engine.checkpoint import load_checkpoint, rng_state, save_checkpoint, set_rng_state
from noisyseg.engine.distributed import DistInfo, all_gather_objects, barrier, cleanup, init_distributed
from noisyseg.engine.evaluate import evaluate_model
from noisyseg.engine.schedule import build_scheduler
from noisyseg.errors import NoisysegError
from noisyseg.losses import build_loss
from noisyseg.utils.io import atomic_write_json, atomic_write_text

log = logging.getLogger(__name__)

CE_STAGE = "ce"
ROBUST_STAGE = "robust"


def stage_of(epoch: int, cfg: Config) -> str:
    """The loss stage of 0-based ``epoch``: CE for the first ``loss.warmup_epochs`` epochs."""
    return CE_STAGE if epoch < cfg.loss.warmup_epochs else ROBUST_STAGE


def build_stage_loss(stage: str, cfg: Config):
    return build_loss("ce") if stage == CE_STAGE else build_loss(cfg.loss.name, **cfg.loss.params)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def _amp_context(amp: str, device: torch.device):
    if amp == "off":
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=torch.float16 if amp == "fp16" else torch.bfloat16)


class _JsonLines:
    """Append-only metrics log (one JSON object per line), plus TensorBoard scalars when installed."""

    def __init__(self, path: Path, enabled: bool) -> None:
        self.enabled = enabled
        self.path = path
        self.tb = None
        if enabled:
            try:
                from torch.utils.tensorboard import SummaryWriter

                self.tb = SummaryWriter(str(path.parent / "tensorboard"))
            except Exception:  # tensorboard is optional
                self.tb = None

    def write(self, record: dict[str, Any], step: int | None = None) -> None:
        if not self.enabled:
            return
        with open(self.path, "a") as f:
            f.write(json.dumps(record) + "\n")
        if self.tb is not None and step is not None:
            for k, v in record.items():
                if isinstance(v, (int, float)) and k not in ("epoch", "iter"):
                    self.tb.add_scalar(f"{record.get('event', 'train')}/{k}", v, step)

    def close(self) -> None:
        if self.tb is not None:
            self.tb.close()


@dataclass
class TrainResult:
    out_dir: Path
    checkpoint: Path
    metrics: dict[str, Any] = field(default_factory=dict)
    train_seconds: float = 0.0


def make_datasets(cfg: Config) -> tuple[CocoInstances, CocoInstances]:
    d = cfg.data
    train = CocoInstances(d.train_json, d.image_root, train=True, transforms=DetectionTransform(d.hflip_prob))
    val = CocoInstances(d.val_json, d.val_image_root or d.image_root, train=False,
                        transforms=DetectionTransform(0.0), label_map=train.label_map)
    return train, val


def _train_loader(dataset, cfg: Config, info: DistInfo, epoch: int) -> DataLoader:
    per_process = cfg.train.batch_size // info.world_size
    sampler = DistributedSampler(dataset, num_replicas=info.world_size, rank=info.rank, shuffle=True,
                                 seed=cfg.seed, drop_last=True)
    sampler.set_epoch(epoch)
    # workers are seeded from this generator, so augmentation depends only on (seed, epoch, rank)
    gen = torch.Generator().manual_seed(cfg.seed * 100003 + epoch * 1009 + info.rank)
    return DataLoader(dataset, batch_size=per_process, sampler=sampler, num_workers=cfg.data.num_workers,
                      collate_fn=collate, generator=gen, drop_last=True,
                      persistent_workers=False, pin_memory=False)


def _to_device(images, targets, device):
    images = [im.to(device, non_blocking=True) for im in images]
    targets = [{k: (v.to(device, non_blocking=True) if torch.is_tensor(v) else v) for k, v in t.items()} for t in targets]
    return images, targets


def train(cfg: Config, out_dir: str | Path | None = None, resume: bool = False, progress: bool = True) -> TrainResult:
    """Train ``cfg`` into ``out_dir`` (default ``cfg.out_dir`` or ``runs/noisyseg``); return final metrics.

    Under torchrun every process calls this; rank 0 alone logs, prints and writes files.
    """
    info, device = init_distributed(cfg.train.device)
    try:
        return _train(cfg, Path(out_dir or cfg.out_dir or "runs/noisyseg"), resume, progress, info, device)
    finally:
        cleanup(info)


def _train(cfg: Config, out: Path, resume: bool, progress: bool, info: DistInfo, device: torch.device) -> TrainResult:
    if cfg.train.batch_size % info.world_size:
        raise NoisysegError(
            f"train.batch_size ({cfg.train.batch_size}) must be divisible by the number of processes ({info.world_size})"
        )
    if cfg.train.threads:
        torch.set_num_threads(cfg.train.threads)
    ckpt_path = out / "checkpoints" / "last.pt"
    if info.is_main:
        out.mkdir(parents=True, exist_ok=True)
        if not resume and ckpt_path.exists():
            raise NoisysegError(f"{out}: already holds a run; pass --resume to continue it or choose another --out")
    seed_everything(cfg.seed + info.rank)
    train_set, val_set = make_datasets(cfg)
    label_map = train_set.label_map
    if info.is_main:
        atomic_write_text(out / "config.yaml", config_to_yaml(cfg))
        if train_set.num_degenerate or train_set.num_crowd:
            print(f"[data] {cfg.data.train_json}: left out {train_set.num_degenerate} degenerate boxes, "
                  f"{train_set.num_crowd} crowd annotations; {train_set.num_skipped_images} images without "
                  f"usable annotations skipped", flush=True)
    iters_per_epoch = len(train_set) // cfg.train.batch_size
    if iters_per_epoch == 0:
        raise NoisysegError(
            f"{cfg.data.train_json}: {len(train_set)} training images, fewer than train.batch_size ({cfg.train.batch_size})"
        )

    stage = stage_of(0, cfg)
    model = model_from_config(cfg, label_map.num_classes, build_stage_loss(stage, cfg)).to(device)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.SGD(params, lr=cfg.train.lr, momentum=cfg.train.momentum,
                                weight_decay=cfg.train.weight_decay)
    scheduler = build_scheduler(optimizer, iters_per_epoch, cfg.train.warmup_iters, cfg.train.warmup_ratio,
                                cfg.train.lr_steps, cfg.train.lr_gamma)
    scaler = torch.amp.GradScaler(device.type, enabled=cfg.train.amp == "fp16")

    start_epoch = 0
    if resume:
        ckpt = load_checkpoint(ckpt_path, map_location=device)
        if LabelMap.from_dict(ckpt["label_map"]) != label_map:
            raise NoisysegError(f"{ckpt_path}: the checkpoint's classes differ from {cfg.data.train_json}'s")
        model.load_state_dict(ckpt["model"])
        optimizer.load_state_dict(ckpt["optimizer"])
        scheduler.load_state_dict(ckpt["scheduler"])
        scaler.load_state_dict(ckpt["scaler"])
        start_epoch = ckpt["epoch"]
        states = ckpt["rng"]
        if len(states) != info.world_size:
            print(f"[resume] checkpoint saved by {len(states)} processes, now {info.world_size}: "
                  "random streams restart from the seed", flush=True)
            seed_everything(cfg.seed + info.rank + 7919 * start_epoch)
        else:
            set_rng_state(states[info.rank])
        if info.is_main:
            print(f"[resume] {ckpt_path}: continuing after epoch {start_epoch}", flush=True)

    train_model: torch.nn.Module = model
    if info.enabled:
        train_model = torch.nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None)

    logger = _JsonLines(out / "metrics.jsonl", info.is_main)
    metrics: dict[str, Any] = {}
    t_start = time.time()
    global_iter = start_epoch * iters_per_epoch
    for epoch in range(start_epoch, cfg.train.epochs):
        stage = stage_of(epoch, cfg)
        model.roi_heads.set_classification_loss(build_stage_loss(stage, cfg))
        loss_name = "ce" if stage == CE_STAGE else cfg.loss.name
        loader = _train_loader(train_set, cfg, info, epoch)
        model.train()
        running: dict[str, float] = {}
        bar = tqdm(loader, total=iters_per_epoch, disable=not (progress and info.is_main), dynamic_ncols=True,
                   desc=f"epoch {epoch + 1}/{cfg.train.epochs} [{loss_name}]", leave=True)
        t_epoch = time.perf_counter()
        for i, (images, targets) in enumerate(bar):
            images, targets = _to_device(images, targets, device)
            with _amp_context(cfg.train.amp, device):
                loss_dict = train_model(images, targets)
            loss = sum(loss_dict.values())
            if not torch.isfinite(loss):
                values = ", ".join(f"{k}={v.item():.4g}" for k, v in loss_dict.items())
                kept = f"the last good checkpoint is {ckpt_path}" if ckpt_path.exists() else "no checkpoint was written yet"
                raise NoisysegError(
                    f"non-finite loss at epoch {epoch + 1}, iteration {i + 1} ({values}); stopped, {kept}; "
                    f"try a lower train.lr or train.grad_clip"
                )
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            if cfg.train.grad_clip:
                scaler.unscale_(optimizer)
                torch.nn.utils.clip_grad_norm_(params, cfg.train.grad_clip)
            scaler.step(optimizer)
            scaler.update()
            scheduler.step()
            global_iter += 1

            values = {k: v.item() for k, v in loss_dict.items()}
            values["loss"] = loss.item()
            for k, v in values.items():
                running[k] = 0.9 * running.get(k, v) + 0.1 * v
            bar.set_postfix(loss=f"{running['loss']:.3f}", cls=f"{running['loss_classifier']:.3f}")
            if (i + 1) % cfg.train.log_interval == 0 or i + 1 == iters_per_epoch:
                record = {"event": "train", "epoch": epoch + 1, "iter": global_iter, "stage": stage, "roi_loss": loss_name,
                          "lr": optimizer.param_groups[0]["lr"], **values}
                stats = model.roi_heads.last_loss_stats
                record.update({f"rois_{k}": int(v) for k, v in stats.items()})
                logger.write(record, step=global_iter)
        bar.close()
        epoch_seconds = time.perf_counter() - t_epoch
        logger.write({"event": "epoch", "epoch": epoch + 1, "stage": stage, "seconds": epoch_seconds,
                      "images_per_second": iters_per_epoch * cfg.train.batch_size / epoch_seconds})

        rngs = all_gather_objects(rng_state(), info)
        if info.is_main:
            save_checkpoint(ckpt_path, {
                "model": model.state_dict(), "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(), "scaler": scaler.state_dict(),
                "epoch": epoch + 1, "stage": stage, "rng": rngs,
                "config": cfg.model_dump(mode="json"), "label_map": label_map.to_dict(),
            })
        barrier(info)

        last = epoch + 1 == cfg.train.epochs
        interval = cfg.train.eval_interval
        if last or (interval and (epoch + 1) % interval == 0):
            metrics = evaluate_model(model, val_set, label_map, cfg.data.val_json, device, info,
                                     batch_size=max(1, cfg.train.batch_size // info.world_size),
                                     num_workers=cfg.data.num_workers, progress=progress)
            if info.is_main:
                logger.write({"event": "eval", "epoch": epoch + 1, **_flat_metrics(metrics)}, step=global_iter)
                print(f"[eval] epoch {epoch + 1}: mask AP {metrics['segm']['AP']:.1f}, box AP "
                      f"{metrics['bbox']['AP']:.1f}", flush=True)
    train_seconds = time.time() - t_start
    if info.is_main:
        atomic_write_json(out / "metrics.json", {"epoch": cfg.train.epochs, "train_seconds": train_seconds,
                                                 **metrics}, indent=2)
    logger.close()
    return TrainResult(out, ckpt_path, metrics, train_seconds)


def _flat_metrics(metrics: dict[str, Any]) -> dict[str, float]:
    flat = {}
    for iou_type, m in metrics.items():
        for k, v in m.items():
            if isinstance(v, (int, float)) and not math.isnan(v):
                flat[f"{iou_type}_{k}"] = v
    return flat
