"""Run a model over a data set and score it with COCO AP (every rank predicts a shard; rank 0 scores)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader, Subset
from tqdm import tqdm

from noisyseg.data.coco import CocoInstances, LabelMap, collate
from noisyseg.engine.distributed import DistInfo, all_gather_objects
from noisyseg.eval import detections_to_coco, evaluate


@torch.no_grad()
def predict_dataset(model: torch.nn.Module, dataset: CocoInstances, label_map: LabelMap, device: torch.device,
                    info: DistInfo = DistInfo(), batch_size: int = 2, num_workers: int = 0,
                    progress: bool = True) -> list[dict]:
    """COCO result dicts (the data set's own category ids) for every image, gathered from all ranks."""
    was_training = model.training
    model.eval()
    shard = Subset(dataset, list(range(info.rank, len(dataset), info.world_size)))
    loader = DataLoader(shard, batch_size=batch_size, num_workers=num_workers, collate_fn=collate)
    results: list[dict] = []
    for images, targets in tqdm(loader, desc="evaluate", disable=not (progress and info.is_main),
                                dynamic_ncols=True, leave=False):
        outputs = model([im.to(device) for im in images])
        for out, tgt in zip(outputs, targets):
            results.extend(detections_to_coco(
                tgt["image_id"], out["boxes"].cpu(), out["scores"].cpu(), out["labels"].cpu(),
                out["masks"].cpu() if "masks" in out else None, list(label_map.category_ids)))
    model.train(was_training)
    gathered = all_gather_objects(results, info)
    return [r for part in gathered for r in part]


def evaluate_model(model: torch.nn.Module, dataset: CocoInstances, label_map: LabelMap, gt_json: str | Path,
                   device: torch.device, info: DistInfo = DistInfo(), batch_size: int = 2, num_workers: int = 0,
                   progress: bool = True) -> dict[str, Any]:
    """Box and mask COCO AP of ``model`` on ``dataset`` (percent; empty dict on ranks other than 0)."""
    results = predict_dataset(model, dataset, label_map, device, info, batch_size, num_workers, progress)
    if not info.is_main:
        return {}
    return evaluate(str(gt_json), results, iou_types=("segm", "bbox"))
