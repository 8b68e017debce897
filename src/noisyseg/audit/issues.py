"""From per-annotation probabilities to flagged label issues, the issue table and the summary.

The flagging rule is cleanlab's :func:`cleanlab.filter.find_label_issues` on the (N, K) foreground
probabilities and the given labels 0..K-1; the label quality is cleanlab's self-confidence, the
probability of the given class (low = likely wrong). When the file records ``clean_category_id`` (a file
made by ``noisyseg noise``), :func:`truth_metrics` scores the audit against the truth.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, BinaryIO

import numpy as np

from noisyseg.audit import (FILTERS, NOISE_BUDGET, NOISE_BUDGET_LEARNED, NOISE_BUDGET_TRUSTED, NOISE_MATRIX_FILTERS,
                            NOISE_POSTERIOR, SPARING_FILTERS)
from noisyseg.audit.score import AnnotationScores
from noisyseg.errors import NoisysegError

COLUMNS = ("rank", "annotation_id", "image_id", "given_category_id", "given_name", "suggested_category_id",
           "suggested_name", "label_quality", "suggested_prob", "background_prob", "is_issue")
TRUTH_COLUMNS = ("clean_category_id", "clean_name", "is_wrong")


@dataclass
class LabelIssues:
    """The audit's verdict on N annotations (arrays in the file order of :class:`AnnotationScores`).

    Attributes:
        scores: the probabilities the verdict came from.
        label_quality: (N,) float64 in [0, 1], ``pred_probs[i, given_labels[i]]`` (cleanlab's
            self-confidence), or with a noise matrix rule (``noise_posterior``, ``noise_budget``,
            ``noise_budget_learned``) the posterior that the label is right; low = likely mislabeled.
        suggested_labels: (N,) int64 in 0..K-1, the most probable (true) class.
        is_issue: (N,) bool, flagged by cleanlab's ``find_label_issues`` (by ``label_quality < 0.5`` with
            ``noise_posterior``; with ``noise_budget`` the lowest ``label_quality`` of each class, as many as
            :func:`expected_wrong_labels`; with ``noise_budget_learned`` that in the learned classes).
        rank: (N,) int64, a permutation of 1..N: 1 = lowest label quality (ties in file order).
        filter_by: the cleanlab ``filter_by`` rule used.
        notes: warnings cleanlab gave (e.g. classes too small to flag in).
        suggested_prob: (N,) float64, the probability of the suggestion under the distribution it was
            chosen from: the model's ``pred_probs``, or with a noise matrix rule the posterior r (so
            ``label_quality`` and ``suggested_prob`` are read on one scale). Taken from ``pred_probs``
            when not given.
        spared_classes: with ``noise_budget_learned`` or ``noise_budget_trusted``, the names of the classes
            where no count is used (flagged by ``r[given] < 0.5``, or not at all); empty with the other rules.
    """

    scores: AnnotationScores
    label_quality: np.ndarray
    suggested_labels: np.ndarray
    is_issue: np.ndarray
    rank: np.ndarray
    filter_by: str
    notes: list[str] = field(default_factory=list)
    suggested_prob: np.ndarray | None = None
    spared_classes: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        if self.suggested_prob is None:
            n = len(self.suggested_labels)
            self.suggested_prob = self.scores.pred_probs[np.arange(n), self.suggested_labels].astype(np.float64)

    @property
    def order(self) -> np.ndarray:
        """(N,) row indices, most suspicious first (``rank[order] == 1..N``)."""
        return np.argsort(self.rank, kind="stable")

    @property
    def rule(self) -> str:
        probabilities = "the RoI box head's class probabilities of each ground-truth box, renormalised without background"
        if self.filter_by == NOISE_POSTERIOR:
            return (f"noise_posterior: flagged when r[given] < 0.5, r[c] ~ p[c] T[c, given], p {probabilities}, "
                    "T the noise matrix")
        if self.filter_by == NOISE_BUDGET:
            return ("noise_budget: in each class, the labels of lowest r[given] flagged, as many as the noise matrix T "
                    "and the class counts say are wrong, r[c] ~ p[c] T[c, given], p " + probabilities)
        if self.filter_by == NOISE_BUDGET_LEARNED:
            return ("noise_budget_learned: noise_budget's per-class count in the classes whose labels get a mean p "
                    "of at least 1/K, r[given] < 0.5 in the others, r[c] ~ p[c] T[c, given], p " + probabilities)
        if self.filter_by == NOISE_BUDGET_TRUSTED:
            return ("noise_budget_trusted: noise_budget's per-class count in the classes whose labels get a mean p "
                    "of at least 1/K and whose own objects are their labels' largest source under T, no flag in "
                    "the others, r[c] ~ p[c] T[c, given], p " + probabilities)
        return f"cleanlab.filter.find_label_issues(filter_by={self.filter_by!r}) on {probabilities}"


def find_issues(scores: AnnotationScores, filter_by: str = "prune_by_noise_rate",
                noise_matrix: np.ndarray | None = None) -> LabelIssues:
    """Flag the likely wrong labels of ``scores`` and rank every annotation.

    cleanlab's rules flag by the model's probabilities alone. ``noise_posterior`` also uses a noise matrix
    T (``noise_matrix``, (K, K) in the label map's order, T[c, j] = P(given j | true c)): an annotation's
    label quality is the posterior that its label is right given its image and its label,
    ``r[given]`` with ``r[c] ~ p[c] T[c, given]`` (:func:`noisyseg.losses.transition.true_class_posterior`),
    it is flagged when that is below 0.5. A rare class's right label then needs far more evidence to be
    flagged than a frequent class's wrong label (measured on long-tailed Fashion scenes: 9 of 710 right
    labels flagged instead of cleanlab's 83). The suggestion is r's top class, and for a flagged label r's
    top class *other than the label*: T's diagonal outweighs each off-diagonal entry (0.6 against 0.044 at
    40% symmetric noise on 10 classes), so a label can be more likely wrong than right and still be r's
    single most probable class; suggesting it back would make a relabel a no-op (measured on the bench's
    CE run, sym 0.4 seed 0: 69% of the flagged labels, and the suggestion right for 27% of the flagged
    wrong ones instead of 74%).

    ``noise_budget`` ranks by the same r[given] and suggests the same way, but flags per class: in class k,
    the round(w_k) labels of lowest r[given], w_k the number of class-k labels T says are wrong
    (:func:`expected_wrong_labels`). It flags as many as the noise made, where ``noise_posterior`` flags only
    the labels the model is sure of (measured on the long-tailed bench at sym 0.4, CE model:
    ``benchmarks/prototype_audit.py``: 86% of the wrong labels found against 46%, 91% of the right ones kept
    against 99%; but in a class the model cannot separate, Shirt, 23% of its right labels kept).
    ``noise_budget_learned`` keeps that count only in the classes the model has learned, whose labels get a
    mean p[given] of at least 1/K (:func:`noisyseg.losses.transition.unlearned_classes`, as ``lncis``'s
    ``learned_at: 1``), and flags by ``r[given] < 0.5`` in the others: where the model cannot tell a class's
    right labels from its wrong ones, a count would take the right ones with the rest.
    ``noise_budget_trusted`` flags nothing in a class where the count cannot be trusted, leaving its labels
    as plain training would use them (at high noise the 0.5 line flags nearly every label, right ones
    included: on the CE models of the long-tailed bench at sym 0.8, 3 seeds, ``noise_posterior`` flags 664 of
    the 711 right labels, ``benchmarks/audit_rules_lt.py``). It trusts the count in class k when the model
    has learned k (as above) and k's own objects are the largest source of the label k under T and the
    counts: ``m_k T[k, k] >= m_c T[c, k]`` for every c (:func:`plurality_classes`). The ranking is by a model
    trained on those labels; where more of them come from one other class than from k (asymmetric noise,
    seed 0: 127 of Shirt's labels are on T-shirts, 13 on shirts), that model learns the other class's look
    for k, and its lowest-ranked labels of k are k's own objects (measured at asym 0.4: the count flags 31
    of Shirt's 39 right labels). What sparing costs: the wrong labels it keeps in k are the other class's
    objects, so that class loses instead (asym 0.4, seed 0: Shirt +0.3, but T-shirt/top +1.6 where
    ``noise_budget_learned`` gave +8.3).
    """
    if filter_by not in FILTERS:
        raise NoisysegError(f"filter_by must be one of {', '.join(FILTERS)}, got {filter_by!r}")
    if (filter_by in NOISE_MATRIX_FILTERS) != (noise_matrix is not None):
        raise NoisysegError(f"filter_by {' or '.join(NOISE_MATRIX_FILTERS)} needs a noise matrix (--transition), and "
                            "only they use one")
    labels, probs = scores.given_labels, scores.pred_probs
    n = len(labels)
    if n == 0:
        empty = np.zeros(0, dtype=np.int64)
        return LabelIssues(scores, np.zeros(0), empty, np.zeros(0, dtype=bool), empty, filter_by)
    notes: list[str] = []
    fallback: list[str] = []
    if filter_by in NOISE_MATRIX_FILTERS:
        from noisyseg.losses.transition import true_class_posterior

        posterior = true_class_posterior(probs, labels, noise_matrix).astype(np.float64)
        quality = posterior[np.arange(n), labels]
        is_issue = quality < 0.5 if filter_by == NOISE_POSTERIOR else budget_flags(quality, labels, noise_matrix)
        if filter_by in SPARING_FILTERS:
            from noisyseg.losses.transition import unlearned_classes

            spared = unlearned_classes(probs, labels, 1.0)[1]
            if filter_by == NOISE_BUDGET_LEARNED:
                there = quality < 0.5
            else:
                spared = spared | ~plurality_classes(labels, noise_matrix)
                there = np.zeros(n, dtype=bool)
            is_issue = np.where(spared[labels], there, is_issue)
            fallback = [scores.label_map.names[c] for c in np.flatnonzero(spared)]
        others = posterior.copy()
        others[np.arange(n), labels] = -1.0
        suggested = np.where(is_issue, others.argmax(axis=1), posterior.argmax(axis=1))
        suggested_prob = posterior[np.arange(n), suggested]
    else:
        from cleanlab.filter import find_label_issues
        from cleanlab.rank import get_label_quality_scores

        quality = np.clip(get_label_quality_scores(labels, probs, method="self_confidence"), 0.0, 1.0)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            is_issue = np.asarray(find_label_issues(labels, probs, filter_by=filter_by, n_jobs=1), dtype=bool)
        notes = sorted({str(w.message) for w in caught})
        suggested = probs.argmax(axis=1)
        suggested_prob = None
    order = np.argsort(quality, kind="stable")
    rank = np.empty(n, dtype=np.int64)
    rank[order] = np.arange(1, n + 1)
    return LabelIssues(scores, quality, suggested.astype(np.int64), is_issue, rank, filter_by, notes,
                       suggested_prob, fallback)


def expected_wrong_labels(labels: np.ndarray, noise_matrix: np.ndarray) -> np.ndarray:
    """(K,) float: how many of the labels of each class are wrong under the noise matrix T (K, K).

    The true-class counts m solve ``T^T m = n`` (n the label counts; least squares, clipped at 0): the labels
    of class k then hold ``m[k] T[k, k]`` right ones, and the rest, ``n[k] - m[k] T[k, k]`` (clipped to
    [0, n[k]]), are wrong. With the file's own realised matrix (``--transition data``) these are exactly the
    counts the noise made.
    """
    counts, true_counts = _label_and_true_counts(labels, noise_matrix)
    return np.clip(counts - true_counts * np.diag(noise_matrix), 0.0, counts)


def _label_and_true_counts(labels: np.ndarray, noise_matrix: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(n, m): the label counts n and the true-class counts m solving ``T^T m = n`` (least squares, >= 0)."""
    counts = np.bincount(labels, minlength=noise_matrix.shape[0]).astype(np.float64)
    true_counts = np.linalg.lstsq(np.asarray(noise_matrix, dtype=np.float64).T, counts, rcond=None)[0].clip(0.0)
    return counts, true_counts


def spared_class_action(filter_by: str) -> str:
    """What a sparing rule does in a spared class, as the summary and the CLI say it."""
    return "flagged by r[given] < 0.5" if filter_by == NOISE_BUDGET_LEARNED else "not flagged"


def plurality_classes(labels: np.ndarray, noise_matrix: np.ndarray) -> np.ndarray:
    """(K,) bool: True where class k's own objects are the largest source of the label k under the noise
    matrix T (K, K) and the label counts: ``m[k] T[k, k] >= m[c] T[c, k]`` for every class c, the true
    counts m as in :func:`expected_wrong_labels` (a class nobody carries counts as True)."""
    true_counts = _label_and_true_counts(labels, noise_matrix)[1]
    # sources[c, j]: the expected number of labels j on objects of class c
    sources = true_counts[:, None] * np.asarray(noise_matrix, dtype=np.float64)
    return np.diag(sources) >= sources.max(axis=0) - 1e-9


def budget_flags(quality: np.ndarray, labels: np.ndarray, noise_matrix: np.ndarray) -> np.ndarray:
    """(N,) bool: in each class k, the round(w_k) labels of lowest ``quality`` (ties in file order), w_k from
    :func:`expected_wrong_labels`."""
    flags = np.zeros(len(labels), dtype=bool)
    for c, budget in enumerate(expected_wrong_labels(labels, noise_matrix)):
        mine = np.flatnonzero(labels == c)
        flags[mine[np.argsort(quality[mine], kind="stable")[:int(round(budget))]]] = True
    return flags


# ----------------------------------------------------------------------------------------------------
# the table


def issue_rows(issues: LabelIssues) -> list[dict[str, Any]]:
    """One dict per annotation, most suspicious first, with :data:`COLUMNS` (and :data:`TRUTH_COLUMNS`
    when the file has clean labels)."""
    return list(IssueRows(issues))


def _plain(v: Any) -> Any:
    return v.item() if isinstance(v, np.generic) else v


def rows_to_csv(rows: list[dict[str, Any]]) -> str:
    if not rows:
        return ",".join(COLUMNS) + "\n"
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(rows[0]), lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return buf.getvalue()


class IssueRows(Sequence):
    """The issue table as a read-only sequence: the rows of :func:`issue_rows`, each dict made when it is
    read, so a COCO-sized table (860k rows) is never held as Python objects."""

    def __init__(self, issues: LabelIssues) -> None:
        self.issues = issues
        self._order = issues.order

    def __len__(self) -> int:
        return len(self._order)

    def __getitem__(self, k):  # type: ignore[override]
        if isinstance(k, slice):
            return [self._row(int(i)) for i in self._order[k]]
        if not -len(self) <= k < len(self):
            raise IndexError(k)
        return self._row(int(self._order[k]))

    def flagged(self) -> list[dict[str, Any]]:
        """The rows of the flagged annotations, most suspicious first."""
        return [self._row(int(i)) for i in self._order[self.issues.is_issue[self._order]]]

    def _row(self, i: int) -> dict[str, Any]:
        issues, s = self.issues, self.issues.scores
        ids, names = s.label_map.category_ids, s.label_map.names
        g, sug = int(s.given_labels[i]), int(issues.suggested_labels[i])
        row = {
            "rank": int(issues.rank[i]), "annotation_id": _plain(s.annotation_ids[i]),
            "image_id": _plain(s.image_ids[i]), "given_category_id": ids[g], "given_name": names[g],
            "suggested_category_id": ids[sug], "suggested_name": names[sug],
            "label_quality": round(float(issues.label_quality[i]), 6),
            "suggested_prob": round(float(issues.suggested_prob[i]), 6),
            "background_prob": round(float(s.background_prob[i]), 6),
            "is_issue": int(issues.is_issue[i]),
        }
        if s.clean_labels is not None:
            c = int(s.clean_labels[i])
            row.update({"clean_category_id": ids[c], "clean_name": names[c], "is_wrong": int(c != g)})
        return row


def table_columns(issues: LabelIssues) -> list[str]:
    """The issue table's columns: :data:`COLUMNS`, plus :data:`TRUTH_COLUMNS` when the file has clean
    labels; none for an empty table (as ``list(rows[0]) if rows else []``)."""
    if not len(issues.rank):
        return []
    return [*COLUMNS, *(TRUTH_COLUMNS if issues.scores.clean_labels is not None else ())]


def _json_float(v: float) -> str:
    """``v`` as :func:`json.dumps` writes it."""
    if math.isfinite(v):
        return float.__repr__(v)
    return "NaN" if math.isnan(v) else ("Infinity" if v > 0 else "-Infinity")


def _csv_field(text: str) -> str:
    """``text`` as a csv field, quoted as :class:`csv.DictWriter` quotes it (only when it must be)."""
    buf = io.StringIO()
    csv.writer(buf, lineterminator="\n").writerow([text, "0"])
    return buf.getvalue()[: -len(",0\n")]


TABLE_CHUNK = 50_000  # rows formatted at once: a few MB of text, whatever the table's size


def write_table(issues: LabelIssues, header: dict[str, Any], csv_out: BinaryIO | None = None,
                json_out: BinaryIO | None = None) -> str:
    """Write label_issues.csv and label_issues.json from the arrays of ``issues``, a chunk of rows at a time.

    The bytes equal those of ``rows_to_csv(issue_rows(issues))`` and ``json.dumps({**header, "columns":
    ..., "annotations": issue_rows(issues)})`` (UTF-8), without ever making the row dicts. ``header``: the
    json's keys before ``columns`` (``data``, ``checkpoints``, ``rule``). Either output may be None.

    Returns the audit id: the first 16 hex digits of the sha256 of the json text.
    """
    digest = hashlib.sha256()

    def emit_json(text: str) -> None:
        data = text.encode("utf-8")
        digest.update(data)
        if json_out is not None:
            json_out.write(data)

    columns = table_columns(issues)
    head = json.dumps({**header, "columns": columns, "annotations": []})
    assert head.endswith('"annotations": []}')
    emit_json(head[:-2])
    if csv_out is not None:
        csv_out.write((",".join(columns or COLUMNS) + "\n").encode("utf-8"))
    s = issues.scores
    ids, names = s.label_map.category_ids, s.label_map.names
    id_j = [json.dumps(v) for v in ids]
    name_j = [json.dumps(v) for v in names]
    id_c = [str(v) for v in ids]
    name_c = [_csv_field(v) for v in names]
    truth = s.clean_labels is not None
    order = issues.order
    for start in range(0, len(order), TABLE_CHUNK):
        rows = order[start:start + TABLE_CHUNK]
        given, sug = s.given_labels[rows].tolist(), issues.suggested_labels[rows].tolist()
        rank = issues.rank[rows].tolist()
        ann = [_plain_text(v) for v in s.annotation_ids[rows].tolist()]
        img = [_plain_text(v) for v in s.image_ids[rows].tolist()]
        quality = [round(v, 6) for v in issues.label_quality[rows].tolist()]
        prob = [round(v, 6) for v in issues.suggested_prob[rows].tolist()]
        bg = [round(v, 6) for v in s.background_prob[rows].tolist()]
        flag = issues.is_issue[rows].astype(np.int64).tolist()
        clean = s.clean_labels[rows].tolist() if truth else [0] * len(rows)
        json_rows, csv_rows = [], []
        for r, (a, im, g, u, q, p, b, f, c) in enumerate(zip(ann, img, given, sug, quality, prob, bg, flag, clean)):
            j = (f'{{"rank": {rank[r]}, "annotation_id": {a[0]}, "image_id": {im[0]}, "given_category_id": '
                 f'{id_j[g]}, "given_name": {name_j[g]}, "suggested_category_id": {id_j[u]}, "suggested_name": '
                 f'{name_j[u]}, "label_quality": {_json_float(q)}, "suggested_prob": {_json_float(p)}, '
                 f'"background_prob": {_json_float(b)}, "is_issue": {f}')
            line = (f"{rank[r]},{a[1]},{im[1]},{id_c[g]},{name_c[g]},{id_c[u]},{name_c[u]},{q!r},{p!r},{b!r},{f}")
            if truth:
                j += f', "clean_category_id": {id_j[c]}, "clean_name": {name_j[c]}, "is_wrong": {int(c != g)}'
                line += f",{id_c[c]},{name_c[c]},{int(c != g)}"
            json_rows.append(j + "}")
            csv_rows.append(line)
        emit_json((", " if start else "") + ", ".join(json_rows))
        if csv_out is not None:
            csv_out.write(("\n".join(csv_rows) + "\n").encode("utf-8"))
    emit_json("]}")
    return digest.hexdigest()[:16]


def _plain_text(v: Any) -> tuple[str, str]:
    """An id as (json text, csv text), as json.dumps and csv write the plain Python value."""
    if type(v) is int:
        return str(v), str(v)
    return json.dumps(v), str(v)


# ----------------------------------------------------------------------------------------------------
# detection quality against the truth


def auroc(scores: np.ndarray, positive: np.ndarray) -> float:
    """Area under the ROC curve of ``scores`` (N,) for the boolean ``positive`` (N,) (ties count half).

    Rank form (Mann-Whitney U): the mean rank of the positives among all, tie groups sharing their
    average rank. NaN when one class is empty.
    """
    scores, positive = np.asarray(scores, dtype=np.float64), np.asarray(positive, dtype=bool)
    n_pos = int(positive.sum())
    n_neg = len(positive) - n_pos
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    ranks = _average_ranks(scores)
    return float((ranks[positive].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def _average_ranks(x: np.ndarray) -> np.ndarray:
    """1-based ranks of ``x`` (N,), tied values getting the mean of their ranks."""
    order = np.argsort(x, kind="stable")
    sorted_x = x[order]
    starts = np.flatnonzero(np.r_[True, sorted_x[1:] != sorted_x[:-1]])
    ends = np.r_[starts[1:], len(x)]
    mean_rank = (starts + ends + 1) / 2.0  # mean of (start+1)..end
    ranks = np.empty(len(x), dtype=np.float64)
    ranks[order] = np.repeat(mean_rank, ends - starts)
    return ranks


def precision_recall_curve(scores: np.ndarray, positive: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Precision and recall (each (T,)) of "score >= t" at every distinct score t, highest t first."""
    scores, positive = np.asarray(scores, dtype=np.float64), np.asarray(positive, dtype=bool)
    order = np.argsort(-scores, kind="stable")
    s, p = scores[order], positive[order]
    last_of_group = np.flatnonzero(np.r_[s[1:] != s[:-1], True])
    tp = np.cumsum(p)[last_of_group]
    k = last_of_group + 1
    n_pos = max(int(positive.sum()), 1)
    return tp / k, tp / n_pos


def average_precision(scores: np.ndarray, positive: np.ndarray) -> float:
    """Average precision: sum over distinct thresholds of (recall gain) x precision. NaN without positives."""
    if not np.any(positive):
        return float("nan")
    precision, recall = precision_recall_curve(scores, positive)
    return float(np.sum(np.diff(np.r_[0.0, recall]) * precision))


def precision_at_recall(scores: np.ndarray, positive: np.ndarray, recall_level: float) -> float:
    """The best precision of any threshold whose recall is at least ``recall_level``."""
    if not np.any(positive):
        return float("nan")
    precision, recall = precision_recall_curve(scores, positive)
    return float(precision[recall >= recall_level - 1e-12].max())


def truth_metrics(issues: LabelIssues) -> dict[str, Any] | None:
    """The audit scored against ``clean_category_id``; None when the file has no clean labels.

    "Wrong" means given label != clean label. ``auroc``/``average_precision``/``precision_at_recall_0.8``
    rank by 1 - label_quality; ``flagged_*`` judge the cleanlab-flagged set; ``suggestion_accuracy_*`` is
    how often the suggested class equals the clean one among the wrong (flagged wrong) annotations;
    ``label_accuracy_*`` is the fraction of labels equal to the clean ones in the file as given and after
    relabelling the flagged annotations to their suggestion.
    """
    s = issues.scores
    if s.clean_labels is None:
        return None
    wrong = s.clean_labels != s.given_labels
    flagged = issues.is_issue
    suspicion = 1.0 - issues.label_quality
    n_wrong, n_flagged = int(wrong.sum()), int(flagged.sum())
    tp = int((wrong & flagged).sum())
    suggested_right = issues.suggested_labels == s.clean_labels
    relabelled = np.where(flagged, issues.suggested_labels, s.given_labels)

    def frac(a: int, b: int) -> float:
        return a / b if b else float("nan")

    return {
        "n": len(wrong), "n_wrong": n_wrong, "n_flagged": n_flagged, "n_flagged_wrong": tp,
        "auroc": auroc(suspicion, wrong), "average_precision": average_precision(suspicion, wrong),
        "precision_at_recall_0.8": precision_at_recall(suspicion, wrong, 0.8),
        "flagged_precision": frac(tp, n_flagged), "flagged_recall": frac(tp, n_wrong),
        "suggestion_accuracy_wrong": frac(int((suggested_right & wrong).sum()), n_wrong),
        "suggestion_accuracy_flagged_wrong": frac(int((suggested_right & wrong & flagged).sum()), tp),
        "label_accuracy_given": frac(int((~wrong).sum()), len(wrong)),
        "label_accuracy_relabelled": frac(int((relabelled == s.clean_labels).sum()), len(wrong)),
    }


# ----------------------------------------------------------------------------------------------------
# the summary


def summary_data(issues: LabelIssues, extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """Everything summary.json holds: counts per class, the confusion estimates, truth metrics.

    ``per_class``: one entry per class with its given count, flagged count and how often it is suggested
    for flagged annotations; when the file has clean labels also ``right`` / ``right_flagged`` (annotations
    given this class whose clean class is this class, and how many of them were flagged) and ``wrong`` /
    ``wrong_flagged`` (given this class, clean class another). ``flagged_confusion``: (K, K) counts of flagged annotations, row = given,
    column = suggested. ``confident_joint``: cleanlab's calibrated confident joint, (K, K) estimated counts,
    row = given, column = estimated true class (rows sum to the given counts).
    """
    s = issues.scores
    k = s.label_map.num_classes
    given_counts = np.bincount(s.given_labels, minlength=k)
    flagged = issues.is_issue
    confusion = np.zeros((k, k), dtype=np.int64)
    np.add.at(confusion, (s.given_labels[flagged], issues.suggested_labels[flagged]), 1)
    joint = confident_joint(s)
    per_class = []
    for c in range(k):
        per_class.append({
            "category_id": s.label_map.category_ids[c], "name": s.label_map.names[c],
            "given": int(given_counts[c]), "flagged": int(confusion[c].sum()),
            "suggested_for_flagged": int(confusion[:, c].sum()),
        })
    if s.clean_labels is not None:
        # A class whose labels are mostly wrong is one the model never learned, so its few right labels
        # look wrong too: count them apart from the wrong ones found (FINDINGS.md §5).
        right = s.clean_labels == s.given_labels
        for c, entry in enumerate(per_class):
            mine = s.given_labels == c
            entry.update({"right": int((mine & right).sum()), "right_flagged": int((mine & right & flagged).sum()),
                          "wrong": int((mine & ~right).sum()), "wrong_flagged": int((mine & ~right & flagged).sum())})
    return {
        "n_annotations": int(len(s.given_labels)), "n_flagged": int(flagged.sum()),
        "rule": issues.rule, "checkpoints": [str(p) for p in s.checkpoints],
        "scoring_seconds": s.seconds, "annotations_per_second": s.annotations_per_second,
        "classes": list(s.label_map.names), "per_class": per_class,
        "flagged_confusion": confusion.tolist(), "confident_joint": np.round(joint, 3).tolist(),
        "truth": truth_metrics(issues), "notes": issues.notes,
        **({"spared_classes": issues.spared_classes} if issues.filter_by in SPARING_FILTERS else {}),
        **(extra or {}),
    }


def confident_joint(s: AnnotationScores) -> np.ndarray:
    """cleanlab's calibrated confident joint of the scored annotations, (K, K) float64 estimated counts,
    row = given class, column = estimated true class (zeros for an empty file)."""
    from cleanlab.count import compute_confident_joint

    k = s.label_map.num_classes
    if not len(s.given_labels):
        return np.zeros((k, k))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return np.asarray(compute_confident_joint(s.given_labels, s.pred_probs, calibrate=True), dtype=np.float64)


def estimated_noise_matrix(scores: AnnotationScores) -> dict[str, Any]:
    """noise_matrix.json: the noise transition matrix estimated from cleanlab's calibrated confident joint,
    ``{"classes": [K names], "matrix": K x K}`` with ``matrix[c][j]`` = P(given j | true c), the format of
    ``noise --kind matrix`` and of the forward loss's ``transition`` (``loss.params.transition=FILE``): the
    way to train a forward-corrected loss on real noise, whose matrix nobody knows.

    Unlike summary.json's rounded joint (row given, column true), it is the joint transposed and each row
    normalised, unrounded, so every row sums to 1. A class no annotation is estimated to truly belong to
    keeps an identity row (nothing is known about how its labels are confused).
    """
    k = scores.label_map.num_classes
    by_true = confident_joint(scores).T  # row = estimated true class, column = given
    totals = by_true.sum(axis=1, keepdims=True)
    matrix = np.where(totals > 0, by_true / np.where(totals > 0, totals, 1.0), np.eye(k))
    return {"classes": list(scores.label_map.names), "matrix": matrix.tolist()}


def uniform_noise_matrix(scores: AnnotationScores) -> tuple[np.ndarray, float]:
    """(T, eps): the one-rate estimate of the noise matrix, ``T = (1 - eps) I`` plus ``eps / (K - 1)`` off the
    diagonal, eps the share of cleanlab's calibrated confident joint off its diagonal (the estimated noise
    rate).

    Symmetric noise's form, for real noise whose structure is unknown: one rate borrowed by every class,
    where :func:`estimated_noise_matrix` estimates each class's row from a model that has not learned the
    rare classes, so their diagonal comes out far too low and the noise matrix rules flag their right labels
    (long-tailed bench, sym 0.4, 3 seeds' CE runs: Shirt's diagonal estimated at 0.14 where it is 0.6;
    ``benchmarks/audit_rules_lt.py``). It presumes that no pair of classes is confused more than the rest.
    """
    k = scores.label_map.num_classes
    joint = confident_joint(scores)
    total = joint.sum()
    eps = float(1.0 - np.trace(joint) / total) if total > 0 else 0.0
    if k == 1:
        return np.ones((1, 1)), eps
    matrix = np.full((k, k), eps / (k - 1))
    np.fill_diagonal(matrix, 1.0 - eps)
    return matrix, eps


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return "-" if v != v else f"{v:.3f}"
    return str(v)


def _of(part: int, whole: int) -> str:
    """"3 of 11 (27%)"; "0 of 0" without a percentage."""
    return f"{part} of {whole} ({part / whole:.0%})" if whole else f"{part} of 0"


def summary_markdown(summary: dict[str, Any], max_matrix_classes: int = 12, top_pairs: int = 15) -> str:
    """summary.md: the audit in a few tables (the full matrices are in summary.json)."""
    names = summary["classes"]
    lines = ["# Label audit", ""]
    lines.append(f"{summary['n_flagged']} of {summary['n_annotations']} annotations flagged as likely "
                 f"mislabeled ({summary['n_flagged'] / max(summary['n_annotations'], 1):.1%}).")
    lines.append("")
    lines.append(f"- data: `{summary.get('data', '')}`")
    lines.append(f"- checkpoints: {', '.join(f'`{c}`' for c in summary['checkpoints'])}")
    lines.append(f"- rule: {summary['rule']}")
    if "transition" in summary:
        lines.append(f"- noise matrix T: {summary['transition']}")
    lines.append(f"- scoring: {summary['scoring_seconds']:.1f} s, {summary['annotations_per_second']:.1f} "
                 f"annotations/s on {summary.get('device', '?')}")
    if "spared_classes" in summary:
        spared = summary["spared_classes"]
        how = spared_class_action(summary["rule"].split(":", 1)[0])
        lines.append(f"- classes spared from the count, {how}: {', '.join(spared) if spared else 'none'}")
    for note in summary["notes"]:
        lines.append(f"- cleanlab: {note}")
    truth = summary.get("truth")
    if truth:
        lines += ["", "## Against the clean labels (`clean_category_id`)", "",
                  "| measure | value |", "|---|---|"]
        label = {
            "n_wrong": "wrong labels in the file", "n_flagged_wrong": "flagged and wrong",
            "auroc": "AUROC of 1 - label_quality", "average_precision": "average precision",
            "precision_at_recall_0.8": "precision at recall 0.8", "flagged_precision": "precision of the flagged set",
            "flagged_recall": "recall of the flagged set",
            "suggestion_accuracy_wrong": "suggested class right, on the wrong ones",
            "suggestion_accuracy_flagged_wrong": "suggested class right, on the flagged wrong ones",
            "label_accuracy_given": "label accuracy as given",
            "label_accuracy_relabelled": "label accuracy after `--action relabel`",
        }
        for key, text in label.items():
            lines.append(f"| {text} | {_fmt(truth[key])} |")
    with_truth = bool(summary["per_class"]) and "right" in summary["per_class"][0]
    lines += ["", "## Per class", ""]
    if with_truth:
        lines += ["Right labels flagged: annotations whose given class is their clean class and that the audit "
                  "flagged anyway (a repair would change a right label); wrong labels flagged: the errors found.",
                  "", "| class | given | flagged | flagged % | right labels flagged | wrong labels flagged "
                  "| suggested for flagged |", "|---|---|---|---|---|---|---|"]
    else:
        lines += ["| class | given | flagged | flagged % | suggested for flagged |", "|---|---|---|---|---|"]
    for c in summary["per_class"]:
        pct = f"{c['flagged'] / c['given']:.1%}" if c["given"] else "-"
        truth_cells = (f" {_of(c['right_flagged'], c['right'])} | {_of(c['wrong_flagged'], c['wrong'])} |"
                       if with_truth else "")
        lines.append(f"| {c['name']} | {c['given']} | {c['flagged']} | {pct} |{truth_cells} "
                     f"{c['suggested_for_flagged']} |")
    if with_truth:
        worst = sorted((c for c in summary["per_class"] if c["right_flagged"]),
                       key=lambda c: (-c["right_flagged"] / c["right"], c["name"]))[:3]
        if worst:
            lines += ["", "Highest share of right labels flagged: " + ", ".join(
                f"{c['name']} {_of(c['right_flagged'], c['right'])}" for c in worst)
                + ". Review these classes by eye before repairing: a model that has not learned a class flags "
                  "its right labels too."]
    confusion = np.asarray(summary["flagged_confusion"])
    pairs = [(int(confusion[i, j]), i, j) for i in range(len(names)) for j in range(len(names))
             if i != j and confusion[i, j]]
    pairs.sort(key=lambda t: (-t[0], t[1], t[2]))
    if pairs:
        lines += ["", f"## Most frequent flagged confusions (given -> suggested, top {min(top_pairs, len(pairs))})",
                  "", "| given | suggested | flagged |", "|---|---|---|"]
        for count, i, j in pairs[:top_pairs]:
            lines.append(f"| {names[i]} | {names[j]} | {count} |")
    if len(names) <= max_matrix_classes:
        joint = np.asarray(summary["confident_joint"])
        lines += ["", "## Estimated class confusion (cleanlab's confident joint)", "",
                  "Rows: given class, with its count; columns: estimated true class. Off-diagonal mass is the "
                  "estimated number of wrong labels.", "",
                  "| given \\ true | given count | " + " | ".join(names) + " |",
                  "|---|---|" + "---|" * len(names)]
        for i, name in enumerate(names):
            cells = " | ".join(f"{v:.0f}" for v in joint[i])
            lines.append(f"| {name} | {summary['per_class'][i]['given']} | {cells} |")
    return "\n".join(lines) + "\n"
