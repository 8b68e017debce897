"""``--fix``: write a repaired copy of the audited COCO file.

Actions on the flagged annotations (nothing else in the file changes, key order included):

- ``relabel``: ``category_id`` becomes the suggested class.
- ``ignore``: the annotation stays, with ``"class_ignored": true`` added (``category_id`` kept). The
  trainer keeps such an instance as a foreground object for the RPN, box regression and mask, but takes
  no class supervision from it (the RoI classifier learns only foreground vs background for the RoIs
  matched to it).
- ``drop``: the annotation is removed.

``info.audit`` records what was done; an earlier ``info.audit`` moves to the list ``info.audit_history``
(oldest first), as ``info.noise`` does for layered noise.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from pathlib import Path
from typing import Any

from noisyseg.audit import ACTIONS
from noisyseg.audit.decisions import record_audit
from noisyseg.audit.issues import LabelIssues
from noisyseg.errors import NoisysegError
from noisyseg.utils.io import atomic_write_text, read_json


def flagged_table(issues: LabelIssues | str | Path) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """The flagged rows (annotation_id, given_category_id, suggested_category_id) and provenance.

    ``issues`` is an audit result or the path of a ``label_issues.json`` written by one.
    """
    if isinstance(issues, LabelIssues):
        import cleanlab

        from noisyseg.audit.issues import IssueRows

        rows = IssueRows(issues).flagged()
        return rows, {"checkpoints": [str(p) for p in issues.scores.checkpoints], "rule": issues.rule,
                      "cleanlab_version": cleanlab.__version__, "n_scored": len(issues.rank)}
    path = Path(issues)
    table = read_json(path, "label issues file")
    if not isinstance(table, dict) or not isinstance(table.get("annotations"), list):
        raise NoisysegError(f"{path}: expected a label_issues.json with an 'annotations' list")
    rows = []
    for i, r in enumerate(table["annotations"]):
        for key in ("annotation_id", "given_category_id", "suggested_category_id", "is_issue"):
            if not isinstance(r, dict) or key not in r:
                raise NoisysegError(f"{path}: annotations[{i}] has no '{key}'")
        if r["is_issue"]:
            rows.append(r)
    return rows, {"checkpoints": table.get("checkpoints", []), "rule": table.get("rule", ""),
                  "n_scored": len(table["annotations"]), "issues_file": str(path)}


def repair(coco: dict, issues: LabelIssues | str | Path, action: str, source: str | Path = "",
           extra: dict[str, Any] | None = None) -> tuple[dict, dict[str, Any]]:
    """Apply ``action`` to the flagged annotations of the parsed file ``coco`` (changed in place).

    Returns ``(coco, report)``; ``report`` is the ``info.audit`` block. Raises a one-line
    :class:`NoisysegError` when a flagged annotation is missing from the file or its category differs
    from the one audited (the file changed since the audit).
    """
    if action not in ACTIONS:
        raise NoisysegError(f"action must be one of {', '.join(ACTIONS)}, got {action!r}")
    rows, provenance = flagged_table(issues)
    position = {a.get("id"): i for i, a in enumerate(coco["annotations"])}
    flagged_positions = set()
    transitions: Counter = Counter()
    n_changed = 0
    for r in rows:
        i = position.get(r["annotation_id"])
        if i is None:
            raise NoisysegError(f"{source}: flagged annotation {r['annotation_id']} is not in this file")
        ann = coco["annotations"][i]
        if ann["category_id"] != r["given_category_id"]:
            raise NoisysegError(f"{source}: annotation {r['annotation_id']} has category_id {ann['category_id']}, "
                                f"the audit saw {r['given_category_id']} (audit this file again)")
        flagged_positions.add(i)
        if action == "relabel":
            new = r["suggested_category_id"]
            if new != ann["category_id"]:
                transitions[(ann["category_id"], new)] += 1
                n_changed += 1
                ann["category_id"] = new
        elif action == "ignore":
            ann["class_ignored"] = True
            n_changed += 1
    if action == "drop":
        coco["annotations"] = [a for i, a in enumerate(coco["annotations"]) if i not in flagged_positions]
        n_changed = len(flagged_positions)
    report = {
        "action": action, "n_flagged": len(rows), "n_changed": n_changed,
        "annotation_ids": [r["annotation_id"] for r in rows], **provenance, **(extra or {}),
    }
    if action == "relabel":
        report["transitions"] = [[a, b, n] for (a, b), n in sorted(transitions.items())]
    record_audit(coco, report, source)
    return coco, report


def repaired_file(data_json: str | Path, issues: LabelIssues, action: str, data_sha256: str | None = None,
                  extra: dict[str, Any] | None = None, spool: Any = None) -> tuple[Any, dict[str, Any]]:
    """The repaired file (compact json, the bytes :func:`fix_file` writes) and its ``info.audit`` block, for
    an audit that kept only the arrays of ``data_json``: the file is read again here.

    Made in one pass over the file's text, one annotation parsed, changed and encoded at a time, into
    ``spool`` (a :class:`noisyseg.audit.outputs.Spool`; a new one in the system's temporary folder when
    None): a COCO-sized file never exists as Python objects (2 GB) nor as one output string. A file the
    one pass cannot follow (a repeated top-level ``annotations`` key) is parsed whole instead.
    ``data_sha256``: the sha256 of the bytes audited; a file changed since is a one-line error.
    Returns ``(spooled file, report)``.
    """
    from noisyseg.audit.api import file_sha256
    from noisyseg.audit.outputs import Spool

    if data_sha256 is not None and file_sha256(data_json) != data_sha256:
        raise NoisysegError(f"{data_json}: the file changed during the audit; audit it again")
    spool = spool if spool is not None else Spool(None)
    rows, provenance = flagged_table(issues)
    try:
        raw = Path(data_json).read_bytes()
        text = raw.decode(json.detect_encoding(raw), "surrogatepass")  # as json.loads decodes bytes
    except FileNotFoundError:
        raise NoisysegError(f"{data_json}: COCO annotation file not found") from None
    except (OSError, UnicodeDecodeError) as e:
        raise NoisysegError(f"{data_json}: cannot read ({getattr(e, 'strerror', None) or e})") from None
    del raw
    try:
        streamed = _stream_repair(text, rows, provenance, action, data_json, extra, spool)
    except json.JSONDecodeError as e:
        raise NoisysegError(f"{data_json}: not valid JSON ({e})") from None
    if streamed is not None:
        return streamed
    coco = json.loads(text)
    del text
    coco, report = repair(coco, issues, action, data_json, extra)
    out = spool.add(json.dumps(coco, separators=(",", ":")).encode("utf-8"))
    return out, report


_WS = re.compile(r"[ \t\n\r]*")


def _stream_repair(text: str, rows: list[dict[str, Any]], provenance: dict[str, Any], action: str,
                   source: str | Path, extra: dict[str, Any] | None, spool: Any) -> tuple[Any, dict] | None:
    """:func:`repair` + ``json.dumps(separators=(",", ":"))`` over the text of a COCO json object, one
    annotation at a time (same bytes, same report, same errors); None when the text is not one object
    with a single ``annotations`` list (the caller then parses it whole)."""
    from noisyseg.audit.outputs import Spool

    decoder, encoder = json.JSONDecoder(), json.JSONEncoder(separators=(",", ":"))
    flagged = {r["annotation_id"]: r for r in rows}
    seen: dict[Any, Any] = {}  # flagged annotation id -> its category_id in the file
    transitions: Counter = Counter()
    n_changed = 0
    top: dict[str, Any] = {}  # the other members, in file order; "annotations" holds a placeholder
    anns = Spool(None)
    try:
        ws = _WS.match
        i = ws(text, 0).end()
        if text[i:i + 1] != "{":
            return None
        i = ws(text, i + 1).end()
        members = 0
        while text[i:i + 1] != "}":
            if members:
                if text[i:i + 1] != ",":
                    return None
                i = ws(text, i + 1).end()
            members += 1
            if text[i:i + 1] != '"':
                return None
            key, i = decoder.raw_decode(text, i)
            i = ws(text, i).end()
            if text[i:i + 1] != ":":
                return None
            i = ws(text, i + 1).end()
            if key != "annotations":
                top[key], i = decoder.raw_decode(text, i)
                i = ws(text, i).end()
                continue
            if key in top or text[i:i + 1] != "[":
                return None
            top[key] = None
            i = ws(text, i + 1).end()
            parsed = written = 0
            anns.add(b"[")
            while text[i:i + 1] != "]":
                if parsed:
                    if text[i:i + 1] != ",":
                        return None
                    i = ws(text, i + 1).end()
                parsed += 1
                a, i = decoder.raw_decode(text, i)
                i = ws(text, i).end()
                r = flagged.get(a.get("id")) if isinstance(a, dict) else None
                if r is not None:
                    seen[r["annotation_id"]] = a["category_id"]
                    if a["category_id"] == r["given_category_id"]:
                        if action == "relabel" and r["suggested_category_id"] != a["category_id"]:
                            transitions[(a["category_id"], r["suggested_category_id"])] += 1
                            n_changed += 1
                            a["category_id"] = r["suggested_category_id"]
                        elif action == "ignore":
                            a["class_ignored"] = True
                            n_changed += 1
                        elif action == "drop":
                            continue
                anns.add((b"," if written else b"") + encoder.encode(a).encode("utf-8"))
                written += 1
            anns.add(b"]")
            i = ws(text, i + 1).end()
        if "annotations" not in top or ws(text, i + 1).end() != len(text):
            return None
        del text
        for r in rows:  # the first problem in the order of the table, as repair finds it
            if r["annotation_id"] not in seen:
                raise NoisysegError(f"{source}: flagged annotation {r['annotation_id']} is not in this file")
            if seen[r["annotation_id"]] != r["given_category_id"]:
                raise NoisysegError(f"{source}: annotation {r['annotation_id']} has category_id "
                                    f"{seen[r['annotation_id']]}, the audit saw {r['given_category_id']} (audit this "
                                    "file again)")
        if action == "drop":
            n_changed = len(rows)
        report = {"action": action, "n_flagged": len(rows), "n_changed": n_changed,
                  "annotation_ids": [r["annotation_id"] for r in rows], **provenance, **(extra or {})}
        if action == "relabel":
            report["transitions"] = [[a, b, n] for (a, b), n in sorted(transitions.items())]
        record_audit(top, report, source)
        out = spool.writer()
        out.write(b"{")
        for k, (key, value) in enumerate(top.items()):
            out.write((b"," if k else b"") + encoder.encode(key).encode("utf-8") + b":")
            if key == "annotations":  # copied from the annotations' own spool, 16 MB at a time
                for start in range(0, anns.size, 1 << 24):
                    out.write(anns.read(start, min(1 << 24, anns.size - start)))
            else:
                out.write(encoder.encode(value).encode("utf-8"))
        out.write(b"}")
        return out.file, report
    finally:
        anns.close()


def fix_file(data_json: str | Path, issues: LabelIssues | str | Path, out_json: str | Path, action: str,
             extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """Write ``out_json``: ``data_json`` with ``action`` applied to the flagged annotations of ``issues``.

    ``issues`` is an audit of ``data_json`` (a :class:`LabelIssues` or the path of its
    ``label_issues.json``). The input files are never changed and never overwritten, nor is an existing file
    no audit wrote; the output is written atomically. Returns the ``info.audit`` block.
    """
    if action not in ACTIONS:
        raise NoisysegError(f"action must be one of {', '.join(ACTIONS)}, got {action!r}")
    from noisyseg.audit.outputs import check_repaired_output

    inputs = [("audited data file", data_json)]
    if not isinstance(issues, LabelIssues):
        inputs.append(("label issues file", issues))
    check_repaired_output(out_json, inputs, "--fix")
    coco = read_json(data_json, "COCO annotation file")
    if not isinstance(coco, dict) or not isinstance(coco.get("annotations"), list):
        raise NoisysegError(f"{data_json}: expected a COCO JSON object with an 'annotations' list")
    coco, report = repair(coco, issues, action, data_json, {"data": str(data_json), **(extra or {})})
    atomic_write_text(out_json, json.dumps(coco, separators=(",", ":")))
    return report
