"""The one evaluation path: build the val set, predict over it (every rank a shard), score COCO AP on rank 0.

``noisyseg eval`` (:func:`evaluate_run` over :func:`evaluate_checkpoint`) and the trainer (:func:`build_val_set`,
:func:`evaluate_model`) both go through here. Evaluation consumes no training randomness: its data
loader draws its seed from its own generator, so a run that evaluates mid-run resumes exactly.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import torch
from torch.utils.data import DataLoader, Dataset
from torchvision.transforms.v2 import functional as TF
from tqdm import tqdm

from noisyseg.config import Config, DataConfig
from noisyseg.data.coco import CocoInstances, LabelMap
from noisyseg.engine.distributed import DistInfo, all_gather_objects
from noisyseg.engine.predict import INFERENCE_KEYS, load_trained_model
from noisyseg.eval import detections_to_coco, evaluate


def build_val_set(data: DataConfig, label_map: LabelMap) -> CocoInstances:
    """The evaluation split ``data.val_json`` (images under ``data.val_image_root`` or ``image_root``).

    Every image is kept (the COCO scorer reads crowd regions from the json itself). Its classes must be
    ``label_map``'s, ids and names (a one-line error otherwise). Its ground-truth masks are never
    decoded: predicting reads only its images (see :func:`predict_dataset`).
    """
    return CocoInstances(data.val_json, data.val_image_root or data.image_root, train=False, label_map=label_map,
                         load_masks=False)


class _ImagesOnly(Dataset):
    """The images of a :class:`CocoInstances` as float32 (3, H, W) in [0, 1], each with its ``image_id``."""

    def __init__(self, dataset: CocoInstances, indices: list[int]) -> None:
        self.dataset, self.indices = dataset, indices

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        index = self.indices[i]
        image = TF.to_dtype(self.dataset.load_image(index), torch.float32, scale=True)
        return image, self.dataset.image_id(index)


def _collate_images(batch: list) -> tuple[list, list]:
    images, ids = zip(*batch)
    return list(images), list(ids)


@torch.no_grad()
def predict_dataset(model: torch.nn.Module, dataset: CocoInstances, label_map: LabelMap, device: torch.device,
                    info: DistInfo = DistInfo(), batch_size: int = 2, num_workers: int = 0,
                    progress: bool = True) -> list[dict]:
    """COCO result dicts (the data set's own category ids) for every image of ``dataset``, from all ranks.

    Rank r predicts images r, r + world_size, ...; every rank gets the full list. Masks are thresholded
    on ``device`` so only binary masks travel to the CPU. The model's train/eval mode is restored.
    """
    was_training = model.training
    model.eval()
    shard = _ImagesOnly(dataset, list(range(info.rank, len(dataset), info.world_size)))
    # its own generator: iterating a DataLoader otherwise draws a seed from the global torch RNG
    loader = DataLoader(shard, batch_size=batch_size, num_workers=num_workers, collate_fn=_collate_images,
                        generator=torch.Generator().manual_seed(0))
    category_ids = list(label_map.category_ids)
    results: list[dict] = []
    for images, image_ids in tqdm(loader, desc="evaluate", disable=not (progress and info.is_main),
                                  dynamic_ncols=True, leave=False):
        outputs = model([im.to(device) for im in images])
        for out, image_id in zip(outputs, image_ids):
            results.extend(detections_to_coco(image_id, out["boxes"], out["scores"], out["labels"],
                                              out.get("masks"), category_ids))
    model.train(was_training)
    gathered = all_gather_objects(results, info)
    return [r for part in gathered for r in part]


def evaluate_model(model: torch.nn.Module, dataset: CocoInstances, label_map: LabelMap, gt_json: str | Path,
                   device: torch.device, info: DistInfo = DistInfo(), batch_size: int = 2, num_workers: int = 0,
                   progress: bool = True) -> dict[str, Any]:
    """Box and mask COCO AP of ``model`` on ``dataset`` (percent; empty dict on ranks other than 0).

    Returns :func:`noisyseg.eval.evaluate`'s ``{"segm": {...}, "bbox": {...}}``.
    """
    results = predict_dataset(model, dataset, label_map, device, info, batch_size, num_workers, progress)
    if not info.is_main:
        return {}
    return evaluate(str(gt_json), results, iou_types=("segm", "bbox"))


#: What ``noisyseg eval --set`` can change: the val set, how it is read, and how the trained model predicts
#: (:data:`noisyseg.engine.predict.INFERENCE_KEYS`). Any other key describes training, which an evaluation
#: cannot redo, so setting one is an error rather than silently ignored.
EVAL_KEYS = ("data.val_json", "data.val_image_root", "data.image_root", "data.num_workers", *INFERENCE_KEYS)


def evaluate_checkpoint(checkpoint: str | Path, data: DataConfig, device: torch.device, batch_size: int = 2,
                        num_workers: int = 0, progress: bool = True,
                        inference: Config | None = None) -> tuple[dict[str, Any], list[dict]]:
    """Score a trained checkpoint on ``data``'s val split: ``(metrics, detections)``.

    ``metrics`` as :func:`evaluate_model`; ``detections`` the COCO results list (the data set's own
    category ids). The val file's classes must be the checkpoint's (ids and names). ``inference``: a config
    whose score threshold, detections per image and test image size the model predicts with (default: the
    checkpoint's own).
    """
    model, _, label_map = load_trained_model(checkpoint, device, inference=inference)
    val = build_val_set(data, label_map)
    detections = predict_dataset(model, val, label_map, device, batch_size=batch_size, num_workers=num_workers,
                                 progress=progress)
    return evaluate(str(data.val_json), detections, iou_types=("segm", "bbox")), detections


def evaluate_run(run_or_config: str | Path, *, checkpoint: str | Path | None = None, overrides: Sequence[str] = (),
                 out_dir: str | Path | None = None, device: str = "auto",
                 progress: bool = True) -> tuple[dict[str, Any], dict[str, Path]]:
    """``noisyseg eval``: score a checkpoint on the clean val set and write ``metrics.json`` and
    ``detections.json``.

    Args:
        run_or_config: a run folder (its ``config.yaml``; ``checkpoints/last.pt`` unless ``checkpoint``)
            or a YAML config (then ``checkpoint`` is required).
        checkpoint: the checkpoint to score: a file, or in a run folder a name (``epoch_3``, ``ce_stage_end``).
        overrides: ``KEY=VALUE`` config overrides of the keys in :data:`EVAL_KEYS` only, e.g.
            ``data.val_json=other.json`` or ``model.score_threshold=0.001``. The model's layout and weights are
            the checkpoint's; its score threshold, detections per image and test image size are the config's
            (the run's own unless overridden, or those of the YAML config given).
        out_dir: where the two files go. Default: for the final ``last.pt`` of a finished run on its own val
            set, the run folder (its final record, with the run's epoch and training time kept); for any other
            checkpoint or val set of a run, ``RUN/eval/<checkpoint>/`` (the run's record is never touched);
            for a checkpoint outside a run folder, the checkpoint's folder.
        device: "auto" (CUDA when available), "cpu", "cuda" or "cuda:N".

    Returns:
        ``(metrics, paths)``: :func:`evaluate_checkpoint`'s metrics and ``{"metrics": ..., "detections": ...}``,
        the files written (``metrics.json`` is the metrics plus the ``checkpoint`` path; ``detections.json``
        the COCO results in the data set's own category ids).

    The config, checkpoint, device and output folder are checked before any work; a bad one, or an
    ``out_dir`` whose ``metrics.json`` is the run's final record when this is not the final evaluation, is a
    one-line :class:`NoisysegError`, and nothing is written.
    """
    from noisyseg.config import load_config, parse_override
    from noisyseg.engine.checkpoint import load_checkpoint
    from noisyseg.engine.distributed import select_device
    from noisyseg.engine.run_folder import RunFolder
    from noisyseg.errors import NoisysegError
    from noisyseg.utils.io import atomic_write_json, ensure_output_dir

    given = Path(run_or_config)
    if given.is_dir():
        run = RunFolder(given)
        if not run.config_path.is_file():
            raise NoisysegError(f"{given}: not a run folder (no {run.config_path.name}); pass a run folder, or a "
                                "config with --checkpoint")
        ckpt = run.resolve_checkpoints([str(checkpoint)] if checkpoint else None)[0]
        cfg_path = run.config_path
    else:
        if not checkpoint:
            raise NoisysegError(f"{given}: with a config file, pass --checkpoint")
        ckpt, cfg_path = Path(checkpoint), given
        run = RunFolder.of_checkpoint(ckpt)
    for text in overrides:
        key = parse_override(text)[0]
        if key not in EVAL_KEYS:
            raise NoisysegError(f"--set {key}: eval scores the trained model as it is, so this key cannot change "
                                f"the result; eval takes {', '.join(EVAL_KEYS)}")
    cfg = load_config(cfg_path, list(overrides))
    torch_device = select_device(device)
    if not Path(ckpt).is_file():
        raise NoisysegError(f"{ckpt}: checkpoint not found")
    final = False
    if run is not None and Path(ckpt).resolve() == run.last_checkpoint.resolve() and not overrides \
            and cfg_path == run.config_path:
        saved = load_checkpoint(ckpt)
        final = saved.get("epoch") == cfg.train.epochs
    if out_dir is not None:
        out = Path(out_dir)
    elif run is None:
        out = Path(ckpt).parent
    else:
        out = run.path if final else run.eval_dir(Path(ckpt), overrides)
    if run is not None and not final and (out / "metrics.json").resolve() == run.record_path.resolve():
        raise NoisysegError(f"{out}: would write over {run.record_path}, the run's final record, with the results "
                            f"of {Path(ckpt).name}{' on another val set' if overrides else ''}; leave out --out "
                            f"(writes to {run.eval_dir(Path(ckpt), overrides)}) or choose another folder")
    ensure_output_dir(out, "output folder")
    metrics, detections = evaluate_checkpoint(ckpt, cfg.data, torch_device, num_workers=cfg.data.num_workers,
                                              progress=progress, inference=cfg)
    paths = {"metrics": out / "metrics.json", "detections": out / "detections.json"}
    atomic_write_json(paths["detections"], detections)
    if final and (out / "metrics.json").resolve() == run.record_path.resolve():
        record = run.final_record() or {}
        seconds = record.get("train_seconds", saved.get("train_seconds"))
        run.write_final_record(cfg.train.epochs, seconds, {"checkpoint": str(ckpt), **metrics})
    else:
        atomic_write_json(paths["metrics"], {"checkpoint": str(ckpt), **metrics}, indent=2)
    return metrics, paths
