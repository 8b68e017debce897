"""Load a trained checkpoint and predict on image files: overlays and a COCO results json."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from noisyseg.config import Config, config_from_dict
from noisyseg.data.coco import LabelMap
from noisyseg.data.images import load_rgb
from noisyseg.engine.build import model_from_config
from noisyseg.engine.checkpoint import load_checkpoint, load_model_weights
from noisyseg.errors import NoisysegError
from noisyseg.eval import detections_to_coco
from noisyseg.utils.draw import draw_overlay, write_png
from noisyseg.utils.io import atomic_write_text


#: The config keys that say how a trained model predicts rather than what it learned: a model loaded with
#: ``inference=`` another config takes these from it (``noisyseg eval --set model.score_threshold=0.001``).
INFERENCE_KEYS = ("model.score_threshold", "model.detections_per_image", "data.test_min_size", "data.max_size")


def with_inference_settings(cfg: Config, inference: Config) -> Config:
    """``cfg`` with the :data:`INFERENCE_KEYS` of ``inference``; every other setting stays ``cfg``'s."""
    updates: dict[str, dict] = {}
    for key in INFERENCE_KEYS:
        section, name = key.split(".")
        updates.setdefault(section, {})[name] = getattr(getattr(inference, section), name)
    return cfg.model_copy(update={section: getattr(cfg, section).model_copy(update=values)
                                  for section, values in updates.items()})


def load_trained_model(checkpoint: str | Path, device: torch.device | str = "cpu", inference: Config | None = None
                       ) -> tuple[torch.nn.Module, Config, LabelMap]:
    """The model of a noisyseg checkpoint in eval mode, with its config and class mapping.

    ``inference``: a config whose :data:`INFERENCE_KEYS` (score threshold, detections per image, test image
    size) replace the checkpoint's; the returned config carries them. The layout and weights are always the
    checkpoint's.

    A checkpoint whose config is not a valid one, or whose weights do not fit the model its config
    builds (missing, unexpected or mis-shaped tensors), is a one-line :class:`NoisysegError` naming it.
    """
    ckpt = load_checkpoint(checkpoint, map_location="cpu")
    if not isinstance(ckpt.get("config"), dict):
        raise NoisysegError(f"{checkpoint}: the checkpoint holds no config")
    cfg = config_from_dict(ckpt["config"], source=f"{checkpoint}: its config")
    if inference is not None:
        cfg = with_inference_settings(cfg, inference)
    label_map = LabelMap.from_dict(ckpt["label_map"])
    # the checkpoint holds all weights: build the trained layout without reading a backbone weights file
    model = model_from_config(cfg, label_map.num_classes, load_backbone_weights=False)
    load_model_weights(model, ckpt["model"], checkpoint)
    return model.to(device).eval(), cfg, label_map


def overlay_paths(images: list[str | Path], out_dir: str | Path) -> list[Path]:
    """The overlay file of each input image: ``out_dir/<stem>.png``, made unique.

    An input whose name is already taken (by an earlier input's overlay, or by one of the inputs
    themselves) gets the first free name of ``<stem>_2.png``, ``<stem>_3.png``, ..., so no overlay ever
    replaces an input image or another overlay of the same call, even with ``out_dir`` the images' own folder or two
    inputs of the same file name from different folders. Names compare case-insensitively (as on
    macOS and Windows file systems).
    """
    out = Path(out_dir)
    inputs = {str(Path(p).resolve()).casefold() for p in images}
    taken: set[str] = set()
    paths = []
    for p in images:
        stem = Path(p).stem
        candidate, k = out / f"{stem}.png", 1
        while candidate.name.casefold() in taken or str(candidate.resolve()).casefold() in inputs:
            k += 1
            candidate = out / f"{stem}_{k}.png"
        taken.add(candidate.name.casefold())
        paths.append(candidate)
    return paths


def _check_inputs(images: list[str | Path], results: Path) -> None:
    """One-line errors, before any work, for no images, a missing or unreadable image, or an input that
    the results file would replace. Only image headers are read here (so a decompression bomb is refused
    before its pixels are)."""
    from noisyseg.data.images import image_size

    if not images:
        raise NoisysegError("no input images given")
    for p in images:
        if Path(p).resolve() == results.resolve():
            raise NoisysegError(f"{p}: refusing to overwrite an input with the results file")
        if Path(p).is_dir():
            raise NoisysegError(f"{p}: expected an image file, found a folder")
        image_size(p)


@torch.no_grad()
def predict_images(checkpoint: str | Path, images: list[str | Path], out_dir: str | Path,
                   score_threshold: float = 0.5, device: str = "cpu") -> Path:
    """Predict on ``images``; write one overlay per image and ``out_dir/results.json``.

    Overlays are named by :func:`overlay_paths` (``<stem>.png``, made unique; never an input's name).
    ``results.json`` is a COCO results list (category ids of the training data set) of the detections
    scoring at least ``score_threshold``; ``image_id`` is the position of the image in ``images``,
    ``file_name`` names it and ``overlay`` names its overlay file.

    Everything is checked before the model runs (the output folder, every image, the threshold), and the
    overlays are written to a hidden folder inside ``out_dir`` and moved into place only once every image
    is done, so a failure leaves no partial output. Returns the path of ``results.json``.
    """
    import shutil
    import tempfile

    from noisyseg.utils.io import ensure_output_dir

    if not 0.0 <= score_threshold <= 1.0:  # also refuses NaN
        raise NoisysegError(f"score threshold must be in [0, 1], got {score_threshold}")
    out = ensure_output_dir(out_dir, "output folder")
    results_path = out / "results.json"
    if results_path.is_dir():
        raise NoisysegError(f"{results_path}: the results file is a folder, expected a file path")
    _check_inputs(images, results_path)
    overlays = overlay_paths(images, out)
    model, _, label_map = load_trained_model(checkpoint, device)
    created = not out.exists()
    out.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".predict-", dir=out))
    try:
        results = []
        for idx, (path, overlay_path) in enumerate(zip(images, overlays)):
            img_u8 = load_rgb(path)
            pred = model([img_u8.float().div(255).to(device)])[0]
            keep = pred["scores"] >= score_threshold
            pred = {k: v[keep].cpu() for k, v in pred.items()}
            masks = pred["masks"][:, 0] > 0.5 if "masks" in pred else None
            overlay = draw_overlay(img_u8, pred["boxes"], pred["labels"], pred["scores"], masks, label_map.names)
            write_png(staging / overlay_path.name, overlay)
            for r in detections_to_coco(idx, pred["boxes"], pred["scores"], pred["labels"],
                                        pred.get("masks"), list(label_map.category_ids)):
                r["file_name"] = str(path)
                r["overlay"] = overlay_path.name
                results.append(r)
        atomic_write_text(staging / results_path.name, json.dumps(results))
        for final in overlays + [results_path]:  # renames within one folder: nothing left to fail on
            (staging / final.name).replace(final)
        return results_path
    except BaseException:
        if created:
            shutil.rmtree(out, ignore_errors=True)
        raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
