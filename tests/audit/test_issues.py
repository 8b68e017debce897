"""Flagging with cleanlab, the ranking, and the audit's figures against direct computations."""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import numpy as np
import pytest

from noisyseg.audit.issues import (
    auroc, average_precision, expected_wrong_labels, plurality_classes, find_issues, issue_rows, precision_at_recall, summary_data, summary_markdown,
    truth_metrics,
)
from noisyseg.audit.score import AnnotationScores
from noisyseg.data.coco import LabelMap
from noisyseg.errors import NoisysegError


def _scores(n: int = 60, k: int = 4, seed: int = 0, with_truth: bool = True) -> AnnotationScores:
    """Synthetic probabilities: 30% wrong labels; the model mostly believes the clean class."""
    rng = np.random.default_rng(seed)
    clean = rng.integers(0, k, n)
    wrong = rng.random(n) < 0.3
    given = np.where(wrong, (clean + rng.integers(1, k, n)) % k, clean)
    logits = rng.normal(0, 1, (n, k))
    logits[np.arange(n), clean] += 2.5
    probs = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    lm = LabelMap(tuple(range(10, 10 + 3 * k, 3)), tuple(f"c{i}" for i in range(k)))
    return AnnotationScores(np.arange(100, 100 + n), np.arange(n) // 3, given, clean if with_truth else None,
                            probs, rng.random(n), lm, [Path("m.pt")], Path("."), 1.0)


def _brute_auroc(score, positive):
    pos, neg = score[positive], score[~positive]
    wins = sum(1.0 if p > q else 0.5 if p == q else 0.0 for p, q in itertools.product(pos, neg))
    return wins / (len(pos) * len(neg))


def _brute_ap(score, positive):
    """Precision at each distinct threshold times the recall it adds, by direct counting."""
    total, prev_recall = 0.0, 0.0
    for t in sorted(set(score), reverse=True):
        sel = score >= t
        recall = (sel & positive).sum() / positive.sum()
        total += (recall - prev_recall) * (sel & positive).sum() / sel.sum()
        prev_recall = recall
    return total


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_auroc_and_ap_equal_direct_computations(seed):
    rng = np.random.default_rng(seed)
    score = np.round(rng.random(80), 1)  # many ties
    positive = rng.random(80) < 0.35
    assert auroc(score, positive) == pytest.approx(_brute_auroc(score, positive), abs=1e-12)
    assert average_precision(score, positive) == pytest.approx(_brute_ap(score, positive), abs=1e-12)
    sklearn = pytest.importorskip("sklearn.metrics")
    assert auroc(score, positive) == pytest.approx(sklearn.roc_auc_score(positive, score), abs=1e-12)
    assert average_precision(score, positive) == pytest.approx(
        sklearn.average_precision_score(positive, score), abs=1e-12)
    p, r, _ = sklearn.precision_recall_curve(positive, score)
    assert precision_at_recall(score, positive, 0.8) == pytest.approx(p[r >= 0.8].max(), abs=1e-12)


def test_auroc_edge_cases():
    assert auroc(np.array([0.1, 0.9]), np.array([False, True])) == 1.0
    assert auroc(np.array([0.9, 0.1]), np.array([False, True])) == 0.0
    assert np.isnan(auroc(np.array([0.1, 0.2]), np.array([True, True])))
    assert np.isnan(average_precision(np.array([0.1, 0.2]), np.array([False, False])))


def test_flags_are_cleanlabs_and_ranks_follow_label_quality():
    from cleanlab.filter import find_label_issues

    s = _scores()
    issues = find_issues(s)
    expected = find_label_issues(s.given_labels, s.pred_probs, n_jobs=1)
    np.testing.assert_array_equal(issues.is_issue, expected)
    np.testing.assert_allclose(issues.label_quality, s.pred_probs[np.arange(60), s.given_labels])
    assert sorted(issues.rank.tolist()) == list(range(1, 61))
    in_rank_order = issues.label_quality[issues.order]
    assert np.all(np.diff(in_rank_order) >= 0)
    np.testing.assert_array_equal(issues.suggested_labels, s.pred_probs.argmax(1))
    np.testing.assert_allclose(issues.suggested_prob, s.pred_probs.max(1), rtol=1e-6)
    other = find_issues(s, "predicted_neq_given")
    np.testing.assert_array_equal(other.is_issue, s.pred_probs.argmax(1) != s.given_labels)


def test_truth_metrics_equal_direct_counts():
    s = _scores(n=90, seed=3)
    issues = find_issues(s)
    m = truth_metrics(issues)
    wrong = s.given_labels != s.clean_labels
    flagged = issues.is_issue
    assert m["n_wrong"] == wrong.sum() and m["n_flagged"] == flagged.sum()
    assert m["flagged_precision"] == pytest.approx((wrong & flagged).sum() / flagged.sum())
    assert m["flagged_recall"] == pytest.approx((wrong & flagged).sum() / wrong.sum())
    assert m["auroc"] == pytest.approx(_brute_auroc(1 - issues.label_quality, wrong))
    assert m["average_precision"] == pytest.approx(_brute_ap(1 - issues.label_quality, wrong))
    right = s.pred_probs.argmax(1) == s.clean_labels
    assert m["suggestion_accuracy_wrong"] == pytest.approx(right[wrong].mean())
    assert m["suggestion_accuracy_flagged_wrong"] == pytest.approx(right[wrong & flagged].mean())
    relabelled = np.where(flagged, s.pred_probs.argmax(1), s.given_labels)
    assert m["label_accuracy_relabelled"] == pytest.approx((relabelled == s.clean_labels).mean())
    # precision at recall 0.8 by walking down the ranking
    order = np.argsort(issues.label_quality, kind="stable")
    hits = np.cumsum(wrong[order])
    reach = np.flatnonzero(hits >= 0.8 * wrong.sum())
    best = max(hits[k] / (k + 1) for k in reach)
    assert m["precision_at_recall_0.8"] == pytest.approx(best)
    assert truth_metrics(find_issues(_scores(with_truth=False))) is None


def test_rows_and_summary_agree_with_the_arrays():
    s = _scores()
    issues = find_issues(s)
    rows = issue_rows(issues)
    assert [r["rank"] for r in rows] == list(range(1, 61))
    first = int(issues.order[0])
    assert rows[0]["annotation_id"] == 100 + first
    assert rows[0]["given_category_id"] == s.label_map.category_ids[s.given_labels[first]]
    assert rows[0]["is_wrong"] == int(s.given_labels[first] != s.clean_labels[first])
    summary = summary_data(issues)
    confusion = np.asarray(summary["flagged_confusion"])
    assert confusion.sum() == issues.is_issue.sum()
    assert [c["given"] for c in summary["per_class"]] == np.bincount(s.given_labels, minlength=4).tolist()
    joint = np.asarray(summary["confident_joint"])
    np.testing.assert_allclose(joint.sum(1), np.bincount(s.given_labels, minlength=4), atol=0.01)
    text = summary_markdown(summary)
    assert f"{summary['n_flagged']} of 60 annotations flagged" in text
    assert f"| AUROC of 1 - label_quality | {summary['truth']['auroc']:.3f} |" in text


def test_summary_counts_right_labels_flagged_per_class():
    """Per class: right labels (clean == given) flagged out of all right ones, next to the wrong ones found."""
    scores = _scores(n=90, k=4, seed=3)
    issues = find_issues(scores, "predicted_neq_given")
    summary = summary_data(issues)
    given, clean, flagged = scores.given_labels, scores.clean_labels, issues.is_issue
    assert flagged.any() and (flagged & (given == clean)).any()  # the case worth reporting occurs
    for c, entry in enumerate(summary["per_class"]):
        right = [i for i in range(90) if given[i] == c and clean[i] == c]
        wrong = [i for i in range(90) if given[i] == c and clean[i] != c]
        assert entry["right"] == len(right) and entry["wrong"] == len(wrong)
        assert entry["right_flagged"] == sum(bool(flagged[i]) for i in right)
        assert entry["wrong_flagged"] == sum(bool(flagged[i]) for i in wrong)
        assert entry["right"] + entry["wrong"] == entry["given"]
    md = summary_markdown(summary)
    assert "| class | given | flagged | flagged % | right labels flagged | wrong labels flagged |" in md
    for entry in summary["per_class"]:
        r, rf = entry["right"], entry["right_flagged"]
        assert f"| {rf} of {r} ({rf / r:.0%}) |" in md
    line = next(x for x in md.splitlines() if x.startswith("Highest share of right labels flagged: "))
    first = line.split(": ", 1)[1].split(" ")[0]
    share = {e["name"]: e["right_flagged"] / e["right"] for e in summary["per_class"]}
    assert share[first] == max(share.values()) > 0

    no_truth = summary_data(find_issues(_scores(n=90, k=4, seed=3, with_truth=False), "predicted_neq_given"))
    assert "right" not in no_truth["per_class"][0]
    assert "right labels flagged" not in summary_markdown(no_truth)


def test_the_estimated_noise_matrix_is_the_confident_joint_by_true_class_and_a_valid_matrix_file(tmp_path):
    """noise_matrix.json: row c = how annotations whose estimated true class is c are labelled; it is what
    the forward loss reads as loss.params.transition=FILE, reordered to the training data's classes."""
    from noisyseg.audit.issues import estimated_noise_matrix
    from noisyseg.losses.transition import transition_matrix
    from noisyseg.noise.inject import check_matrix

    s = _scores(n=90, k=4, seed=5)
    issues = find_issues(s)
    joint = np.asarray(summary_data(issues)["confident_joint"])  # row given, column true, rounded to 0.001
    spec = estimated_noise_matrix(s)
    names, matrix = check_matrix(spec)  # rows sum to 1 within 1e-6
    assert names == list(s.label_map.names)
    for c in range(4):
        np.testing.assert_allclose(matrix[c], joint[:, c] / joint[:, c].sum(), atol=1e-3)
    path = tmp_path / "noise_matrix.json"
    path.write_text(json.dumps(spec))
    reordered = list(reversed(names))
    got = transition_matrix(str(path), tmp_path / "train.json", reordered)
    np.testing.assert_allclose(got, matrix[::-1, ::-1])


def test_the_uniform_estimate_is_one_rate_from_the_confident_joint_spread_evenly():
    """--transition uniform: eps = the calibrated confident joint's off-diagonal share (cleanlab's joint,
    computed here directly), 1 - eps on the diagonal and eps / (K - 1) everywhere else; with synthetic 30%
    wrong labels the rate comes out near 0.3, and the noise posterior flags by that matrix."""
    from cleanlab.count import compute_confident_joint

    from noisyseg.audit.issues import uniform_noise_matrix

    s = _scores(n=300, k=4, seed=11)
    joint = np.asarray(compute_confident_joint(s.given_labels, s.pred_probs, calibrate=True), dtype=np.float64)
    want_eps = 1.0 - np.trace(joint) / joint.sum()
    matrix, eps = uniform_noise_matrix(s)
    assert eps == pytest.approx(want_eps, abs=1e-12)
    assert abs(eps - np.mean(s.given_labels != s.clean_labels)) < 0.1
    for c in range(4):
        for j in range(4):
            assert matrix[c, j] == pytest.approx(1.0 - want_eps if c == j else want_eps / 3, abs=1e-12)
    issues = find_issues(s, "noise_posterior", matrix)
    w = s.pred_probs * matrix[:, s.given_labels].T  # r[c] ~ p[c] T[c, given]
    r = w[np.arange(300), s.given_labels] / w.sum(axis=1)
    np.testing.assert_array_equal(issues.is_issue, r < 0.5)


def test_noise_posterior_flags_by_the_label_s_posterior_under_the_noise_matrix():
    """label_quality = r[given], r[c] ~ p[c] T[c, given], computed here by hand; flagged below 0.5; the
    suggestion is r's top class, for a flagged label its top class other than the label. Under a known
    symmetric T a label survives a model that doubts it as long as T's likelihood ratio outweighs the
    doubt; cleanlab's rules see only p."""
    s = _scores(n=50, k=4, seed=7)
    t = np.full((4, 4), 0.1)
    np.fill_diagonal(t, 0.7)
    issues = find_issues(s, "noise_posterior", t)
    for i in range(50):
        w = [s.pred_probs[i, c] * t[c, s.given_labels[i]] for c in range(4)]
        r = [v / sum(w) for v in w]
        assert issues.label_quality[i] == pytest.approx(r[s.given_labels[i]], rel=1e-6)
        assert issues.is_issue[i] == (r[s.given_labels[i]] < 0.5)
        others = [v if c != s.given_labels[i] else -1.0 for c, v in enumerate(r)]
        assert issues.suggested_labels[i] == int(np.argmax(others if issues.is_issue[i] else r))
        # the suggestion's probability on the label quality's scale: r, not the model's p
        assert issues.suggested_prob[i] == pytest.approx(r[issues.suggested_labels[i]], rel=1e-6)
    rows = {row["annotation_id"]: row for row in issue_rows(issues)}
    for i in range(50):
        row = rows[s.annotation_ids[i].item()]
        assert row["suggested_prob"] == round(float(issues.suggested_prob[i]), 6)
    assert not np.allclose(issues.suggested_prob, s.pred_probs[np.arange(50), issues.suggested_labels])
    assert sorted(issues.rank.tolist()) == list(range(1, 51))
    assert issues.label_quality[issues.order].tolist() == sorted(issues.label_quality.tolist())
    assert "noise_posterior" in issues.rule and issues.is_issue.any() and not issues.is_issue.all()
    # a flagged label that is still r's single top class (r = 0.48 / 0.27 / 0.25 / 0): suggested the next one
    s.pred_probs[0] = [0.04, 0.5, 0.46, 0.0]
    s.given_labels[0] = 0
    t_sym = np.full((4, 4), 0.04)
    np.fill_diagonal(t_sym, 0.88)
    one = find_issues(s, "noise_posterior", t_sym)
    r0 = s.pred_probs[0] * t_sym[:, 0] / (s.pred_probs[0] * t_sym[:, 0]).sum()
    assert r0.argmax() == 0 and r0[0] < 0.5 and one.is_issue[0] and one.suggested_labels[0] == 1
    with pytest.raises(NoisysegError, match="needs a noise matrix"):
        find_issues(s, "noise_posterior")
    with pytest.raises(NoisysegError, match="needs a noise matrix"):
        find_issues(s, "prune_by_noise_rate", t)


def test_noise_budget_flags_in_each_class_as_many_labels_as_the_matrix_says_are_wrong():
    """3 classes, true counts m = (40, 20, 10), T with 20% / 40% / 50% off its diagonal: the label counts are
    n = T^T m, so class k's labels hold m[k] T[k, k] right ones and n[k] - m[k] T[k, k] wrong ones (worked
    out here by hand); the rule flags exactly that many in each class, those of lowest r[given], and scores
    and suggests as noise_posterior does."""
    t = np.array([[0.8, 0.1, 0.1], [0.2, 0.6, 0.2], [0.25, 0.25, 0.5]])
    m = np.array([40.0, 20.0, 10.0])
    n = m @ t  # 38.5, 18.5, 13: not whole, so the label counts below round them
    labels = np.repeat(np.arange(3), [38, 19, 13])
    true_counts = np.linalg.solve(t.T, np.array([38.0, 19.0, 13.0]))
    wrong = np.array([38.0, 19.0, 13.0]) - true_counts * np.diag(t)
    assert n.tolist() == pytest.approx([38.5, 18.5, 13.0])
    assert expected_wrong_labels(labels, t).tolist() == pytest.approx(wrong.tolist())
    assert wrong.tolist() == pytest.approx([38 - 0.8 * true_counts[0], 19 - 0.6 * true_counts[1],
                                            13 - 0.5 * true_counts[2]])
    rng = np.random.default_rng(3)
    probs = rng.dirichlet(np.ones(3), size=len(labels))
    lm = LabelMap((1, 2, 3), ("a", "b", "c"))
    s = AnnotationScores(np.arange(len(labels)), np.arange(len(labels)), labels, None, probs, rng.random(len(labels)),
                         lm, [Path("m.pt")], Path("."), 1.0)
    budget = find_issues(s, "noise_budget", t)
    posterior = find_issues(s, "noise_posterior", t)
    np.testing.assert_array_equal(budget.label_quality, posterior.label_quality)
    for c in range(3):
        mine = labels == c
        flagged = budget.is_issue[mine]
        assert flagged.sum() == round(wrong[c])
        # every flagged label of the class scores at most every kept one
        assert budget.label_quality[mine][flagged].max() <= budget.label_quality[mine][~flagged].min()
    for i in range(len(labels)):  # the suggestion follows the flag, as for noise_posterior
        r = probs[i] * t[:, labels[i]] / (probs[i] * t[:, labels[i]]).sum()
        others = [v if c != labels[i] else -1.0 for c, v in enumerate(r)]
        assert budget.suggested_labels[i] == int(np.argmax(others if budget.is_issue[i] else r))
    assert "noise_budget" in budget.rule
    with pytest.raises(NoisysegError, match="needs a noise matrix"):
        find_issues(s, "noise_budget")
    # no noise: nothing is wrong, nothing flagged
    assert not find_issues(s, "noise_budget", np.eye(3)).is_issue.any()


def test_noise_budget_learned_keeps_the_count_in_learned_classes_and_the_posterior_rule_in_the_others():
    """Class c's labels get a mean p[c] below 1/K = 1/3 (the model has not learned it): there the flag is
    r[given] < 0.5 as under noise_posterior; in the two learned classes the flags are noise_budget's."""
    t = np.array([[0.8, 0.1, 0.1], [0.2, 0.6, 0.2], [0.25, 0.25, 0.5]])
    labels = np.repeat(np.arange(3), [38, 19, 13])
    rng = np.random.default_rng(5)
    probs = rng.dirichlet([4.0, 1.0, 1.0], size=len(labels))  # the model leans to class 0 everywhere
    probs[labels == 1] = rng.dirichlet([1.0, 4.0, 1.0], size=19)  # and knows class 1's images
    probs[labels == 2] = rng.dirichlet([12.0, 1.0, 1.0], size=13)  # but not class 2's: r doubts every one
    lm = LabelMap((1, 2, 3), ("a", "b", "c"))
    s = AnnotationScores(np.arange(len(labels)), np.arange(len(labels)), labels, None, probs, rng.random(len(labels)),
                         lm, [Path("m.pt")], Path("."), 1.0)
    means = [probs[labels == c, c].mean() for c in range(3)]
    assert means[0] >= 1 / 3 and means[1] >= 1 / 3 and means[2] < 1 / 3
    learned = find_issues(s, "noise_budget_learned", t)
    budget = find_issues(s, "noise_budget", t)
    posterior = find_issues(s, "noise_posterior", t)
    np.testing.assert_array_equal(learned.is_issue[labels < 2], budget.is_issue[labels < 2])
    np.testing.assert_array_equal(learned.is_issue[labels == 2], posterior.is_issue[labels == 2])
    assert budget.is_issue[labels == 2].sum() != posterior.is_issue[labels == 2].sum()  # the two rules differ there
    np.testing.assert_array_equal(learned.label_quality, posterior.label_quality)
    assert "noise_budget_learned" in learned.rule
    assert learned.spared_classes == ["c"] and budget.spared_classes == []
    summary = summary_data(learned)
    assert summary["spared_classes"] == ["c"] and "spared_classes" not in summary_data(budget)
    assert ("- classes spared from the count, flagged by r[given] < 0.5: c"
            in summary_markdown({**summary, "data": "d.json"}).splitlines())
    # trusted: every class's own objects are its labels' largest source under t (m solves t^T m = n), so it
    # spares the unlearned class alone, and flags nothing there; the same ranking and suggestions
    trusted = find_issues(s, "noise_budget_trusted", t)
    np.testing.assert_array_equal(trusted.is_issue[labels < 2], budget.is_issue[labels < 2])
    assert not trusted.is_issue[labels == 2].any() and posterior.is_issue[labels == 2].any()
    np.testing.assert_array_equal(trusted.label_quality, posterior.label_quality)
    # unflagged there, so each suggestion is r's top class (r[c] ~ p[c] T[c, 2])
    np.testing.assert_array_equal(trusted.suggested_labels[labels == 2], np.argmax(probs[labels == 2] * t[:, 2], axis=1))
    assert trusted.spared_classes == ["c"] and trusted.rule.startswith("noise_budget_trusted: ")
    assert ("- classes spared from the count, not flagged: c"
            in summary_markdown({**summary_data(trusted), "data": "d.json"}).splitlines())


def test_plurality_classes_against_the_sources_of_each_label():
    """Class 2's labels: 10 of its own objects, 30 of class 0's (t[0, 2] = 0.3 of 100): not its own largest
    source. Class 1's: 40 own against 20 from class 0."""
    t = np.array([[0.5, 0.2, 0.3], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]])
    true = np.array([100, 40, 10])
    given = np.repeat(np.arange(3), np.round(true @ t).astype(int))  # label counts n = t^T m: 50, 60, 40
    assert np.bincount(given).tolist() == [50, 60, 40]
    assert plurality_classes(given, t).tolist() == [True, True, False]
    assert plurality_classes(given, np.eye(3)).all()  # no noise: every label is its own class's
    # spared by trusted though learned: a class 2 the model knows well is still left alone
    rng = np.random.default_rng(0)
    probs = np.eye(3)[given] * 0.8 + 0.1
    probs /= probs.sum(axis=1, keepdims=True)
    s = AnnotationScores(np.arange(len(given)), np.arange(len(given)), given, None, probs, rng.random(len(given)),
                         LabelMap((1, 2, 3), ("a", "b", "c")), [Path("m.pt")], Path("."), 1.0)
    trusted = find_issues(s, "noise_budget_trusted", t)
    assert trusted.spared_classes == ["c"] and not trusted.is_issue[given == 2].any()
    np.testing.assert_array_equal(trusted.is_issue[given < 2], find_issues(s, "noise_budget", t).is_issue[given < 2])
    assert find_issues(s, "noise_budget_learned", t).spared_classes == []
