"""Load a trained checkpoint and predict on image files: overlays and a COCO results json."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from noisyseg.config import Config
from noisyseg.data.coco import LabelMap
from noisyseg.data.images import load_rgb
from noisyseg.engine.checkpoint import load_checkpoint
from noisyseg.errors import NoisysegError
from noisyseg.eval import detections_to_coco
from noisyseg.losses import build_loss
from noisyseg.models import build_model
from noisyseg.utils.draw import draw_overlay, write_png
from noisyseg.utils.io import atomic_write_text

__all__ = ["draw_overlay", "load_trained_model", "predict_images"]  # draw_overlay: old import path


def load_trained_model(checkpoint: str | Path, device: torch.device | str = "cpu") -> tuple[torch.nn.Module, Config, LabelMap]:
    """The model of a noisyseg checkpoint in eval mode, with its config and class mapping."""
    ckpt = load_checkpoint(checkpoint, map_location="cpu")
    cfg = Config.model_validate(ckpt["config"])
    label_map = LabelMap.from_dict(ckpt["label_map"])
    model_cfg = cfg.model.model_copy(update={"backbone_weights": "none"})  # the checkpoint holds all weights
    model = build_model(model_cfg, cfg.data, label_map.num_classes, build_loss("ce"))
    model.load_state_dict(ckpt["model"])
    return model.to(device).eval(), cfg, label_map


@torch.no_grad()
def predict_images(checkpoint: str | Path, images: list[str | Path], out_dir: str | Path,
                   score_threshold: float = 0.5, device: str = "cpu") -> Path:
    """Predict on ``images``; write ``out_dir/<stem>.png`` overlays and ``out_dir/results.json``.

    results.json is a COCO results list (category ids of the training data set); ``image_id`` is the
    position of the image on the command line and ``file_name`` names it.
    """
    model, _, label_map = load_trained_model(checkpoint, device)
    out = Path(out_dir)
    results = []
    for idx, path in enumerate(images):
        img_u8 = load_rgb(path)
        pred = model([img_u8.float().div(255).to(device)])[0]
        keep = pred["scores"] >= score_threshold
        pred = {k: v[keep].cpu() for k, v in pred.items()}
        masks = pred["masks"][:, 0] > 0.5 if "masks" in pred else None
        overlay = draw_overlay(img_u8, pred["boxes"], pred["labels"], pred["scores"], masks, label_map.names)
        write_png(out / f"{Path(path).stem}.png", overlay)
        for r in detections_to_coco(idx, pred["boxes"], pred["scores"], pred["labels"],
                                    pred.get("masks"), list(label_map.category_ids)):
            r["file_name"] = str(path)
            results.append(r)
    return atomic_write_text(out / "results.json", json.dumps(results))
