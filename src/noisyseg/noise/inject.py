"""Seeded, vectorised class-label noise for COCO-format annotation files (DESIGN.md §2).

Only ``category_id`` changes; images, boxes, masks, ids, key order and extra fields are untouched.
Every annotation gains ``clean_category_id`` (kept when already present, so noise can be layered) and
the file's ``info`` gains a ``noise`` block describing what was done and what came out.
"""

from __future__ import annotations

import math
from collections import defaultdict
from typing import Any

import numpy as np

from noisyseg.errors import NoisysegError
from noisyseg.noise.presets import PRESETS

KINDS = ("symmetric", "asymmetric", "pairs", "matrix")
SAMPLINGS = ("exact", "bernoulli")


def _check_file(coco: Any) -> tuple[dict[int, dict], list[dict]]:
    if not isinstance(coco, dict):
        raise NoisysegError("expected a COCO JSON object with 'annotations' and 'categories'")
    for key in ("annotations", "categories"):
        if key not in coco:
            raise NoisysegError(f"missing '{key}'")
        if not isinstance(coco[key], list):
            raise NoisysegError(f"'{key}' must be a list")
    cats: dict[int, dict] = {}
    for i, c in enumerate(coco["categories"]):
        if not isinstance(c, dict) or "id" not in c or "name" not in c:
            raise NoisysegError(f"categories[{i}] needs an 'id' and a 'name'")
        cats[c["id"]] = c
    anns = coco["annotations"]
    for i, a in enumerate(anns):
        if not isinstance(a, dict) or "category_id" not in a:
            raise NoisysegError(f"annotations[{i}] has no 'category_id'")
        if a["category_id"] not in cats:
            raise NoisysegError(f"annotations[{i}] (id {a.get('id')}) has category_id {a['category_id']!r}, "
                                "not a listed category")
    return cats, anns


def _id_of_name(cats: dict[int, dict], where: str):
    by_name: dict[str, int] = {}
    for cid, c in cats.items():
        by_name.setdefault(str(c["name"]), cid)

    def lookup(name: str) -> int:
        if name not in by_name:
            raise NoisysegError(f"{where}: class {name!r} is not a category of this file "
                                f"(categories: {', '.join(sorted(by_name))})")
        return by_name[name]

    return lookup


def parse_pairs(text: str) -> list[tuple[str, str]]:
    """``"bus>car, cat>dog"`` -> [("bus", "car"), ("cat", "dog")]."""
    pairs = []
    for part in [p.strip() for p in text.split(",") if p.strip()]:
        if part.count(">") != 1:
            raise NoisysegError(f"--pairs: {part!r} is not of the form source>target")
        src, dst = (s.strip() for s in part.split(">"))
        if not src or not dst or src == dst:
            raise NoisysegError(f"--pairs: {part!r} needs two different class names")
        pairs.append((src, dst))
    if not pairs:
        raise NoisysegError("--pairs: no pair given")
    return pairs


def _targets(kind, cats, target_ids, lookup, preset, pairs, matrix) -> tuple[dict[int, tuple[np.ndarray, np.ndarray]], dict]:
    """source id -> (candidate target ids, their probabilities); only eligible source classes appear."""
    spec: dict[str, Any] = {}
    out: dict[int, tuple[np.ndarray, np.ndarray]] = {}
    tset = set(target_ids)
    if kind == "symmetric":
        if len(target_ids) < 2:
            raise NoisysegError("symmetric noise needs at least two target classes")
        for c in target_ids:
            others = np.array([o for o in target_ids if o != c], dtype=np.int64)
            out[c] = (others, np.full(len(others), 1.0 / len(others)))
    elif kind == "asymmetric":
        if preset is None:
            raise NoisysegError(f"asymmetric noise needs --preset ({', '.join(PRESETS)})")
        if preset not in PRESETS:
            raise NoisysegError(f"unknown preset {preset!r}; available: {', '.join(PRESETS)}")
        spec["preset"] = preset
        if preset == "supercategory":
            groups: dict[Any, list[int]] = defaultdict(list)
            for c in target_ids:
                groups[cats[c].get("supercategory")].append(c)
            for c in target_ids:
                others = [o for o in groups[cats[c].get("supercategory")] if o != c]
                if others:  # a class alone in its supercategory never changes
                    out[c] = (np.array(others, dtype=np.int64), np.full(len(others), 1.0 / len(others)))
        else:
            for src, dst in PRESETS[preset].items():
                s, d = lookup(src), lookup(dst)
                if s in tset:
                    out[s] = (np.array([d], dtype=np.int64), np.ones(1))
    elif kind == "pairs":
        if not pairs:
            raise NoisysegError("pairs noise needs --pairs, e.g. \"bus>car,cat>dog\"")
        spec["pairs"] = [f"{s}>{d}" for s, d in pairs]
        listed: dict[int, list[int]] = defaultdict(list)
        for src, dst in pairs:
            listed[lookup(src)].append(lookup(dst))
        for s, ds in listed.items():
            if s in tset:
                out[s] = (np.array(ds, dtype=np.int64), np.full(len(ds), 1.0 / len(ds)))
    elif kind == "matrix":
        if matrix is None:
            raise NoisysegError("matrix noise needs --matrix T.json ({\"classes\": [...], \"matrix\": [[...]]})")
        names, rows = _check_matrix(matrix)
        spec["matrix"] = {"classes": names, "matrix": rows}
        ids = [lookup(n) for n in names]
        for i, s in enumerate(ids):
            if s not in tset:
                continue
            probs = np.array([p for j, p in enumerate(rows[i]) if j != i], dtype=np.float64)
            cands = np.array([d for j, d in enumerate(ids) if j != i], dtype=np.int64)
            if probs.sum() > 0:  # the diagonal (staying) is not a change; off-diagonal mass is renormalised
                out[s] = (cands, probs / probs.sum())
    else:
        raise NoisysegError(f"unknown noise kind {kind!r}; available: {', '.join(KINDS)}")
    return out, spec


def _check_matrix(matrix: Any) -> tuple[list[str], list[list[float]]]:
    if not isinstance(matrix, dict) or "classes" not in matrix or "matrix" not in matrix:
        raise NoisysegError("--matrix: expected a JSON object {\"classes\": [names], \"matrix\": [[...], ...]}")
    names, rows = matrix["classes"], matrix["matrix"]
    k = len(names)
    if len(set(names)) != k:
        raise NoisysegError("--matrix: class names repeat")
    if not isinstance(rows, list) or len(rows) != k or any(not isinstance(r, list) or len(r) != k for r in rows):
        raise NoisysegError(f"--matrix: the matrix must be {k} x {k} (one row and column per listed class)")
    arr = np.asarray(rows, dtype=np.float64)
    if not np.isfinite(arr).all() or (arr < 0).any():
        raise NoisysegError("--matrix: entries must be finite and >= 0")
    bad = np.where(np.abs(arr.sum(axis=1) - 1.0) > 1e-6)[0]
    if len(bad):
        raise NoisysegError(f"--matrix: row {int(bad[0])} ({names[bad[0]]}) sums to {arr[bad[0]].sum():.6g}, not 1")
    return list(names), arr.tolist()


def inject(coco: dict, kind: str, rate: float, seed: int, preset: str | None = None,
           pairs: list[tuple[str, str]] | str | None = None, matrix: dict | None = None,
           classes: list[str] | None = None, sampling: str = "exact",
           include_crowd: bool = False, in_place: bool = False) -> tuple[dict, dict]:
    """Return (a noisy copy of ``coco``, a report). ``coco`` is not modified unless ``in_place``
    (the CLI owns the dict it loaded and saves a copy of 860k annotation dicts that way).

    kind: "symmetric" (uniform over the *other* target classes), "asymmetric" (``preset``: cityscapes,
    voc or supercategory), "pairs" (``pairs``: [(source, target), ...] by name or "a>b,c>d"; a source
    listed several times draws uniformly among its targets) or "matrix" (``matrix``:
    {"classes": [names], "matrix": K x K rows summing to 1}; a changed annotation of class c draws its
    new class from row c without the diagonal, renormalised).
    rate: fraction in [0, 1] of the *eligible* annotations of each class that change class. Eligible:
    not crowd (unless ``include_crowd``), of a target class (``classes`` by name, else every category
    with an annotation), and with somewhere to go under ``kind``.
    sampling: "exact" changes exactly round(rate * n_c) annotations of each class c; "bernoulli" flips a
    coin per annotation (as in the paper).
    """
    if isinstance(rate, bool) or not isinstance(rate, (int, float)) or not math.isfinite(rate) or not 0 <= rate <= 1:
        raise NoisysegError(f"rate must be a number in [0, 1], got {rate!r}")
    if sampling not in SAMPLINGS:
        raise NoisysegError(f"sampling must be one of {', '.join(SAMPLINGS)}, got {sampling!r}")
    if isinstance(pairs, str):
        pairs = parse_pairs(pairs)
    cats, anns = _check_file(coco)
    lookup = _id_of_name(cats, f"{kind} noise")
    current = np.fromiter((a["category_id"] for a in anns), dtype=np.int64, count=len(anns))
    if classes is not None:
        target_ids = sorted({_id_of_name(cats, "--classes")(n) for n in classes})
    else:
        target_ids = sorted(set(current.tolist()))
    targets, spec = _targets(kind, cats, target_ids, lookup, preset, pairs, matrix)

    crowd = np.fromiter((bool(a.get("iscrowd", 0)) for a in anns), dtype=bool, count=len(anns))
    usable = np.ones(len(anns), dtype=bool) if include_crowd else ~crowd
    rng = np.random.default_rng(seed)
    new = current.copy()
    eligible_counts, changed_counts = {}, {}
    for c in sorted(targets):  # fixed order: the same seed gives the same draws
        idx = np.flatnonzero((current == c) & usable)
        eligible_counts[c] = len(idx)
        if sampling == "exact":
            k = int(math.floor(rate * len(idx) + 0.5))
            chosen = np.sort(rng.choice(idx, size=k, replace=False)) if k else idx[:0]
        else:
            chosen = idx[rng.random(len(idx)) < rate]
        cands, probs = targets[c]
        new[chosen] = rng.choice(cands, size=len(chosen), p=probs)
        changed_counts[c] = len(chosen)

    noisy = coco if in_place else dict(coco)
    out_anns = anns if in_place else [dict(a) for a in anns]
    for b, before, after in zip(out_anns, current.tolist(), new.tolist()):
        b["category_id"] = after
        if "clean_category_id" not in b:
            b["clean_category_id"] = before
    noisy["annotations"] = out_anns

    names = {cid: str(c["name"]) for cid, c in cats.items()}
    n_eligible = sum(eligible_counts.values())
    n_changed = sum(changed_counts.values())
    report = {
        "kind": kind, "rate": rate, "seed": seed, "sampling": sampling, "include_crowd": include_crowd, **spec,
        "target_classes": [names[c] for c in target_ids],
        "eligible": {names[c]: n for c, n in eligible_counts.items()},
        "changed": {names[c]: n for c, n in changed_counts.items()},
        "transitions": transition_counts(current, new, names),
        "n_eligible": n_eligible, "n_changed": n_changed,
        "realised_rate": n_changed / n_eligible if n_eligible else 0.0,
    }
    info = dict(coco.get("info") or {})
    if "noise" in info:  # layering: keep the earlier blocks, newest last
        info["noise_history"] = list(info.get("noise_history", [])) + [info["noise"]]
    info["noise"] = report
    noisy["info"] = info
    return noisy, report


def transition_counts(clean: np.ndarray, noisy: np.ndarray, names: dict[int, str]) -> dict[str, dict[str, int]]:
    """{clean name: {noisy name: count}} over the annotations whose class changed."""
    changed = clean != noisy
    out: dict[str, dict[str, int]] = {}
    if changed.any():
        pairs, counts = np.unique(np.stack([clean[changed], noisy[changed]], axis=1), axis=0, return_counts=True)
        for (s, d), n in zip(pairs.tolist(), counts.tolist()):
            out.setdefault(names[s], {})[names[d]] = n
    return out


def realised_matrix(coco: dict) -> tuple[list[str], np.ndarray]:
    """(class names, (K, K) counts) with rows = clean class, columns = current (noisy) class.

    Needs ``clean_category_id`` on every annotation (as written by :func:`inject`).
    """
    cats, anns = _check_file(coco)
    if not anns or any("clean_category_id" not in a for a in anns):
        raise NoisysegError("no 'clean_category_id' on the annotations: not a file written by noisyseg noise")
    ids = sorted(cats)
    index = {cid: i for i, cid in enumerate(ids)}
    counts = np.zeros((len(ids), len(ids)), dtype=np.int64)
    clean = np.fromiter((index.get(a["clean_category_id"], -1) for a in anns), dtype=np.int64, count=len(anns))
    if (clean < 0).any():
        raise NoisysegError("a clean_category_id is not a listed category")
    noisy = np.fromiter((index[a["category_id"]] for a in anns), dtype=np.int64, count=len(anns))
    np.add.at(counts, (clean, noisy), 1)
    return [str(cats[c]["name"]) for c in ids], counts
