import copy
import json
import math

import numpy as np
import pytest

from noisyseg.errors import NoisysegError
from noisyseg.noise import inject, noise_stats, realised_matrix


def _labels(coco):
    """(noisy ids, clean ids) as (N,) arrays."""
    anns = coco["annotations"]
    return np.array([a["category_id"] for a in anns]), np.array([a["clean_category_id"] for a in anns])


def _chi2(observed, expected):
    observed, expected = np.asarray(observed, float), np.asarray(expected, float)
    return float(((observed - expected) ** 2 / expected).sum())


# 0.999 quantiles of the chi-square distribution by degrees of freedom (scipy.stats.chi2.ppf(0.999, df))
CHI2_999 = {1: 10.828, 2: 13.816, 3: 16.266, 4: 18.467}


# ---------------------------------------------------------------------------------------------- rates


@pytest.mark.parametrize("rate", [0.0, 0.2, 0.45, 0.5, 1.0])
def test_exact_sampling_changes_round_rate_times_n_of_each_class(make, rate):
    coco = make({"a": 101, "b": 40, "c": 7})
    noisy, report = inject(coco, "symmetric", rate, seed=1)
    new, clean = _labels(noisy)
    for cid, name, n in ((1, "a", 101), (2, "b", 40), (3, "c", 7)):
        want = math.floor(rate * n + 0.5)
        assert int(((clean == cid) & (new != cid)).sum()) == want
        assert report["changed"][name] == want and report["eligible"][name] == n
    assert report["n_eligible"] == 148 and report["n_changed"] == sum(report["changed"].values())
    assert report["realised_rate"] == report["n_changed"] / 148
    assert abs(report["realised_rate"] - rate) <= 3 * 0.5 / 148  # asked rate up to per-class rounding


def test_bernoulli_realised_rate_is_near_the_asked_rate_on_a_large_file(make):
    noisy, report = inject(make({"a": 20000, "b": 20000}), "symmetric", 0.3, seed=0, sampling="bernoulli")
    assert abs(report["realised_rate"] - 0.3) < 0.01  # sd is 0.0023
    new, clean = _labels(noisy)
    assert report["n_changed"] == int((new != clean).sum())
    assert report["sampling"] == "bernoulli"


def test_bernoulli_and_exact_draw_differently_but_both_deterministically(make):
    coco = make({"a": 300, "b": 300})
    b1, _ = inject(coco, "symmetric", 0.3, seed=4, sampling="bernoulli")
    b2, _ = inject(coco, "symmetric", 0.3, seed=4, sampling="bernoulli")
    e1, _ = inject(coco, "symmetric", 0.3, seed=4)
    assert b1 == b2 and b1 != e1


# ------------------------------------------------------------------------------------------ symmetric


def test_symmetric_never_keeps_the_class_and_is_uniform_over_the_others(make):
    k = 6
    coco = make({f"c{i}": 3000 for i in range(k)})
    noisy, report = inject(coco, "symmetric", 1.0, seed=0)
    new, clean = _labels(noisy)
    assert (new != clean).all() and report["realised_rate"] == 1.0
    for c in range(1, k + 1):
        targets = new[clean == c]
        observed = [(targets == t).sum() for t in range(1, k + 1) if t != c]
        assert _chi2(observed, [len(targets) / (k - 1)] * (k - 1)) < CHI2_999[k - 2]


def test_the_last_class_is_a_target_too(make):
    # the original script's randint never drew the last class
    noisy, _ = inject(make({"a": 500, "b": 500, "z": 10}), "symmetric", 1.0, seed=3)
    new, clean = _labels(noisy)
    assert (new[clean != 3] == 3).sum() > 400


def test_symmetric_needs_two_classes(make):
    with pytest.raises(NoisysegError, match="at least two target classes"):
        inject(make({"a": 10}), "symmetric", 0.5, seed=0)


# --------------------------------------------------------------------------------- determinism, fields


def test_same_seed_same_result_other_seed_other_result(make):
    coco = make({"a": 200, "b": 200, "c": 200})
    a, _ = inject(coco, "symmetric", 0.3, seed=5)
    b, _ = inject(coco, "symmetric", 0.3, seed=5)
    c, _ = inject(coco, "symmetric", 0.3, seed=6)
    assert json.dumps(a) == json.dumps(b) and a != c


def test_result_does_not_depend_on_the_order_of_the_categories_list(make):
    coco = make({"a": 200, "b": 200, "c": 200})
    shuffled = copy.deepcopy(coco)
    shuffled["categories"] = shuffled["categories"][::-1]
    a, _ = inject(coco, "symmetric", 0.4, seed=2)
    b, _ = inject(shuffled, "symmetric", 0.4, seed=2)
    assert a["annotations"] == b["annotations"]


def test_nothing_else_changes_and_the_input_is_not_modified(make):
    coco = make({"a": 50, "b": 50})
    coco["extra_top_level"] = {"x": [1, 2.5, None]}
    before = copy.deepcopy(coco)
    noisy, _ = inject(coco, "symmetric", 0.5, seed=0)
    assert coco == before
    assert list(noisy) == list(coco)  # top-level key order
    for key in coco:
        if key not in ("annotations", "info"):
            assert noisy[key] == coco[key]
    for a, b in zip(coco["annotations"], noisy["annotations"]):
        assert list(b) == list(a) + ["clean_category_id"]  # the new key is appended at the end
        assert {k: v for k, v in b.items() if k not in ("category_id", "clean_category_id")} == \
               {k: v for k, v in a.items() if k != "category_id"}
        assert b["clean_category_id"] == a["category_id"]
    assert list(noisy["info"]) == ["description", "noise"] and noisy["info"]["description"] == "synthetic"
    assert noisy["info"]["noise"]["kind"] == "symmetric"


def test_info_is_created_at_the_end_when_absent(make):
    coco = make({"a": 10, "b": 10})
    del coco["info"]
    noisy, report = inject(coco, "symmetric", 0.5, seed=0)
    assert list(noisy)[-1] == "info" and noisy["info"] == {"noise": report}


def test_unchanged_annotations_keep_their_category_id_object(make):
    coco = make({"a": 10, "b": 10})
    noisy, _ = inject(coco, "symmetric", 0.0, seed=0)
    assert [a["category_id"] for a in noisy["annotations"]] == [a["category_id"] for a in coco["annotations"]]
    assert noisy["info"]["noise"]["n_changed"] == 0


def test_in_place_gives_the_same_file_and_errors_leave_the_input_alone(make):
    coco = make({"a": 40, "b": 40, "c": 40})
    copied, _ = inject(coco, "symmetric", 0.5, seed=2)
    target = copy.deepcopy(coco)
    same, _ = inject(target, "symmetric", 0.5, seed=2, in_place=True)
    assert same is target and copied == same
    untouched = copy.deepcopy(coco)
    with pytest.raises(NoisysegError):
        inject(untouched, "pairs", 0.5, seed=2, pairs="a>zzz", in_place=True)
    assert untouched == coco


# ------------------------------------------------------------------------------------------- layering


def test_layering_keeps_the_first_clean_label_and_the_history(make):
    coco = make({"a": 100, "b": 100, "c": 100})
    once, first = inject(coco, "symmetric", 0.5, seed=0)
    twice, second = inject(once, "symmetric", 0.5, seed=1)
    new, clean = _labels(twice)
    assert (clean == np.array([a["category_id"] for a in coco["annotations"]])).all()
    assert twice["info"]["noise_history"] == [first] and twice["info"]["noise"] == second
    # the second call counts its changes against the labels it found
    before = np.array([a["category_id"] for a in once["annotations"]])
    assert second["n_changed"] == int((new != before).sum()) == 150
    thrice, _ = inject(twice, "symmetric", 0.1, seed=2)
    assert [h["seed"] for h in thrice["info"]["noise_history"]] == [0, 1]
    assert list(twice["annotations"][0]).count("clean_category_id") == 1


# ------------------------------------------------------------------------------------- eligibility


def test_crowd_annotations_are_left_alone_unless_asked(make):
    coco = make({"a": 300, "b": 300}, crowd_every=3)
    noisy, report = inject(coco, "symmetric", 1.0, seed=0)
    for a in noisy["annotations"]:
        assert (a["category_id"] == a["clean_category_id"]) == bool(a["iscrowd"])
    assert report["n_eligible"] == 400 and report["include_crowd"] is False
    noisy, report = inject(coco, "symmetric", 1.0, seed=0, include_crowd=True)
    assert report["n_eligible"] == 600
    assert all(a["category_id"] != a["clean_category_id"] for a in noisy["annotations"])


def test_background_pseudo_category_is_never_a_target(make):
    coco = make({"a": 300, "b": 300, "c": 300}, extra_categories=[{"id": 0, "name": "_background_"}])
    coco["categories"] = coco["categories"][-1:] + coco["categories"][:-1]  # real files list it first
    noisy, report = inject(coco, "symmetric", 1.0, seed=0)
    assert 0 not in {a["category_id"] for a in noisy["annotations"]}
    assert report["target_classes"] == ["a", "b", "c"] and "_background_" not in report["eligible"]


def test_unannotated_categories_are_not_targets_by_default(make):
    coco = make({"a": 100, "b": 100}, extra_categories=[{"id": 9, "name": "unused"}])
    noisy, _ = inject(coco, "symmetric", 1.0, seed=0)
    assert 9 not in {a["category_id"] for a in noisy["annotations"]}


def test_classes_option_limits_sources_and_destinations(make):
    noisy, report = inject(make({"a": 100, "b": 100, "c": 100}), "symmetric", 1.0, seed=0, classes=["a", "b"])
    new, clean = _labels(noisy)
    assert (new[clean == 3] == 3).all() and set(new[clean == 1]) == {2} and set(new[clean == 2]) == {1}
    assert report["target_classes"] == ["a", "b"] and report["n_eligible"] == 200


# ---------------------------------------------------------------------------------- pairs and matrix


def test_pairs_map_by_name_and_a_repeated_source_is_uniform(make):
    coco = make({"bus": 100, "car": 100, "cat": 100, "dog": 100})
    noisy, report = inject(coco, "pairs", 0.5, seed=0, pairs="bus>car,cat>dog,dog>cat")
    new, clean = _labels(noisy)
    assert set(new[(clean == 1) & (new != 1)]) == {2} and (new[clean == 2] == 2).all()
    assert set(new[(clean == 3) & (new != 3)]) == {4} and set(new[(clean == 4) & (new != 4)]) == {3}
    assert report["eligible"] == {"bus": 100, "cat": 100, "dog": 100} and report["n_changed"] == 150
    assert report["pairs"] == ["bus>car", "cat>dog", "dog>cat"]
    noisy, _ = inject(make({"a": 3000, "b": 10, "c": 10}), "pairs", 1.0, seed=0, pairs=[("a", "b"), ("a", "c")])
    new, clean = _labels(noisy)
    moved = new[clean == 1]
    assert _chi2([(moved == 2).sum(), (moved == 3).sum()], [1500, 1500]) < CHI2_999[1]


MATRIX = {"classes": ["bus", "car", "cat", "dog"],
          "matrix": [[0.5, 0.5, 0, 0], [0, 1, 0, 0], [0, 0.25, 0.25, 0.5], [0, 0, 0.6, 0.4]]}


def test_matrix_exact_changes_round_rate_times_off_diagonal_mass(make):
    coco = make({"bus": 100, "car": 100, "cat": 100, "dog": 100})
    noisy, report = inject(coco, "matrix", 0.4, seed=0, matrix=MATRIX)
    new, clean = _labels(noisy)
    # bus: 0.4 * 0.5 * 100 = 20, cat: 0.4 * 0.75 * 100 = 30, dog: 0.4 * 0.6 * 100 = 24
    assert report["changed"] == {"bus": 20, "cat": 30, "dog": 24}
    assert set(new[(clean == 1) & (new != 1)]) == {2} and set(new[(clean == 4) & (new != 4)]) == {3}
    assert set(new[(clean == 3) & (new != 3)]) <= {2, 4}
    assert (new[clean == 2] == 2).all()  # a row with all its mass on the diagonal never changes
    assert report["eligible"] == {"bus": 100, "cat": 100, "dog": 100}
    assert report["expected_rate"] == pytest.approx(74 / 300) and report["realised_rate"] == 74 / 300
    assert report["matrix"] == MATRIX


def test_matrix_with_rate_one_realises_the_matrix(make):
    coco = make({"bus": 8000, "car": 10, "cat": 8000, "dog": 8000})
    for sampling in ("exact", "bernoulli"):
        noisy, _ = inject(coco, "matrix", 1.0, seed=0, matrix=MATRIX, sampling=sampling)
        names, counts = realised_matrix(noisy)
        assert names == MATRIX["classes"]
        for i in (0, 2, 3):
            row = np.asarray(MATRIX["matrix"][i])
            support = row > 0
            assert (counts[i][~support] == 0).all()
            assert _chi2(counts[i][support], row[support] * 8000) < CHI2_999[int(support.sum()) - 1]


def test_matrix_classes_may_be_a_subset_of_the_file(make):
    noisy, report = inject(make({"a": 50, "b": 50, "c": 50}), "matrix", 1.0, seed=0,
                           matrix={"classes": ["a", "c"], "matrix": [[0, 1], [0, 1]]})
    new, clean = _labels(noisy)
    assert (new[clean == 1] == 3).all() and (new[clean != 1] == clean[clean != 1]).all()
    assert report["eligible"] == {"a": 50}


# ---------------------------------------------------------------------------------- realised matrix


def test_transitions_and_realised_matrix_count_every_cell(make):
    noisy, report = inject(make({"a": 10, "b": 10}), "symmetric", 0.3, seed=0)
    names, counts = realised_matrix(noisy)
    assert names == ["a", "b"] and counts.tolist() == [[7, 3], [3, 7]]
    assert report["transitions"] == {"a": {"a": 7, "b": 3}, "b": {"a": 3, "b": 7}}
    st = noise_stats(noisy)
    assert st["n"] == 20 and st["n_changed"] == 6 and st["rate"] == 0.3
    assert st["per_class"]["a"] == {"n": 10, "changed": 3, "rate": 0.3}


def test_realised_matrix_needs_clean_ids(make):
    with pytest.raises(NoisysegError, match="20 of 20 annotations have no 'clean_category_id'"):
        realised_matrix(make({"a": 10, "b": 10}))


# ------------------------------------------------------------------------------------------ bad input


@pytest.mark.parametrize("kwargs, message", [
    (dict(rate=1.5), r"rate must be a number in \[0, 1\]"),
    (dict(rate=-0.1), r"rate must be a number in \[0, 1\]"),
    (dict(rate=float("nan")), "rate must be a number"),
    (dict(rate="0.3"), "rate must be a number"),
    (dict(seed=-1), "seed must be a non-negative integer"),
    (dict(seed=None), "seed must be a non-negative integer"),
    (dict(kind="asymmetric", preset="cityscapes"), "preset 'cityscapes': classes 'bicycle', 'bus', .*, 'truck' are not a category"),
    (dict(kind="asymmetric", preset="nope"), "unknown preset 'nope'"),
    (dict(kind="asymmetric"), "needs a preset"),
    (dict(preset="voc"), "a preset only applies to kind 'asymmetric'"),
    (dict(kind="pairs"), "needs pairs"),
    (dict(kind="pairs", pairs="a>zebra"), "class 'zebra' is not a category"),
    (dict(kind="pairs", pairs="a-b"), "not of the form source>target"),
    (dict(kind="pairs", pairs="a>a"), "two different class names"),
    (dict(kind="pairs", pairs="a>b,a>b"), "given twice"),
    (dict(kind="matrix"), "needs a matrix"),
    (dict(kind="matrix", matrix={"classes": ["a", "b"], "matrix": [[1, 0]]}), "must be 2 x 2"),
    (dict(kind="matrix", matrix={"classes": ["a", "b"], "matrix": [[1, 0, 0], [0, 1, 0]]}), "must be 2 x 2"),
    (dict(kind="matrix", matrix={"classes": ["a", "b"], "matrix": [[0.5, 0.4], [0, 1]]}),
     r"row 0 \(a\) sums to 0.9, not 1"),
    (dict(kind="matrix", matrix={"classes": ["a", "b"], "matrix": [[0.5, "0.5"], [0, 1]]}),
     r"entry \[0\]\[1\] is '0.5'"),
    (dict(kind="matrix", matrix={"classes": ["a", "b"], "matrix": [[1.5, -0.5], [0, 1]]}), "finite number >= 0"),
    (dict(kind="matrix", matrix={"classes": ["a", "x"], "matrix": [[1, 0], [0, 1]]}), "class 'x' is not a category"),
    (dict(kind="matrix", matrix={"matrix": [[1]]}), "expected a JSON object"),
    (dict(classes=["a", "q"]), "class 'q' is not a category"),
    (dict(classes=[]), "no class given"),
    (dict(kind="weird"), "unknown noise kind"),
    (dict(sampling="poisson"), "sampling must be one of exact, bernoulli"),
])
def test_bad_options_are_one_line_errors(make, kwargs, message):
    kwargs = {"kind": "symmetric", "rate": 0.1, "seed": 0, **kwargs}
    with pytest.raises(NoisysegError, match=message) as e:
        inject(make({"a": 5, "b": 5}), **kwargs)
    assert "\n" not in str(e.value)


def _bad(coco, key, value):
    coco = copy.deepcopy(coco)
    if value is _bad:
        del coco[key]
    else:
        coco[key] = value
    return coco


@pytest.mark.parametrize("edit, message", [
    (lambda c: [1, 2], "expected a COCO JSON object"),
    (lambda c: _bad(c, "annotations", _bad), "missing 'annotations'"),
    (lambda c: _bad(c, "categories", _bad), "missing 'categories'"),
    (lambda c: _bad(c, "annotations", {}), "'annotations' must be a list"),
    (lambda c: _bad(c, "info", "hello"), "'info' must be an object"),
    (lambda c: _bad(c, "categories", [{"id": 1}]), r"categories\[0\] needs an 'id' and a 'name'"),
    (lambda c: _bad(c, "categories", [{"id": "1", "name": "a"}]), r"categories\[0\] has id '1'"),
    (lambda c: _bad(c, "categories", [{"id": 1, "name": "a"}, {"id": 1, "name": "b"}]), "repeats category id 1"),
    (lambda c: _bad(c, "annotations", [{"id": 1, "category_id": 1}, {"id": 2, "category_id": 42}]),
     r"annotations\[1\] \(id 2\) has category_id 42, not a listed category"),
    (lambda c: _bad(c, "annotations", [{"id": 1, "category_id": 1}, {"id": 2, "category_id": "b"}]),
     r"annotations\[1\] \(id 2\) has category_id 'b', not a listed category"),
    (lambda c: _bad(c, "annotations", [{"id": 1, "category_id": 1}, {"id": 2}]), r"annotations\[1\] has no 'category_id'"),
    (lambda c: _bad(c, "annotations", [{"id": 1, "category_id": 1}, 7]), r"annotations\[1\] has no 'category_id'"),
])
def test_malformed_files_are_one_line_errors(make, edit, message):
    with pytest.raises(NoisysegError, match=message) as e:
        inject(edit(make({"a": 3, "b": 3})), "symmetric", 0.1, 0)
    assert "\n" not in str(e.value)


def test_a_repeated_class_name_is_an_error_only_when_it_is_used(make):
    coco = make({"a": 5, "b": 5}, extra_categories=[{"id": 7, "name": "a"}])
    inject(coco, "symmetric", 0.5, seed=0)  # names are not needed here
    with pytest.raises(NoisysegError, match="class 'a' names 2 categories"):
        inject(coco, "pairs", 0.5, seed=0, pairs="a>b")
