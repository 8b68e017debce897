"""Out-of-sample scoring: each fold's model scores exactly the annotations of its held-out images."""

from __future__ import annotations

import json

import numpy as np
import pytest

from noisyseg.audit import audit
from noisyseg.audit.score import score_annotations, score_folds
from noisyseg.data.coco import load_coco
from noisyseg.errors import NoisysegError


@pytest.fixture
def two_runs(tiny_data, tmp_path, make_run):
    """Two differently initialised runs and a split of the noisy file's images into two folds."""
    ckpts = [make_run(tmp_path / f"run{f}", tiny_data, seed=f) for f in range(2)]
    coco = load_coco(tiny_data["noisy_json"])
    ids = [im["id"] for im in coco["images"]]
    return {"ckpts": ckpts, "coco": coco, "folds": [ids[0::2], ids[1::2]], "data": tiny_data}


def test_each_annotation_gets_the_probabilities_of_its_folds_model(two_runs):
    coco, data, folds = two_runs["coco"], two_runs["data"], two_runs["folds"]
    whole = [score_annotations([c], coco, data["noisy_json"], progress=False) for c in two_runs["ckpts"]]
    got = score_folds([([c], ids) for c, ids in zip(two_runs["ckpts"], folds)], coco, data["noisy_json"],
                      progress=False)
    assert got.annotation_ids.tolist() == whole[0].annotation_ids.tolist()  # every annotation, in file order
    fold_of_image = {i: f for f, ids in enumerate(folds) for i in ids}
    expected_fold = np.array([fold_of_image[i] for i in whole[0].image_ids.tolist()])
    assert set(expected_fold.tolist()) == {0, 1}
    for f in range(2):
        rows = expected_fold == f
        assert np.allclose(got.pred_probs[rows], whole[f].pred_probs[rows], rtol=1e-5, atol=1e-6)
        assert np.allclose(got.background_prob[rows], whole[f].background_prob[rows], rtol=1e-5, atol=1e-6)
    assert not np.allclose(whole[0].pred_probs, whole[1].pred_probs)  # the folds' models do differ
    assert np.array_equal(got.given_labels, whole[0].given_labels)
    assert np.array_equal(got.clean_labels, whole[0].clean_labels)
    assert got.checkpoints == list(two_runs["ckpts"])


def test_folds_that_overlap_or_leave_an_image_out_are_refused(two_runs):
    coco, data, (a, b) = two_runs["coco"], two_runs["data"], two_runs["folds"]
    c0, c1 = two_runs["ckpts"]
    with pytest.raises(NoisysegError, match=rf"image {a[0]} is in folds 0 and 1$"):
        score_folds([([c0], a), ([c1], b + [a[0]])], coco, data["noisy_json"], progress=False)
    with pytest.raises(NoisysegError, match=rf"^.*train_noisy.json: image {b[0]} of annotation \d+ is in no fold "):
        score_folds([([c0], a), ([c1], b[1:])], coco, data["noisy_json"], progress=False)


def test_audit_with_folds_writes_one_table_over_every_annotation(two_runs, tmp_path):
    data, folds = two_runs["data"], two_runs["folds"]
    runs = [c.parent.parent for c in two_runs["ckpts"]]
    result = audit(None, data["noisy_json"], folds=list(zip(runs, folds)), out_dir=tmp_path / "out",
                   device="cpu", progress=False)
    n = sum(1 for a in json.loads(data["noisy_json"].read_text())["annotations"] if not a.get("iscrowd"))
    assert len(result.rows) == n and result.summary["checkpoints"] == [str(c.resolve()) for c in two_runs["ckpts"]]
    assert (tmp_path / "out" / "label_issues.csv").is_file()
    with pytest.raises(NoisysegError, match="either a run folder or checkpoint, or folds"):
        audit(runs[0], data["noisy_json"], folds=list(zip(runs, folds)), progress=False)
