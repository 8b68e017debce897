"""The decisions file a reviewer exports from review.html, and applying it to the audited COCO file.

A decisions file (JSON) says, per reviewed annotation, what to do with it::

    {"format": "noisyseg review decisions", "version": 1,
     "data": "train.json", "data_sha256": "<sha256 of the audited file's bytes>",
     "audit": {"id": "<audit id>", "folder": "...", "checkpoints": [...], "filter_by": "...", ...},
     "decisions": [{"annotation_id": 17, "action": "relabel", "category_id": 3, "given_category_id": 5},
                   {"annotation_id": 4, "action": "keep", "given_category_id": 2}, ...],
     "undecided": [{"annotation_id": 9, "given_category_id": 1, "suggested_category_id": 7}, ...]}

Actions: ``keep`` (nothing changes), ``relabel`` (``category_id`` becomes the entry's ``category_id``),
``ignore`` (``"class_ignored": true`` is added: the trainer takes no class supervision from it) and
``drop`` (the annotation is removed). ``undecided`` lists the annotations on the page nobody decided;
:func:`apply_decisions` leaves them as they are, or applies one default action to all of them (relabel
meaning their suggested class).

This module imports neither numpy nor torch, so ``apply-decisions`` starts at once; :func:`record_audit`
(the ``info.audit`` bookkeeping) is shared with ``--fix``.

The file is tied to the bytes it was reviewed on: a data file whose sha256 differs is refused, as is an
entry naming an annotation or a class the file does not have.
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from pathlib import Path
from typing import Any

from noisyseg.errors import NoisysegError

FORMAT = "noisyseg review decisions"  # review.html writes it into the files it exports
DECISION_ACTIONS = ("keep", "relabel", "ignore", "drop")
MAX_DECISIONS_BYTES = 512 << 20  # a decisions file lists at most every annotation of a file; bound the read


def read_decisions(path: str | Path) -> dict[str, Any]:
    """The parsed decisions file at ``path``, its structure checked (one-line errors naming the field)."""
    path = Path(path)
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        raise NoisysegError(f"{path}: decisions file not found") from None
    except OSError as e:
        raise NoisysegError(f"{path}: cannot read the decisions file ({e.strerror or e})") from None
    if size > MAX_DECISIONS_BYTES:
        raise NoisysegError(f"{path}: {size} bytes is larger than any decisions file (at most "
                            f"{MAX_DECISIONS_BYTES} bytes)")
    from noisyseg.utils.io import read_json

    obj = read_json(path, "decisions file")
    if not isinstance(obj, dict) or obj.get("format") != FORMAT:
        raise NoisysegError(f"{path}: not a decisions file (expected \"format\": \"{FORMAT}\", as review.html "
                            "exports)")
    if obj.get("version") != 1:
        raise NoisysegError(f"{path}: version {obj.get('version')!r}: this noisyseg reads version 1")
    sha = obj.get("data_sha256")
    if not isinstance(sha, str) or len(sha) != 64 or any(ch not in "0123456789abcdef" for ch in sha):
        raise NoisysegError(f"{path}: data_sha256 must be the 64 hex digits of the audited file's sha256")
    for key in ("decisions", "undecided"):
        if not isinstance(obj.get(key, []), list):
            raise NoisysegError(f"{path}: '{key}' must be a list")
    if not isinstance(obj.get("audit", {}), dict):
        raise NoisysegError(f"{path}: 'audit' must be an object")
    return obj


def _integer(value: Any) -> Any:
    """``value`` as an int when it is one, or the decimal string review.html writes for an id JavaScript
    cannot hold exactly (2**53 or more); anything else unchanged (and then refused by the caller)."""
    if isinstance(value, str) and value.lstrip("-").isdigit() and len(value) <= 40:
        return int(value)
    return value


def _id(entry: Any, where: str) -> int:
    if not isinstance(entry, dict):
        raise NoisysegError(f"{where}: expected an object with annotation_id and action")
    ann_id = _integer(entry.get("annotation_id"))
    if isinstance(ann_id, bool) or not isinstance(ann_id, int):
        raise NoisysegError(f"{where}: annotation_id must be an integer, got {ann_id!r}")
    return ann_id


def apply_decisions(coco: dict, decisions: dict[str, Any], source: str | Path = "", data_name: str | Path = "",
                    undecided: str = "keep") -> tuple[dict, dict[str, Any]]:
    """Apply the parsed ``decisions`` to the parsed COCO file ``coco`` (changed in place).

    Only the annotations the file names change: decided ones by their action, undecided ones by
    ``undecided`` (``keep`` leaves them; ``relabel`` uses their suggested class). ``source`` and
    ``data_name`` name the two files in error messages. The data file's sha256 is checked by the caller
    (:func:`apply_file`). Returns ``(coco, report)``; ``report`` is the new ``info.audit``, the earlier one
    moving to ``info.audit_history``.

    Raises a one-line :class:`NoisysegError` naming the entry (``decisions[i]`` or ``undecided[i]``) for an
    annotation id the file does not have or that is listed twice, an unknown action or class, or a given
    class that differs from the file's.
    """
    if undecided not in DECISION_ACTIONS:
        raise NoisysegError(f"--undecided {undecided}: expected one of {', '.join(DECISION_ACTIONS)}")
    annotations = coco.get("annotations")
    if not isinstance(annotations, list):
        raise NoisysegError(f"{data_name}: expected a COCO JSON object with an 'annotations' list")
    position = {a["id"]: i for i, a in enumerate(annotations) if isinstance(a, dict) and isinstance(a.get("id"), int)}
    categories = {c["id"] for c in coco.get("categories") or [] if isinstance(c, dict) and isinstance(c.get("id"), int)}
    plan: list[tuple[int, str, Any, bool]] = []  # (position, action, new category or None, undecided)
    seen: dict[int, str] = {}
    entries = [(f"decisions[{i}]", e, False) for i, e in enumerate(decisions.get("decisions", []))]
    entries += [(f"undecided[{i}]", e, True) for i, e in enumerate(decisions.get("undecided", []))]
    for label, entry, is_undecided in entries:
        where = f"{source}: {label}"
        ann_id = _id(entry, where)
        if ann_id in seen:
            raise NoisysegError(f"{where}: annotation {ann_id} is listed again (first in {seen[ann_id]})")
        seen[ann_id] = label
        i = position.get(ann_id)
        if i is None:
            raise NoisysegError(f"{where}: annotation {ann_id} is not in {data_name}")
        ann = annotations[i]
        given = _integer(entry.get("given_category_id"))
        if given is not None and given != ann.get("category_id"):
            raise NoisysegError(f"{where}: annotation {ann_id} has category_id {ann.get('category_id')} in "
                                f"{data_name}, the review saw {given}")
        action = undecided if is_undecided else entry.get("action")
        if action not in DECISION_ACTIONS:
            raise NoisysegError(f"{where}: action {action!r}: expected one of {', '.join(DECISION_ACTIONS)}")
        new = None
        if action == "relabel":
            key = "suggested_category_id" if is_undecided else "category_id"
            new = _integer(entry.get(key))
            if isinstance(new, bool) or not isinstance(new, int) or new not in categories:
                raise NoisysegError(f"{where}: {key} {new!r} is not a category of {data_name}")
        plan.append((i, action, new, is_undecided))

    counts: Counter = Counter()
    ids: dict[str, list] = {a: [] for a in DECISION_ACTIONS}
    transitions: Counter = Counter()
    n_changed = 0
    drop = set()
    for i, action, new, is_undecided in plan:
        ann = annotations[i]
        counts[action] += not is_undecided
        ids[action].append(ann["id"])
        if action == "relabel" and new != ann["category_id"]:
            transitions[(ann["category_id"], new)] += 1
            ann["category_id"] = new
            n_changed += 1
        elif action == "ignore":
            ann["class_ignored"] = True
            n_changed += 1
        elif action == "drop":
            drop.add(i)
            n_changed += 1
    if drop:
        coco["annotations"] = [a for i, a in enumerate(annotations) if i not in drop]
    n_undecided = len(decisions.get("undecided", []))
    report = {
        "action": "review", "decisions_file": str(source), "data": str(data_name),
        "data_sha256": decisions["data_sha256"], "audit_id": decisions.get("audit", {}).get("id"),
        "audit_folder": decisions.get("audit", {}).get("folder"),
        "checkpoints": decisions.get("audit", {}).get("checkpoints"),
        "n_decided": len(decisions.get("decisions", [])), "n_undecided": n_undecided,
        "undecided_action": undecided, "counts": {a: counts[a] for a in DECISION_ACTIONS},  # decided ones only
        "n_changed": n_changed, "annotation_ids": ids,
        "transitions": [[a, b, n] for (a, b), n in sorted(transitions.items())],
    }
    record_audit(coco, report, data_name)
    return coco, report


def record_audit(coco: dict, report: dict[str, Any], source: str | Path = "") -> None:
    """Set ``coco["info"]["audit"] = report``; an earlier ``info.audit`` moves to the end of
    ``info.audit_history`` (oldest first)."""
    info = coco.get("info")
    if info is None:
        info = {}
    elif not isinstance(info, dict):
        raise NoisysegError(f"{source}: 'info' must be an object")
    if "audit" in info:
        info["audit_history"] = list(info.get("audit_history") or []) + [info["audit"]]
    info["audit"] = report
    coco["info"] = info


def apply_file(decisions_path: str | Path, data_path: str | Path, out_path: str | Path,
               undecided: str = "keep") -> dict[str, Any]:
    """Write ``out_path``: ``data_path`` with the decisions of ``decisions_path`` applied.

    Checked before anything is written: the output is neither input nor an existing file an audit did
    not write; the decisions were made on exactly these bytes (sha256); every entry names an annotation
    and class of the file. The input is never changed; the output is written atomically. Returns the
    ``info.audit`` block.
    """
    from noisyseg.audit.outputs import check_repaired_output
    from noisyseg.utils.io import atomic_write_text

    if undecided not in DECISION_ACTIONS:
        raise NoisysegError(f"--undecided {undecided}: expected one of {', '.join(DECISION_ACTIONS)}")
    check_repaired_output(out_path, [("data file", data_path), ("decisions file", decisions_path)], "-o")
    decisions = read_decisions(decisions_path)
    try:
        raw = Path(data_path).read_bytes()
    except FileNotFoundError:
        raise NoisysegError(f"{data_path}: COCO annotation file not found") from None
    except OSError as e:
        raise NoisysegError(f"{data_path}: cannot read ({e.strerror or e})") from None
    sha = hashlib.sha256(raw).hexdigest()
    if sha != decisions["data_sha256"]:
        raise NoisysegError(f"{decisions_path}: data_sha256 {decisions['data_sha256'][:12]}... was reviewed on "
                            f"{decisions.get('data', 'another file')!s}, {data_path} has sha256 {sha[:12]}... "
                            "(another file, or changed since the audit)")
    try:
        coco = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as e:
        raise NoisysegError(f"{data_path}: not valid JSON ({e})") from None
    del raw
    if not isinstance(coco, dict):
        raise NoisysegError(f"{data_path}: expected a COCO JSON object")
    coco, report = apply_decisions(coco, decisions, decisions_path, data_path, undecided)
    atomic_write_text(out_path, json.dumps(coco, separators=(",", ":")))
    return report
