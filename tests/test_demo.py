"""noisyseg demo: a two-cell bench with its own report; finished runs reused, changed ones trained again."""

import csv
import json

import yaml

from noisyseg.cli import main
from noisyseg.configs import packaged_config
from noisyseg.data.shapes import SetPaths
from noisyseg.demo import demo_config


def test_demo_end_to_end_on_a_tiny_set(tmp_path, capsys):
    out = tmp_path / "demo"
    # one thread: the packaged config's two are 3-5x slower on a busy 2-core machine
    args = ["demo", "--out", str(out), "--train", "8", "--val", "4", "--size", "64", "--threads", "1", "--epochs", "2",
            "--no-progress"]
    assert main(args) == 0
    printed = capsys.readouterr().out
    assert "| method | mask AP | box AP | mask AP50 | train s |" in printed
    with open(out / "results.csv", newline="") as f:
        rows = {r["method"]: r for r in csv.DictReader(f)}
    assert set(rows) == {"ce", "lncis"} and {r["noise"] for r in rows.values()} == {"sym0.4"}
    report = (out / "report.md").read_text()
    assert "40% symmetric class noise" in report and "2 epochs" in report
    for method, r in rows.items():  # the report's table is the bench's results
        line = (f"| {method} | {float(r['mask_AP']):.1f} | {float(r['box_AP']):.1f} | {float(r['mask_AP50']):.1f} | "
                f"{float(r['train_seconds']):.0f} |")
        assert line in report and line in printed
    assert (out / "ap.png").stat().st_size > 1000
    assert len(list((out / "overlays").glob("val_*.png"))) == 3
    noisy = json.loads((out / "noisy" / "sym0.4_seed0.json").read_text())
    assert noisy["info"]["noise"]["rate"] == 0.4 and noisy["info"]["noise"]["seed"] == 0
    assert json.loads((out / "data" / "train.json").read_text())["info"]["params"]["class_colours"] is True
    lncis = json.loads((out / "cells" / "lncis" / "sym0.4" / "seed0.json").read_text())["config"]
    assert lncis["loss"]["warmup_epochs"] == 1 and lncis["train"]["lr_steps"] == [2] and lncis["train"]["threads"] == 1

    # the audit of the lncis run on its noisy training file, counted here from the files themselves
    wrong = {a["id"] for a in noisy["annotations"]
             if not a.get("iscrowd") and a.get("clean_category_id", a["category_id"]) != a["category_id"]}
    with open(out / "audit" / "label_issues.csv", newline="") as f:
        issues = list(csv.DictReader(f))
    assert len(issues) == sum(1 for a in noisy["annotations"] if not a.get("iscrowd"))
    flagged = {int(r["annotation_id"]) for r in issues if r["is_issue"] == "1"}
    found = len(flagged & wrong)
    summary = json.loads((out / "audit" / "summary.json").read_text())
    assert summary["truth"]["n_wrong"] == len(wrong) > 0 and summary["truth"]["n_flagged_wrong"] == found
    assert (f"flagged {len(flagged)} as likely mislabeled" in report
            and f"Of the {len(wrong)} labels the noise changed it found {found}: recall {found / len(wrong):.2f}, "
                f"precision {found / len(flagged):.2f} ({found} of the {len(flagged)} flagged are wrong); "
                f"AUROC of its ranking {summary['truth']['auroc']:.3f}" in report)
    assert "![the most suspicious annotations](audit/contact_sheet.png)" in report
    assert (out / "audit" / "contact_sheet.png").stat().st_size > 1000 and (out / "audit" / "review.html").is_file()

    # a second call reuses the data, both finished runs and the audit
    sheet_mtime = (out / "audit" / "contact_sheet.png").stat().st_mtime_ns
    assert main(args) == 0
    again = capsys.readouterr().out
    assert "2 already done" in again and "[demo] cell" not in again
    assert (out / "audit" / "contact_sheet.png").stat().st_mtime_ns == sheet_mtime
    assert (out / "report.md").read_text().split("Wall time")[0] == report.split("Wall time")[0]

    # other settings in the same folder: both runs are trained again, the results replaced
    assert main([*args[:-2], "1", "--no-progress"]) == 0
    changed = capsys.readouterr().out
    assert changed.count("the run there was made with other settings (train.epochs, train.lr_steps") == 1
    assert "2 trained" in changed
    with open(out / "results.csv", newline="") as f:
        assert len(list(csv.DictReader(f))) == 2
    assert "1 epochs." in (out / "report.md").read_text()
    assert (out / "audit" / "contact_sheet.png").stat().st_mtime_ns != sheet_mtime  # a new model: audited again


def test_the_demo_keeps_the_packaged_thread_count_unless_told(tmp_path, capsys):
    packaged = yaml.safe_load(packaged_config("shapes_tiny").read_text())["train"]["threads"]
    data = SetPaths(tmp_path / "train.json", tmp_path / "val.json", tmp_path / "images")
    assert demo_config(data, 10, 128, 0)["train"]["threads"] == packaged
    assert demo_config(data, 10, 128, 0, threads=1)["train"]["threads"] == 1
    out = tmp_path / "demo"
    assert main(["demo", "--out", str(out), "--threads", "0", "--no-progress"]) == 2
    err = capsys.readouterr().err.strip()
    assert err == "noisyseg demo: error: --threads: expected a number of CPU threads >= 1, got 0"
    assert not out.exists()
