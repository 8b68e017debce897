"""The training engine: epochs, the CE -> robust-loss stage switch, schedule, checkpoints, logging, DDP.

One run, one config: ``loss.warmup_epochs`` epochs of plain cross-entropy in the RoI classifier, then the
configured loss (DESIGN.md §1). :func:`train` is four named steps, each readable on its own:

- :func:`setup_run` checks and builds everything before the first step (the run folder, both stages'
  losses, the data, the model, optimizer and schedule) and, on resume, restores the checkpoint;
- :func:`train_one_epoch` trains one epoch (:func:`train_step` is one iteration);
- :func:`save_epoch_checkpoints` writes the epoch's checkpoints;
- :func:`evaluate_epoch` scores clean val, every ``train.eval_interval`` epochs and after the last.

The run folder's layout and records belong to :mod:`noisyseg.engine.run_folder`; the trainer writes
``config.yaml`` at the start, ``metrics.jsonl`` as it goes, ``checkpoints/`` after every epoch (``last.pt``;
``ce_stage_end.pt`` after the last CE epoch when another loss follows; ``epoch_N.pt`` for
``train.keep_epochs``) and the final record ``metrics.json`` at the end. :func:`train_to_end` brings a run
folder to its final record whatever state it is in (new, killed, finished, finished but not evaluated).

What a run guarantees:

- The same seed gives the same weights whatever ``data.num_workers``: each sample's augmentation draws
  from a generator seeded by (seed, epoch, sample index), and evaluation draws no training randomness.
- ``resume=True`` continues from ``last.pt`` to the weights and metrics log of an uninterrupted run
  (tested on CPU after a kill, in one and two processes, evaluating every epoch). It refuses a config
  that differs from the run's (except :data:`noisyseg.config.RESUME_FREE_KEYS`), drops the log lines of
  the killed epoch and stale temporary files, re-runs an evaluation the kill cut short, and on a
  finished run changes nothing, unless ``metrics.json`` lacks the final AP (then it re-evaluates).
- Everything is checked before the first step; a failed start leaves no run folder behind. One process
  at a time trains a run folder (an exclusive ``flock`` for the life of the run).
- Under several processes every error stops every rank and is printed once; a non-finite loss on any
  rank stops them all.
"""

from __future__ import annotations

import contextlib
import io
import logging
import math
import random
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, DistributedSampler
from tqdm import tqdm

from noisyseg.config import Config, config_to_yaml, differing_keys
from noisyseg.data.coco import CocoInstances, LabelMap, collate
from noisyseg.data.transforms import DetectionTransform
from noisyseg.engine.build import model_from_config
from noisyseg.engine.checkpoint import (checkpoint_bytes, load_checkpoint, load_model_weights, rng_state,
                                        set_rng_state)
from noisyseg.engine.distributed import (DistInfo, all_gather_objects, all_ranks_true, barrier, cleanup,
                                         gather_to_main, init_distributed, on_every_rank, torch_threads)
from noisyseg.engine.evaluate import build_val_set, evaluate_model
from noisyseg.engine import run_folder
from noisyseg.engine.run_folder import MetricsLog, RunFolder, RunFolderLocked, RunLock  # noqa: F401 (re-exported)
from noisyseg.engine.schedule import build_optimizer, build_scheduler
from noisyseg.errors import NoisysegError
from noisyseg.losses import build_loss
from noisyseg.losses.transition import (ESTIMATE, FROM_DATA, transition_matrix, true_class_posterior,
                                        unlearned_classes)
from noisyseg.utils.io import atomic_write_bytes, atomic_write_json, ensure_output_dir, read_json

log = logging.getLogger(__name__)

CE_STAGE = "ce"
ROBUST_STAGE = "robust"


def stage_of(epoch: int, cfg: Config) -> str:
    """The loss stage of 0-based ``epoch``: CE for the first ``loss.warmup_epochs`` epochs."""
    return CE_STAGE if epoch < cfg.loss.warmup_epochs else ROBUST_STAGE


def build_stage_loss(stage: str, cfg: Config):
    return build_loss("ce") if stage == CE_STAGE else build_loss(cfg.loss.name, **cfg.loss.params)


def ce_stage_end_epoch(cfg: Config) -> int | None:
    """The epoch (1-based) after which ``ce_stage_end.pt`` is saved; None when no other loss follows CE."""
    return run_folder.ce_stage_end_epoch(cfg.loss.warmup_epochs, cfg.train.epochs, cfg.loss.name)


def is_eval_epoch(epoch: int, cfg: Config) -> bool:
    """Whether the run evaluates after 1-based ``epoch``: every ``eval_interval`` epochs and after the last."""
    interval = cfg.train.eval_interval
    return epoch == cfg.train.epochs or bool(interval and epoch % interval == 0)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def sample_seed(seed: int, epoch: int, index: int) -> int:
    """The seed of sample ``index``'s augmentation in 0-based ``epoch`` of a run seeded ``seed`` (64 bits)."""
    high, low = np.random.SeedSequence([seed % 2**64, epoch, index]).generate_state(2)
    return int(high) << 32 | int(low)


def _amp_context(amp: str, device: torch.device):
    if amp == "off":
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=torch.float16 if amp == "fp16" else torch.bfloat16)


@dataclass
class TrainResult:
    """What a call of :func:`train` left: the run folder, its last checkpoint, the final metrics (box and mask
    AP; empty on ranks other than 0), the run's training seconds over every call, and how many epochs this
    call trained (0 for a finished run, only re-evaluated or left as it was)."""

    out_dir: Path
    checkpoint: Path
    metrics: dict[str, Any] = field(default_factory=dict)
    train_seconds: float = 0.0
    epochs_trained: int = 0


def make_datasets(cfg: Config) -> tuple[CocoInstances, CocoInstances]:
    """The training set (augmented: horizontal flips) and the val set, which must have its classes."""
    d = cfg.data
    train = CocoInstances(d.train_json, d.image_root, train=True, transforms=DetectionTransform(d.hflip_prob))
    return train, build_val_set(d, train.label_map)


class _EpochSamples(Dataset):
    """A data set's samples in one epoch, each augmented from its own seed, :func:`sample_seed`.

    The transforms draw from torch's global generator; here it is seeded per sample and restored
    afterwards, so augmentation neither depends on nor disturbs which process or worker loads a sample.
    """

    def __init__(self, dataset: Dataset, seed: int, epoch: int) -> None:
        self.dataset, self.seed, self.epoch = dataset, seed, epoch

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int):
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(sample_seed(self.seed, self.epoch, index))
            return self.dataset[index]


def _train_loader(dataset, cfg: Config, info: DistInfo, epoch: int) -> DataLoader:
    per_process = cfg.train.batch_size // info.world_size
    sampler = DistributedSampler(dataset, num_replicas=info.world_size, rank=info.rank, shuffle=True,
                                 seed=cfg.seed, drop_last=True)
    sampler.set_epoch(epoch)
    # the loader's own generator: iterating a DataLoader otherwise draws a seed from the global RNG
    gen = torch.Generator().manual_seed(cfg.seed * 100003 + epoch * 1009 + info.rank)
    return DataLoader(_EpochSamples(dataset, cfg.seed, epoch), batch_size=per_process, sampler=sampler,
                      num_workers=cfg.data.num_workers, collate_fn=collate, generator=gen, drop_last=True,
                      persistent_workers=False, pin_memory=False)


def _to_device(images, targets, device):
    images = [im.to(device, non_blocking=True) for im in images]
    targets = [{k: (v.to(device, non_blocking=True) if torch.is_tensor(v) else v) for k, v in t.items()} for t in targets]
    return images, targets


@dataclass
class Run:
    """What a training run holds between its steps (made by :func:`setup_run`)."""

    cfg: Config
    folder: RunFolder
    info: DistInfo
    device: torch.device
    lock: RunLock | None  # rank 0 only
    losses: dict[str, Any]  # stage -> RoI classification loss, every stage built before the first step
    train_set: CocoInstances
    val_set: CocoInstances
    label_map: LabelMap
    iters_per_epoch: int
    model: torch.nn.Module  # the Mask R-CNN
    train_model: torch.nn.Module  # what a step calls: the model or its DDP wrapper
    params: list[torch.nn.Parameter]
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    scaler: torch.amp.GradScaler
    metrics_log: MetricsLog
    start_epoch: int = 0
    targets_epoch: int | None = None  # the posterior loss's targets the data set holds: made after this epoch
    train_annotations: Any = None  # the training file's AuditData, kept after the first scoring pass
    posterior_matrix: np.ndarray | None = None  # the posterior loss's noise matrix, kept after its first use
    seconds_before: float = 0.0  # training time spent before this call (by the runs it resumes)
    started_at: float = field(default_factory=time.time)  # reset when the first epoch starts

    @property
    def ckpt_path(self) -> Path:
        return self.folder.last_checkpoint

    def train_seconds(self) -> float:
        return self.seconds_before + time.time() - self.started_at

    def close(self) -> None:
        self.metrics_log.close()
        if self.lock is not None:
            self.lock.close()
        # Drop the DDP wrapper: its reducer holds the process group, which then ends (threads joined) in
        # cleanup() rather than when the interpreter exits, where a group thread still running aborts the
        # process ("terminate called without an active exception", seen on a loaded machine).
        self.train_model = self.model


def train(cfg: Config, out_dir: str | Path | None = None, resume: bool = False, progress: bool = True,
          inputs: Sequence[str | Path] = ()) -> TrainResult:
    """Train ``cfg`` into ``out_dir`` (default ``cfg.out_dir`` or ``runs/noisyseg``); return final metrics.

    Under several processes every process calls this; rank 0 alone logs, prints and writes files. Torch
    runs with ``train.threads`` CPU threads, and the caller's thread count is restored on return.
    ``inputs``: files the run reads besides its data (the config file): none may be written over.
    """
    info, device = init_distributed(cfg.train.device)
    out = Path(out_dir or cfg.out_dir or "runs/noisyseg")
    inputs = [*inputs, cfg.data.train_json, cfg.data.val_json]
    with torch_threads(cfg.train.threads):
        try:
            run = setup_run(cfg, out, resume, info, device, inputs)
            if isinstance(run, TrainResult):  # a finished run, resumed: nothing to do
                return run
            try:
                run.started_at = time.time()
                metrics = _complete_interrupted_evaluation(run, progress)
                for epoch in range(run.start_epoch, cfg.train.epochs):
                    _prepare_robust_stage(run, epoch)
                    train_one_epoch(run, epoch, progress)
                    save_epoch_checkpoints(run, epoch + 1)
                    if is_eval_epoch(epoch + 1, cfg):
                        metrics = evaluate_epoch(run, epoch + 1, progress)
                seconds = run.train_seconds() if run.start_epoch < cfg.train.epochs else _recorded_seconds(run)
                if info.is_main:
                    run.folder.write_final_record(cfg.train.epochs, seconds, metrics)
                return TrainResult(out, run.ckpt_path, metrics, seconds, cfg.train.epochs - run.start_epoch)
            finally:
                run.close()
        finally:
            cleanup(info)


@dataclass
class RunOutcome:
    """A run brought to its end by :func:`train_to_end`: its final metrics (box and mask AP), its training
    seconds over every call, and what this call did: "trained", "resumed", "re-evaluated" (finished
    before, its final record missing: the final checkpoint scored again) or "already done"."""

    metrics: dict[str, Any]
    train_seconds: float
    how: str


def train_to_end(cfg: Config, out_dir: str | Path, progress: bool = True, label: str | None = None) -> RunOutcome:
    """Bring the run in ``out_dir`` to its end, whatever state it is in: read its final record when it has
    one for ``cfg.train.epochs`` epochs, else resume it from ``last.pt`` (which only evaluates a finished
    run), else train it from the start. ``label`` prefixes the lines printed (one process only).

    The caller is responsible for ``cfg`` being the run's own config: a resume refuses any other, but a
    finished record is returned as it is.
    """
    folder = RunFolder(out_dir)
    label = label or f"[train] {folder.path}"
    record = folder.final_record(cfg.train.epochs)
    if record is not None:
        print(f"{label}: trained before; its results come from {folder.record_path}", flush=True)
        return RunOutcome({k: record[k] for k in ("segm", "bbox")}, float(record.get("train_seconds", math.nan)),
                          "already done")
    resume = folder.last_checkpoint.is_file()
    if resume and load_checkpoint(folder.last_checkpoint).get("epoch", 0) >= cfg.train.epochs:
        print(f"{label}: trained, but {folder.record_path} has no final AP: evaluating {folder.last_checkpoint}",
              flush=True)
    else:
        print(f"{label}{' (resuming)' if resume else ''}", flush=True)
    result = train(cfg, folder.path, resume=resume, progress=progress)
    how = "trained" if not resume else "resumed" if result.epochs_trained else "re-evaluated"
    return RunOutcome(result.metrics, result.train_seconds, how)


# ------------------------------------------------------------------------------------------ setup


def setup_run(cfg: Config, out: Path, resume: bool, info: DistInfo, device: torch.device,
              inputs: Sequence[str | Path] = ()) -> Run | TrainResult:
    """Check and build everything before the first step; restore the checkpoint when resuming.

    In order: the run folder (rank 0 locks it and checks it holds a run exactly when resuming); on resume
    the checkpoint and its config (which must equal ``cfg``); every stage's loss; the data; the model,
    optimizer, schedule and scaler; on resume their states and the random streams. A finished run whose
    ``metrics.json`` holds the final AP is returned as a :class:`TrainResult` without building anything.
    A :class:`NoisysegError` on any rank stops every rank, and a folder this call created is removed.
    """
    folder = RunFolder(out)
    lock = on_every_rank(lambda: _open_run_folder(folder, resume, inputs) if info.is_main else None, info)
    try:
        ckpt = on_every_rank(lambda: _read_resume_checkpoint(cfg, folder) if resume else None, info)
        if ckpt is not None and ckpt["epoch"] >= cfg.train.epochs:
            finished = _finished_result(folder, ckpt) if info.is_main else None
            if all_gather_objects(finished is not None, info)[0]:  # rank 0 read metrics.json; all follow
                if info.is_main:
                    print(f"[resume] {out}: the run finished after epoch {ckpt['epoch']}; its results are kept",
                          flush=True)
                    lock.close()
                return finished or TrainResult(out, folder.last_checkpoint)
        run = on_every_rank(lambda: _build_run(cfg, folder, info, device, lock), info)
        if ckpt is not None:
            on_every_rank(lambda: _restore(run, ckpt), info)
        if info.is_main:
            if resume:
                folder.remove_temporaries()
                run.metrics_log.keep_until(run.start_epoch)
            else:
                folder.prepare_fresh(config_to_yaml(cfg))
    except BaseException:
        if lock is not None:
            lock.close(failed=True)
        raise
    if info.enabled:
        run.train_model = torch.nn.parallel.DistributedDataParallel(
            run.model, device_ids=[device.index] if device.type == "cuda" else None)
    return run


def _recorded_seconds(run: Run) -> float:
    """The training time of a finished run only re-evaluated now: its record's, when the record kept it (it
    includes the final evaluation), else the last checkpoint's (written before it)."""
    recorded = run.folder.recorded_train_seconds() if run.info.is_main else None
    return run.seconds_before if recorded is None else recorded


def _open_run_folder(folder: RunFolder, resume: bool, inputs: Sequence[str | Path]) -> RunLock:
    """Lock the run folder (rank 0) and check it can take this start; a failure leaves no folder behind."""
    ensure_output_dir(folder.path, "run folder")
    lock = RunLock(folder)
    try:
        folder.check_can_start(resume, inputs)
    except BaseException:
        lock.close(failed=True)
        raise
    return lock


def _read_resume_checkpoint(cfg: Config, folder: RunFolder) -> dict[str, Any]:
    out = folder.path
    ckpt = load_checkpoint(folder.last_checkpoint)
    saved = ckpt["config"]
    with contextlib.suppress(ValueError):  # a key added to the schema since: the run had its default
        saved = Config.model_validate(saved).model_dump(mode="json")
    changed = differing_keys(saved, cfg.model_dump(mode="json"))
    if changed:
        raise NoisysegError(f"{out}: --resume with a config that differs from the run's in {', '.join(changed)}; "
                            f"resume with the run's settings ({folder.config_path}) or train into another folder")
    return ckpt


def _finished_result(folder: RunFolder, ckpt: dict[str, Any]) -> TrainResult | None:
    """The results of a finished run from its final record; None when it is missing or is not of the run's
    last epoch (then the final checkpoint is evaluated again)."""
    record = folder.final_record(epochs=ckpt["epoch"])
    if record is None:
        return None
    kept = {k: v for k, v in record.items() if k in ("segm", "bbox")}
    return TrainResult(folder.path, folder.last_checkpoint, kept, float(ckpt.get("train_seconds", 0.0)))


def _build_run(cfg: Config, folder: RunFolder, info: DistInfo, device: torch.device, lock: RunLock | None) -> Run:
    if cfg.train.batch_size % info.world_size:
        raise NoisysegError(
            f"train.batch_size ({cfg.train.batch_size}) must be divisible by the number of processes ({info.world_size})"
        )
    losses = {stage: build_stage_loss(stage, cfg) for stage in (CE_STAGE, ROBUST_STAGE)}
    seed_everything(cfg.seed + info.rank)
    train_set, val_set = make_datasets(cfg)
    if info.is_main and (train_set.num_degenerate or train_set.num_crowd):
        print(f"[data] {cfg.data.train_json}: left out {train_set.num_degenerate} degenerate boxes, "
              f"{train_set.num_crowd} crowd annotations; {train_set.num_skipped_images} images without "
              f"usable annotations skipped", flush=True)
    iters_per_epoch = len(train_set) // cfg.train.batch_size
    if iters_per_epoch == 0:
        raise NoisysegError(
            f"{cfg.data.train_json}: {len(train_set)} training images, fewer than train.batch_size ({cfg.train.batch_size})"
        )
    label_map = train_set.label_map
    for loss in losses.values():  # a forward-corrected loss trains through the data's noise matrix
        # (a plain callable, a test's stand-in, needs nothing)
        needs_matrix = getattr(loss, "needs_transition_matrix", False)
        needs_targets = getattr(loss, "needs_class_targets", False)
        estimated = (needs_matrix or needs_targets) and loss.params["transition"] == ESTIMATE
        if (needs_targets or estimated or getattr(loss, "needs_ce_classes", False)) and ce_stage_end_epoch(cfg) is None:
            what = ("loss posterior: its targets are" if needs_targets
                    else "loss.params.transition=estimate: the matrix is" if estimated
                    else "loss.params.learned_at: the classes that keep CE are")
            raise NoisysegError(f"{what} made by the model at the end of the CE stage; set loss.warmup_epochs "
                                "between 1 and train.epochs - 1")
        if needs_matrix and not estimated:
            loss.set_transition_matrix(transition_matrix(loss.params["transition"], cfg.data.train_json,
                                                         label_map.names, loss.params["balance"]))
        elif needs_targets and not estimated:
            transition_matrix(loss.params["transition"], cfg.data.train_json, label_map.names)  # checked now, used at the switch
    model = model_from_config(cfg, label_map.num_classes, losses[stage_of(0, cfg)]).to(device)
    params = [p for p in model.parameters() if p.requires_grad]
    t = cfg.train
    optimizer = build_optimizer(params, t.lr, t.momentum, t.weight_decay)
    scheduler = build_scheduler(optimizer, iters_per_epoch, t.warmup_iters, t.warmup_ratio, t.lr_steps, t.lr_gamma)
    scaler = torch.amp.GradScaler(device.type, enabled=t.amp == "fp16")
    return Run(cfg, folder, info, device, lock, losses, train_set, val_set, label_map, iters_per_epoch, model, model,
               params, optimizer, scheduler, scaler, MetricsLog(folder, info.is_main))


def _restore(run: Run, ckpt: dict[str, Any]) -> None:
    """Load the checkpoint's states into ``run`` (its classes must be the training data's, ids and names)."""
    saved = LabelMap.from_dict(ckpt["label_map"])
    if saved != run.label_map:
        raise NoisysegError(f"{run.ckpt_path}: the checkpoint's classes differ from {run.cfg.data.train_json}'s "
                            f"({_first_difference(saved, run.label_map)}); resume on the data the run was trained on")
    load_model_weights(run.model, ckpt["model"], run.ckpt_path)
    run.optimizer.load_state_dict(ckpt["optimizer"])
    run.scheduler.load_state_dict(ckpt["scheduler"])
    run.scaler.load_state_dict(ckpt["scaler"])
    run.start_epoch = ckpt["epoch"]
    run.seconds_before = float(ckpt.get("train_seconds", 0.0))
    states, info = ckpt["rng"], run.info
    if len(states) != info.world_size:
        if info.is_main:
            print(f"[resume] checkpoint saved by {len(states)} processes, now {info.world_size}: "
                  "random streams restart from the seed", flush=True)
        seed_everything(run.cfg.seed + info.rank + 7919 * run.start_epoch)
    else:
        set_rng_state(states[info.rank])
    if info.is_main:
        print(f"[resume] {run.ckpt_path}: continuing after epoch {run.start_epoch}", flush=True)


def _first_difference(saved: LabelMap, now: LabelMap) -> str:
    if saved.num_classes != now.num_classes:
        return f"{saved.num_classes} classes in the checkpoint, {now.num_classes} now"
    return next(f"class {k + 1}: id {a} {n!r} in the checkpoint, id {b} {m!r} now"
                for k, (a, n, b, m) in enumerate(zip(saved.category_ids, saved.names, now.category_ids, now.names))
                if (a, n) != (b, m))


# ------------------------------------------------------------------------------------------ the stage switch


def _prepare_robust_stage(run: Run, epoch: int) -> None:
    """Before a robust-stage epoch, give the loss what only the CE stage's model can make, when it does not
    have it yet (the first robust epoch, or the first after a resume): a forward or posterior loss with
    ``transition: estimate`` its noise matrix (``noise_matrix.json``), the posterior loss every training
    annotation's target (``class_targets.npz``), lncis with ``learned_at`` the classes it keeps on CE
    (``ce_classes.json``). Rank 0 makes the files from ``ce_stage_end.pt`` when they are not there yet (one
    scoring pass over the training annotations); every rank then reads them. A posterior loss with
    ``target_momentum`` < 1 also has its targets refreshed before every later epoch (:func:`_refresh_targets`)."""
    cfg, info = run.cfg, run.info
    loss = run.losses.get(ROBUST_STAGE)
    if stage_of(epoch, cfg) != ROBUST_STAGE or loss is None:
        return
    estimate = (getattr(loss, "needs_transition_matrix", False) or getattr(loss, "needs_class_targets", False)) \
        and loss.params["transition"] == ESTIMATE
    wants_matrix = getattr(loss, "needs_transition_matrix", False) and estimate and loss.transition_matrix is None
    switch = ce_stage_end_epoch(cfg)
    targets_due = None  # after which epoch's model the targets of this epoch are made
    if getattr(loss, "needs_class_targets", False):
        targets_due = epoch if loss.params.get("target_momentum", 1.0) < 1.0 else switch
    wants_targets = targets_due is not None and run.targets_epoch != targets_due
    wants_classes = getattr(loss, "needs_ce_classes", False) and loss.ce_classes is None
    if not (wants_matrix or wants_targets or wants_classes):
        return
    matrix_path, targets_path = run.folder.noise_matrix_path, run.folder.class_targets_path
    classes_path = run.folder.ce_classes_path

    def files_missing() -> bool:  # rank 0 looks; every rank follows its answer
        return info.is_main and not ((not estimate or matrix_path.is_file())
                                     and (not wants_targets or targets_path.is_file())
                                     and (not wants_classes or classes_path.is_file()))

    checkpoint = run.folder.checkpoint(run_folder.CE_STAGE_END)
    scores = _score_training_set(run, checkpoint) if all_gather_objects(files_missing(), info)[0] else None

    def make_files() -> None:
        if scores is None:  # nothing to make, or not rank 0
            return
        from noisyseg.audit.issues import estimated_noise_matrix

        print(f"[train] {len(scores.given_labels)} training annotations scored by {checkpoint.name} in "
              f"{scores.seconds:.1f} s{_by_processes(info)}", flush=True)
        if estimate and not matrix_path.is_file():
            atomic_write_json(matrix_path, estimated_noise_matrix(scores))
            print(f"[train] noise matrix estimated (cleanlab's confident joint): {matrix_path}", flush=True)
        if wants_targets:
            targets = _training_posterior(run, loss, scores)
            _write_targets(targets_path, scores.annotation_ids, targets, switch)
            print(f"[train] class targets of the posterior loss: {targets_path}", flush=True)
        if wants_classes and not classes_path.is_file():
            learned_at = loss.params["learned_at"]
            mean, keeps_ce = unlearned_classes(scores.pred_probs, scores.given_labels, learned_at)
            names = list(scores.label_map.names)  # the order of the scored indices; read back by name
            atomic_write_json(classes_path, {
                "learned_at": learned_at, "threshold": learned_at / len(names), "checkpoint": checkpoint.name,
                "classes": [{"name": n, "labels": int((scores.given_labels == i).sum()),
                             "mean_label_prob": None if np.isnan(mean[i]) else round(float(mean[i]), 6),
                             "keeps_ce": bool(keeps_ce[i])} for i, n in enumerate(names)]})
            kept = [n for n, k in zip(names, keeps_ce) if k]
            print(f"[train] classes kept on CE (mean p[label] below {learned_at / len(names):.3g}): "
                  f"{', '.join(kept) or 'none'}: {classes_path}", flush=True)

    on_every_rank(make_files, info)  # also the rendezvous: every rank reads what rank 0 wrote
    if wants_matrix:
        loss.set_transition_matrix(transition_matrix(str(matrix_path), cfg.data.train_json, run.label_map.names,
                                                     loss.params["balance"]))
    if wants_targets:
        if targets_due != switch:
            _refresh_targets(run, loss, targets_due)

        def read_targets() -> None:
            ids, targets, made_after = _read_targets(targets_path, switch)
            if made_after != targets_due:
                raise NoisysegError(f"{targets_path}: class targets made after epoch {made_after}, expected after "
                                    f"epoch {targets_due}")
            run.train_set.set_class_targets(ids, targets)
            run.targets_epoch = targets_due

        on_every_rank(read_targets, info)
    if wants_classes:
        def read_classes() -> None:
            try:
                saved = read_json(classes_path, "the classes kept on CE")
                by_name = {c["name"]: bool(c["keeps_ce"]) for c in saved["classes"]}
                keeps_ce = [False] + [by_name[n] for n in run.label_map.names]  # background first
            except (OSError, ValueError, KeyError, TypeError) as e:
                raise NoisysegError(f"{classes_path}: not a readable list of the classes kept on CE ({e}); remove "
                                    "it to make it again from ce_stage_end.pt") from None
            loss.set_ce_classes(keeps_ce)

        on_every_rank(read_classes, info)
    if targets_due is None or loss.params.get("target_momentum", 1.0) >= 1.0:
        run.train_annotations = None  # no later refresh scores again: free the training file's arrays


def _score_training_set(run: Run, checkpoint: Path):
    """The training annotations' scores under ``checkpoint`` on rank 0, None on the other ranks.

    Every process scores the annotations of its share of the images (image i goes to process i mod N) and
    rank 0 merges the parts: the pass takes 1/N of the time, and no process waits at a collective while
    one process scores the whole set (NCCL stops a process group whose collective has waited 10 minutes,
    and one GPU's pass over a COCO-sized training set takes longer). ``seconds`` is the wall time of the
    whole pass, model loading and the merge included."""
    from noisyseg.audit.score import merge_scores, score_annotations

    cfg, info = run.cfg, run.info
    t0 = time.perf_counter()
    data = on_every_rank(lambda: _training_annotations(run), info)
    rows = np.flatnonzero(data.ann_image % info.world_size == info.rank)
    part = on_every_rank(lambda: score_annotations(
        [checkpoint], data.subset(rows) if info.enabled else data, cfg.data.train_json,
        image_root=cfg.data.image_root, device=run.device, progress=False), info)
    parts = gather_to_main((rows, part), info)
    if parts is None:
        return None
    scores = merge_scores(data, [r for r, _ in parts], [p for _, p in parts]) if info.enabled else part
    scores.seconds = time.perf_counter() - t0
    return scores


def _training_annotations(run: Run):
    """The training file as the audit's compact arrays (:class:`~noisyseg.audit.flat.AuditData`), read on
    the first scoring pass and kept: a posterior loss with ``target_momentum`` < 1 scores every epoch, and
    a COCO-sized file takes longer to parse than a small epoch to train. A posterior loss whose noise
    matrix comes from the file itself (``transition: data``) gets it from this same parse."""
    if run.train_annotations is None:
        from noisyseg.audit.flat import AuditData

        loss = run.losses.get(ROBUST_STAGE)
        from_file = getattr(loss, "needs_class_targets", False) and loss.params["transition"] == FROM_DATA

        def keep_matrix(coco: dict) -> None:
            if from_file and run.posterior_matrix is None:
                run.posterior_matrix = transition_matrix(FROM_DATA, run.cfg.data.train_json, run.label_map.names,
                                                         coco=coco)

        run.train_annotations = AuditData.load(run.cfg.data.train_json, with_parsed=keep_matrix)
    return run.train_annotations


def _by_processes(info: DistInfo) -> str:
    return f" by {info.world_size} processes" if info.enabled else ""


def _training_posterior(run: Run, loss, scores) -> np.ndarray:
    """(N, K) posterior of each scored training annotation's true class, through the loss's noise matrix
    (``noise_matrix.json`` when it is estimated by the run; made once and kept, as it does not change)."""
    if run.posterior_matrix is None:
        transition = loss.params["transition"]
        if transition == ESTIMATE:
            transition = str(run.folder.noise_matrix_path)
        run.posterior_matrix = transition_matrix(transition, run.cfg.data.train_json, run.label_map.names)
    return true_class_posterior(scores.pred_probs, scores.given_labels, run.posterior_matrix)


def _write_targets(path: Path, annotation_ids: np.ndarray, targets: np.ndarray, made_after: int) -> None:
    """``class_targets.npz``: per annotation id its target row, and the epoch whose model made them last."""
    buffer = io.BytesIO()
    np.savez(buffer, annotation_ids=annotation_ids, targets=targets, epoch=np.int64(made_after))
    atomic_write_bytes(path, buffer.getvalue())


def _read_targets(path: Path, switch: int | None) -> tuple[np.ndarray, np.ndarray, int]:
    """(annotation ids, targets, the epoch whose model made them last) from ``class_targets.npz``; a file
    without its epoch was made at the switch."""
    try:
        with np.load(path, allow_pickle=False) as saved:
            made_after = int(saved["epoch"]) if "epoch" in saved.files else switch
            return saved["annotation_ids"], saved["targets"], made_after
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise NoisysegError(f"{path}: not readable class targets ({e}); remove it to make them again from "
                            "ce_stage_end.pt") from None


def _refresh_targets(run: Run, loss, due: int) -> None:
    """Before 0-based robust ``epoch`` ``due``: fold the model after ``due`` epochs (``last.pt``) into the
    posterior loss's targets, ``t <- m t + (1 - m) r`` with ``r`` that model's posterior of each
    annotation's true class and m the loss's ``target_momentum``. Done once per epoch: targets already made
    after ``due`` are kept (a resume), and a gap (targets of an earlier epoch) cannot be filled again, as the
    models in between are not kept. Every rank scores its share of the images; rank 0 reads and writes
    the file."""
    cfg, info, path = run.cfg, run.info, run.folder.class_targets_path

    def saved_targets() -> tuple[np.ndarray, np.ndarray] | None:  # rank 0: the targets to refresh, if due
        if not info.is_main:
            return None
        ids, targets, made_after = _read_targets(path, ce_stage_end_epoch(cfg))
        if made_after == due:
            return None
        if made_after != due - 1:
            raise NoisysegError(f"{path}: class targets made after epoch {made_after}, but the run continues "
                                f"after epoch {due}; the refreshes in between cannot be made again (their models "
                                "are not kept): train the run again from the start")
        return ids, targets

    saved = on_every_rank(saved_targets, info)
    if not all_gather_objects(saved is not None, info)[0]:
        return
    scores = _score_training_set(run, run.ckpt_path)

    def refresh() -> None:
        if scores is None or saved is None:  # not rank 0
            return
        ids, targets = saved
        if scores.annotation_ids.tolist() != ids.tolist():
            raise NoisysegError(f"{path}: its annotations are not those of {cfg.data.train_json}; remove it to "
                                "make the targets again from ce_stage_end.pt")
        momentum = float(loss.params["target_momentum"])
        targets = momentum * targets + (1.0 - momentum) * _training_posterior(run, loss, scores)
        _write_targets(path, ids, targets.astype(np.float32), due)
        on_label = float(targets[np.arange(len(ids)), scores.given_labels].mean()) if len(ids) else float("nan")
        print(f"[train] class targets of the posterior loss refreshed by the epoch-{due} model (momentum "
              f"{momentum:g}; mean weight on the given label {on_label:.3f}; {scores.seconds:.1f} s"
              f"{_by_processes(info)}): {path}", flush=True)

    on_every_rank(refresh, info)


# ------------------------------------------------------------------------------------------ one epoch


def train_one_epoch(run: Run, epoch: int, progress: bool) -> dict[str, float]:
    """Train 0-based ``epoch``; log its lines; return its mean loss values (``loss`` is their sum)."""
    cfg, info = run.cfg, run.info
    stage = stage_of(epoch, cfg)
    loss_name = "ce" if stage == CE_STAGE else cfg.loss.name
    run.model.roi_heads.set_classification_loss(run.losses[stage])
    if stage == ROBUST_STAGE:  # losses with a per-epoch schedule (GOOD's ascent ramp) count robust epochs
        run.losses[stage].set_robust_epoch(epoch - cfg.loss.warmup_epochs)
    run.model.train()
    running: dict[str, float] = {}
    sums: dict[str, float] = {}
    bar = tqdm(_train_loader(run.train_set, cfg, info, epoch), total=run.iters_per_epoch, leave=True,
               disable=not (progress and info.is_main), dynamic_ncols=True,
               desc=f"epoch {epoch + 1}/{cfg.train.epochs} [{loss_name}]")
    t_epoch = time.perf_counter()
    for i, (images, targets) in enumerate(bar):
        values = train_step(run, *_to_device(images, targets, run.device), epoch, i)
        global_iter = epoch * run.iters_per_epoch + i + 1
        for k, v in values.items():
            running[k] = 0.9 * running.get(k, v) + 0.1 * v
            sums[k] = sums.get(k, 0.0) + v
        bar.set_postfix(loss=f"{running['loss']:.3f}", cls=f"{running['loss_classifier']:.3f}")
        if (i + 1) % cfg.train.log_interval == 0 or i + 1 == run.iters_per_epoch:
            record = {"event": "train", "epoch": epoch + 1, "iter": global_iter, "stage": stage, "roi_loss": loss_name,
                      "lr": run.optimizer.param_groups[0]["lr"], **values}
            record.update({f"rois_{k}": int(v) for k, v in run.model.roi_heads.last_loss_stats.items()})
            run.metrics_log.write(record, step=global_iter)
    bar.close()
    seconds = time.perf_counter() - t_epoch
    images_per_second = run.iters_per_epoch * cfg.train.batch_size / seconds
    run.metrics_log.write({"event": "epoch", "epoch": epoch + 1, "stage": stage, "seconds": seconds,
                           "images_per_second": images_per_second})
    means = {k: v / run.iters_per_epoch for k, v in sums.items()}
    if info.is_main and not progress:
        print(f"[train] epoch {epoch + 1}/{cfg.train.epochs} ({loss_name}): loss {means['loss']:.4f}, "
              f"classifier {means['loss_classifier']:.4f}, lr {run.optimizer.param_groups[0]['lr']:.3g}, "
              f"{seconds:.1f} s, {images_per_second:.1f} images/s", flush=True)
    return means


def train_step(run: Run, images: list[torch.Tensor], targets: list[dict], epoch: int, i: int) -> dict[str, float]:
    """One optimisation step on a batch; its loss values. A non-finite loss on any rank stops every rank."""
    cfg = run.cfg
    with _amp_context(cfg.train.amp, run.device):
        loss_dict = run.train_model(images, targets)
    loss = sum(loss_dict.values())
    if not all_ranks_true(torch.isfinite(loss), run.info, run.device):
        _stop_on_non_finite_loss(run, loss_dict, epoch, i)
    run.optimizer.zero_grad(set_to_none=True)
    run.scaler.scale(loss).backward()
    if cfg.train.grad_clip:
        run.scaler.unscale_(run.optimizer)
        torch.nn.utils.clip_grad_norm_(run.params, cfg.train.grad_clip)
    scale = run.scaler.get_scale() if run.scaler.is_enabled() else None
    run.scaler.step(run.optimizer)
    run.scaler.update()
    # fp16: the scaler skips the step of a batch whose gradients overflowed (and lowers its scale); the
    # schedule counts optimizer steps, so it waits too (torch warns when the schedule runs ahead of them)
    if scale is None or run.scaler.get_scale() >= scale:
        run.scheduler.step()
    values = {k: v.item() for k, v in loss_dict.items()}
    values["loss"] = loss.item()
    return values


def _stop_on_non_finite_loss(run: Run, loss_dict: dict[str, torch.Tensor], epoch: int, i: int) -> None:
    finite = bool(torch.isfinite(sum(loss_dict.values())))
    values = None if finite else ", ".join(f"{k}={v.item():.4g}" for k, v in loss_dict.items())
    reports = all_gather_objects(values, run.info)
    rank, values = next((r, v) for r, v in enumerate(reports) if v is not None)
    where = f" on process {rank}" if run.info.enabled else ""
    kept = f"the last good checkpoint is {run.ckpt_path}" if run.ckpt_path.exists() else "no checkpoint was written yet"
    error = NoisysegError(f"non-finite loss at epoch {epoch + 1}, iteration {i + 1}{where} ({values}); stopped, "
                          f"{kept}; try a lower train.lr or train.grad_clip")
    error.silent = not run.info.is_main
    raise error


# ------------------------------------------------------------------------------------------ checkpoint


def save_epoch_checkpoints(run: Run, epoch: int) -> None:
    """After 1-based ``epoch``: ``last.pt``, and ``epoch_N.pt`` / ``ce_stage_end.pt`` where asked for.

    Every rank's RNG state is gathered into it; rank 0 writes. The extra snapshots are written before
    ``last.pt``, so a ``last.pt`` of epoch N implies they exist.
    """
    cfg = run.cfg
    rngs = all_gather_objects(rng_state(), run.info)
    if run.info.is_main:
        data = checkpoint_bytes({
            "model": run.model.state_dict(), "optimizer": run.optimizer.state_dict(),
            "scheduler": run.scheduler.state_dict(), "scaler": run.scaler.state_dict(),
            "epoch": epoch, "stage": stage_of(epoch - 1, cfg), "rng": rngs, "train_seconds": run.train_seconds(),
            "config": cfg.model_dump(mode="json"), "label_map": run.label_map.to_dict(),
        })
        if epoch in cfg.train.keep_epochs:
            atomic_write_bytes(run.folder.checkpoint(run_folder.epoch_checkpoint_name(epoch)), data)
        if epoch == ce_stage_end_epoch(cfg):
            atomic_write_bytes(run.folder.checkpoint(run_folder.CE_STAGE_END), data)
        atomic_write_bytes(run.ckpt_path, data)
    barrier(run.info)


# ------------------------------------------------------------------------------------------ evaluate


def evaluate_epoch(run: Run, epoch: int, progress: bool, log_line: bool = True) -> dict[str, Any]:
    """Box and mask AP on the val set after 1-based ``epoch`` (rank 0; ``{}`` on the others); logged and printed."""
    cfg, info = run.cfg, run.info
    metrics = evaluate_model(run.model, run.val_set, run.label_map, cfg.data.val_json, run.device, info,
                             batch_size=max(1, cfg.train.batch_size // info.world_size),
                             num_workers=cfg.data.num_workers, progress=progress)
    if info.is_main:
        if log_line:
            run.metrics_log.write({"event": "eval", "epoch": epoch, **_flat_metrics(metrics)},
                                  step=epoch * run.iters_per_epoch)
        print(f"[eval] epoch {epoch}: mask AP {metrics['segm']['AP']:.1f}, box AP {metrics['bbox']['AP']:.1f}",
              flush=True)
    return metrics


def _complete_interrupted_evaluation(run: Run, progress: bool) -> dict[str, Any]:
    """On resume: the evaluation after the checkpoint's epoch, if it was due and a kill cut it short.

    After the last epoch it is always run (a finished run comes here only when its final AP is missing).
    Evaluating draws no training randomness, so doing it now leaves the rest of the run unchanged.
    """
    epoch = run.start_epoch
    if epoch == 0 or not is_eval_epoch(epoch, run.cfg):
        return {}
    logged = run.info.is_main and any(r.get("event") == "eval" and r.get("epoch") == epoch
                                      for r in run.metrics_log.records())
    logged = all_gather_objects(logged, run.info)[0]  # rank 0 keeps the log; every rank follows its answer
    if logged and epoch < run.cfg.train.epochs:
        return {}
    return evaluate_epoch(run, epoch, progress, log_line=not logged)


def _flat_metrics(metrics: dict[str, Any]) -> dict[str, float]:
    flat = {}
    for iou_type, m in metrics.items():
        for k, v in m.items():
            if isinstance(v, (int, float)) and not math.isnan(v):
                flat[f"{iou_type}_{k}"] = v
    return flat
