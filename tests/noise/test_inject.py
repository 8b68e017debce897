import copy
import math

import numpy as np
import pytest

from noisyseg.errors import NoisysegError
from noisyseg.noise import inject, realised_matrix


def _labels(coco):
    return np.array([a["category_id"] for a in coco["annotations"]]), np.array(
        [a["clean_category_id"] for a in coco["annotations"]])


@pytest.mark.parametrize("rate", [0.0, 0.2, 0.45, 1.0])
def test_exact_sampling_changes_round_rate_times_n_of_each_class(make, rate):
    coco = make({"a": 101, "b": 40, "c": 7})
    noisy, report = inject(coco, "symmetric", rate, seed=1)
    new, clean = _labels(noisy)
    for cid, n in ((1, 101), (2, 40), (3, 7)):
        assert int(((clean == cid) & (new != cid)).sum()) == math.floor(rate * n + 0.5)
    assert report["n_eligible"] == 148
    assert report["realised_rate"] == pytest.approx(report["n_changed"] / 148)


def test_symmetric_never_keeps_the_class_and_is_uniform_over_the_others(make):
    k = 6
    coco = make({f"c{i}": 3000 for i in range(k)})
    noisy, _ = inject(coco, "symmetric", 1.0, seed=0)
    new, clean = _labels(noisy)
    assert (new != clean).all()
    # chi-square of the targets of each class against uniform over the k-1 others
    for c in range(1, k + 1):
        targets = new[clean == c]
        observed = np.array([(targets == t).sum() for t in range(1, k + 1) if t != c])
        expected = len(targets) / (k - 1)
        chi2 = ((observed - expected) ** 2 / expected).sum()
        assert chi2 < 18.47  # 0.999 quantile of chi-square with 4 degrees of freedom


def test_the_last_class_is_a_target_too(make):
    noisy, _ = inject(make({"a": 500, "b": 500, "z": 10}), "symmetric", 1.0, seed=3)
    new, clean = _labels(noisy)
    assert (new[clean != 3] == 3).sum() > 300


def test_same_seed_same_result_other_seed_other_result(make):
    coco = make({"a": 200, "b": 200, "c": 200})
    a, _ = inject(coco, "symmetric", 0.3, seed=5)
    b, _ = inject(coco, "symmetric", 0.3, seed=5)
    c, _ = inject(coco, "symmetric", 0.3, seed=6)
    assert a == b and a != c


def test_nothing_else_changes_and_input_is_not_modified(make):
    coco = make({"a": 50, "b": 50})
    before = copy.deepcopy(coco)
    noisy, _ = inject(coco, "symmetric", 0.5, seed=0)
    assert coco == before
    assert noisy["images"] == coco["images"] and noisy["categories"] == coco["categories"]
    assert list(noisy) == list(coco)  # top-level key order
    for a, b in zip(coco["annotations"], noisy["annotations"]):
        assert list(b) == list(a) + ["clean_category_id"]
        assert {k: v for k, v in b.items() if k not in ("category_id", "clean_category_id")} == \
               {k: v for k, v in a.items() if k != "category_id"}
        assert b["clean_category_id"] == a["category_id"]
    assert noisy["info"]["description"] == "synthetic" and noisy["info"]["noise"]["kind"] == "symmetric"


def test_layering_keeps_the_first_clean_label_and_the_history(make):
    coco = make({"a": 100, "b": 100, "c": 100})
    once, _ = inject(coco, "symmetric", 0.5, seed=0)
    twice, _ = inject(once, "symmetric", 0.5, seed=1)
    _, clean = _labels(twice)
    assert (clean == np.array([a["category_id"] for a in coco["annotations"]])).all()
    assert [h["seed"] for h in twice["info"]["noise_history"]] == [0] and twice["info"]["noise"]["seed"] == 1


def test_bernoulli_rate_is_close_on_a_large_file(make):
    noisy, report = inject(make({"a": 20000, "b": 20000}), "symmetric", 0.3, seed=0, sampling="bernoulli")
    assert abs(report["realised_rate"] - 0.3) < 0.01


def test_crowd_annotations_are_left_alone_unless_asked(make):
    coco = make({"a": 300, "b": 300}, crowd_every=3)
    noisy, report = inject(coco, "symmetric", 1.0, seed=0)
    for a in noisy["annotations"]:
        assert (a["category_id"] == a["clean_category_id"]) == bool(a["iscrowd"])
    assert report["n_eligible"] == 400
    _, report = inject(coco, "symmetric", 1.0, seed=0, include_crowd=True)
    assert report["n_eligible"] == 600


def test_unused_pseudo_categories_are_never_targets(make):
    coco = make({"a": 300, "b": 300}, extra_categories=[{"id": 0, "name": "_background_"}])
    noisy, report = inject(coco, "symmetric", 1.0, seed=0)
    assert 0 not in {a["category_id"] for a in noisy["annotations"]}
    assert report["target_classes"] == ["a", "b"]


def test_classes_option_limits_sources_and_targets(make):
    noisy, report = inject(make({"a": 100, "b": 100, "c": 100}), "symmetric", 1.0, seed=0, classes=["a", "b"])
    new, clean = _labels(noisy)
    assert (new[clean == 3] == 3).all() and set(new[clean == 1]) == {2} and set(new[clean == 2]) == {1}


def test_pairs_and_matrix(make):
    coco = make({"bus": 100, "car": 100, "cat": 100, "dog": 100})
    noisy, _ = inject(coco, "pairs", 0.5, seed=0, pairs="bus>car,cat>dog,dog>cat")
    new, clean = _labels(noisy)
    assert set(new[(clean == 1) & (new != 1)]) == {2} and (new[clean == 2] == 2).all()
    assert set(new[(clean == 3) & (new != 3)]) == {4} and set(new[(clean == 4) & (new != 4)]) == {3}
    matrix = {"classes": ["bus", "car", "cat", "dog"],
              "matrix": [[0.5, 0.5, 0, 0], [0, 1, 0, 0], [0, 0, 0.2, 0.8], [0, 0, 0.6, 0.4]]}
    noisy, report = inject(coco, "matrix", 0.4, seed=0, matrix=matrix)
    new, clean = _labels(noisy)
    assert ((clean == 1) & (new != 1)).sum() == 40 and set(new[(clean == 1) & (new != 1)]) == {2}
    assert (new[clean == 2] == 2).all()  # a row with all mass on the diagonal never changes
    assert report["eligible"] == {"bus": 100, "cat": 100, "dog": 100}


def test_realised_matrix_counts(make):
    noisy, report = inject(make({"a": 10, "b": 10}), "symmetric", 0.3, seed=0)
    names, counts = realised_matrix(noisy)
    assert names == ["a", "b"] and counts.tolist() == [[7, 3], [3, 7]]
    assert report["transitions"] == {"a": {"b": 3}, "b": {"a": 3}}


@pytest.mark.parametrize("kwargs, message", [
    (dict(rate=1.5), r"rate must be a number in \[0, 1\]"),
    (dict(rate=float("nan")), "rate must be a number"),
    (dict(rate=0.1, kind="asymmetric", preset="cityscapes"), "class 'person' is not a category"),
    (dict(rate=0.1, kind="asymmetric", preset="nope"), "unknown preset 'nope'"),
    (dict(rate=0.1, kind="asymmetric"), "needs --preset"),
    (dict(rate=0.1, kind="pairs", pairs="a>zebra"), "class 'zebra' is not a category"),
    (dict(rate=0.1, kind="pairs", pairs="a-b"), "not of the form source>target"),
    (dict(rate=0.1, kind="matrix", matrix={"classes": ["a", "b"], "matrix": [[1, 0]]}), "must be 2 x 2"),
    (dict(rate=0.1, kind="matrix", matrix={"classes": ["a", "b"], "matrix": [[0.5, 0.4], [0, 1]]}),
     r"row 0 \(a\) sums to 0.9"),
    (dict(rate=0.1, classes=["a", "q"]), "class 'q' is not a category"),
    (dict(rate=0.1, kind="weird"), "unknown noise kind"),
])
def test_bad_input_is_a_one_line_error(make, kwargs, message):
    kwargs = {"kind": "symmetric", "seed": 0, **kwargs}
    with pytest.raises(NoisysegError, match=message) as e:
        inject(make({"a": 5, "b": 5}), **kwargs)
    assert "\n" not in str(e.value)


def test_malformed_files(make):
    with pytest.raises(NoisysegError, match="missing 'annotations'"):
        inject({"categories": []}, "symmetric", 0.1, 0)
    coco = make({"a": 3, "b": 3})
    coco["annotations"][1]["category_id"] = 42
    with pytest.raises(NoisysegError, match="category_id 42, not a listed category"):
        inject(coco, "symmetric", 0.1, 0)


def test_in_place_gives_the_same_file(make):
    coco = make({"a": 40, "b": 40, "c": 40})
    copied, _ = inject(coco, "symmetric", 0.5, seed=2)
    same, _ = inject(copy.deepcopy(coco), "symmetric", 0.5, seed=2, in_place=True)
    assert copied == same
