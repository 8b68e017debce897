"""Load a trained checkpoint and predict on image files: overlays and a COCO results json."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torchvision.utils import draw_bounding_boxes, draw_segmentation_masks

from noisyseg.config import Config
from noisyseg.data.coco import LabelMap
from noisyseg.engine.checkpoint import load_checkpoint
from noisyseg.errors import NoisysegError
from noisyseg.eval import detections_to_coco
from noisyseg.losses import build_loss
from noisyseg.models import build_model
from noisyseg.utils.io import atomic_write_bytes, atomic_write_text


def load_trained_model(checkpoint: str | Path, device: torch.device | str = "cpu") -> tuple[torch.nn.Module, Config, LabelMap]:
    """The model of a noisyseg checkpoint in eval mode, with its config and class mapping."""
    ckpt = load_checkpoint(checkpoint, map_location="cpu")
    cfg = Config.model_validate(ckpt["config"])
    label_map = LabelMap.from_dict(ckpt["label_map"])
    model_cfg = cfg.model.model_copy(update={"backbone_weights": "none"})  # the checkpoint holds all weights
    model = build_model(model_cfg, cfg.data, label_map.num_classes, build_loss("ce"))
    model.load_state_dict(ckpt["model"])
    return model.to(device).eval(), cfg, label_map


def _palette(n: int) -> list[tuple[int, int, int]]:
    rng = np.random.default_rng(12345)
    return [tuple(int(c) for c in rng.integers(40, 256, 3)) for _ in range(n + 1)]


def draw_overlay(image: torch.Tensor, boxes: torch.Tensor, labels: torch.Tensor, scores: torch.Tensor,
                 masks: torch.Tensor | None, names: tuple[str, ...]) -> torch.Tensor:
    """uint8 image (3, H, W) with masks (N, H, W bool), boxes (N, 4 xyxy) and "name score" captions drawn."""
    colours = _palette(len(names))
    cols = [colours[int(l)] for l in labels]
    out = image
    if masks is not None and len(masks):
        out = draw_segmentation_masks(out, masks.bool(), alpha=0.45, colors=cols)
    if len(boxes):
        captions = [f"{names[int(l) - 1]} {float(s):.2f}" for l, s in zip(labels, scores)]
        out = draw_bounding_boxes(out, boxes, labels=captions, colors=cols, width=1)
    return out


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
        try:
            with Image.open(path) as im:
                arr = np.asarray(im.convert("RGB"))
        except FileNotFoundError:
            raise NoisysegError(f"{path}: image not found") from None
        except OSError as e:
            raise NoisysegError(f"{path}: cannot read image ({e})") from None
        img_u8 = torch.from_numpy(arr.copy()).permute(2, 0, 1)
        pred = model([img_u8.float().div(255).to(device)])[0]
        keep = pred["scores"] >= score_threshold
        pred = {k: v[keep].cpu() for k, v in pred.items()}
        masks = pred["masks"][:, 0] > 0.5 if "masks" in pred else None
        overlay = draw_overlay(img_u8, pred["boxes"], pred["labels"], pred["scores"], masks, label_map.names)
        png = Image.fromarray(overlay.permute(1, 2, 0).numpy())
        buf = io.BytesIO()
        png.save(buf, format="PNG")
        atomic_write_bytes(out / f"{Path(path).stem}.png", buf.getvalue())
        for r in detections_to_coco(idx, pred["boxes"], pred["scores"], pred["labels"],
                                    pred.get("masks"), list(label_map.category_ids)):
            r["file_name"] = str(path)
            results.append(r)
    return atomic_write_text(out / "results.json", json.dumps(results))
