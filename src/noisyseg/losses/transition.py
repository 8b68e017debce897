"""The label-noise transition matrix a forward-corrected loss trains through, and what else the CE-stage
model gives a robust stage at its switch (the posterior loss's targets, the classes lncis keeps on CE).

``T[c, j] = P(given class j | true class c)`` over the K object classes (rows sum to 1). Background is
never a noisy label (a wrong class label is still a right "this is an object"), so T covers classes only.

Where T comes from (``loss.params.transition``):

- ``"data"``: the training file's own realised noise, counted from ``clean_category_id`` (a file written
  by ``noisyseg noise``): the *known* matrix of injected noise. Only the class-level counts are used, never
  which annotation is wrong.
- ``"identity"``: no noise (the loss is then plain cross-entropy); what the bench uses on clean labels;
- ``"estimate"``: for real noise, whose matrix nobody knows: estimated by the run itself at the end of its
  CE stage (``loss.warmup_epochs`` > 0): the ``ce_stage_end`` model scores every training annotation and
  cleanlab's calibrated confident joint gives T (:func:`noisyseg.audit.issues.estimated_noise_matrix`); the
  trainer writes it to the run folder's ``noise_matrix.json`` and trains the robust stage through it;
- a path to a JSON file ``{"classes": [K names], "matrix": K x K}`` (the format of ``noise --kind matrix``):
  a matrix estimated for real noise (for instance from an audit's confident joint), or written by hand.

``loss.params.balance`` (b in [0, 1]) divides row c of T by the true class's training frequency to the
power b (:func:`balanced_matrix`). Why: the forward loss's gradient is ``p - r``, where r is the posterior of
the true class given the image and its label, ``r[c] ~ p[c] T[c, y]``, computed from the model's *own*
probabilities p. A rare class the model has not learned yet has a small p[c] on its own images, so r
explains its right labels as noise from a frequent look-alike and the class is never learned (measured on
the long-tailed Fashion bench: Shirt 8.5 -> 1.8 mask AP). Dividing by the prior computes r from the
class-balanced probabilities ``p[c] / prior[c]`` instead: a rare class's label on an image the model finds
ambiguous keeps its weight, while a label the model confidently puts in another class is still read as noise.
b = 0 is plain forward correction; on class-balanced data every b is the same loss. Measured (long-tailed
Fashion bench, sym 0.4, b = 1 after a CE stage): harmful. The loss is no longer proper (its minimiser is
not the clean posterior): a rare label on a frequent class's image is half believed even when the model is
90% sure of the frequent class, the rare class's probability on those images grows, which makes the next
such label more believable, and the frequent classes' images end in the rare classes (Bag 44 -> 0 mask
AP, -15.6 overall). Kept as a documented option for the record; the ``posterior`` loss cuts the loop
instead (targets fixed at the stage switch: Shirt +0.5 where forward after a CE stage lost 6.0).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from noisyseg.errors import NoisysegError
from noisyseg.utils.io import read_json

FROM_DATA = "data"
IDENTITY = "identity"
ESTIMATE = "estimate"


def transition_matrix(transition: str, train_json: str | Path, class_names: tuple[str, ...] | list[str],
                      balance: float = 0.0, coco: dict | None = None) -> np.ndarray:
    """(K, K) float64 matrix in the order of ``class_names`` (the label map's, labels 1..K): T, row-stochastic,
    for ``balance`` 0, else :func:`balanced_matrix` of T and the training file's true-class frequencies.

    The training file is read (once) only when T or the frequencies come from it; ``coco``, its parsed
    tree when the caller has it already, saves that read. A true class without annotations in the file
    keeps an identity row. Raises a one-line :class:`NoisysegError` naming the file for a file without
    ``clean_category_id`` (with ``"data"``), a matrix file that does not validate or whose classes are not
    exactly ``class_names``.
    """
    if coco is None and (transition == FROM_DATA or balance != 0.0):
        coco = read_json(train_json, "training file")
    matrix = _noise_matrix(transition, train_json, [str(n) for n in class_names], coco)
    if balance == 0.0:
        return matrix
    return balanced_matrix(matrix, true_class_prior(transition, train_json, class_names, matrix, coco), balance)


def balanced_matrix(matrix: np.ndarray, prior: np.ndarray, balance: float) -> np.ndarray:
    """``W[c, j] = T[c, j] / prior[c] ** balance``, each column then scaled so its largest entry is T's.

    The scale of a column changes no gradient of the forward loss (``-log`` of a column's weighted sum:
    a factor only adds a constant), so it is chosen to keep every ``q[j] = sum_c p[c] W[c, j]`` <= 1 and the
    loss >= 0. ``prior`` (K,) is floored at a millionth so a class without annotations stays finite.
    """
    weights = matrix / np.power(np.maximum(prior, 1e-6), balance)[:, None]
    top = weights.max(axis=0)
    return weights * np.where(top > 0, matrix.max(axis=0) / np.where(top > 0, top, 1.0), 0.0)[None, :]


def true_class_prior(transition: str, train_json: str | Path, class_names, matrix: np.ndarray,
                     coco: dict | None = None) -> np.ndarray:
    """The training file's true-class frequencies (K,) in ``class_names`` order, summing to 1 (``coco``: the
    file's parsed tree, read from ``train_json`` when not given).

    ``"data"``: counted from ``clean_category_id``. Otherwise from the file's labels: ``identity`` takes them
    as they are; with a matrix file the label frequencies are ``T^T prior``, solved by least squares, clipped
    at 0 and renormalised (a class the solve gives no mass keeps the floor of :func:`balanced_matrix`).
    """
    from noisyseg.noise.inject import realised_matrix

    names = [str(n) for n in class_names]
    if coco is None:
        coco = read_json(train_json, "training file")
    if transition == FROM_DATA:
        found, counts = realised_matrix(coco)
        totals = counts.sum(axis=1).astype(np.float64)
        totals = totals[[found.index(n) for n in names]]
        return totals / max(totals.sum(), 1.0)
    position = {name: i for i, name in enumerate(names)}
    column = {c["id"]: position.get(str(c["name"])) for c in coco["categories"]}
    labels = np.zeros(len(names))
    for a in coco["annotations"]:
        i = column.get(a.get("category_id"))
        if i is not None:
            labels[i] += 1
    labels /= max(labels.sum(), 1.0)
    if transition == IDENTITY:
        return labels
    prior = np.clip(np.linalg.lstsq(matrix.T, labels, rcond=None)[0], 0.0, None)
    return prior / prior.sum() if prior.sum() > 0 else labels


def _noise_matrix(transition: str, train_json: str | Path, names: list[str], coco: dict | None) -> np.ndarray:
    """T (K, K), row-stochastic, in the order of ``names`` (``coco``: the training file's tree, for "data")."""
    from noisyseg.noise.inject import check_matrix, realised_matrix

    if transition == ESTIMATE:  # the trainer estimates it at the stage switch and passes the written file
        raise NoisysegError("loss.params.transition=estimate: the matrix exists only once the run's CE stage "
                            "has ended (read the run folder's noise_matrix.json)")
    if transition == IDENTITY:
        return np.eye(len(names))
    if transition == FROM_DATA:
        try:
            found, counts = realised_matrix(coco)
        except NoisysegError as e:
            raise NoisysegError(f"{train_json}: loss.params.transition=data needs the file's clean_category_id "
                                f"({e}); give a matrix file instead") from None
        matrix = counts.astype(np.float64)
        totals = matrix.sum(axis=1, keepdims=True)
        matrix = np.where(totals > 0, matrix / np.maximum(totals, 1), np.eye(len(found)))
    else:
        from noisyseg.noise.files import read_matrix_file

        found, matrix = check_matrix(read_matrix_file(transition))
    if sorted(found) != sorted(names):
        missing, extra = sorted(set(names) - set(found)), sorted(set(found) - set(names))
        raise NoisysegError(f"{train_json if transition == FROM_DATA else transition}: the matrix's classes differ "
                            f"from the training data's (missing: {', '.join(missing) or 'none'}; not in the data: "
                            f"{', '.join(extra) or 'none'})")
    order = [found.index(n) for n in names]
    return np.ascontiguousarray(matrix[np.ix_(order, order)])


def true_class_posterior(probs: np.ndarray, given: np.ndarray, matrix: np.ndarray) -> np.ndarray:
    """(N, K) float32 posterior of each annotation's true class given its image and its label:
    ``r[c] ~ probs[c] T[c, given]`` (``probs`` (N, K) a model's class probabilities, ``given`` (N,) label
    indices 0..K-1, ``matrix`` T (K, K)). A row T gives no mass keeps its label (one-hot).

    The ``posterior`` loss's targets (from the CE-stage model) and the audit's ``noise_posterior`` rule
    (``r[given]`` is the probability that the label is right).
    """
    probs = np.asarray(probs, dtype=np.float64)
    weights = probs * np.asarray(matrix, dtype=np.float64)[:, given].T
    totals = weights.sum(axis=1, keepdims=True)
    one_hot = np.eye(probs.shape[1])[given]
    return np.where(totals > 0, weights / np.where(totals > 0, totals, 1.0), one_hot).astype(np.float32)


def unlearned_classes(probs: np.ndarray, given: np.ndarray, learned_at: float) -> tuple[np.ndarray, np.ndarray]:
    """Which classes the CE-stage model has not learned: ``(mean_label_prob, keeps_ce)``, both (K,).

    ``mean_label_prob[k]`` is the mean of ``probs[i, k]`` over the annotations labelled k (``probs`` (N, K)
    the model's class probabilities, ``given`` (N,) label indices; NaN for a class nobody carries);
    ``keeps_ce[k]`` is True where that mean is below ``learned_at / K``, ``learned_at`` times chance.

    The ``lncis`` loss with ``learned_at`` keeps CE on those classes' RoIs after the switch. Why: the
    robust term pulls a RoI towards its label with a gradient proportional to p[label]; on the long-tailed
    Fashion bench at sym 0.4 the CE-stage model gives the right labels of its four rarest classes a mean p
    of 0.08-0.12 against 0.17-0.56 for the six others (``benchmarks/tail_mechanism.py``), and lncis
    then loses 3-17 mask AP on those four. The mean is over all of a class's labels, right and wrong alike
    (which are right is unknown): a class whose labels are mostly wrong also falls below it. Measured there
    (3 seeds), it halves lncis's loss on those classes but does not remove it (README, long-tailed section):
    the robust term pulls the frequent classes' labels up to 8 times harder than CE pulls the kept ones.
    """
    probs = np.asarray(probs, dtype=np.float64)
    given = np.asarray(given, dtype=np.int64)
    k = probs.shape[1]
    counts = np.bincount(given, minlength=k)
    sums = np.bincount(given, weights=probs[np.arange(len(given)), given], minlength=k)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = np.where(counts > 0, sums / np.maximum(counts, 1), np.nan)
    return mean, (counts > 0) & (mean < learned_at / k)
