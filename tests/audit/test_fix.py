"""--fix: each action changes exactly the flagged annotations and records itself in info.audit."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from noisyseg.audit.fix import fix_file, repair
from noisyseg.audit.issues import LabelIssues, issue_rows
from noisyseg.audit.score import AnnotationScores
from noisyseg.data.coco import LabelMap
from noisyseg.errors import NoisysegError


def _issues(coco: dict, flagged_ids: set, suggestion: dict) -> LabelIssues:
    """A verdict on ``coco`` that flags ``flagged_ids``, suggesting ``suggestion[id]`` (a category id)."""
    lm = LabelMap.from_categories(coco["categories"])
    anns = [a for a in coco["annotations"] if not a.get("iscrowd", 0)]
    idx = {c: i for i, c in enumerate(lm.category_ids)}
    n, k = len(anns), lm.num_classes
    given = np.array([idx[a["category_id"]] for a in anns])
    sugg = np.array([idx[suggestion.get(a["id"], a["category_id"])] for a in anns])
    probs = np.full((n, k), 0.1 / (k - 1))
    probs[np.arange(n), sugg] = 0.9
    scores = AnnotationScores(np.array([a["id"] for a in anns]), np.array([a["image_id"] for a in anns]), given,
                              None, probs, np.zeros(n), lm, [Path("run/checkpoints/last.pt")], Path("."), 1.0)
    quality = probs[np.arange(n), given]
    rank = np.empty(n, dtype=np.int64)
    rank[np.argsort(quality, kind="stable")] = np.arange(1, n + 1)
    flags = np.array([a["id"] in flagged_ids for a in anns])
    return LabelIssues(scores, quality, sugg, flags, rank, "prune_by_noise_rate")


@pytest.fixture
def case(tiny_data):
    path = Path(tiny_data["noisy_json"])
    coco = json.loads(path.read_text())
    # flag annotation 2 (suggest category 9), 5 (suggest 2) and 7 (suggestion = its own class)
    by_id = {a["id"]: a for a in coco["annotations"]}
    suggestion = {2: 9 if by_id[2]["category_id"] != 9 else 2, 5: 2 if by_id[5]["category_id"] != 2 else 5}
    return path, coco, _issues(coco, {2, 5, 7}, suggestion), suggestion


def test_relabel_changes_only_the_flagged_category_ids(case, tmp_path):
    path, original, issues, suggestion = case
    before = path.read_bytes()
    out = tmp_path / "relabelled.json"
    report = fix_file(path, issues, out, "relabel")
    assert path.read_bytes() == before  # input untouched
    fixed = json.loads(out.read_text())
    expected = json.loads(before)
    for a in expected["annotations"]:
        if a["id"] in suggestion:
            a["category_id"] = suggestion[a["id"]]
    info = fixed.pop("info")
    expected.pop("info", None)
    assert fixed == expected
    assert [list(a) for a in fixed["annotations"]] == [list(a) for a in json.loads(before)["annotations"]]
    assert list(fixed) == [k for k in json.loads(before) if k != "info"]
    audit = info["audit"]
    assert report == audit  # what fix_file returns is the block it wrote
    assert audit["action"] == "relabel" and audit["n_flagged"] == 3 and audit["n_changed"] == 2
    assert sorted(audit["annotation_ids"]) == [2, 5, 7]
    by_id = {a["id"]: a for a in original["annotations"]}
    assert audit["transitions"] == sorted([[by_id[i]["category_id"], suggestion[i], 1] for i in suggestion])
    assert audit["checkpoints"] == ["run/checkpoints/last.pt"] and "find_label_issues" in audit["rule"]
    assert info["noise"] == original["info"]["noise"]  # the rest of info is kept


def test_ignore_marks_the_flagged_annotations(case, tmp_path):
    path, original, issues, _ = case
    out = tmp_path / "ignored.json"
    fix_file(path, issues, out, "ignore")
    fixed = json.loads(out.read_text())
    expected = json.loads(path.read_text())
    for a in expected["annotations"]:
        if a["id"] in (2, 5, 7):
            a["class_ignored"] = True  # appended last; category_id kept
    assert fixed["annotations"] == expected["annotations"]
    assert [list(a) for a in fixed["annotations"]] == [list(a) for a in expected["annotations"]]
    assert fixed["images"] == expected["images"] and fixed["categories"] == expected["categories"]
    assert fixed["info"]["audit"]["action"] == "ignore" and fixed["info"]["audit"]["n_changed"] == 3


def test_drop_removes_the_flagged_annotations(case, tmp_path):
    path, original, issues, _ = case
    out = tmp_path / "dropped.json"
    fix_file(path, issues, out, "drop")
    fixed = json.loads(out.read_text())
    assert fixed["annotations"] == [a for a in original["annotations"] if a["id"] not in (2, 5, 7)]
    assert fixed["images"] == original["images"]
    assert fixed["info"]["audit"]["n_changed"] == 3


def test_a_second_audit_moves_the_first_to_the_history(case, tmp_path):
    path, original, issues, _ = case
    first = tmp_path / "round1.json"
    fix_file(path, issues, first, "ignore")
    coco = json.loads(first.read_text())
    coco, report = repair(coco, _issues(coco, {3}, {}), "drop", first)
    assert coco["info"]["audit"] is report and report["action"] == "drop"
    assert [h["action"] for h in coco["info"]["audit_history"]] == ["ignore"]


def test_fix_refuses_bad_requests(case, tmp_path):
    path, original, issues, _ = case
    before = path.read_bytes()
    with pytest.raises(NoisysegError) as e:
        fix_file(path, issues, path, "relabel")
    assert str(e.value) == f"{path}: --fix would write over the audited data file ({path}); choose another path"
    mine = tmp_path / "mine.json"
    mine.write_text('{"a user": "file"}')
    with pytest.raises(NoisysegError) as e:
        fix_file(path, issues, mine, "relabel")
    assert str(e.value) == (f"{mine}: --fix would replace an existing file that no audit wrote; remove it or "
                            "choose another path")
    assert mine.read_text() == '{"a user": "file"}'
    earlier = tmp_path / "earlier_fix.json"
    fix_file(path, issues, earlier, "ignore")
    fix_file(path, issues, earlier, "drop")  # an earlier repaired file may be replaced
    assert json.loads(earlier.read_text())["info"]["audit"]["action"] == "drop"
    with pytest.raises(NoisysegError) as e:
        fix_file(path, issues, tmp_path / "x.json", "rename")
    assert str(e.value) == "action must be one of relabel, ignore, drop, got 'rename'"
    changed = json.loads(before)
    changed["annotations"][1]["category_id"] = 9 if changed["annotations"][1]["category_id"] != 9 else 2
    other = tmp_path / "changed.json"
    other.write_text(json.dumps(changed))
    with pytest.raises(NoisysegError) as e:
        fix_file(other, issues, tmp_path / "y.json", "relabel")
    assert str(e.value).startswith(f"{other}: annotation 2 has category_id ")
    assert str(e.value).endswith("(audit this file again)")
    assert path.read_bytes() == before
    assert not (tmp_path / "x.json").exists() and not (tmp_path / "y.json").exists()


def test_fix_from_a_label_issues_json(case, tmp_path):
    path, original, issues, suggestion = case
    table = tmp_path / "label_issues.json"
    table.write_text(json.dumps({"checkpoints": ["c.pt"], "rule": "r", "annotations": issue_rows(issues)}))
    a, b = tmp_path / "a.json", tmp_path / "b.json"
    fix_file(path, issues, a, "relabel")
    fix_file(path, table, b, "relabel")
    fa, fb = json.loads(a.read_text()), json.loads(b.read_text())
    assert fa["annotations"] == fb["annotations"]
    assert fb["info"]["audit"]["issues_file"] == str(table)
