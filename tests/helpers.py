"""Test helpers: a tiny hand-made COCO data set with known masks (real PNG files) and a tiny run config."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image
from pycocotools import mask as mask_utils

CATEGORIES = [
    {"id": 2, "name": "square", "supercategory": "box"},
    {"id": 5, "name": "bar", "supercategory": "box"},
    {"id": 9, "name": "dot", "supercategory": "round"},
]


def rle(mask: np.ndarray, compressed: bool = True) -> dict:
    """The one RLE encoder of the tests: a (H, W) binary mask as COCO RLE.

    Compressed: pycocotools' string ``counts`` (as ``str``, ready for json). Uncompressed: ``counts`` is
    the list of run lengths in column-major order, starting with a run of zeros (0 when the first pixel
    is set), computed here independently of pycocotools.
    """
    m = np.asfortranarray(mask.astype(np.uint8))
    if not compressed:
        flat = m.ravel(order="F")
        bounds = np.concatenate([[0], np.flatnonzero(np.diff(flat)) + 1, [flat.size]])
        runs = np.diff(bounds).tolist()
        if flat.size and flat[0] == 1:
            runs = [0] + runs
        return {"size": list(m.shape), "counts": runs}
    r = mask_utils.encode(m)
    r["counts"] = r["counts"].decode("ascii")
    return r


def _rle(mask: np.ndarray) -> dict:
    return rle(mask)


def _uncompressed_rle(mask: np.ndarray) -> dict:
    return rle(mask, compressed=False)


def write_tiny_coco(root: Path, n_images: int = 8, size: int = 64, seed: int = 0, extras: bool = True) -> dict:
    """Write ``root/images/*.png`` and ``root/train.json``/``root/val.json``; return their paths.

    Every image holds a few axis-aligned rectangles (class from their shape) drawn in distinct colours;
    the first annotations use polygons, then compressed RLE, then uncompressed RLE. With ``extras`` the
    train file also has a crowd annotation, a degenerate box and an image without annotations.
    """
    rng = np.random.default_rng(seed)
    (root / "images").mkdir(parents=True, exist_ok=True)
    images, anns = [], []
    ann_id = 1
    for i in range(n_images):
        img = (rng.random((size, size, 3)) * 60).astype(np.uint8)
        for k in range(2):
            cat = CATEGORIES[(i + k) % 3]
            w, h = {2: (16, 16), 5: (24, 8), 9: (8, 8)}[cat["id"]]
            x = int(rng.integers(0, size - w)) if k == 0 else int(rng.integers(0, size - w))
            y = 4 if k == 0 else size - h - 4
            img[y:y + h, x:x + w] = np.array([200, 80 + 60 * k, 40 * (cat["id"] % 5)], dtype=np.uint8)
            m = np.zeros((size, size), np.uint8)
            m[y:y + h, x:x + w] = 1
            fmt = ann_id % 3
            seg = ([[x, y, x + w, y, x + w, y + h, x, y + h]] if fmt == 0 else _rle(m) if fmt == 1 else _uncompressed_rle(m))
            anns.append({"id": ann_id, "image_id": i + 1, "category_id": cat["id"], "segmentation": seg,
                         "area": float(w * h), "bbox": [x, y, w, h], "iscrowd": 0})
            ann_id += 1
        name = f"{i:04d}.png"
        Image.fromarray(img).save(root / "images" / name)
        images.append({"id": i + 1, "file_name": name, "height": size, "width": size})
    val = {"images": images, "annotations": anns, "categories": CATEGORIES}
    train = json.loads(json.dumps(val))
    if extras:
        m = np.zeros((size, size), np.uint8)
        m[30:40, 30:40] = 1
        train["annotations"].append({"id": ann_id, "image_id": 1, "category_id": 2, "segmentation": _rle(m),
                                     "area": 100.0, "bbox": [30, 30, 10, 10], "iscrowd": 1})
        train["annotations"].append({"id": ann_id + 1, "image_id": 2, "category_id": 9, "segmentation": [],
                                     "area": 0.0, "bbox": [10, 10, 0.5, 4], "iscrowd": 0})
        Image.fromarray(np.zeros((size, size, 3), np.uint8)).save(root / "images" / "empty.png")
        train["images"].append({"id": 999, "file_name": "empty.png", "height": size, "width": size})
    (root / "train.json").write_text(json.dumps(train))
    (root / "val.json").write_text(json.dumps(val))
    return {"train_json": root / "train.json", "val_json": root / "val.json", "image_root": root / "images"}


def tiny_config(data: dict, **train) -> dict:
    """A seconds-long CPU run on the tiny fixture data: maskrcnn_tiny at 64 px, CE then lncis."""
    return {
        "seed": 3,
        "data": {"train_json": str(data["train_json"]), "val_json": str(data["val_json"]),
                 "image_root": str(data["image_root"]), "train_min_size": [56, 72], "test_min_size": 64,
                 "max_size": 128, "num_workers": 0},
        "model": {"name": "maskrcnn_tiny", "rois_per_image": 32},
        "loss": {"name": "lncis", "warmup_epochs": 1},
        "train": {"epochs": 2, "batch_size": 2, "lr": 0.01, "warmup_iters": 2, "lr_steps": [1],
                  "log_interval": 1, "threads": 1, "device": "cpu", **train},
    }


def random_tiny_maskrcnn(num_classes: int, seed: int = 0, **kwargs):
    """A randomly initialised Mask R-CNN on noisyseg's tiny backbone with small heads (eval mode, 64-128
    px), for tests of code that consumes real model output. Built with torchvision's public ``MaskRCNN``
    so it does not depend on the project's builders; ``kwargs`` go to ``MaskRCNN`` (e.g.
    ``box_detections_per_img``)."""
    import torch
    from torchvision.models.detection import MaskRCNN
    from torchvision.models.detection.faster_rcnn import FastRCNNPredictor, TwoMLPHead
    from torchvision.models.detection.mask_rcnn import MaskRCNNHeads, MaskRCNNPredictor

    from noisyseg.models.tiny import TinyBackbone

    torch.manual_seed(seed)
    backbone = TinyBackbone()
    c = backbone.out_channels
    options = {"min_size": 64, "max_size": 128,
               "box_head": TwoMLPHead(c * 7 * 7, 128), "box_predictor": FastRCNNPredictor(128, num_classes + 1),
               "mask_head": MaskRCNNHeads(c, [32, 32], 1), "mask_predictor": MaskRCNNPredictor(32, 32, num_classes + 1),
               **kwargs}
    return MaskRCNN(backbone, num_classes=None, **options).eval()


def unwritable_dir(tmp_path: Path) -> Path:
    """A folder this process cannot create files in: a chmod 0o555 folder under ``tmp_path``, or (as root,
    who ignores permissions) /sys, which is read-only for everyone; skips the test where neither holds."""
    import pytest

    d = tmp_path / "locked"
    d.mkdir()
    d.chmod(0o555)
    try:
        (d / "probe").touch()
    except OSError:
        return d
    (d / "probe").unlink()
    try:
        (Path("/sys") / "noisyseg-probe").touch()
    except OSError:
        return Path("/sys")
    pytest.skip("no unwritable folder available to this user")


def cli(capsys, *args) -> tuple[int, str, str]:
    """(exit code, stdout, stderr stripped) of ``noisyseg ARGS`` run in this process."""
    from noisyseg.cli import main

    rc = main([str(a) for a in args])
    captured = capsys.readouterr()
    return rc, captured.out, captured.err.strip()


def assert_one_line(err: str, verb: str, expected: str) -> None:
    """``err`` is exactly one ``noisyseg VERB: error: ...`` line containing ``expected``."""
    lines = err.splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith(f"noisyseg {verb}: error: "), err
    assert expected in lines[0], err


def assert_train_keeps_a_user_s_file(capsys, config: Path, folder: Path, name: str) -> None:
    """``train CONFIG -o FOLDER`` into a folder holding only a user's file called ``name`` (one a run makes
    at its stage switch) is a one-line error that leaves the folder as it was."""
    folder.mkdir()
    (folder / name).write_text("my notes")
    rc, _, err = cli(capsys, "train", config, "-o", folder, "--no-progress")
    assert rc == 2 and sorted(folder.iterdir()) == [folder / name] and (folder / name).read_text() == "my notes"
    assert_one_line(err, "train", f"{folder / name}: not made by this run")


def snapshot(*roots: Path) -> dict:
    """Every file and folder under ``roots``: bytes and mtime for files, None for folders."""
    out = {}
    for root in roots:
        for p in sorted(root.rglob("*")):
            out[p] = (p.read_bytes(), p.stat().st_mtime_ns) if p.is_file() else None
    return out


def utf8_safe_report(report) -> None:
    """Escape, in place, the characters of a test report that UTF-8 cannot encode (lone surrogates, as a
    file name decoded with ``surrogateescape`` carries), so the report reaches the pytest-xdist controller.

    A worker sends its reports over execnet, which refuses such a string, and the worker then stops the whole
    session with an INTERNALERROR that names neither the test nor its failure."""

    def safe(text: str) -> str:
        try:
            text.encode("utf-8")
            return text
        except UnicodeEncodeError:
            return text.encode("utf-8", "backslashreplace").decode("utf-8")

    report.sections = [(title, safe(content)) for title, content in report.sections]
    if report.longrepr is not None and not isinstance(report.longrepr, tuple):  # a skip's longrepr is a tuple
        text = str(report.longrepr)
        escaped = safe(text)
        if escaped != text:
            report.longrepr = escaped
