"""``noisyseg audit`` end to end: the files it writes, --fix through the CLI, and its error lines."""

from __future__ import annotations

import csv
import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from noisyseg.audit import audit
from noisyseg.audit.issues import COLUMNS, TRUTH_COLUMNS, auroc, average_precision
from noisyseg.cli import main


def _run(argv, capsys):
    code = main([str(a) for a in argv])
    out = capsys.readouterr()
    return code, out.out, out.err


def test_audit_writes_the_table_summary_and_review(tiny_data, untrained_run, tmp_path, capsys, page_json):
    out = tmp_path / "audit"
    fixed = tmp_path / "relabelled.json"
    code, stdout, err = _run(["audit", untrained_run, "--data", tiny_data["noisy_json"], "--image-root",
                              tiny_data["image_root"], "-o", out, "--top", 5, "--sheet", 4, "--no-progress",
                              "--fix", fixed, "--action", "relabel"], capsys)
    assert code == 0, err
    coco = json.loads(Path(tiny_data["noisy_json"]).read_text())
    non_crowd = [a for a in coco["annotations"] if not a.get("iscrowd", 0)]
    with open(out / "label_issues.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert tuple(rows[0]) == COLUMNS + TRUTH_COLUMNS
    assert sorted(int(r["annotation_id"]) for r in rows) == sorted(a["id"] for a in non_crowd)
    assert [int(r["rank"]) for r in rows] == list(range(1, len(non_crowd) + 1))
    quality = np.array([float(r["label_quality"]) for r in rows])
    assert np.all((0 <= quality) & (quality <= 1)) and np.all(np.diff(quality) >= 0)
    by_id = {a["id"]: a for a in coco["annotations"]}
    for r in rows:
        a = by_id[int(r["annotation_id"])]
        assert int(r["given_category_id"]) == a["category_id"] and int(r["image_id"]) == a["image_id"]
        assert int(r["clean_category_id"]) == a["clean_category_id"]
        assert int(r["is_wrong"]) == int(a["clean_category_id"] != a["category_id"])
    table = json.loads((out / "label_issues.json").read_text())
    assert [str(r["annotation_id"]) for r in table["annotations"]] == [r["annotation_id"] for r in rows]

    summary = json.loads((out / "summary.json").read_text())
    wrong = np.array([r["is_wrong"] == "1" for r in rows])
    flagged = np.array([r["is_issue"] == "1" for r in rows])
    assert summary["n_flagged"] == flagged.sum() and summary["n_annotations"] == len(rows)
    assert summary["truth"]["n_wrong"] == wrong.sum() > 0
    assert summary["truth"]["auroc"] == pytest.approx(auroc(1 - quality, wrong), abs=1e-5)
    assert summary["truth"]["average_precision"] == pytest.approx(average_precision(1 - quality, wrong), abs=1e-5)
    assert f"{summary['n_flagged']} of {len(rows)} annotations flagged" in stdout
    assert "AUROC" in (out / "summary.md").read_text()

    page = (out / "review.html").read_text()
    assert "http://" not in page and "https://" not in page  # offline: nothing fetched
    data = page_json(out / "review.html")
    on_page = [r for r in rows][:5]  # --top 5: the 5 most suspicious, flagged or not
    assert [s[0] for s in data["s"]] == [int(r["annotation_id"]) for r in on_page]
    assert [s[2] for s in data["s"]] == [1, 2, 3, 4, 5]
    names = [c["name"] for c in data["classes"]]
    assert [names[s[3]] for s in data["s"]] == [r["given_name"] for r in on_page]
    assert [names[s[4]] for s in data["s"]] == [r["suggested_name"] for r in on_page]
    assert data["data_sha256"] == hashlib.sha256(Path(tiny_data["noisy_json"]).read_bytes()).hexdigest()
    sheet_path = out / "review_files" / "sheet_00000.jpg"
    sheet = np.asarray(Image.open(sheet_path).convert("RGB"), dtype=np.float64)
    assert sheet.shape == (4 * 128, 6 * 128, 3)
    # the second suspect's cell holds its crop (JPEG: close, not equal)
    from noisyseg.audit.review import crop_picture

    ann = by_id[data["s"][1][0]]
    im = {i["id"]: i for i in coco["images"]}[ann["image_id"]]
    pixels = np.asarray(Image.open(Path(tiny_data["image_root"]) / im["file_name"]).convert("RGB"))
    want = crop_picture(pixels, ann, tile=128).astype(np.float64)
    assert np.abs(sheet[:128, 128:256] - want).mean() < 6
    assert np.abs(sheet[:128, 256:384] - want).mean() > 6  # and not the next cell
    manifest = json.loads((out / "audit_manifest.json").read_text())
    assert set(manifest["files"]) == {"label_issues.csv", "label_issues.json", "summary.json", "summary.md", "noise_matrix.json",
                                      "review.html", "contact_sheet.png", "review_files/sheet_00000.jpg"}
    sheet = Image.open(out / "contact_sheet.png")
    assert sheet.size[0] > 4 * 160

    repaired = json.loads(fixed.read_text())
    new = {a["id"]: a["category_id"] for a in repaired["annotations"]}
    for r in rows:
        want = int(r["suggested_category_id"] if r["is_issue"] == "1" else r["given_category_id"])
        assert new[int(r["annotation_id"])] == want
    assert repaired["info"]["audit"]["n_flagged"] == flagged.sum()


def test_api_without_output_folder_writes_nothing(tiny_data, untrained_run, tmp_path):
    result = audit(untrained_run, tiny_data["noisy_json"], image_root=tiny_data["image_root"], progress=False,
                   device="cpu")
    assert result.files == {} and not (untrained_run / "audit").exists()
    assert len(result.rows) == len(result.issues.rank)


def test_error_lines(tiny_data, untrained_run, tmp_path, capsys):
    base = ["audit", untrained_run, "--image-root", tiny_data["image_root"], "--no-progress", "-o", tmp_path / "o"]
    missing = tmp_path / "missing.json"
    assert _run(base + ["--data", missing], capsys)[2] == \
        f"noisyseg audit: error: {missing}: COCO annotation file not found\n"

    other = json.loads(Path(tiny_data["noisy_json"]).read_text())
    other["categories"] = other["categories"][:2]
    other["annotations"] = [a for a in other["annotations"]
                           if a["category_id"] in (2, 5) and a.get("clean_category_id", 2) in (2, 5)]
    other_path = tmp_path / "two_classes.json"
    other_path.write_text(json.dumps(other))
    code, _, err = _run(base + ["--data", other_path], capsys)
    assert code == 2
    assert err == (f"noisyseg audit: error: {other_path}: categories [2, 5] differ from the classes [2, 5, 9] "
                   f"of the model in {(untrained_run / 'checkpoints' / 'last.pt').resolve()}\n")

    with pytest.raises(SystemExit) as e:
        main([str(a) for a in base + ["--data", tiny_data["noisy_json"], "--fix", tmp_path / "f.json",
                                       "--action", "rename"]])
    assert e.value.code == 2
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert last.replace("'", "") == "noisyseg audit: error: argument --action: invalid choice: rename " \
                                   "(choose from relabel, ignore, drop)"

    assert _run(base + ["--data", tiny_data["noisy_json"], "--fix", tmp_path / "f.json"], capsys)[2] == \
        "noisyseg audit: error: --fix needs --action (relabel | ignore | drop)\n"
    assert _run(base + ["--data", tiny_data["noisy_json"], "--fix", tiny_data["noisy_json"], "--action", "drop"],
                capsys)[2] == (f"noisyseg audit: error: {tiny_data['noisy_json']}: --fix would write over the "
                               f"audited data file ({tiny_data['noisy_json']}); choose another path\n")
    nowhere = tmp_path / "no_run"
    assert _run(["audit", nowhere, "--data", tiny_data["noisy_json"]], capsys)[2] == \
        f"noisyseg audit: error: {nowhere}: no such run folder or checkpoint file\n"
    code, _, err = _run(["audit", untrained_run, "--data", tiny_data["noisy_json"], "--image-root",
                         tmp_path / "no_images", "-o", tmp_path / "o", "--no-progress"], capsys)
    assert code == 2 and err.startswith(f"noisyseg audit: error: {tiny_data['noisy_json']}: image not found: ")
    assert not (tmp_path / "o").exists() and not (tmp_path / "f.json").exists()


def test_review_page_holds_every_flagged_annotation(tiny_data, untrained_run, tmp_path, page_json):
    out = tmp_path / "audit"
    result = audit(untrained_run, tiny_data["noisy_json"], image_root=tiny_data["image_root"], out_dir=out,
                   device="cpu", filter_by="predicted_neq_given", sheet=0, progress=False)
    flagged = [r for r in result.rows if r["is_issue"]]
    assert 0 < len(flagged) < len(result.rows)
    data = page_json(out / "review.html")
    assert [s[0] for s in data["s"]] == [r["annotation_id"] for r in flagged]  # all flagged, most suspicious first
    assert all(s[9] == 1 for s in data["s"])
    assert data["audit"]["id"] == result.summary["audit_id"] and data["audit"]["n_flagged"] == len(flagged)
    n_sheets = -(-len(flagged) // data["tiles"]["per_sheet"])
    assert sorted(p.name for p in (out / "review_files").iterdir()) == [f"sheet_{i:05d}.jpg" for i in range(n_sheets)]
    # the whole image is linked relative to the page, so it opens from the file system
    image = data["images"][data["s"][0][1]]
    assert (out / image[0]).resolve() == (Path(tiny_data["image_root"]) / next(
        im["file_name"] for im in json.loads(Path(tiny_data["noisy_json"]).read_text())["images"]
        if im["id"] == image[3])).resolve()


def test_crop_sheets_made_in_chunks_equal_one_pass(tiny_data, untrained_run, tmp_path, monkeypatch):
    """Crops are made a few sheets at a time (bounded memory); the sheets must not depend on it."""
    import noisyseg.audit.review as review

    result = audit(untrained_run, tiny_data["noisy_json"], image_root=tiny_data["image_root"], device="cpu",
                   progress=False)
    coco = json.loads(Path(tiny_data["noisy_json"]).read_text())
    n = len(result.rows)
    monkeypatch.setattr(review, "PAGE_SIZE", 4)  # sheets of 4 crops, so the tiny file fills several

    def files(at_once: int) -> dict:
        monkeypatch.setattr(review, "SHEETS_AT_ONCE", at_once)
        return review.review_files(result.issues, coco, tiny_data["noisy_json"], tmp_path, result.summary,
                                   {"id": "x"}, "0" * 64, top=n)

    one_pass, chunked = files(1000), files(1)
    assert sorted(chunked) == sorted(one_pass) == sorted(
        [f"review_files/sheet_{i:05d}.jpg" for i in range(-(-n // 4))] + ["review.html"])
    assert chunked == one_pass
