"""Scoring: ground-truth boxes through the RoI box head, transformed exactly like their image."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from noisyseg.audit.score import (
    foreground_probabilities, resolve_checkpoints, score_annotations, scored_annotations,
)
from noisyseg.data.coco import LabelMap, load_coco
from noisyseg.errors import NoisysegError


def _manual_probabilities(checkpoint: Path, coco: dict, image_root: Path, size: int, scale_boxes: bool) -> dict:
    """Per-annotation (K+1) probabilities computed without model.transform: resize, normalise and
    scale the boxes by hand, then backbone -> box RoI pool -> box head -> predictor -> softmax."""
    from PIL import Image

    from noisyseg.engine.predict import load_trained_model

    model, _, _ = load_trained_model(checkpoint, "cpu")
    mean = torch.tensor(model.transform.image_mean)[:, None, None]
    std = torch.tensor(model.transform.image_std)[:, None, None]
    out = {}
    with torch.no_grad():
        for im in coco["images"]:
            anns = [a for a in coco["annotations"] if a["image_id"] == im["id"] and not a.get("iscrowd", 0)]
            if not anns:
                continue
            arr = np.asarray(Image.open(image_root / im["file_name"]).convert("RGB"))
            img = torch.from_numpy(arr.copy()).permute(2, 0, 1).float() / 255
            ratio = size / min(im["height"], im["width"])
            big = torch.nn.functional.interpolate(img[None], size=(size, size), mode="bilinear",
                                                  align_corners=False)[0]
            x = ((big - mean) / std)[None]
            boxes = torch.tensor([[a["bbox"][0], a["bbox"][1], a["bbox"][0] + a["bbox"][2],
                                   a["bbox"][1] + a["bbox"][3]] for a in anns], dtype=torch.float32)
            if scale_boxes:
                boxes = boxes * ratio
            feats = model.backbone(x)
            pooled = model.roi_heads.box_roi_pool(feats, [boxes], [(size, size)])
            logits, _ = model.roi_heads.box_predictor(model.roi_heads.box_head(pooled))
            for a, p in zip(anns, torch.softmax(logits, 1).numpy()):
                out[a["id"]] = p
    return out


def test_scores_equal_a_manual_computation_on_images_the_transform_resizes(tiny_data, tmp_path, make_run):
    size = 128  # the fixture images are 64 px: the model's transform doubles them and must double the boxes
    ckpt = make_run(tmp_path / "run", tiny_data, test_size=size)
    coco = load_coco(tiny_data["noisy_json"])
    scores = score_annotations([ckpt], coco, tiny_data["noisy_json"], tiny_data["image_root"], batch_size=4,
                               progress=False)
    manual = _manual_probabilities(ckpt, coco, Path(tiny_data["image_root"]), size, scale_boxes=True)
    expected = foreground_probabilities(np.stack([manual[i] for i in scores.annotation_ids]))
    np.testing.assert_allclose(scores.pred_probs, expected, atol=2e-5)
    np.testing.assert_allclose(scores.background_prob, [manual[i][0] for i in scores.annotation_ids], atol=2e-5)
    # the same computation with unscaled boxes (the pitfall) gives clearly different probabilities
    unscaled = _manual_probabilities(ckpt, coco, Path(tiny_data["image_root"]), size, scale_boxes=False)
    wrong = foreground_probabilities(np.stack([unscaled[i] for i in scores.annotation_ids]))
    assert np.abs(wrong - scores.pred_probs).max() > 0.05


def test_one_row_per_non_crowd_annotation_with_labels_and_truth(tiny_data, untrained_run):
    coco = load_coco(tiny_data["noisy_json"])
    scores = score_annotations(resolve_checkpoints(untrained_run), coco, tiny_data["noisy_json"],
                               tiny_data["image_root"], progress=False)
    non_crowd = [a for a in coco["annotations"] if not a.get("iscrowd", 0)]
    assert scores.annotation_ids.tolist() == [a["id"] for a in non_crowd]
    lm = LabelMap.from_categories(coco["categories"])
    assert [lm.category_ids[g] for g in scores.given_labels] == [a["category_id"] for a in non_crowd]
    assert [lm.category_ids[c] for c in scores.clean_labels] == [a["clean_category_id"] for a in non_crowd]
    assert scores.pred_probs.shape == (len(non_crowd), 3)
    np.testing.assert_allclose(scores.pred_probs.sum(1), 1.0, atol=1e-9)
    assert scores.seconds > 0


def test_several_checkpoints_average_their_foreground_probabilities(tiny_data, tmp_path, make_run):
    run = tmp_path / "run"
    a = make_run(run, tiny_data, seed=0, name="epoch_1")
    b = make_run(run, tiny_data, seed=1, name="epoch_2")
    coco = load_coco(tiny_data["noisy_json"])
    args = (coco, tiny_data["noisy_json"], tiny_data["image_root"])
    pa = score_annotations([a], *args, progress=False).pred_probs
    pb = score_annotations([b], *args, progress=False).pred_probs
    both = score_annotations(resolve_checkpoints(run, ["epoch_*"]), *args, progress=False)
    assert not np.allclose(pa, pb)
    np.testing.assert_allclose(both.pred_probs, (pa + pb) / 2, atol=1e-6)


def test_resolve_checkpoints(tmp_path):
    folder = tmp_path / "run" / "checkpoints"
    folder.mkdir(parents=True)
    for name in ("last", "ce_stage_end", "epoch_2", "epoch_10"):
        (folder / f"{name}.pt").write_bytes(b"x")
    run = tmp_path / "run"
    assert resolve_checkpoints(run) == [(folder / "last.pt").resolve()]
    assert resolve_checkpoints(run, ["ce_stage_end.pt", "last"]) == [(folder / "ce_stage_end.pt").resolve(),
                                                                     (folder / "last.pt").resolve()]
    assert [p.name for p in resolve_checkpoints(run, ["epoch_*"])] == ["epoch_2.pt", "epoch_10.pt"]
    assert resolve_checkpoints(folder / "last.pt") == [folder / "last.pt"]
    with pytest.raises(NoisysegError) as e:
        resolve_checkpoints(run, ["epoch_3"])
    assert str(e.value) == f"{folder / 'epoch_3.pt'}: checkpoint not found (this run has: ce_stage_end, " \
                           "epoch_2, epoch_10, last)"
    with pytest.raises(NoisysegError, match="no such run folder or checkpoint file"):
        resolve_checkpoints(tmp_path / "nowhere")


def test_annotations_need_unique_integer_ids(tiny_data):
    coco = json.loads(Path(tiny_data["train_json"]).read_text())
    lm = LabelMap.from_categories(coco["categories"])
    coco["annotations"][3]["id"] = coco["annotations"][1]["id"]
    with pytest.raises(NoisysegError) as e:
        scored_annotations(coco, lm, "t.json")
    assert str(e.value) == f"t.json: annotations[3] repeats annotation id {coco['annotations'][1]['id']}"
    del coco["annotations"][3]["id"]
    with pytest.raises(NoisysegError) as e:
        scored_annotations(coco, lm, "t.json")
    assert str(e.value) == "t.json: annotations[3] has no integer 'id' (the audit names annotations by id)"
