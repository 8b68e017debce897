"""noisyseg.bench audit methods (``lncis+fix:...``): train, audit the run on its own training file, repair,
retrain; end to end on the tiny fixture, resumed after a kill, refused before any work when they cannot run."""

import csv
import json

import pytest
import yaml

from helpers import tiny_config, write_tiny_coco
from noisyseg.bench import run_bench, run_dir_of
from noisyseg.bench.grid import fix_plan, parse_methods
from noisyseg.bench.report import AUDIT_FIELDS, CSV_FIELDS
from noisyseg.bench.records import audit_dir_of, fixed_file_of
from noisyseg.bench.runner import report_bench
from noisyseg.errors import NoisysegError

FIX = "lncis+fix:action=ignore"


def read_csv(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def repaired_labels(path):
    """A repaired file without the paths its ``info.audit`` records (they name the bench folder)."""
    coco = json.loads(path.read_text())
    audit = {k: v for k, v in coco["info"]["audit"].items() if k not in ("data", "checkpoints")}
    return coco["annotations"], coco["categories"], audit


def row_of(rows, method):
    return next(r for r in rows if r["method"] == method)


# ---- the specs ---------------------------------------------------------------------------------------------

def test_fix_specs_parse_into_plans():
    plan = fix_plan("lncis+fix:log_zero=-4:action=drop")
    assert (plan.base, plan.action, plan.checkpoint, plan.retrain) == ("lncis:log_zero=-4", "drop", "last",
                                                                       "lncis:log_zero=-4")
    assert plan.shares_base_cell and plan.first_run_dir == "lncis_log_zero=-4"
    plan = fix_plan("lncis+fix:checkpoint=epochs:snapshots=4:retrain=ce")
    assert (plan.action, plan.retrain, plan.keep_epochs(12), plan.checkpoint_names(5)) == (
        "ignore", "ce", [9, 10, 11, 12], ["epoch_2", "epoch_3", "epoch_4", "epoch_5"])
    assert not plan.shares_base_cell and plan.first_run_dir == "lncis+snapshots4"
    plan = fix_plan("lncis+fix:folds=3:action=relabel")
    assert (plan.folds, plan.action, plan.checkpoint, plan.first_run_dir) == (3, "relabel", "last", "lncis+folds3")
    assert not plan.shares_base_cell
    plan = fix_plan("ce+fix:filter_by=noise_budget_learned:transition=estimate")
    assert (plan.filter_by, plan.transition, plan.options()["transition"]) == ("noise_budget_learned", "estimate",
                                                                               "estimate")
    # the default matrix is not in the options, so cells recorded before the option keep their identity
    assert "transition" not in fix_plan("ce+fix:filter_by=noise_budget_learned").options()
    assert fix_plan("ce+fix:filter_by=noise_budget_learned:transition=data").options() == \
        fix_plan("ce+fix:filter_by=noise_budget_learned").options()
    assert fix_plan("lncis") is None
    assert parse_methods("lncis,lncis+fix,lncis+fix:action=relabel,lncis-online") == [
        "lncis", "lncis+fix", "lncis+fix:action=relabel", "lncis-online"]
    for spec, message in [
        ("lncis+fix,lncis+fix:action=ignore:retrain=lncis", r"^--methods: 'lncis\+fix:action=ignore:retrain=lncis' "
                                                            r"is given twice \(the same method as 'lncis\+fix'\)$"),
        ("focal+fix", r"^--methods: 'focal\+fix': unknown method 'focal' before \+fix; available: ce, "),
        ("lncis+fix:action=fix", r"^--methods: 'lncis\+fix:action=fix': action must be one of relabel, ignore, drop, "
                                 r"got 'fix'$"),
        ("lncis+fix:checkpoint=best", "checkpoint must be one of last, ce_stage_end, epochs, got 'best'"),
        ("lncis+fix:snapshots=2", r"snapshots needs checkpoint=epochs$"),
        ("lncis+fix:checkpoint=epochs:snapshots=1", "snapshots must be an integer >= 2, got 1"),
        ("lncis+fix:retrain=focal", "retrain must be a method name"),
        ("lncis+fix:folds=1", "folds must be an integer >= 2, got 1"),
        ("ce+fix:filter_by=noise_posterior:transition=guess", "transition must be one of data, estimate, uniform, got 'guess'"),
        ("ce+fix:transition=estimate", r"transition needs a noise matrix filter_by \(noise_posterior, noise_budget, "),
        ("lncis+fix:beta=1", r"^--methods: 'lncis\+fix:beta=1': loss lncis: unknown parameter\(s\) beta"),
    ]:
        with pytest.raises(NoisysegError, match=message):
            parse_methods(spec)


def test_audit_methods_that_cannot_run_are_refused_before_any_work(tmp_path):
    tree = tiny_config(write_tiny_coco(tmp_path / "tiny", n_images=4), epochs=2)
    for method, message in [
        ("ce+fix:checkpoint=ce_stage_end", r"^--methods: 'ce\+fix:checkpoint=ce_stage_end': checkpoint=ce_stage_end "
                                           r"needs a first run with a CE stage before another loss \(ce: loss ce, "
                                           r"warm-up 0 of 2 epochs\)$"),
        ("lncis+fix:checkpoint=epochs:snapshots=3", r"snapshots=3 is more than the 2 epochs of a run$"),
    ]:
        with pytest.raises(NoisysegError, match=message):
            run_bench(tree, [method], ["sym0.5"], [0], tmp_path / "out", progress=False)
    # the clean file's own matrix is the identity: a known-matrix rule would flag nothing there
    method = "ce+fix:filter_by=noise_budget_learned:retrain=ce"
    with pytest.raises(NoisysegError, match=r"^--methods 'ce\+fix:filter_by=noise_budget_learned:retrain=ce' at --noise "
                                            r"clean: the clean file records no noise, so its own matrix \(transition="
                                            r"data\) is the identity and noise_budget_learned flags nothing; add "
                                            r":transition=estimate or :transition=uniform \(estimates from the "
                                            r"audit's own scores, as for real noise\) or leave clean out$"):
        run_bench(tree, ["ce", method], ["sym0.5", "clean"], [0], tmp_path / "out", progress=False)
    assert not (tmp_path / "out").exists()


# ---- end to end ----------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def bench(tmp_path_factory):
    """lncis and lncis+fix:action=ignore at sym0.5, seed 0, 2 epochs of the tiny set (CE stage 1 epoch)."""
    root = tmp_path_factory.mktemp("bench_fix")
    tree = tiny_config(write_tiny_coco(root / "tiny"), epochs=2, threads=1)
    out = root / "bench"
    run_bench(tree, ["lncis", FIX], ["sym0.5"], [0], out, progress=False)
    return {"tree": tree, "out": out, "results": (out / "results.csv").read_text()}


def test_the_fix_cell_reuses_the_base_run_audits_it_and_retrains_on_the_repaired_file(bench):
    out = bench["out"]
    rows = read_csv(out / "results.csv")
    assert [r["method"] for r in rows] == ["lncis", FIX]
    assert list(rows[0]) == CSV_FIELDS + AUDIT_FIELDS and all(rows[0][f] == "" for f in AUDIT_FIELDS)
    base, fixed = row_of(rows, "lncis"), row_of(rows, FIX)
    # one first run: the base cell's; the fix cell made only its audit and its retrain
    assert sorted(p.name for p in (out / "runs").iterdir()) == ["lncis", "lncis+fix_action=ignore"]
    audit_dir = audit_dir_of(out, FIX, "sym0.5", 0)
    record = json.loads((audit_dir / "bench_audit.json").read_text())
    summary = json.loads((audit_dir / "summary.json").read_text())
    assert summary["checkpoints"] == [str((run_dir_of(out, "lncis", "sym0.5", 0) / "checkpoints" / "last.pt").resolve())]
    assert (audit_dir / "contact_sheet.png").is_file() and (audit_dir / "label_issues.csv").is_file()
    retrain = run_dir_of(out, FIX, "sym0.5", 0)
    retrain_seconds = json.loads((retrain / "metrics.json").read_text())["train_seconds"]
    assert float(fixed["audit_seconds"]) == round(record["seconds"], 1)
    assert float(fixed["retrain_seconds"]) == round(retrain_seconds, 1)
    assert float(fixed["train_seconds"]) == pytest.approx(
        float(base["train_seconds"]) + record["seconds"] + retrain_seconds, abs=0.11)
    truth = summary["truth"]
    assert int(fixed["audit_n_flagged"]) == summary["n_flagged"] > 0
    for field, name in [("audit_auroc", "auroc"), ("audit_ap", "average_precision"),
                        ("audit_flagged_precision", "flagged_precision"), ("audit_flagged_recall", "flagged_recall"),
                        ("audit_precision_at_recall_0.8", "precision_at_recall_0.8")]:
        assert float(fixed[field]) == truth[name]
    # the retrain trained on the repaired file, and the trainer saw its ignored classes
    fixed_json = fixed_file_of(out, FIX, "sym0.5", 0)
    assert yaml.safe_load((retrain / "config.yaml").read_text())["data"]["train_json"] == str(fixed_json)
    repaired = json.loads(fixed_json.read_text())
    ignored = {a["id"] for a in repaired["annotations"] if a.get("class_ignored")}
    assert ignored == set(repaired["info"]["audit"]["annotation_ids"]) and len(ignored) == summary["n_flagged"]
    lines = [json.loads(line) for line in (retrain / "metrics.jsonl").read_text().splitlines()]
    assert any(rec.get("rois_ignored", 0) > 0 for rec in lines if rec.get("event") == "train")
    table = (out / "table.md").read_text()
    assert "| audit | sym0.5 |" in table and "| compute | sym0.5 |" in table
    total, audit_s = float(fixed["train_seconds"]), float(fixed["audit_seconds"])
    ratio = total / (total - audit_s - float(fixed["retrain_seconds"]))
    assert f"| {FIX} | {ratio:.2f}x ({audit_s:.0f} s) |" in table


def test_the_repaired_file_is_what_fix_file_writes_for_the_same_audit(bench, tmp_path):
    from noisyseg.audit import audit, fix_file

    out = bench["out"]
    noisy = out / "noisy" / "sym0.5_seed0.json"
    again = audit(run_dir_of(out, "lncis", "sym0.5", 0), noisy, device="cpu", progress=False)  # writes nothing
    mine = tmp_path / "fixed.json"
    fix_file(noisy, again.issues, mine, "ignore")
    assert mine.read_bytes() == fixed_file_of(out, FIX, "sym0.5", 0).read_bytes()
    # and the audit's own table gives the same flags
    table = json.loads((audit_dir_of(out, FIX, "sym0.5", 0) / "label_issues.json").read_text())
    flagged = [r["annotation_id"] for r in table["annotations"] if r["is_issue"]]
    assert sorted(flagged) == sorted(json.loads(mine.read_text())["info"]["audit"]["annotation_ids"])


def test_an_estimated_matrix_cell_audits_with_the_first_run_s_own_confident_joint(bench, tmp_path):
    """transition=estimate: the real-noise workflow in one cell; its repaired file is what the audit with
    --transition estimate flags on the same first run, and its record names the option."""
    from noisyseg.audit import audit

    out = tmp_path / "bench"
    method = "lncis+fix:filter_by=noise_budget_learned:transition=estimate"
    run_bench(bench["tree"], [method], ["sym0.5"], [0], out, progress=False)
    noisy = out / "noisy" / "sym0.5_seed0.json"
    summary = json.loads((audit_dir_of(out, method, "sym0.5", 0) / "summary.json").read_text())
    assert summary["transition"].startswith("estimate: ")
    again = audit(run_dir_of(out, "lncis", "sym0.5", 0), noisy, device="cpu", filter_by="noise_budget_learned",
                  transition="estimate", progress=False)
    known = audit(run_dir_of(out, "lncis", "sym0.5", 0), noisy, device="cpu", filter_by="noise_budget_learned",
                  progress=False)
    repaired = json.loads(fixed_file_of(out, method, "sym0.5", 0).read_text())
    flagged = sorted(repaired["info"]["audit"]["annotation_ids"])
    assert flagged == sorted(again.issues.scores.annotation_ids[again.issues.is_issue].tolist())
    assert flagged != sorted(known.issues.scores.annotation_ids[known.issues.is_issue].tolist())
    cell = json.loads((out / "cells" / "lncis+fix_filter_by=noise_budget_learned_transition=estimate" / "sym0.5"
                       / "seed0.json").read_text())
    assert cell["fix"]["transition"] == "estimate"
    assert [r["method"] for r in read_csv(out / "results.csv")] == ["lncis", method]


def test_a_second_call_does_nothing_and_report_only_keeps_the_audit_columns(bench, capsys):
    out = bench["out"]
    capsys.readouterr()
    run_bench(bench["tree"], ["lncis", FIX], ["sym0.5"], [0], out, progress=False)
    printed = capsys.readouterr().out
    assert "2 already done" in printed and "[bench] cell" not in printed
    assert (out / "results.csv").read_text() == bench["results"]
    table = (out / "table.md").read_text()
    (out / "table.md").unlink()
    report_bench(out, ["lncis", FIX], ["sym0.5"])
    assert (out / "results.csv").read_text() == bench["results"]
    assert (out / "table.md").read_text() == table


def test_an_interrupted_fix_cell_reuses_its_first_run_audits_again_and_resumes_the_retrain(
        bench, tmp_path, monkeypatch, capsys):
    """Only the audit method is asked for: it trains the base cell itself; the retrain is killed after its
    first epoch and the audit's record is lost; the next call finishes with the uninterrupted result."""
    import noisyseg.engine.trainer as trainer

    out = tmp_path / "bench"
    retrain = run_dir_of(out, FIX, "sym0.5", 0)
    real_save = trainer.save_epoch_checkpoints

    def killed_after_the_first_retrain_epoch(run, epoch):
        real_save(run, epoch)
        if run.folder.path == retrain and epoch == 1:
            raise KeyboardInterrupt

    monkeypatch.setattr(trainer, "save_epoch_checkpoints", killed_after_the_first_retrain_epoch)
    with pytest.raises(KeyboardInterrupt):
        run_bench(bench["tree"], [FIX], ["sym0.5"], [0], out, progress=False)
    monkeypatch.setattr(trainer, "save_epoch_checkpoints", real_save)
    rows = read_csv(out / "results.csv")
    assert [r["method"] for r in rows] == ["lncis"]  # the first run is the base cell, recorded as such
    first = run_dir_of(out, "lncis", "sym0.5", 0) / "checkpoints" / "last.pt"
    first_mtime = first.stat().st_mtime_ns
    audit_dir = audit_dir_of(out, FIX, "sym0.5", 0)
    (audit_dir / "bench_audit.json").unlink()

    capsys.readouterr()
    run_bench(bench["tree"], [FIX], ["sym0.5"], [0], out, progress=False)
    printed = capsys.readouterr().out
    assert ": audit: scoring " in printed and "retrain (lncis) (resuming)" in printed
    assert first.stat().st_mtime_ns == first_mtime  # the first run was not touched
    resumed, uninterrupted = row_of(read_csv(out / "results.csv"), FIX), row_of(read_csv(bench["out"] / "results.csv"), FIX)
    for field in ("mask_AP", "box_AP", "mask_AP50", "audit_n_flagged", "audit_auroc", "realised_noise_rate"):
        assert resumed[field] == uninterrupted[field]
    assert repaired_labels(fixed_file_of(out, FIX, "sym0.5", 0)) == repaired_labels(fixed_file_of(bench["out"], FIX,
                                                                                                 "sym0.5", 0))

    # the audit's record intact but its repaired file gone: audited again, the retrain (finished) kept
    fixed_file_of(out, FIX, "sym0.5", 0).unlink()
    lines = (out / "results.csv").read_text().splitlines(keepends=True)
    (out / "results.csv").write_text("".join(line for line in lines if not line.startswith(FIX)))
    capsys.readouterr()
    run_bench(bench["tree"], [FIX], ["sym0.5"], [0], out, progress=False)
    printed = capsys.readouterr().out
    assert ": audit: scoring " in printed and "retrain (lncis): trained before" in printed
    assert row_of(read_csv(out / "results.csv"), FIX)["mask_AP"] == uninterrupted["mask_AP"]


def test_a_fix_cell_whose_base_run_was_not_kept_trains_the_base_again_and_keeps_its_row(bench, tmp_path, capsys):
    """A bench folder kept as we commit ours (results.csv and cells/, no runs/): a new audit method on it
    trains the recorded base cell again (seeded: the same run) to audit it, leaves the base's row as is, and
    counts the time of the run made again in its compute."""
    import shutil

    out = tmp_path / "kept"
    run_bench(bench["tree"], ["lncis"], ["sym0.5"], [0], out, progress=False)
    shutil.rmtree(out / "runs")
    # the base was timed on another machine: the fix row's compute must come from the run made again
    text = (out / "results.csv").read_text()
    seconds = row_of(read_csv(out / "results.csv"), "lncis")["train_seconds"]
    (out / "results.csv").write_text(text.replace(f",{seconds},", ",9999.0,", 1))
    recorded = row_of(read_csv(out / "results.csv"), "lncis")
    assert recorded["train_seconds"] == "9999.0"
    capsys.readouterr()
    run_bench(bench["tree"], [FIX], ["sym0.5"], [0], out, progress=False)
    printed = capsys.readouterr().out
    first = run_dir_of(out, "lncis", "sym0.5", 0)
    assert (f": first run (lncis): recorded in results.csv, but {first} does not hold the finished run; training "
            f"it again to audit it") in printed
    assert "trained again it reaches" not in printed  # the same seeded run on the CPU: the same AP
    again, before = read_csv(out / "results.csv"), read_csv(bench["out"] / "results.csv")
    assert {k: row_of(again, "lncis")[k] for k in CSV_FIELDS} == {k: recorded[k] for k in CSV_FIELDS}
    for field in ("mask_AP", "box_AP", "audit_n_flagged", "audit_auroc"):
        assert row_of(again, FIX)[field] == row_of(before, FIX)[field]
    fixed = row_of(again, FIX)
    first_seconds = json.loads((first / "metrics.json").read_text())["train_seconds"]
    audit_seconds = json.loads((audit_dir_of(out, FIX, "sym0.5", 0) / "bench_audit.json").read_text())["seconds"]
    retrain_seconds = json.loads((run_dir_of(out, FIX, "sym0.5", 0) / "metrics.json").read_text())["train_seconds"]
    assert first_seconds < 9999.0
    assert float(fixed["train_seconds"]) == pytest.approx(first_seconds + audit_seconds + retrain_seconds, abs=0.11)


def test_a_fix_cell_of_another_setup_is_refused(bench, capsys):
    out = bench["out"]
    tree = json.loads(json.dumps(bench["tree"]))
    tree["train"]["lr"] = 0.02
    with pytest.raises(NoisysegError, match=r"^.*/runs/lncis\+fix_action=ignore/sym0.5/seed0: holds a run of another "
                                            r"setup \(train.lr differ\); delete it or choose another -o$"):
        run_bench(tree, [FIX], ["sym0.5"], [0], out, progress=False)
    with pytest.raises(NoisysegError, match=r"seed0: holds a run of another setup \(fix action differ\)"):
        cell = out / "cells" / "lncis+fix_action=ignore" / "sym0.5" / "seed0.json"
        record = json.loads(cell.read_text())
        try:
            cell.write_text(json.dumps({**record, "fix": {**record["fix"], "action": "drop"}}))
            run_bench(bench["tree"], [FIX], ["sym0.5"], [0], out, progress=False)
        finally:
            cell.write_text(json.dumps(record))
    assert (out / "results.csv").read_text() == bench["results"]


def test_out_of_sample_snapshot_averaging_trains_one_first_run_per_fold(bench, tmp_path):
    """folds=2 with checkpoint=epochs: two first runs, each without one half of the images and keeping
    both epochs; every annotation scored by the average of the two snapshots of the run that never saw it."""
    from noisyseg.audit.score import score_annotations
    from noisyseg.data.coco import load_coco

    out = tmp_path / "bench"
    method = "lncis+fix:folds=2:checkpoint=epochs:snapshots=2:retrain=ce"
    run_bench(bench["tree"], [method], ["sym0.5"], [0], out, progress=False)
    noisy = json.loads((out / "noisy" / "sym0.5_seed0.json").read_text())
    first = out / "runs" / "lncis+folds2+snapshots2" / "sym0.5" / "seed0"
    held_out = []
    for k in range(2):
        config = yaml.safe_load((first / f"fold{k}" / "config.yaml").read_text())
        assert config["train"]["keep_epochs"] == [1, 2] and config["seed"] == 0
        fold = json.loads((out / "folds" / "lncis+folds2+snapshots2" / f"sym0.5_seed0_fold{k}.json").read_text())
        assert config["data"]["train_json"].endswith(f"sym0.5_seed0_fold{k}.json")
        kept = {im["id"] for im in fold["images"]}
        held_out.append({im["id"] for im in noisy["images"]} - kept)
        assert fold["annotations"] == [a for a in noisy["annotations"] if a["image_id"] in kept]
    assert held_out[0] and held_out[1] and not held_out[0] & held_out[1]
    assert held_out[0] | held_out[1] == {im["id"] for im in noisy["images"]}
    audit_dir = audit_dir_of(out, method, "sym0.5", 0)
    summary = json.loads((audit_dir / "summary.json").read_text())
    snapshots = [[(first / f"fold{k}" / "checkpoints" / f"epoch_{e}.pt").resolve() for e in (1, 2)] for k in range(2)]
    assert summary["checkpoints"] == [str(c) for fold in snapshots for c in fold]
    # each annotation's label quality is its given class's probability under its own fold's models
    coco = load_coco(out / "noisy" / "sym0.5_seed0.json")
    by_fold = [score_annotations(snapshots[k], coco, "noisy", progress=False) for k in range(2)]
    quality = {int(r["annotation_id"]): float(r["label_quality"])
               for r in read_csv(audit_dir / "label_issues.csv")}
    for i, (ann_id, image_id) in enumerate(zip(by_fold[0].annotation_ids.tolist(), by_fold[0].image_ids.tolist())):
        k = 0 if image_id in held_out[0] else 1
        assert quality[ann_id] == pytest.approx(by_fold[k].pred_probs[i, by_fold[k].given_labels[i]], abs=2e-6)
    retrain = yaml.safe_load((run_dir_of(out, method, "sym0.5", 0) / "config.yaml").read_text())
    assert retrain["loss"] == {"name": "ce", "params": {}, "warmup_epochs": 0}
    rows = read_csv(out / "results.csv")
    assert [r["method"] for r in rows] == [method]  # no rows for the private first runs
    fold_seconds = sum(json.loads((first / f"fold{k}" / "metrics.json").read_text())["train_seconds"] for k in range(2))
    assert float(rows[0]["train_seconds"]) == pytest.approx(
        fold_seconds + float(rows[0]["audit_seconds"]) + float(rows[0]["retrain_seconds"]), abs=0.2)


def test_the_audit_tables_average_over_seeds():
    from noisyseg.bench.report import format_audit

    def row(noise, seed, total, audit_s, retrain_s, auroc, flagged=10):
        truth = {} if auroc is None else {"audit_auroc": auroc, "audit_precision_at_recall_0.8": auroc - 0.1,
                                          "audit_flagged_precision": 0.8, "audit_flagged_recall": 0.6 + seed / 10}
        return {"method": FIX, "noise": noise, "seed": seed, "train_seconds": total, "audit_seconds": audit_s,
                "retrain_seconds": retrain_s, "audit_n_flagged": flagged, **{k: "" for k in (
                    "audit_auroc", "audit_ap", "audit_flagged_precision", "audit_flagged_recall",
                    "audit_precision_at_recall_0.8")}, **truth}

    rows = [row("sym0.4", 0, 210.0, 10.0, 100.0, 0.9), row("sym0.4", 1, 250.0, 20.0, 110.0, 0.8),
            row("clean", 0, 200.0, 4.0, 96.0, None, flagged=7), {"method": "ce", "noise": "clean", "seed": 0}]
    table = format_audit(rows, ["ce", FIX], ["clean", "sym0.4"])
    assert f"| {FIX} | – (7 flagged) | 0.850 / 0.750 / 0.800 / 0.650 |" in table
    # compute: 210 / 100 = 2.1 and 250 / 120, mean 2.29; clean 200 / 100 = 2.0; audit seconds 4 and 15
    assert f"| {FIX} | 2.00x (4 s) | {(2.1 + 250 / 120) / 2:.2f}x (15 s) |" in table
    assert format_audit(rows[-1:], ["ce"], ["clean"]) == ""
