"""noisyseg.engine.predict.predict_images: one overlay per input, never over an input, all or nothing.

The model comes from a stand-in for ``load_trained_model`` (a randomly initialised tiny Mask R-CNN), so
these tests check what predict does with model output, whatever the checkpoint format.
"""

import json
import os

import numpy as np
import pytest
import torch
from PIL import Image

import noisyseg.engine.predict as predict
from helpers import random_tiny_maskrcnn
from noisyseg.data.coco import LabelMap
from noisyseg.data.images import load_rgb
from noisyseg.errors import NoisysegError
from noisyseg.eval import detections_to_coco
from noisyseg.utils.draw import draw_overlay

LABELS = LabelMap((2, 5, 9), ("square", "bar", "dot"))


@pytest.fixture(scope="module")
def model():
    return random_tiny_maskrcnn(3, box_score_thresh=0.0, box_detections_per_img=20)


@pytest.fixture
def fake_checkpoint(monkeypatch, model, tmp_path):
    calls = []

    def load(checkpoint, device="cpu"):
        calls.append(str(checkpoint))
        return model, None, LABELS

    monkeypatch.setattr(predict, "load_trained_model", load)
    path = tmp_path / "model.pt"
    path.write_bytes(b"stand-in")
    return path, calls


def _image(path, seed, size=(48, 64)):
    rng = np.random.default_rng(seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(rng.integers(0, 256, (*size, 3), dtype=np.uint8)).save(path)
    return path


def _snapshot(folder):
    return {p: (p.read_bytes(), p.stat().st_mtime_ns) for p in sorted(folder.rglob("*")) if p.is_file()}


def _png(path):
    with Image.open(path) as im:
        return torch.from_numpy(np.array(im.convert("RGB"))).permute(2, 0, 1)


def test_overlay_paths_are_unique_and_never_an_input(tmp_path):
    d, e = tmp_path / "d", tmp_path / "e"
    inputs = [d / "a.png", e / "a.png", d / "a_2.png", e / "B.jpg", d / "b.png"]
    paths = predict.overlay_paths(inputs, d)
    # d/B.png would be the input d/b.png on a case-insensitive file system
    assert [p.name for p in paths] == ["a_3.png", "a_4.png", "a_2_2.png", "B_2.png", "b_3.png"]
    assert all(p.parent == d for p in paths)
    assert [p.name for p in predict.overlay_paths(inputs, tmp_path / "out")] == \
        ["a.png", "a_2.png", "a_2_2.png", "B.png", "b_2.png"]


def test_results_and_overlays_match_the_model_output(fake_checkpoint, model, tmp_path):
    ckpt, calls = fake_checkpoint
    images = [_image(tmp_path / "in" / "one.png", 0), _image(tmp_path / "in" / "two.jpg", 1, (40, 40))]
    with torch.no_grad():
        preds = [model([load_rgb(p).float() / 255])[0] for p in images]
    threshold = float(torch.cat([p["scores"] for p in preds]).median())  # keeps about half of them
    out = tmp_path / "out"
    assert predict.predict_images(ckpt, images, out, score_threshold=threshold) == out / "results.json"
    assert calls == [str(ckpt)]
    assert sorted(p.name for p in out.iterdir()) == ["one.png", "results.json", "two.png"]
    results = json.loads((out / "results.json").read_text())
    expected = []
    for idx, (path, pred) in enumerate(zip(images, preds)):
        img = load_rgb(path)
        pred = {k: v[pred["scores"] >= threshold] for k, v in pred.items()}
        for r in detections_to_coco(idx, pred["boxes"], pred["scores"], pred["labels"], pred["masks"],
                                    LABELS.category_ids):
            expected.append({**r, "file_name": str(path), "overlay": f"{path.stem}.png"})
        overlay = draw_overlay(img, pred["boxes"], pred["labels"], pred["scores"], pred["masks"][:, 0] > 0.5,
                               LABELS.names)
        assert torch.equal(_png(out / f"{path.stem}.png"), overlay)
    assert results == expected
    assert 0 < len(results) < sum(len(p["scores"]) for p in preds)  # the threshold really selects
    assert {r["category_id"] for r in results} <= {2, 5, 9}


def test_the_images_own_folder_as_output_never_touches_an_input(fake_checkpoint, tmp_path):
    ckpt, _ = fake_checkpoint
    folder = tmp_path / "pics"
    images = [_image(folder / "a.png", 0), _image(folder / "b.png", 1), _image(folder / "a_2.png", 2)]
    before = _snapshot(folder)
    predict.predict_images(ckpt, images, folder, score_threshold=0.0)
    after = _snapshot(folder)
    for p, value in before.items():
        assert after[p] == value  # bytes and mtime unchanged
    new = sorted(p.name for p in set(after) - set(before))
    assert new == ["a_2_2.png", "a_3.png", "b_2.png", "results.json"]
    results = json.loads((folder / "results.json").read_text())
    assert {r["overlay"] for r in results} <= set(new)


def test_two_inputs_with_the_same_name_get_two_overlays(fake_checkpoint, tmp_path):
    ckpt, _ = fake_checkpoint
    a = _image(tmp_path / "x" / "frame.png", 0)
    b = _image(tmp_path / "y" / "frame.png", 1)
    out = tmp_path / "out"
    predict.predict_images(ckpt, [a, b], out, score_threshold=1.0)  # no detection: overlay = the image
    assert torch.equal(_png(out / "frame.png"), load_rgb(a))
    assert torch.equal(_png(out / "frame_2.png"), load_rgb(b))
    assert json.loads((out / "results.json").read_text()) == []


def test_a_failure_midway_leaves_no_output(fake_checkpoint, tmp_path):
    ckpt, _ = fake_checkpoint
    good = _image(tmp_path / "in" / "good.png", 0)
    cut = _image(tmp_path / "in" / "cut.png", 1)
    cut.write_bytes(cut.read_bytes()[:200])  # the header reads, the pixels do not
    new_out = tmp_path / "new" / "out"
    with pytest.raises(NoisysegError, match=r"cut\.png: cannot read image"):
        predict.predict_images(ckpt, [good, cut], new_out)
    assert not new_out.exists()
    existing = tmp_path / "existing"
    existing.mkdir()
    (existing / "good.png").write_bytes(b"an older overlay")
    before = _snapshot(existing)
    with pytest.raises(NoisysegError, match="cannot read image"):
        predict.predict_images(ckpt, [good, cut], existing)
    assert _snapshot(existing) == before and sorted(os.listdir(existing)) == ["good.png"]


@pytest.mark.parametrize("case, message", [
    ("out_is_file", "the output folder is a file, expected a folder"),
    ("out_under_file", "is a file, not a folder"),
    ("results_is_dir", "results.json: the results file is a folder, expected a file path"),
    ("missing_image", "nope.png: image not found"),
    ("folder_image", "expected an image file, found a folder"),
    ("not_an_image", "notes.png: cannot read image"),
    ("bomb", "bomb.png: image too large"),
    ("results_is_input", "refusing to overwrite an input with the results file"),
    ("threshold", "score threshold must be in [0, 1], got 1.5"),
])
def test_bad_arguments_fail_before_the_model_is_loaded(fake_checkpoint, tmp_path, case, message):
    ckpt, calls = fake_checkpoint
    images = [_image(tmp_path / "in" / "a.png", 0)]
    out, threshold = tmp_path / "out", 0.5
    if case == "out_is_file":
        out.write_text("x")
    elif case == "out_under_file":
        (tmp_path / "f").write_text("x")
        out = tmp_path / "f" / "out"
    elif case == "results_is_dir":
        (out / "results.json").mkdir(parents=True)
    elif case == "missing_image":
        images.append(tmp_path / "nope.png")
    elif case == "folder_image":
        images.append(tmp_path / "in")
    elif case == "not_an_image":
        (tmp_path / "in" / "notes.png").write_text("hello")
        images.append(tmp_path / "in" / "notes.png")
    elif case == "bomb":  # a 20000 x 20000 header: Pillow refuses it as a decompression bomb, not an OSError
        from data.test_images import write_bomb_png

        write_bomb_png(tmp_path / "in" / "bomb.png")
        images.append(tmp_path / "in" / "bomb.png")
    elif case == "results_is_input":
        out = tmp_path / "in"
        images.append(out / "results.json")
    elif case == "threshold":
        threshold = 1.5
    before = _snapshot(tmp_path)
    with pytest.raises(NoisysegError, match=message.replace("[", r"\[").replace("]", r"\]")) as e:
        predict.predict_images(ckpt, images, out, score_threshold=threshold)
    assert "\n" not in str(e.value)
    assert calls == [] and _snapshot(tmp_path) == before

