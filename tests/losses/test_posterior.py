"""The posterior loss: CE against each annotation's true-class posterior, fixed at the stage switch.

Its pieces: the loss values, the targets the trainer computes (``posterior_targets``), the routing of an
annotation's target to the RoIs sampled on it (the RoI head), the data set's ``class_target`` by annotation
id, and a training run that makes ``class_targets.npz`` at the switch and reads it on resume."""

import json
import math
import shutil

import numpy as np
import pytest
import torch
import yaml

from helpers import assert_one_line, cli, tiny_config
from noisyseg.losses.transition import true_class_posterior as posterior_targets
from noisyseg.errors import NoisysegError
from noisyseg.losses import build_loss, cross_entropy
from noisyseg.losses.functional import posterior_cross_entropy
from noisyseg.models.roi_heads import _sampled_class_targets


def test_values_are_the_cross_entropy_of_the_soft_targets_and_ce_for_one_hot_targets():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(7, 4, generator=g, dtype=torch.float64)
    labels = torch.tensor([0, 1, 2, 3, 1, 0, 2])
    targets = torch.rand(7, 4, generator=g, dtype=torch.float64)
    targets /= targets.sum(dim=1, keepdim=True)
    got = posterior_cross_entropy(logits, labels, targets, reduction="none")
    for i in range(7):
        z = logits[i].tolist()
        log_z = max(z) + math.log(sum(math.exp(v - max(z)) for v in z))
        assert got[i].item() == pytest.approx(-sum(t * (v - log_z) for t, v in zip(targets[i].tolist(), z)), rel=1e-12)
    one_hot = torch.nn.functional.one_hot(labels, 4).double()
    assert torch.allclose(posterior_cross_entropy(logits, labels, one_hot, reduction="none"),
                          cross_entropy(logits, labels, reduction="none"))
    with pytest.raises(NoisysegError, match=r"^posterior loss: class_targets must be a tensor of the logits' shape"):
        posterior_cross_entropy(logits, labels, targets[:, :3])
    with pytest.raises(NoisysegError, match="^loss posterior: the training targets carry no class_target"):
        build_loss("posterior")(logits, labels)


def test_the_targets_are_the_posterior_of_the_true_class_given_the_label():
    """r[c] ~ p[c] T[c, y]: an image the model finds 90% frequent-class and 10% rare-class, labelled rare,
    under 40% symmetric noise over 2 classes: r[rare] = 0.1 * 0.6 / (0.1 * 0.6 + 0.9 * 0.4)."""
    matrix = np.array([[0.6, 0.4], [0.4, 0.6]])
    probs = np.array([[0.9, 0.1], [0.9, 0.1], [0.3, 0.7]])
    given = np.array([1, 0, 1])
    got = posterior_targets(probs, given, matrix)
    assert got[0].tolist() == pytest.approx([0.36 / 0.42, 0.06 / 0.42])
    assert got[1].tolist() == pytest.approx([0.54 / 0.58, 0.04 / 0.58])
    assert got[2].tolist() == pytest.approx([0.12 / 0.54, 0.42 / 0.54])
    assert posterior_targets(probs, given, np.eye(2)).tolist() == [[0, 1], [1, 0], [0, 1]]  # clean: the label
    zero_column = np.array([[1.0, 0.0], [1.0, 0.0]])  # nothing is ever labelled class 1: keep the label
    assert posterior_targets(probs, given, zero_column)[0].tolist() == [0, 1]


def test_each_sampled_roi_gets_its_matched_annotation_s_target_and_background_its_own():
    targets = [{"labels": torch.tensor([2, 1]), "class_target": torch.tensor([[0.2, 0.8], [0.7, 0.3]])},
               {"labels": torch.tensor([1]), "class_target": torch.tensor([[1.0, 0.0]])}]
    labels = [torch.tensor([2, 0, 1, 2]), torch.tensor([1, 0])]
    matched = [torch.tensor([0, 0, 1, 0]), torch.tensor([0, 0])]
    got = _sampled_class_targets(labels, matched, targets)
    want = [[0, 0.2, 0.8], [1, 0, 0], [0, 0.7, 0.3], [0, 0.2, 0.8], [0, 1, 0], [1, 0, 0]]
    assert got.dtype == torch.float32 and torch.equal(got, torch.tensor(want))
    assert _sampled_class_targets(labels, matched, [{"labels": t["labels"]} for t in targets]) is None
    with pytest.raises(ValueError, match="class_target must be a"):
        _sampled_class_targets(labels, matched, [targets[0], {"labels": torch.tensor([1])}])


def test_the_data_set_gives_each_annotation_its_target_by_id(tiny_coco):
    from noisyseg.data.coco import CocoInstances

    ds = CocoInstances(tiny_coco["train_json"], tiny_coco["image_root"], train=True, load_masks=False)
    coco = json.loads(open(tiny_coco["train_json"]).read())
    k = ds.label_map.num_classes
    ids = np.array([a["id"] for a in coco["annotations"]][::-1])  # any order
    rows = np.stack([np.full(k, i, dtype=np.float32) for i in ids])  # row of id i is all i
    assert not ds.has_class_targets and "class_target" not in ds.target(0)
    ds.set_class_targets(ids, rows)
    for index in range(len(ds)):
        target = ds.target(index)
        start = sum(len(ds.target(j)["labels"]) for j in range(index))
        want = ds._ann_ids[start:start + len(target["labels"])]
        assert target["class_target"].shape == (len(target["labels"]), k)
        assert target["class_target"][:, 0].tolist() == want.astype(np.float32).tolist()
    used = ids != ds._ann_ids[0]  # leave out one annotation the data set trains on
    with pytest.raises(NoisysegError, match=rf"annotations\[\d+\] \(id {ds._ann_ids[0]}\): no class target given"):
        ds.set_class_targets(ids[used], rows[used])


def _posterior_config(tiny_coco, tmp_path, train_json, **loss):
    tree = tiny_config(tiny_coco, epochs=3, keep_epochs=[2])
    tree["data"]["train_json"] = str(train_json)
    tree["loss"] = {"name": "posterior", "warmup_epochs": 1, **loss}
    path = tmp_path / "posterior.yaml"
    path.write_text(yaml.safe_dump(tree))
    return path


def test_training_makes_the_targets_at_the_switch_from_the_ce_stage_model_and_a_resume_reads_them(
        tiny_coco, tmp_path, capsys):
    from noisyseg.audit.score import score_annotations
    from noisyseg.losses.transition import transition_matrix

    noisy = tmp_path / "noisy.json"
    assert cli(capsys, "noise", tiny_coco["train_json"], "-o", noisy, "--kind", "symmetric", "--rate", "0.4")[0] == 0
    config = _posterior_config(tiny_coco, tmp_path, noisy)
    run = tmp_path / "run"
    rc, out, err = cli(capsys, "train", config, "-o", run, "--no-progress")
    assert rc == 0, err
    assert "scored by ce_stage_end.pt" in out and "[train] epoch 2/3 (posterior)" in out
    with np.load(run / "class_targets.npz", allow_pickle=False) as saved:
        ids, targets = saved["annotation_ids"], saved["targets"]
    coco = json.loads(noisy.read_text())
    scores = score_annotations([run / "checkpoints" / "ce_stage_end.pt"], coco, noisy, progress=False)
    matrix = transition_matrix("data", noisy, scores.label_map.names)
    assert ids.tolist() == scores.annotation_ids.tolist()
    weights = scores.pred_probs * matrix[:, scores.given_labels].T
    np.testing.assert_allclose(targets, weights / weights.sum(axis=1, keepdims=True), rtol=1e-5, atol=1e-7)
    # stopped after epoch 2: the resume reads the file (a damaged one is a one-line error naming it)
    shutil.copyfile(run / "checkpoints" / "epoch_2.pt", run / "checkpoints" / "last.pt")
    (run / "class_targets.npz").write_bytes(b"not an npz")
    rc, out, err = cli(capsys, "train", config, "-o", run, "--resume", "--no-progress")
    assert rc == 2 and "scored" not in out
    assert_one_line(err, "train", f"{run / 'class_targets.npz'}: not readable class targets")
    np.savez(run / "class_targets.npz", annotation_ids=ids, targets=targets)
    rc, out, err = cli(capsys, "train", config, "-o", run, "--resume", "--no-progress")
    assert rc == 0, err
    assert "[train] epoch 3/3 (posterior)" in out and "scored" not in out


def test_without_a_ce_stage_or_a_matrix_it_refuses_before_anything_is_made(tiny_coco, tmp_path, capsys):
    rc, _, err = cli(capsys, "train", _posterior_config(tiny_coco, tmp_path, tiny_coco["train_json"], warmup_epochs=0),
                     "-o", tmp_path / "a", "--no-progress")
    assert rc == 2 and not (tmp_path / "a").exists()
    assert_one_line(err, "train", "loss posterior: its targets are made by the model at the end of the CE stage")
    # transition: data on a file without clean_category_id: refused at the start, not at the switch
    rc, _, err = cli(capsys, "train", _posterior_config(tiny_coco, tmp_path, tiny_coco["train_json"]),
                     "-o", tmp_path / "b", "--no-progress")
    assert rc == 2 and not (tmp_path / "b").exists()
    assert_one_line(err, "train", "loss.params.transition=data needs the file's clean_category_id")


def test_with_a_target_momentum_the_targets_are_refreshed_before_each_later_epoch_and_a_resume_keeps_them(
        tiny_coco, tmp_path, capsys, monkeypatch):
    """t after epoch 2 = m t(switch) + (1 - m) r(epoch-2 model), against the models' own scores; a resume
    finds the refresh done, does a missing one, and refuses a gap it cannot fill. The training file is
    parsed once for the switch and the refresh together (its matrix, ``transition: data``, included)."""
    import noisyseg.audit.flat
    import noisyseg.losses.transition

    noisy = tmp_path / "noisy.json"
    assert cli(capsys, "noise", tiny_coco["train_json"], "-o", noisy, "--kind", "symmetric", "--rate", "0.4")[0] == 0
    config = _posterior_config(tiny_coco, tmp_path, noisy, params={"target_momentum": 0.25})
    run = tmp_path / "run"
    reads = []
    for module, name in ((noisyseg.audit.flat, "_read_lean"), (noisyseg.losses.transition, "read_json")):
        def counted(*args, _real=getattr(module, name), _name=name, **kwargs):
            reads.append(_name)
            return _real(*args, **kwargs)

        monkeypatch.setattr(module, name, counted)
    rc, out, err = cli(capsys, "train", config, "-o", run, "--no-progress")
    assert rc == 0, err
    # read_json once: the start-up check of the matrix; _read_lean once: the annotations the passes score
    assert sorted(reads) == ["_read_lean", "read_json"], reads
    monkeypatch.undo()
    assert out.count("refreshed by the epoch-2 model (momentum 0.25") == 1 and "epoch-1 model" not in out
    ids, at_switch, refreshed = _check_refreshed_targets(run, noisy, momentum=0.25)

    # stopped after epoch 2 with the refresh done: kept; with the switch's targets: refreshed again, the same
    shutil.copyfile(run / "checkpoints" / "epoch_2.pt", run / "checkpoints" / "last.pt")
    rc, out, err = cli(capsys, "train", config, "-o", run, "--resume", "--no-progress")
    assert rc == 0 and "refreshed" not in out and "scored" not in out, err
    shutil.copyfile(run / "checkpoints" / "epoch_2.pt", run / "checkpoints" / "last.pt")
    np.savez(run / "class_targets.npz", annotation_ids=ids, targets=at_switch.astype(np.float32), epoch=1)
    rc, out, err = cli(capsys, "train", config, "-o", run, "--resume", "--no-progress")
    assert rc == 0 and out.count("refreshed by the epoch-2 model") == 1, err
    with np.load(run / "class_targets.npz", allow_pickle=False) as saved:
        np.testing.assert_allclose(saved["targets"], refreshed, rtol=1e-5, atol=1e-6)
    # targets older than the epoch before: the refreshes in between are lost
    shutil.copyfile(run / "checkpoints" / "epoch_2.pt", run / "checkpoints" / "last.pt")
    np.savez(run / "class_targets.npz", annotation_ids=ids, targets=at_switch.astype(np.float32), epoch=0)
    rc, out, err = cli(capsys, "train", config, "-o", run, "--resume", "--no-progress")
    assert rc == 2
    assert_one_line(err, "train", f"{run / 'class_targets.npz'}: class targets made after epoch 0, but the run "
                                  "continues after epoch 2; the refreshes in between cannot be made again")


def _check_refreshed_targets(run, noisy, momentum):
    """Assert that the run's targets after epoch 2 are m t(switch) + (1 - m) r(epoch-2 model), each computed
    here in one process from the kept checkpoints' own scores; returns (ids, t(switch), the saved targets)."""
    from noisyseg.audit.score import score_annotations
    from noisyseg.losses.transition import transition_matrix

    coco = json.loads(noisy.read_text())

    def posterior_of(checkpoint):
        scores = score_annotations([run / "checkpoints" / checkpoint], coco, noisy, progress=False)
        weights = scores.pred_probs * transition_matrix("data", noisy, scores.label_map.names)[:, scores.given_labels].T
        return scores.annotation_ids, weights / weights.sum(axis=1, keepdims=True)

    ids, at_switch = posterior_of("ce_stage_end.pt")
    _, at_epoch_2 = posterior_of("epoch_2.pt")
    with np.load(run / "class_targets.npz", allow_pickle=False) as saved:
        assert saved["annotation_ids"].tolist() == ids.tolist() and int(saved["epoch"]) == 2
        refreshed = saved["targets"]
    np.testing.assert_allclose(refreshed, momentum * at_switch + (1 - momentum) * at_epoch_2, rtol=1e-5, atol=1e-6)
    assert not np.allclose(refreshed, at_switch, atol=1e-3)  # the refresh changed them
    return ids, at_switch, refreshed


@pytest.mark.skipif(not torch.distributed.is_available(), reason="torch.distributed unavailable")
def test_under_two_processes_each_scores_half_the_images_and_the_targets_are_those_of_one_process(
        tiny_coco, tmp_path, capfd, monkeypatch):
    """The switch's targets and the refresh come from a pass split over the processes (image i scored by
    process i mod 2) and merged on rank 0: the same targets as one process scoring every image."""
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    noisy = tmp_path / "noisy.json"
    assert cli(capfd, "noise", tiny_coco["train_json"], "-o", noisy, "--kind", "symmetric", "--rate", "0.4")[0] == 0
    config = _posterior_config(tiny_coco, tmp_path, noisy, params={"target_momentum": 0.5})
    run = tmp_path / "run"
    rc, out, err = cli(capfd, "train", config, "-o", run, "--nproc", "2", "--no-progress")
    assert rc == 0, err
    lines = out.splitlines()
    scored = [x for x in lines if "training annotations scored by ce_stage_end.pt" in x]
    assert len(scored) == 1 and scored[0].endswith(" s by 2 processes"), out
    assert sum("refreshed by the epoch-2 model (momentum 0.5" in x and " s by 2 processes)" in x for x in lines) == 1
    _check_refreshed_targets(run, noisy, momentum=0.5)


def test_a_target_momentum_outside_0_1_is_refused_in_one_line(tiny_coco, tmp_path, capsys):
    rc, _, err = cli(capsys, "train", _posterior_config(tiny_coco, tmp_path, tiny_coco["train_json"],
                                                        params={"target_momentum": 1.5}),
                     "-o", tmp_path / "a", "--no-progress")
    assert rc == 2 and not (tmp_path / "a").exists()
    assert_one_line(err, "train", "target_momentum must be in [0, 1]")
