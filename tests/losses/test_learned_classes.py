"""lncis with ``learned_at``: the classes the CE-stage model has not learned keep CE after the switch.

Its pieces: the rule (``unlearned_classes``), the loss routing those classes' object RoIs to CE, and a
training run that writes ``ce_classes.json`` at the switch from the CE-stage model and reads it on resume."""

import json
import math
import shutil

import numpy as np
import pytest
import torch
import yaml

from helpers import assert_train_keeps_a_user_s_file, assert_one_line, cli, tiny_config
from noisyseg.errors import NoisysegError
from noisyseg.losses import build_loss, cross_entropy, task_specific_loss
from noisyseg.losses.transition import unlearned_classes


def test_a_class_is_unlearned_when_its_labels_mean_probability_is_below_learned_at_times_chance():
    probs = np.array([[0.7, 0.2, 0.1], [0.5, 0.1, 0.4], [0.1, 0.8, 0.1], [0.6, 0.3, 0.1], [0.2, 0.7, 0.1]])
    given = np.array([0, 0, 1, 2, 2])  # class 0: p 0.7, 0.5; class 1: 0.8; class 2: 0.1, 0.1
    mean, keeps_ce = unlearned_classes(probs, given, learned_at=1.0)  # below 1/3
    assert mean.tolist() == pytest.approx([0.6, 0.8, 0.1])
    assert keeps_ce.tolist() == [False, False, True]
    assert unlearned_classes(probs, given, learned_at=1.9)[1].tolist() == [True, False, True]  # below 0.633
    mean, keeps_ce = unlearned_classes(probs, np.array([0, 0, 0, 2, 2]), learned_at=3.0)  # nobody carries 1
    assert math.isnan(mean[1]) and keeps_ce.tolist() == [True, False, True]


def test_object_rois_of_the_kept_classes_get_ce_and_every_other_roi_the_paper_s_loss():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(40, 4, generator=g, dtype=torch.float64)
    logits[:, 0] -= 1.5  # most object RoIs are OS (the model calls them objects)
    labels = torch.randint(0, 4, (40,), generator=g)
    keep = torch.tensor([False, False, True, False])  # class 2 keeps CE
    plain, plain_counts = task_specific_loss(logits, labels, reduction="none", return_counts=True)
    got, counts = task_specific_loss(logits, labels, ce_classes=keep, reduction="none", return_counts=True)
    ce = cross_entropy(logits, labels, reduction="none")
    is_os = (labels > 0) & (logits[:, 1:].amax(dim=1) > logits[:, 0])
    moved = is_os & (labels == 2)
    assert moved.sum() >= 3 and (is_os & ~moved).sum() >= 3
    assert torch.allclose(got[moved], ce[moved]) and not torch.allclose(plain[moved], ce[moved])
    assert torch.equal(got[~moved], plain[~moved])
    assert counts["os_ce"].item() == moved.sum().item()
    assert counts["os"].item() == plain_counts["os"].item() - moved.sum().item()
    assert counts["psn"].item() == plain_counts["psn"].item() and counts["neg"].item() == plain_counts["neg"].item()
    # PON never takes a kept class's RoI: it gets CE however large
    _, pon_counts = task_specific_loss(logits, labels, pon_threshold=1e-6, ce_classes=keep, return_counts=True)
    assert pon_counts["os_ce"].item() == moved.sum().item() and pon_counts["os"].item() == 0
    with pytest.raises(NoisysegError, match=r"^task_specific_loss: ce_classes has 3 entries for 4 logit columns"):
        task_specific_loss(logits, labels, ce_classes=keep[:3])
    with pytest.raises(NoisysegError, match=r"^task_specific_loss: ce_classes must be a 1-D bool tensor"):
        task_specific_loss(logits, labels, ce_classes=keep.long())


def test_the_registered_loss_needs_its_classes_and_checks_learned_at():
    logits, labels = torch.randn(5, 3), torch.tensor([0, 1, 2, 1, 2])
    loss = build_loss("lncis", learned_at=1.0)
    with pytest.raises(NoisysegError, match=r"^loss lncis: learned_at is set but no classes were given"):
        loss(logits, labels)
    loss.set_ce_classes([False, True, True])
    got, stats = loss(logits, labels)
    assert torch.allclose(got, cross_entropy(logits, labels))  # every class kept: CE on every RoI
    assert stats["os"].item() == 0
    assert not build_loss("lncis").needs_ce_classes
    for bad in (0, -1.0):
        with pytest.raises(NoisysegError, match=r"learned_at must be > 0 \(a multiple of chance, 1/K\) or None"):
            build_loss("lncis", learned_at=bad)


def _learned_config(tiny_coco, tmp_path, train_json, **loss):
    tree = tiny_config(tiny_coco, epochs=3, keep_epochs=[2])
    tree["data"]["train_json"] = str(train_json)
    tree["loss"] = {"name": "lncis", "warmup_epochs": 1, "params": {"learned_at": 1.0}, **loss}
    path = tmp_path / "learned.yaml"
    path.write_text(yaml.safe_dump(tree))
    return path


def test_training_chooses_the_classes_at_the_switch_from_the_ce_stage_model_and_a_resume_reads_them(
        tiny_coco, tmp_path, capsys):
    from noisyseg.audit.score import score_annotations

    config = _learned_config(tiny_coco, tmp_path, tiny_coco["train_json"])
    run = tmp_path / "run"
    rc, out, err = cli(capsys, "train", config, "-o", run, "--no-progress")
    assert rc == 0, err
    assert "scored by ce_stage_end.pt" in out and "[train] classes kept on CE" in out
    saved = json.loads((run / "ce_classes.json").read_text())
    coco = json.loads(open(tiny_coco["train_json"]).read())
    scores = score_annotations([run / "checkpoints" / "ce_stage_end.pt"], coco, tiny_coco["train_json"], progress=False)
    names, k = list(scores.label_map.names), len(scores.label_map.names)
    assert [c["name"] for c in saved["classes"]] == names and saved["threshold"] == pytest.approx(1.0 / k)
    for i, c in enumerate(saved["classes"]):
        mine = scores.given_labels == i
        assert c["labels"] == int(mine.sum())
        mean = float(scores.pred_probs[mine, i].mean()) if mine.any() else None
        assert c["mean_label_prob"] == (None if mean is None else pytest.approx(mean, abs=1e-6))
        assert c["keeps_ce"] == (mean is not None and mean < 1.0 / k)
    # the robust epochs log how many object RoIs their class kept on CE
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    robust = [r for r in records if r.get("event") == "train" and r.get("stage") == "robust"]
    assert robust and all("rois_os_ce" in r for r in robust)
    # stopped after epoch 2: the resume reads the file (a damaged one is a one-line error naming it)
    good = (run / "ce_classes.json").read_text()
    shutil.copyfile(run / "checkpoints" / "epoch_2.pt", run / "checkpoints" / "last.pt")
    (run / "ce_classes.json").write_text('{"classes": [{"name": "nobody"}]}')
    rc, out, err = cli(capsys, "train", config, "-o", run, "--resume", "--no-progress")
    assert rc == 2 and "scored" not in out
    assert_one_line(err, "train", f"{run / 'ce_classes.json'}: not a readable list of the classes kept on CE")
    (run / "ce_classes.json").write_text(good)
    rc, out, err = cli(capsys, "train", config, "-o", run, "--resume", "--no-progress")
    assert rc == 0, err
    assert "[train] epoch 3/3 (lncis)" in out and "scored" not in out and "classes kept on CE" not in out
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert any(r.get("event") == "train" and r.get("epoch") == 3 and "rois_os_ce" in r for r in records)


def test_without_a_ce_stage_or_over_a_user_s_file_it_refuses_before_anything_is_made(tiny_coco, tmp_path, capsys):
    config = _learned_config(tiny_coco, tmp_path, tiny_coco["train_json"], warmup_epochs=0)
    rc, _, err = cli(capsys, "train", config, "-o", tmp_path / "a", "--no-progress")
    assert rc == 2 and not (tmp_path / "a").exists()
    assert_one_line(err, "train", "loss.params.learned_at: the classes that keep CE are made by the model at the end "
                                  "of the CE stage")
    assert_train_keeps_a_user_s_file(capsys, _learned_config(tiny_coco, tmp_path, tiny_coco["train_json"]),
                                     tmp_path / "mine", "ce_classes.json")
