"""The audit's streamed writers give the same bytes as the writers they replaced.

The table (label_issues.csv/.json) is written from arrays a chunk of rows at a time
(:func:`noisyseg.audit.issues.write_table`) instead of from one dict per row; the review page and the crops
read an :class:`~noisyseg.audit.flat.AuditData` instead of the parsed json. Each is compared here with the
dict-based writer it replaced, on the same small audit.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
from pathlib import Path

import numpy as np
import pytest

from noisyseg.audit import issues as issues_mod
from noisyseg.audit.flat import AuditData
from noisyseg.audit.issues import (
    IssueRows,
    LabelIssues,
    find_issues,
    issue_rows,
    rows_to_csv,
    write_table,
)
from noisyseg.audit.score import AnnotationScores
from noisyseg.data.coco import LabelMap

# class names a csv must quote or json must escape
NAMES = ("plain", "with,comma", 'say "hi"', "line\nbreak", "caf\u00e9 \u732b", "")


def _scores(n: int, with_truth: bool, seed: int = 0) -> AnnotationScores:
    rng = np.random.default_rng(seed)
    k = len(NAMES)
    clean = rng.integers(0, k, n)
    given = np.where(rng.random(n) < 0.3, (clean + rng.integers(1, k, n)) % k, clean)
    logits = rng.normal(0, 1, (n, k))
    logits[np.arange(n), clean] += 2.5
    probs = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    probs[:3] = 1.0 / k  # ties in label quality (ranked in file order) and a round float
    lm = LabelMap((3, 7, 8, 20, 2**40, 99), NAMES)
    ids = rng.choice(10**12, n, replace=False) if n else np.zeros(0, dtype=np.int64)
    return AnnotationScores(np.asarray(ids, dtype=np.int64), np.arange(n, dtype=np.int64) // 3, given,
                            clean if with_truth else None, probs, rng.random(n) * 1e-3, lm, [Path("m.pt")],
                            Path("."), 1.0)


def _old_writer(issues: LabelIssues, header: dict) -> tuple[bytes, bytes, str]:
    """The writer before: one dict per row, csv.DictWriter, json.dumps of the whole table (as api.audit did)."""
    rows = issue_rows(issues)
    text = json.dumps({**header, "columns": list(rows[0]) if rows else [], "annotations": rows})
    return (rows_to_csv(rows).encode("utf-8"), text.encode("utf-8"),
            hashlib.sha256(text.encode("utf-8")).hexdigest()[:16])


@pytest.mark.parametrize("n,with_truth", [(0, True), (1, False), (157, True), (157, False)])
def test_streamed_table_equals_the_dict_writer(n, with_truth, monkeypatch):
    monkeypatch.setattr(issues_mod, "TABLE_CHUNK", 20)  # several chunks even on a small table
    issues = find_issues(_scores(n, with_truth)) if n > 1 else _one_or_none(n, with_truth)
    header = {"data": "d\u00e9j\u00e0/x.json", "checkpoints": ["a.pt", "b \"c\".pt"], "rule": issues.rule}
    csv_out, json_out = io.BytesIO(), io.BytesIO()
    audit_id = write_table(issues, header, csv_out, json_out)
    old_csv, old_json, old_id = _old_writer(issues, header)
    assert csv_out.getvalue() == old_csv
    assert json_out.getvalue() == old_json
    assert audit_id == old_id == write_table(issues, header)  # the id does not depend on the outputs
    if n:  # the csv parses back to the same cells, odd names included
        back = list(csv.DictReader(io.StringIO(old_csv.decode("utf-8"))))
        assert [r["given_name"] for r in back] == [r["given_name"] for r in issue_rows(issues)]
    assert list(IssueRows(issues)) == issue_rows(issues)
    rows = IssueRows(issues)
    if n:
        assert rows[-1] == issue_rows(issues)[-1] and rows[1:3] == issue_rows(issues)[1:3]
    with pytest.raises(IndexError):
        rows[n]


def _one_or_none(n: int, with_truth: bool) -> LabelIssues:
    """find_issues needs two annotations for cleanlab; a table of 0 or 1 row is made by hand."""
    s = _scores(n, with_truth)
    return LabelIssues(s, s.pred_probs[np.arange(n), s.given_labels], s.pred_probs.argmax(1) if n else
                       np.zeros(0, dtype=np.int64), np.ones(n, dtype=bool), np.arange(1, n + 1), "both")


def test_nan_and_infinite_values_are_written_as_json_and_csv_write_them():
    issues = find_issues(_scores(30, True))
    issues.scores.background_prob[:3] = [np.nan, np.inf, -np.inf]
    header = {"data": "x", "checkpoints": [], "rule": "r"}
    csv_out, json_out = io.BytesIO(), io.BytesIO()
    write_table(issues, header, csv_out, json_out)
    old_csv, old_json, _ = _old_writer(issues, header)
    assert (csv_out.getvalue(), json_out.getvalue()) == (old_csv, old_json)
    assert b"NaN" in old_json and b"-Infinity" in old_json and b"nan" in old_csv


def test_audit_data_keeps_what_the_audit_reads(tmp_path):
    """AuditData holds exactly the non-crowd annotations' fields, file order, segmentations as parsed."""
    from helpers import write_tiny_coco

    data = write_tiny_coco(tmp_path / "tiny", n_images=4)
    coco = json.loads(Path(data["train_json"]).read_text())
    coco["annotations"][0]["clean_category_id"] = coco["categories"][-1]["id"]
    path = tmp_path / "c.json"
    path.write_text(json.dumps(coco))
    flat = AuditData.load(path)
    anns = [a for a in coco["annotations"] if not a.get("iscrowd", 0)]
    assert len(anns) < len(coco["annotations"])  # the fixture has a crowd annotation to leave out
    assert flat.ann_ids.tolist() == [a["id"] for a in anns]
    assert flat.ann_image_ids.tolist() == [a["image_id"] for a in anns]
    assert flat.category_ids.tolist() == [a["category_id"] for a in anns]
    assert flat.clean_category_ids.tolist() == [a.get("clean_category_id", a["category_id"]) for a in anns]
    assert flat.bbox.tolist() == [[float(v) for v in a["bbox"]] for a in anns]
    assert [flat.segmentation(r) for r in range(len(anns))] == [a.get("segmentation") for a in anns]
    assert [flat.image(m) for m in range(len(coco["images"]))] == [
        {k: im[k] for k in ("id", "file_name", "height", "width")} for im in coco["images"]]
    part = flat.subset(np.array([2, 0]))
    assert part.ann_ids.tolist() == [anns[2]["id"], anns[0]["id"]]
    assert part.segmentation(0) == anns[2]["segmentation"] and part.segmentation(1) == anns[0]["segmentation"]
    assert AuditData.from_coco(coco, path).seg_buffer.tobytes() == flat.seg_buffer.tobytes()


def _issues_of(path: Path, seed: int = 0) -> LabelIssues:
    """Random-probability issues over the file's scored annotations (as an audit of it would be laid out)."""
    flat = AuditData.load(path)
    lm = LabelMap.from_categories(flat.categories)
    rng = np.random.default_rng(seed)
    given = np.searchsorted(np.asarray(lm.category_ids), flat.category_ids)
    probs = rng.dirichlet(np.ones(lm.num_classes), len(flat))
    scores = AnnotationScores(flat.ann_ids.copy(), flat.ann_image_ids, given, None, probs, rng.random(len(flat)),
                              lm, [Path("m.pt")], Path("."), 1.0)
    return find_issues(scores, "low_self_confidence")


@pytest.fixture
def coco_file(tmp_path):
    from helpers import write_tiny_coco

    data = write_tiny_coco(tmp_path / "tiny", n_images=8)
    return json.loads(Path(data["train_json"]).read_text())


@pytest.mark.parametrize("action", ["relabel", "ignore", "drop"])
@pytest.mark.parametrize("layout", ["compact", "indented", "earlier_audit", "no_info", "repeated_key"])
def test_streamed_repair_equals_repair_then_dumps(coco_file, tmp_path, action, layout, monkeypatch):
    from noisyseg.audit import fix as fix_mod
    from noisyseg.audit.fix import repair, repaired_file

    coco = {"info": {"description": "caf\u00e9 \u732b", "audit": {"action": "drop"}}} if layout == "earlier_audit" else {}
    coco.update(coco_file)
    if layout == "no_info":
        coco.pop("info", None)
    coco["annotations"][0]["note"] = "\u00e9\ud83d\ude00 \"quoted\""  # escapes and a character past the BMP
    text = json.dumps(coco, indent=2) if layout == "indented" else json.dumps(coco)
    if layout == "repeated_key":  # a file the one pass does not follow: parsed whole (same bytes)
        text = text[:-1] + ', "annotations": ' + json.dumps(coco["annotations"]) + "}"
    path = tmp_path / "d.json"
    path.write_text(text)
    issues = _issues_of(path)
    assert issues.is_issue.any()
    if layout != "repeated_key":  # the one pass, not the whole-file parse it falls back to
        monkeypatch.setattr(fix_mod, "repair", None)
    got, report = repaired_file(path, issues, action, extra={"data": str(path)})
    monkeypatch.undo()
    want, want_report = repair(json.loads(text), issues, action, path, {"data": str(path)})
    assert got.read() == json.dumps(want, separators=(",", ":")).encode("utf-8")
    assert report == want_report


@pytest.mark.parametrize("change", ["category", "missing"])
def test_streamed_repair_gives_repairs_errors(coco_file, tmp_path, change):
    from noisyseg.audit.fix import repair, repaired_file
    from noisyseg.errors import NoisysegError

    path = tmp_path / "d.json"
    path.write_text(json.dumps(coco_file))
    issues = _issues_of(path)
    flagged = IssueRows(issues).flagged()
    changed = json.loads(json.dumps(coco_file))
    for r in flagged[1:3]:  # the second and third flagged rows: the error names the second
        a = next(a for a in changed["annotations"] if a["id"] == r["annotation_id"])
        if change == "category":
            a["category_id"] = next(c["id"] for c in changed["categories"] if c["id"] != a["category_id"])
        else:
            changed["annotations"].remove(a)
    path.write_text(json.dumps(changed))
    with pytest.raises(NoisysegError) as want:
        repair(json.loads(path.read_text()), issues, "relabel", path)
    with pytest.raises(NoisysegError) as got:
        repaired_file(path, issues, "relabel")
    assert str(got.value) == str(want.value) and str(flagged[1]["annotation_id"]) in str(got.value)


def test_repaired_file_refuses_a_file_changed_since_the_audit(tmp_path):
    from noisyseg.audit.fix import repaired_file
    from noisyseg.errors import NoisysegError

    path = tmp_path / "d.json"
    path.write_text("{}")
    issues = find_issues(_scores(20, False))
    with pytest.raises(NoisysegError) as e:
        repaired_file(path, issues, "relabel", "0" * 64)
    assert str(e.value) == f"{path}: the file changed during the audit; audit it again"
