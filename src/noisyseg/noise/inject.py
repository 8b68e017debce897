"""Seeded, vectorised class-label noise for COCO-format annotation files (DESIGN.md section 2).

Only ``category_id`` values change. Images, boxes, masks, ids, key order and any extra fields stay as
they were. Every annotation gains ``clean_category_id`` (its label before the call; an existing value is
kept, so noise can be layered) and the file's ``info`` gains a ``noise`` block describing the call and
what it produced.

How one call works, for every kind:

1. The *target set* is the categories that have at least one annotation (or the ``classes`` named by
   the caller). Categories without annotations, such as a ``_background_`` pseudo-category with id 0,
   are therefore never sources and never destinations of symmetric or supercategory noise.
2. The kind gives each source class ``c`` a *row*: the probability ``T[c, j]`` that an annotation of
   class ``c`` ends up in class ``j`` when it is hit. Symmetric, preset and pair rows put no mass on
   ``c`` itself (a hit always changes the class); a user matrix may (its diagonal is "stay").
3. An annotation is *eligible* when it is not crowd (unless ``include_crowd``), its current class is in
   the target set and its row moves some mass off the diagonal.
4. Of the ``n_c`` eligible annotations of class ``c``, the expected number that change is
   ``rate * (1 - T[c, c]) * n_c``. ``sampling="exact"`` changes exactly that many, rounded half up;
   ``"bernoulli"`` changes each one independently with probability ``rate * (1 - T[c, c])``.
   A changed annotation draws its new class independently from the row without its diagonal,
   renormalised. For every kind except ``matrix`` ``T[c, c] = 0``, so exactly round(rate * n_c) change.
   For ``matrix`` this is the same distribution as "pick each annotation with probability ``rate``
   and draw its new class from the full row", so with rate 1 the realised transitions follow ``T``.
"""

from __future__ import annotations

import math
import numbers
from collections import defaultdict
from typing import Any, Callable

import numpy as np

from noisyseg.data.validate import validate_coco
from noisyseg.errors import NoisysegError
from noisyseg.noise.presets import PRESETS, target_names

KINDS = ("symmetric", "asymmetric", "pairs", "matrix")
SAMPLINGS = ("exact", "bernoulli")

# source category id -> (destination ids (m,) int64, their probabilities (m,) summing to 1,
#                        probability that a hit annotation changes class = 1 - T[c, c])
Rows = dict[int, tuple[np.ndarray, np.ndarray, float]]


# ----------------------------------------------------------------------------------------------------
# validation of the file and the options


def check_coco(coco: Any) -> dict[int, dict]:
    """Check the file's fields (:func:`noisyseg.data.validate.validate_coco` with ``dataset=False``);
    return {category id: category dict}.

    Noise needs ``annotations`` with a ``category_id`` and ``categories`` with an integer ``id`` and a
    ``name``; every other field present (ids, image sizes, boxes, ...) is checked too, so a broken file
    is refused here rather than copied into the output (a NaN box would make the output invalid JSON).
    Raises :class:`NoisysegError` (one line, without the file name) at the first problem.
    """
    validate_coco(coco, dataset=False)
    cats: dict[int, dict] = {}
    for i, c in enumerate(coco["categories"]):
        cid = c["id"]
        if not -2**63 <= cid < 2**63:
            raise NoisysegError(f"categories[{i}] has id {cid!r}, expected an integer that fits in 64 bits")
        cats[int(cid)] = c
    return cats


def _gather_ids(anns: list, cats: dict[int, dict], key: str = "category_id") -> np.ndarray:
    """(N,) int64 array of ``ann[key]`` for every annotation, each checked to be a listed category id."""
    try:
        raw = [a[key] for a in anns]
    except (KeyError, TypeError, IndexError):
        for i, a in enumerate(anns):
            if not isinstance(a, dict) or key not in a:
                raise NoisysegError(f"annotations[{i}] has no '{key}'") from None
        raise
    arr = np.asarray(raw) if raw else np.zeros(0, dtype=np.int64)
    if arr.ndim != 1 or arr.dtype.kind not in "iu":
        for i, v in enumerate(raw):
            if isinstance(v, bool) or not isinstance(v, int) or v not in cats:
                raise NoisysegError(f"annotations[{i}] (id {anns[i].get('id')}) has {key} {v!r}, "
                                    "not a listed category")
    arr = arr.astype(np.int64, copy=False)
    known = np.fromiter(cats, dtype=np.int64, count=len(cats))
    bad = np.flatnonzero(~np.isin(arr, known))
    if len(bad):
        i = int(bad[0])
        raise NoisysegError(f"annotations[{i}] (id {anns[i].get('id')}) has {key} {raw[i]!r}, "
                            "not a listed category")
    return arr


def _name_lookup(cats: dict[int, dict], where: str) -> Callable[[str], int]:
    """A function class name -> category id that raises a one-line error for unknown or repeated names."""
    by_name: dict[str, list[int]] = defaultdict(list)
    for cid, c in cats.items():
        by_name[str(c["name"])].append(cid)

    def lookup(name: str) -> int:
        ids = by_name.get(name)
        if not ids:
            raise NoisysegError(f"{where}: class {name!r} is not a category of this file "
                                f"(categories: {_listing(by_name)})")
        if len(ids) > 1:
            raise NoisysegError(f"{where}: class {name!r} names {len(ids)} categories "
                                f"(ids {', '.join(map(str, sorted(ids)))}); names must be unique")
        return ids[0]

    return lookup


def _listing(names: Any, limit: int = 30) -> str:
    names = sorted(names)
    more = f", ... ({len(names)} in all)" if len(names) > limit else ""
    return ", ".join(names[:limit]) + more


def _check_rate(rate: Any) -> float:
    if isinstance(rate, bool) or not isinstance(rate, numbers.Real) or not math.isfinite(rate) \
            or not 0 <= rate <= 1:
        raise NoisysegError(f"rate must be a number in [0, 1], got {rate!r}")
    return float(rate)


def _check_seed(seed: Any) -> int:
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral) or seed < 0:
        raise NoisysegError(f"seed must be a non-negative integer, got {seed!r}")
    return int(seed)


def parse_pairs(text: str) -> list[tuple[str, str]]:
    """Parse ``"bus>car, cat>dog"`` into ``[("bus", "car"), ("cat", "dog")]``.

    Each comma-separated item is ``source>target`` with two different, non-empty class names; an item
    given twice is an error.
    """
    pairs: list[tuple[str, str]] = []
    for part in (p.strip() for p in str(text).split(",")):
        if not part:
            continue
        if part.count(">") != 1:
            raise NoisysegError(f"pairs: {part!r} is not of the form source>target")
        src, dst = (s.strip() for s in part.split(">"))
        if not src or not dst or src == dst:
            raise NoisysegError(f"pairs: {part!r} needs two different class names")
        if (src, dst) in pairs:
            raise NoisysegError(f"pairs: {part!r} is given twice")
        pairs.append((src, dst))
    if not pairs:
        raise NoisysegError("pairs: no pair given (expected e.g. \"bus>car,cat>dog\")")
    return pairs


def check_matrix(matrix: Any) -> tuple[list[str], np.ndarray]:
    """Validate a transition matrix spec ``{"classes": [K names], "matrix": K x K}``.

    Row ``i`` gives the probabilities of the new class given old class ``classes[i]``; entries must be
    finite numbers >= 0 and each row must sum to 1 within 1e-6. Returns (names, (K, K) float64 array).
    """
    if not isinstance(matrix, dict) or "classes" not in matrix or "matrix" not in matrix:
        raise NoisysegError("matrix: expected a JSON object {\"classes\": [names], \"matrix\": [[...], ...]}")
    names, rows = matrix["classes"], matrix["matrix"]
    if not isinstance(names, list) or not names or not all(isinstance(n, str) for n in names):
        raise NoisysegError("matrix: 'classes' must be a non-empty list of class names")
    k = len(names)
    if len(set(names)) != k:
        raise NoisysegError("matrix: a class name is listed twice in 'classes'")
    if not isinstance(rows, list) or len(rows) != k or any(not isinstance(r, list) or len(r) != k for r in rows):
        raise NoisysegError(f"matrix: must be {k} x {k} (one row and one column per listed class)")
    for i, r in enumerate(rows):
        for j, v in enumerate(r):
            if isinstance(v, bool) or not isinstance(v, numbers.Real) or not math.isfinite(v) or v < 0:
                raise NoisysegError(f"matrix: entry [{i}][{j}] is {v!r}, expected a finite number >= 0")
    arr = np.asarray(rows, dtype=np.float64).reshape(k, k)
    sums = arr.sum(axis=1)
    bad = np.flatnonzero(np.abs(sums - 1.0) > 1e-6)
    if len(bad):
        i = int(bad[0])
        raise NoisysegError(f"matrix: row {i} ({names[i]}) sums to {sums[i]:.6g}, not 1")
    return list(names), arr


# ----------------------------------------------------------------------------------------------------
# the rows of each kind


def _uniform(ids: list[int]) -> tuple[np.ndarray, np.ndarray, float]:
    return np.asarray(ids, dtype=np.int64), np.full(len(ids), 1.0 / len(ids)), 1.0


def _rows(kind: str, cats: dict[int, dict], targets: list[int], lookup: Callable[[str], int],
          preset: str | None, pairs: list[tuple[str, str]] | None,
          matrix: tuple[list[str], np.ndarray] | None) -> tuple[Rows, dict]:
    """The rows of ``kind`` for the source classes in ``targets`` (ascending ids), and the spec to record."""
    rows: Rows = {}
    in_targets = set(targets)
    if kind == "symmetric":
        if len(targets) < 2:
            raise NoisysegError(f"symmetric noise needs at least two target classes, got {len(targets)}")
        for c in targets:
            rows[c] = _uniform([o for o in targets if o != c])
        return rows, {}
    if kind == "asymmetric":
        if preset is None:
            raise NoisysegError(f"asymmetric noise needs a preset ({', '.join(PRESETS)})")
        if preset not in PRESETS:
            raise NoisysegError(f"unknown preset {preset!r}; available: {', '.join(PRESETS)}")
        table = PRESETS[preset]
        if table is None:  # supercategory: groups read from the file, restricted to the target set
            groups: dict[Any, list[int]] = defaultdict(list)
            for c in targets:
                if "supercategory" not in cats[c]:
                    raise NoisysegError(f"category {cats[c]['name']!r} (id {c}) has no 'supercategory', "
                                        "which the supercategory preset needs")
                groups[str(cats[c]["supercategory"])].append(c)
            for c in targets:
                others = [o for o in groups[str(cats[c]["supercategory"])] if o != c]
                if others:  # a class alone in its supercategory never changes
                    rows[c] = _uniform(others)
        else:
            names = {str(c["name"]) for c in cats.values()}
            missing = sorted({n for src, dst in table.items() for n in (src, *target_names(dst))} - names)
            if missing:  # every class the preset names must exist in the file
                raise NoisysegError(f"preset {preset!r}: class{'es' if len(missing) > 1 else ''} "
                                    f"{', '.join(map(repr, missing))} {'are' if len(missing) > 1 else 'is'} "
                                    f"not a category of this file (categories: {_listing(names)})")
            for src, dst in table.items():
                s = lookup(src)
                if s in in_targets:
                    rows[s] = _uniform([lookup(d) for d in target_names(dst)])
        return rows, {"preset": preset}
    if kind == "pairs":
        if not pairs:
            raise NoisysegError("pairs noise needs pairs, e.g. \"bus>car,cat>dog\"")
        dests: dict[int, list[int]] = defaultdict(list)
        for src, dst in pairs:
            dests[lookup(src)].append(lookup(dst))
        for s in sorted(dests):
            if s in in_targets:
                rows[s] = _uniform(dests[s])
        return rows, {"pairs": [f"{s}>{d}" for s, d in pairs]}
    if kind == "matrix":
        if matrix is None:
            raise NoisysegError("matrix noise needs a matrix {\"classes\": [names], \"matrix\": K x K}")
        names, arr = matrix
        ids = [lookup(n) for n in names]
        for i, s in enumerate(ids):
            if s not in in_targets:
                continue
            off = np.delete(np.arange(len(ids)), i)
            mass = float(arr[i, off].sum())
            if mass > 1e-12:  # a row with all its mass on the diagonal never changes
                rows[s] = (np.asarray(ids, dtype=np.int64)[off], arr[i, off] / mass, min(mass, 1.0))
        return rows, {"matrix": {"classes": names, "matrix": arr.tolist()}}
    raise NoisysegError(f"unknown noise kind {kind!r}; available: {', '.join(KINDS)}")


def _check_options(kind: str, preset: Any, pairs: Any, matrix: Any, sampling: str) -> None:
    if kind not in KINDS:
        raise NoisysegError(f"unknown noise kind {kind!r}; available: {', '.join(KINDS)}")
    if sampling not in SAMPLINGS:
        raise NoisysegError(f"sampling must be one of {', '.join(SAMPLINGS)}, got {sampling!r}")
    for value, name, owner in ((preset, "a preset", "asymmetric"), (pairs, "pairs", "pairs"),
                               (matrix, "a matrix", "matrix")):
        if value is not None and kind != owner:
            raise NoisysegError(f"{name} only applies to kind {owner!r}, not {kind!r}")


# ----------------------------------------------------------------------------------------------------
# the injection


class _Plan:
    """What a noise call acts on, checked: the file's categories and annotations, every annotation's
    current and clean label, the target classes, the rows of the kind and the eligible annotations."""

    def __init__(self, cats: dict[int, dict], anns: list, current: np.ndarray, clean: np.ndarray,
                 targets: list[int], rows: Rows, spec: dict, pos: np.ndarray):
        self.cats, self.anns, self.current, self.clean = cats, anns, current, clean
        self.targets, self.rows, self.spec = targets, rows, spec
        order = np.argsort(current[pos], kind="stable")
        self._pos_by_class, self._labels_sorted = pos[order], current[pos][order]  # file order within a class

    def eligible_of(self, c: int) -> np.ndarray:
        """(n_c,) positions (file order) of the eligible annotations whose current label is ``c``."""
        lo, hi = np.searchsorted(self._labels_sorted, [c, c + 1])  # ids are int64: c + 1 is the next value
        return self._pos_by_class[lo:hi]


def _plan(coco: dict, kind: str, preset: str | None, pairs: Any, matrix: dict | None, classes: list[str] | None,
          sampling: str, include_crowd: bool) -> _Plan:
    """Check the options and the file and gather what :func:`inject` and :func:`predict_precision` need."""
    _check_options(kind, preset, pairs, matrix, sampling)
    if isinstance(pairs, str):
        pairs = parse_pairs(pairs)
    checked_matrix = check_matrix(matrix) if matrix is not None else None
    cats = check_coco(coco)
    anns = coco["annotations"]
    current = _gather_ids(anns, cats)  # (N,) int64 label of every annotation before this call
    clean = _clean_ids(anns, cats, current)
    lookup = _name_lookup(cats, f"{kind} noise")
    if classes is not None:
        if not classes:
            raise NoisysegError("classes: no class given")
        targets = sorted({_name_lookup(cats, "classes")(str(n)) for n in classes})
    else:
        targets = np.unique(current).tolist()
    rows, spec = _rows(kind, cats, targets, lookup, preset, pairs, checked_matrix)
    if include_crowd:
        pos = np.arange(len(anns))
    else:
        crowd = np.fromiter((bool(a.get("iscrowd", 0)) for a in anns), dtype=bool, count=len(anns))
        pos = np.flatnonzero(~crowd)
    return _Plan(cats, anns, current, clean, targets, rows, spec, pos)


def _clean_ids(anns: list, cats: dict[int, dict], current: np.ndarray) -> np.ndarray:
    """(N,) int64 clean label of every annotation: its ``clean_category_id`` where it has one (a file that
    is already noisy), else its current label. Each must be a listed category."""
    if not any(isinstance(a, dict) and "clean_category_id" in a for a in anns):
        return current
    clean = current.copy()
    has = [i for i, a in enumerate(anns) if "clean_category_id" in a]
    clean[has] = _gather_ids([anns[i] for i in has], cats, "clean_category_id")
    return clean


def _precision_by_name(clean: np.ndarray, labels: np.ndarray, names: dict[int, str]) -> dict[str, dict]:
    """Per label carried by at least one annotation (ascending id): ``{"n": annotations with that label,
    "right": those whose clean label is the same, "precision": right / n}``. clean, labels: (N,) ids."""
    out = {}
    ids, n = np.unique(labels, return_counts=True)
    right = np.bincount(np.searchsorted(ids, labels[labels == clean]), minlength=len(ids))
    for cid, total, r in zip(ids.tolist(), n.tolist(), right.tolist()):
        out[names[int(cid)]] = {"n": int(total), "right": int(r), "precision": r / total}
    return out


def predict_precision(coco: dict, kind: str, rate: float, *, preset: str | None = None,
                      pairs: list[tuple[str, str]] | str | None = None, matrix: dict | None = None,
                      classes: list[str] | None = None, sampling: str = "exact",
                      include_crowd: bool = False) -> dict:
    """The label precision per class that :func:`inject` with these arguments is expected to leave, from the
    file's own counts, without drawing anything.

    Label precision of class k: the share of the annotations carrying label k whose clean class is k.
    With ``J`` the (K, K) count matrix of the file now (rows clean class, columns current label; the
    diagonal for a clean file), split into its eligible part ``J_e`` and the rest ``J_o``, and ``M`` the
    (K, K) matrix of the call (``M[c, c] = 1 - f_c``, ``M[c, j] = f_c * row_c[j]``, with ``f_c`` the
    fraction of class c's eligible annotations that change: ``round(rate * (1 - T[c, c]) * n_c) / n_c``
    for exact sampling, ``rate * (1 - T[c, c])`` for bernoulli), the expected counts afterwards are
    ``E = J_o + J_e @ M`` and the prediction is ``E[k, k] / sum_c E[c, k]`` (a ratio of expected counts).
    For exact symmetric noise on a clean file with K target classes, n_c annotations and m_c =
    round(rate * n_c) changed per class, that is ``(n_k - m_k) / (n_k - m_k + sum_{c != k} m_c / (K - 1))``.

    Returns:
        ``{"classes": [names of the categories, ascending id], "per_class": {name: {"n": annotations
        labelled k now, "expected_n": expected afterwards, "expected_right": expected with clean class k
        among them, "precision": expected_right / expected_n}}}`` for every class that is a label now or
        expected to be one afterwards, and ``"mean_precision"`` (unweighted mean over those classes).
    Raises:
        NoisysegError: as :func:`inject`, for a malformed file or bad options.
    """
    _check_options(kind, preset, pairs, matrix, sampling)
    rate = _check_rate(rate)
    plan = _plan(coco, kind, preset, pairs, matrix, classes, sampling, include_crowd)
    ids = np.array(sorted(plan.cats), dtype=np.int64)
    k = len(ids)
    col = {int(c): i for i, c in enumerate(ids.tolist())}
    clean_i, cur_i = np.searchsorted(ids, plan.clean), np.searchsorted(ids, plan.current)
    joint = np.bincount(clean_i * k + cur_i, minlength=k * k).reshape(k, k).astype(np.float64)
    moved = np.zeros((k, k))  # expected counts of the eligible annotations after the call
    eligible_joint = np.zeros((k, k))
    for c in sorted(plan.rows):
        idx = plan.eligible_of(c)
        if not len(idx):
            continue
        part = np.bincount(clean_i[idx], minlength=k).astype(np.float64)  # (K,) clean classes of them
        eligible_joint[:, col[c]] += part
        dests, probs, p_change = plan.rows[c]
        q = rate * p_change
        f = math.floor(q * len(idx) + 0.5) / len(idx) if sampling == "exact" else q
        m = np.zeros(k)
        m[col[c]] = 1.0 - f
        np.add.at(m, np.searchsorted(ids, dests), f * probs)
        moved += np.outer(part, m)
    expected = joint - eligible_joint + moved
    names = [str(plan.cats[int(c)]["name"]) for c in ids.tolist()]
    now = joint.sum(axis=0)
    per_class = {}
    for i, name in enumerate(names):
        total = float(expected[:, i].sum())
        if total > 1e-12 or now[i]:
            right = float(expected[i, i])
            per_class[name] = {"n": int(now[i]), "expected_n": total, "expected_right": right,
                               "precision": right / total if total > 1e-12 else 0.0}
    precisions = [v["precision"] for v in per_class.values()]
    return {"classes": names, "per_class": per_class,
            "mean_precision": float(np.mean(precisions)) if precisions else 0.0}




def inject(coco: dict, kind: str, rate: float, seed: int, *, preset: str | None = None,
           pairs: list[tuple[str, str]] | str | None = None, matrix: dict | None = None,
           classes: list[str] | None = None, sampling: str = "exact", include_crowd: bool = False,
           in_place: bool = False) -> tuple[dict, dict]:
    """Change a seeded fraction of the class labels of a COCO instance file.

    Args:
        coco: the parsed COCO json (``annotations`` and ``categories`` required). Not modified unless
            ``in_place``; without it the result is a shallow copy that shares images, segmentations
            and other untouched sub-objects with ``coco``.
        kind: ``"symmetric"`` (a changed annotation moves uniformly to one of the *other* target
            classes), ``"asymmetric"`` (``preset`` ``"cityscapes"``, ``"voc"``, ``"fashion"`` or
            ``"supercategory"``; a preset source with several targets moves uniformly to one of them),
            ``"pairs"`` (``pairs``: ``[(source, target), ...]`` by name or ``"a>b,c>d"``; a source listed
            more than once moves uniformly to one of its targets) or ``"matrix"`` (``matrix``:
            ``{"classes": [K names], "matrix": K x K}``, row = probabilities of the new class given the
            old one, diagonal = probability of staying).
        rate: in [0, 1]. Every eligible annotation is hit with this probability (fraction, for exact
            sampling) and a hit one takes its new class from its row. For every kind but ``matrix`` a
            hit always changes the class, so ``rate`` is the fraction of eligible annotations that
            change; for ``matrix`` the expected fraction of class c that changes is ``rate * (1 - T[c, c])``.
        seed: non-negative integer for ``numpy.random.default_rng``; same inputs and seed, same result.
        classes: names of the target classes (default: every category with at least one annotation).
            Only annotations of these classes change; symmetric and supercategory noise also draw
            their destinations from them (presets, pairs and matrices name their destinations).
        sampling: ``"exact"``: of the ``n_c`` eligible annotations of class c exactly
            ``floor(rate * (1 - T[c, c]) * n_c + 0.5)`` change; ``"bernoulli"``: each one changes
            independently with probability ``rate * (1 - T[c, c])`` (as in the paper).
        include_crowd: also corrupt ``iscrowd`` annotations (left alone by default).
        in_place: modify and return ``coco`` itself (saves copying every annotation dict).

    Returns:
        ``(noisy, report)``. In ``noisy`` every annotation has ``clean_category_id`` appended (kept when
        already there, so layered noise still points at the first label) and ``info.noise`` holds
        ``report``; an earlier ``info.noise`` is appended to the list ``info.noise_history`` (oldest
        first). ``report`` has kind, rate, seed, sampling, include_crowd, the preset / pairs / matrix,
        ``target_classes``, per-class ``eligible`` and ``changed`` counts (by name, eligible classes
        only), ``transitions`` (label before this call -> after it, ``{name: {name: count}}`` over all
        annotations, zero cells left out), ``n_eligible``, ``n_changed``, ``expected_rate``,
        ``realised_rate`` (= n_changed / n_eligible) and ``label_precision`` (per label k carried by at
        least one annotation afterwards: ``{"n": annotations labelled k, "right": those whose clean
        class, ``clean_category_id`` or the label before this call, is k, "precision": right / n}``).

    Raises:
        NoisysegError: one line naming the problem (malformed file, unknown class, bad rate, ...).
            Nothing is modified when it is raised, even with ``in_place``.
    """
    _check_options(kind, preset, pairs, matrix, sampling)
    rate = _check_rate(rate)
    seed = _check_seed(seed)
    plan = _plan(coco, kind, preset, pairs, matrix, classes, sampling, include_crowd)
    cats, anns, current, targets, rows, spec = plan.cats, plan.anns, plan.current, plan.targets, plan.rows, plan.spec

    # --- selection and destinations: array operations per source class, classes in ascending id order
    rng = np.random.default_rng(seed)
    new = current.copy()
    eligible: dict[int, int] = {}
    changed: dict[int, int] = {}
    expected = 0.0
    for c in sorted(rows):
        idx = plan.eligible_of(c)  # (n_c,) positions of the eligible annotations of class c
        dests, probs, p_change = rows[c]
        q = rate * p_change
        if sampling == "exact":
            k = math.floor(q * len(idx) + 0.5)
            hit = idx[rng.choice(len(idx), size=k, replace=False)] if k else idx[:0]
        else:
            hit = idx[rng.random(len(idx)) < q]
        new[hit] = rng.choice(dests, size=len(hit), p=probs)
        eligible[c], changed[c] = len(idx), len(hit)
        expected += q * len(idx)

    names = {cid: str(c["name"]) for cid, c in cats.items()}
    n_eligible, n_changed = sum(eligible.values()), sum(changed.values())
    report: dict[str, Any] = {
        "kind": kind, "rate": rate, "seed": seed, "sampling": sampling, "include_crowd": bool(include_crowd),
        **spec,
        "target_classes": [names[c] for c in targets],
        "eligible": {names[c]: n for c, n in eligible.items()},
        "changed": {names[c]: n for c, n in changed.items()},
        "transitions": transition_counts(current, new, names),
        "n_eligible": n_eligible, "n_changed": n_changed,
        "expected_rate": expected / n_eligible if n_eligible else 0.0,
        "realised_rate": n_changed / n_eligible if n_eligible else 0.0,
        "label_precision": _precision_by_name(plan.clean, new, names),
    }

    # --- write back in one pass (nothing above has touched the input)
    noisy = coco if in_place else dict(coco)
    out_anns = anns if in_place else [dict(a) for a in anns]
    for a in out_anns:
        if "clean_category_id" not in a:
            a["clean_category_id"] = a["category_id"]
    moved = np.flatnonzero(new != current)
    for i, v in zip(moved.tolist(), new[moved].tolist()):
        out_anns[i]["category_id"] = v
    noisy["annotations"] = out_anns
    info = coco.get("info")
    info = {} if info is None else (info if in_place else dict(info))
    if "noise" in info:  # layering: the newest block is info.noise, the older ones move to the history
        info["noise_history"] = list(info.get("noise_history") or []) + [info["noise"]]
    info["noise"] = report
    noisy["info"] = info
    return noisy, report


# ----------------------------------------------------------------------------------------------------
# realised noise


def transition_counts(before: np.ndarray, after: np.ndarray, names: dict[int, str]) -> dict[str, dict[str, int]]:
    """Sparse count matrix ``{before name: {after name: count}}`` (zero cells left out).

    before, after: (N,) int64 category ids of the same annotations; names: category id -> name.
    Rows and, within a row, columns are in ascending category id order.
    """
    out: dict[str, dict[str, int]] = {}
    if len(before):
        ids = np.unique(np.concatenate([before, after]))
        k = len(ids)
        cells, counts = np.unique(np.searchsorted(ids, before) * k + np.searchsorted(ids, after),
                                  return_counts=True)
        for cell, n in zip(cells.tolist(), counts.tolist()):
            s, d = ids[cell // k], ids[cell % k]
            out.setdefault(names[int(s)], {})[names[int(d)]] = n
    return out


def realised_matrix(coco: dict) -> tuple[list[str], np.ndarray]:
    """The clean -> noisy count matrix of a file written by :func:`inject`.

    Returns (names of all K categories in ascending id order, (K, K) int64 counts) with rows = clean
    class (``clean_category_id``) and columns = current class (``category_id``). Raises a one-line
    :class:`NoisysegError` when an annotation has no ``clean_category_id``.
    """
    cats = check_coco(coco)
    anns = coco["annotations"]
    has_clean = sum("clean_category_id" in a for a in anns if isinstance(a, dict))
    if not anns or has_clean < len(anns):
        raise NoisysegError(f"{len(anns) - has_clean} of {len(anns)} annotations have no 'clean_category_id': "
                            "not a file written by noisyseg noise")
    ids = np.array(sorted(cats), dtype=np.int64)
    clean = np.searchsorted(ids, _gather_ids(anns, cats, "clean_category_id"))
    noisy = np.searchsorted(ids, _gather_ids(anns, cats, "category_id"))
    counts = np.bincount(clean * len(ids) + noisy, minlength=len(ids) ** 2).reshape(len(ids), len(ids))
    return [str(cats[c]["name"]) for c in ids.tolist()], counts.astype(np.int64)


def noise_stats(coco: dict) -> dict:
    """Summary of a noisy file: the realised matrix and the per-class and overall noise rates.

    Returns {"classes": [names], "counts": (K, K) int64 array (rows clean, columns noisy),
    "per_class": {name: {"n": annotations with this clean class, "changed": how many now differ,
    "rate": changed / n}} (classes with n > 0), "precision": {name: {"n": annotations labelled with this
    class now, "right": those whose clean class it is, "precision": right / n}} (label precision; labels
    carried by at least one annotation), "n", "n_changed", "rate"}.
    """
    names, counts = realised_matrix(coco)
    totals = counts.sum(axis=1)
    per_class = {}
    for i, name in enumerate(names):
        if totals[i]:
            moved = int(totals[i] - counts[i, i])
            per_class[name] = {"n": int(totals[i]), "changed": moved, "rate": moved / int(totals[i])}
    labelled = counts.sum(axis=0)
    precision = {name: {"n": int(labelled[i]), "right": int(counts[i, i]),
                        "precision": int(counts[i, i]) / int(labelled[i])}
                 for i, name in enumerate(names) if labelled[i]}
    n, n_changed = int(counts.sum()), int(counts.sum() - np.trace(counts))
    return {"classes": names, "counts": counts, "per_class": per_class, "precision": precision, "n": n,
            "n_changed": n_changed, "rate": n_changed / n if n else 0.0}
