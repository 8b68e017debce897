"""The one evaluation path: the val set, predictions over it, COCO AP, and ``noisyseg eval``."""

import json
import random

import numpy as np
import pytest
import torch
from PIL import Image
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from noisyseg.cli import main
from helpers import tiny_config
from noisyseg.config import config_from_dict
from noisyseg.data.coco import LabelMap
from noisyseg.engine import evaluate as evaluate_module
from noisyseg.engine.build import model_from_config
from noisyseg.engine.evaluate import build_val_set, predict_dataset


def load_config_from(data):
    return config_from_dict(tiny_config(data))


def _independent_detections(checkpoint, val_json, image_root):
    """A checkpoint's detections on the val images, computed without the package's prediction code.

    The model is rebuilt from the checkpoint's own config and run image by image (PIL -> float in [0, 1]);
    masks are thresholded at 0.5 and encoded with pycocotools. Returns (segm results, bbox results).
    """
    ckpt = torch.load(checkpoint, map_location="cpu", weights_only=True)
    from noisyseg.config import Config

    cfg = Config.model_validate(ckpt["config"])
    category_ids = ckpt["label_map"]["category_ids"]
    model = model_from_config(cfg, len(category_ids))
    model.load_state_dict(ckpt["model"])
    model.eval()
    gt = json.loads(val_json.read_text())
    segm, bbox = [], []
    with torch.no_grad():
        for im in gt["images"]:
            pixels = np.asarray(Image.open(image_root / im["file_name"]).convert("RGB"), dtype=np.float32) / 255.0
            out = model([torch.from_numpy(pixels).permute(2, 0, 1)])[0]
            for box, score, label, prob in zip(out["boxes"].tolist(), out["scores"].tolist(), out["labels"].tolist(),
                                               out["masks"][:, 0].numpy()):
                common = {"image_id": im["id"], "category_id": category_ids[label - 1], "score": score}
                rle = mask_utils.encode(np.asfortranarray((prob > 0.5).astype(np.uint8)))
                rle["counts"] = rle["counts"].decode("ascii")
                segm.append({**common, "segmentation": rle})
                x1, y1, x2, y2 = box
                bbox.append({**common, "bbox": [x1, y1, x2 - x1, y2 - y1]})
    return segm, bbox


def _val_of_detections(val_json, segm, bbox, path):
    """A val file whose objects are the detections (``segm`` masks, ``bbox`` boxes) with a non-empty mask and a
    box of >= 1 px.

    Scored against it, a model's own detections reach a high AP whatever the model learned, so comparing
    two ways of computing that AP means something on any CPU (a short from-scratch run's own AP on the
    true val set depends on the CPU's float rounding: 0.065 to 0.30 on one machine).
    """
    val = json.loads(val_json.read_text())
    anns = []
    for det, box in zip(segm, bbox):
        m = mask_utils.decode(det["segmentation"])
        x, y, w, h = box["bbox"]
        if m.sum() == 0 or w < 1 or h < 1:
            continue
        anns.append({"id": len(anns) + 1, "image_id": det["image_id"], "category_id": det["category_id"],
                     "segmentation": det["segmentation"], "area": float(m.sum()), "bbox": [x, y, w, h],
                     "iscrowd": 0})
    path.write_text(json.dumps({**val, "annotations": anns}))
    return len(anns)


def _cocoeval(gt_path, results, iou_type):
    coco_gt = COCO(str(gt_path))
    ev = COCOeval(coco_gt, coco_gt.loadRes(results), iou_type)
    ev.evaluate()
    ev.accumulate()
    ev.summarize()
    return list(ev.stats[:3] * 100.0)  # AP, AP50, AP75


def test_eval_cli_equals_an_independent_computation(trained_run, tmp_path, capsys):
    checkpoint = trained_run.folder / "checkpoints" / "last.pt"
    segm, bbox = _independent_detections(checkpoint, trained_run.data["val_json"], trained_run.data["image_root"])
    assert segm, "the trained model detects nothing on val"
    pseudo_val = tmp_path / "val_of_detections.json"
    assert _val_of_detections(trained_run.data["val_json"], segm, bbox, pseudo_val) > 0
    out = tmp_path / "eval"
    assert main(["eval", str(trained_run.folder), "--set", f"data.val_json={pseudo_val}", "--out", str(out),
                 "--device", "cpu", "--no-progress"]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    scores = {"segm": _cocoeval(pseudo_val, segm, "segm"), "bbox": _cocoeval(pseudo_val, bbox, "bbox")}
    assert scores["segm"][0] > 50  # the model's own detections as objects: far from 0 whatever it learned
    for iou_type in ("segm", "bbox"):
        got = [metrics[iou_type][k] for k in ("AP", "AP50", "AP75")]
        assert got == pytest.approx(scores[iou_type], abs=0.02), iou_type  # boxes are rounded to 0.01 px
    assert len(json.loads((out / "detections.json").read_text())) == len(segm)
    assert metrics["checkpoint"] == str(checkpoint)


class _FloatMasksMustStayOnTheDevice(torch.Tensor):
    """A mask tensor that fails a test if its float probabilities are copied to the host (``.cpu()``).

    Thresholding first and moving only the binary result is what evaluation must do: full-size float
    masks of a Cityscapes image are about 840 MB.
    """

    @classmethod
    def __torch_function__(cls, func, types, args=(), kwargs=None):
        if func in (torch.Tensor.cpu, torch.Tensor.numpy):
            with torch._C.DisableTorchFunctionSubclass():
                floating = args[0].is_floating_point()
            assert not floating, "float masks were moved to the CPU before thresholding"
        return super().__torch_function__(func, types, args, kwargs or {})


class _FixedOutputs(torch.nn.Module):
    """Two detections per image, the same for every image: what ``predict_dataset`` must convert."""

    def __init__(self):
        super().__init__()
        self.calls = 0

    def forward(self, images):
        outputs = []
        for image in images:
            h, w = image.shape[-2:]
            probs = torch.zeros(2, 1, h, w)
            probs[0, 0, 4:20, 4:20] = 0.9
            probs[1, 0, 30:40, 10:50] = 0.6
            probs[1, 0, 30:40, 50:60] = 0.4  # below the 0.5 threshold
            outputs.append({"boxes": torch.tensor([[4.0, 4.0, 20.0, 20.0], [10.0, 30.0, 50.0, 40.0]]),
                            "scores": torch.tensor([0.8, 0.3]), "labels": torch.tensor([1, 3]),
                            "masks": probs.as_subclass(_FloatMasksMustStayOnTheDevice)})
        self.calls += 1
        return outputs


def test_predict_dataset_thresholds_masks_before_moving_them_and_maps_ids(tiny_coco):
    label_map = LabelMap((2, 5, 9), ("square", "bar", "dot"))
    val = build_val_set(load_config_from(tiny_coco).data, label_map)
    results = predict_dataset(_FixedOutputs(), val, label_map, torch.device("cpu"), batch_size=3, progress=False)
    assert len(results) == 2 * len(val)
    assert [r["image_id"] for r in results] == [r.image_id for r in val.records for _ in range(2)]
    assert {r["category_id"] for r in results} == {2, 9}  # labels 1 and 3 -> the file's ids
    second = mask_utils.decode(results[1]["segmentation"])
    assert second.sum() == 10 * 40 and second[30:40, 10:50].all()  # 0.6 kept, 0.4 dropped
    assert results[1]["bbox"] == [10.0, 30.0, 40.0, 10.0] and results[1]["score"] == pytest.approx(0.3)


def test_the_val_set_never_decodes_ground_truth_masks(tiny_coco, monkeypatch):
    def no_decoding(*args, **kwargs):
        raise AssertionError("a ground-truth mask was decoded for evaluation")

    monkeypatch.setattr("noisyseg.data.coco.decode_mask", no_decoding)
    label_map = LabelMap((2, 5, 9), ("square", "bar", "dot"))
    val = build_val_set(load_config_from(tiny_coco).data, label_map)
    assert len(predict_dataset(_FixedOutputs(), val, label_map, torch.device("cpu"), progress=False)) == 16


def test_evaluation_draws_no_training_randomness(tiny_coco):
    label_map = LabelMap((2, 5, 9), ("square", "bar", "dot"))
    cfg = load_config_from(tiny_coco)
    val = build_val_set(cfg.data, label_map)
    torch.manual_seed(0)
    model = model_from_config(cfg, 3)
    states = (torch.get_rng_state(), random.getstate(), np.random.get_state()[1].copy())
    metrics = evaluate_module.evaluate_model(model, val, label_map, tiny_coco["val_json"], torch.device("cpu"),
                                             progress=False)
    assert set(metrics) == {"segm", "bbox"}
    assert torch.equal(torch.get_rng_state(), states[0])
    assert random.getstate() == states[1] and np.array_equal(np.random.get_state()[1], states[2])
    assert model.training  # the caller's mode is restored


def test_eval_refuses_a_val_file_whose_classes_were_renamed(trained_run, tmp_path, capsys):
    gt = json.loads(trained_run.data["val_json"].read_text())
    gt["categories"][1]["name"] = "rod"  # id 5 'bar' -> 'rod', same ids
    renamed = tmp_path / "val_renamed.json"
    renamed.write_text(json.dumps(gt))
    out = tmp_path / "eval"
    assert main(["eval", str(trained_run.folder), "--out", str(out), "--device", "cpu", "--no-progress",
                 "--set", f"data.val_json={renamed}"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "'rod'" in err and "'bar'" in err and str(renamed) in err
    assert not out.exists()


def test_evaluate_run_applies_overrides_writes_beside_the_checkpoint_and_scores_like_cocoeval(trained_run, tmp_path):
    gt = json.loads(trained_run.data["val_json"].read_text())
    kept = [im["id"] for im in gt["images"][:3]]
    subset = {**gt, "images": gt["images"][:3], "annotations": [a for a in gt["annotations"] if a["image_id"] in kept]}
    subset_json = tmp_path / "val3.json"
    subset_json.write_text(json.dumps(subset))
    ckpt = tmp_path / "ckpt" / "model.pt"
    ckpt.parent.mkdir()
    ckpt.write_bytes((trained_run.folder / "checkpoints" / "last.pt").read_bytes())

    metrics, paths = evaluate_module.evaluate_run(trained_run.config, checkpoint=ckpt, device="cpu", progress=False,
                                                  overrides=[f"data.val_json={subset_json}"])
    assert paths == {"metrics": ckpt.parent / "metrics.json", "detections": ckpt.parent / "detections.json"}
    assert json.loads(paths["metrics"].read_text()) == json.loads(json.dumps({"checkpoint": str(ckpt), **metrics}))
    detections = json.loads(paths["detections"].read_text())
    assert detections and {d["image_id"] for d in detections} <= set(kept)  # only the override's images
    coco_gt = COCO(str(subset_json))
    for iou_type in ("segm", "bbox"):
        ev = COCOeval(coco_gt, coco_gt.loadRes(detections), iou_type)
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
        expected = [v * 100.0 for v in ev.stats[:3]]
        assert [metrics[iou_type][k] for k in ("AP", "AP50", "AP75")] == pytest.approx(expected, abs=1e-6), iou_type


def test_evaluate_run_checks_its_inputs_before_any_work(trained_run, tmp_path, monkeypatch):
    from noisyseg.errors import NoisysegError

    def no_work(*args, **kwargs):
        raise AssertionError("evaluated despite a bad input")

    monkeypatch.setattr(evaluate_module, "evaluate_checkpoint", no_work)
    with pytest.raises(NoisysegError, match=r"with a config file, pass --checkpoint$") as err:
        evaluate_module.evaluate_run(trained_run.config, device="cpu")
    assert str(err.value).startswith(str(trained_run.config))
    blocker = tmp_path / "blocker"
    blocker.write_text("")
    with pytest.raises(NoisysegError, match="is a file, expected a folder"):
        evaluate_module.evaluate_run(trained_run.folder, out_dir=blocker, device="cpu")
    with pytest.raises(NoisysegError, match="unknown device"):
        evaluate_module.evaluate_run(trained_run.folder, out_dir=tmp_path / "e", device="tpu")
    assert not (tmp_path / "e").exists() and blocker.read_text() == ""


def test_eval_predicts_with_the_score_threshold_and_detection_cap_it_is_given(trained_run, tmp_path):
    default, raised, capped = tmp_path / "default", tmp_path / "raised", tmp_path / "capped"
    assert main(["eval", str(trained_run.folder), "--out", str(default), "--device", "cpu", "--no-progress"]) == 0
    base = json.loads((default / "detections.json").read_text())
    scores = sorted(d["score"] for d in base)
    threshold = scores[len(scores) // 2]
    assert scores[0] < threshold  # the default evaluation has detections below the raised threshold
    assert main(["eval", str(trained_run.folder), "--set", f"model.score_threshold={threshold}", "--out", str(raised),
                 "--device", "cpu", "--no-progress"]) == 0
    kept = json.loads((raised / "detections.json").read_text())
    assert kept and min(d["score"] for d in kept) >= threshold

    def best_per_image(detections):  # (score, class, box) of each image's highest-scoring detection
        best = {}
        for d in detections:
            entry = (round(d["score"], 5), d["category_id"], tuple(round(v, 1) for v in d["bbox"]))
            best[d["image_id"]] = max(best.get(d["image_id"], entry), entry)
        return best

    per_image = {}
    for d in base:
        per_image[d["image_id"]] = per_image.get(d["image_id"], 0) + 1
    assert max(per_image.values()) > 1
    assert main(["eval", str(trained_run.folder), "--set", "model.detections_per_image=1", "--out", str(capped),
                 "--device", "cpu", "--no-progress"]) == 0
    top = json.loads((capped / "detections.json").read_text())
    # no NMS suppresses an image's highest-scoring box, so the cap of 1 keeps exactly that one
    assert len(top) == len(per_image) and best_per_image(top) == best_per_image(base)


def test_eval_refuses_a_key_that_only_training_reads(trained_run, tmp_path, capsys):
    out = tmp_path / "eval"
    assert main(["eval", str(trained_run.folder), "--set", "train.lr=0.5", "--out", str(out), "--device", "cpu",
                 "--no-progress"]) == 2
    err = capsys.readouterr().err.strip()
    assert err == ("noisyseg eval: error: --set train.lr: eval scores the trained model as it is, so this key cannot "
                   "change the result; eval takes data.val_json, data.val_image_root, data.image_root, "
                   "data.num_workers, model.score_threshold, model.detections_per_image, data.test_min_size, "
                   "data.max_size")
    assert not out.exists()
