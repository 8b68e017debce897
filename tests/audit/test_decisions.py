"""``noisyseg apply-decisions``: exactly the decided annotations change, and a decisions file that does not
fit the data file is one line naming the entry."""

from __future__ import annotations

import copy
import hashlib
import json
from pathlib import Path

import pytest

from noisyseg.audit.decisions import FORMAT, apply_file
from noisyseg.cli import main
from noisyseg.errors import NoisysegError


def _run(argv, capsys):
    code = main([str(a) for a in argv])
    out = capsys.readouterr()
    return code, out.out, out.err


@pytest.fixture
def case(tiny_data, tmp_path):
    """(data path, parsed data, a decisions file over four of its annotations, the decisions dict)."""
    path = Path(tiny_data["noisy_json"])
    coco = json.loads(path.read_text())
    anns = coco["annotations"]
    other = {a["id"]: next(c["id"] for c in coco["categories"] if c["id"] != a["category_id"]) for a in anns}
    a0, a1, a2, a3, a4, a5 = (a["id"] for a in anns[:6])
    given = {a["id"]: a["category_id"] for a in anns}
    decisions = {
        "format": FORMAT, "version": 1, "data": str(path),
        "data_sha256": hashlib.sha256(path.read_bytes()).hexdigest(),
        "audit": {"id": "0123456789abcdef", "folder": "/x/audit", "checkpoints": ["run/checkpoints/last.pt"]},
        "decisions": [
            {"annotation_id": a0, "action": "keep", "given_category_id": given[a0]},
            {"annotation_id": a1, "action": "relabel", "category_id": other[a1], "given_category_id": given[a1]},
            {"annotation_id": a2, "action": "ignore", "given_category_id": given[a2]},
            {"annotation_id": a3, "action": "drop", "given_category_id": given[a3]},
        ],
        "undecided": [{"annotation_id": a, "given_category_id": given[a], "suggested_category_id": other[a]}
                      for a in (a4, a5)],
    }
    file = tmp_path / "decisions.json"
    file.write_text(json.dumps(decisions))
    return path, coco, file, decisions


def _expected(coco: dict, decisions: dict, undecided: str = "keep") -> dict:
    """The repaired file computed entry by entry, independently of the implementation."""
    out = copy.deepcopy(coco)
    actions = {d["annotation_id"]: (d["action"], d.get("category_id")) for d in decisions["decisions"]}
    for d in decisions["undecided"]:
        actions[d["annotation_id"]] = (undecided, d["suggested_category_id"])
    kept = []
    for a in out["annotations"]:
        action, cls = actions.get(a["id"], ("keep", None))
        if action == "drop":
            continue
        if action == "relabel":
            a["category_id"] = cls
        if action == "ignore":
            a["class_ignored"] = True
        kept.append(a)
    out["annotations"] = kept
    return out


@pytest.mark.parametrize("undecided", ["keep", "relabel", "drop"])
def test_apply_changes_exactly_the_decided_annotations(case, tmp_path, capsys, undecided):
    path, coco, file, decisions = case
    before = path.read_bytes()
    out = tmp_path / "fixed.json"
    code, stdout, err = _run(["apply-decisions", file, "--data", path, "-o", out, "--undecided", undecided], capsys)
    assert code == 0, err
    assert path.read_bytes() == before
    fixed = json.loads(out.read_text())
    info = fixed.pop("info")
    expected = _expected(coco, decisions, undecided)
    expected.pop("info")
    assert fixed == expected
    audit = info["audit"]
    ids = [d["annotation_id"] for d in decisions["decisions"]]
    undecided_ids = [d["annotation_id"] for d in decisions["undecided"]]
    assert audit["action"] == "review" and audit["audit_id"] == "0123456789abcdef"
    assert audit["data_sha256"] == decisions["data_sha256"] and audit["decisions_file"] == str(file)
    assert audit["annotation_ids"]["keep"] == [ids[0]] + (undecided_ids if undecided == "keep" else [])
    assert audit["annotation_ids"]["drop"] == [ids[3]] + (undecided_ids if undecided == "drop" else [])
    assert audit["n_changed"] == 3 + (0 if undecided == "keep" else 2)
    assert info["noise"] == coco["info"]["noise"]
    assert stdout == (f"{out}: 4 decisions applied (keep 1, relabel 1, ignore 1, drop 1); 2 undecided ({undecided}); "
                      f"{audit['n_changed']} annotations changed\n")
    # applying again over the file it wrote is allowed; the first record moves to the history
    code, _, err = _run(["apply-decisions", file, "--data", path, "-o", out], capsys)
    assert code == 0, err


def _bad(case, tmp_path, change) -> str:
    path, _, file, decisions = case
    bad = copy.deepcopy(decisions)
    change(bad)
    file.write_text(json.dumps(bad))
    out = tmp_path / "never.json"
    with pytest.raises(NoisysegError) as e:
        apply_file(file, path, out)
    assert not out.exists()
    return str(e.value)


def test_a_decisions_file_that_does_not_fit_is_one_line_naming_the_entry(case, tmp_path):
    path, coco, file, decisions = case
    a1 = decisions["decisions"][1]["annotation_id"]

    def unknown_id(d):
        d["decisions"][2]["annotation_id"] = 987654
    assert _bad(case, tmp_path, unknown_id) == f"{file}: decisions[2]: annotation 987654 is not in {path}"

    def unknown_class(d):
        d["decisions"][1]["category_id"] = 77
    assert _bad(case, tmp_path, unknown_class) == f"{file}: decisions[1]: category_id 77 is not a category of {path}"

    def unknown_suggestion(d):
        d["undecided"][1]["suggested_category_id"] = "dog"
    path_, _, file_, _ = case
    bad = copy.deepcopy(decisions)
    unknown_suggestion(bad)
    file.write_text(json.dumps(bad))
    with pytest.raises(NoisysegError) as e:
        apply_file(file, path, tmp_path / "n.json", undecided="relabel")
    assert str(e.value) == f"{file}: undecided[1]: suggested_category_id 'dog' is not a category of {path}"

    def twice(d):
        d["undecided"][0]["annotation_id"] = a1
    assert _bad(case, tmp_path, twice) == f"{file}: undecided[0]: annotation {a1} is listed again (first in decisions[1])"

    def bad_action(d):
        d["decisions"][0]["action"] = "burn"
    assert _bad(case, tmp_path, bad_action) == (f"{file}: decisions[0]: action 'burn': expected one of keep, relabel, "
                                                "ignore, drop")

    def other_given(d):
        d["decisions"][3]["given_category_id"] = 12345
    msg = _bad(case, tmp_path, other_given)
    assert msg.startswith(f"{file}: decisions[3]: annotation ") and msg.endswith("the review saw 12345")

    def other_data(d):
        d["data_sha256"] = "0" * 64
    assert _bad(case, tmp_path, other_data) == (
        f"{file}: data_sha256 000000000000... was reviewed on {path}, {path} has sha256 "
        f"{decisions['data_sha256'][:12]}... (another file, or changed since the audit)")

    def unhashable_class(d):
        d["decisions"][1]["category_id"] = [2]
    assert _bad(case, tmp_path, unhashable_class) == f"{file}: decisions[1]: category_id [2] is not a category of {path}"

    def not_ours(d):
        d["format"] = "something else"
    assert _bad(case, tmp_path, not_ours).startswith(f"{file}: not a decisions file")


def test_apply_refuses_outputs_it_must_not_write(case, tmp_path, capsys):
    path, _, file, _ = case
    before = path.read_bytes(), file.read_bytes()
    for target, what in ((path, "data file"), (file, "decisions file")):
        code, _, err = _run(["apply-decisions", file, "--data", path, "-o", target], capsys)
        assert (code, err) == (2, f"noisyseg apply-decisions: error: {target}: -o would write over the {what} "
                                  f"({target}); choose another path\n")
    mine = tmp_path / "mine.json"
    mine.write_text("{}")
    code, _, err = _run(["apply-decisions", file, "--data", path, "-o", mine], capsys)
    assert (code, err) == (2, f"noisyseg apply-decisions: error: {mine}: -o would replace an existing file that no "
                              "audit wrote; remove it or choose another path\n")
    assert (path.read_bytes(), file.read_bytes()) == before and mine.read_text() == "{}"


def test_ids_beyond_javascript_integers_travel_as_strings(tiny_data, tmp_path):
    """review.html holds an id of 2**53 or more as a decimal string (a JavaScript number would round it to a
    neighbour); apply-decisions reads it back as the integer."""
    from noisyseg.audit.review import js_id

    assert js_id(2**53 - 1) == 2**53 - 1 and js_id(2**53 + 1) == str(2**53 + 1) and js_id(-(2**60)) == str(-(2**60))
    coco = json.loads(Path(tiny_data["noisy_json"]).read_text())
    big = 2**62 + 7
    coco["annotations"][0]["id"] = big
    cat = coco["annotations"][0]["category_id"]
    other = next(c["id"] for c in coco["categories"] if c["id"] != cat)
    data = tmp_path / "big.json"
    data.write_text(json.dumps(coco))
    decisions = tmp_path / "d.json"
    decisions.write_text(json.dumps({
        "format": FORMAT, "version": 1, "data_sha256": hashlib.sha256(data.read_bytes()).hexdigest(),
        "decisions": [{"annotation_id": str(big), "action": "relabel", "category_id": str(other),
                       "given_category_id": str(cat)}]}))
    out = tmp_path / "out.json"
    apply_file(decisions, data, out)
    fixed = json.loads(out.read_text())
    assert fixed["annotations"][0]["id"] == big and fixed["annotations"][0]["category_id"] == other
    assert fixed["annotations"][1:] == coco["annotations"][1:]


def test_apply_decisions_does_not_import_torch(case, tmp_path):
    """Applying a review is JSON work: it must start at once, without loading torch."""
    import subprocess
    import sys

    path, _, file, _ = case
    code = ("import sys\nfrom noisyseg.cli import main\nrc = main(sys.argv[1:])\n"
            "print(rc, 'torch' in sys.modules)")
    proc = subprocess.run([sys.executable, "-c", code, "apply-decisions", str(file), "--data", str(path), "-o",
                           str(tmp_path / "fixed.json")], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines()[-1] == "0 False"
