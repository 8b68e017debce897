"""noisyseg.bench: the grid, the tables, and the runner end to end on the tiny fixture (resume, re-scoring,
refusals)."""

import csv
import json
import os
from pathlib import Path

import pytest
import torch
import yaml

from helpers import tiny_config, write_tiny_coco
from noisyseg.bench import (
    METHODS,
    cell_config,
    format_report,
    format_table,
    method_dir,
    parse_methods,
    parse_noise,
    parse_seeds,
    record_command,
    report_bench,
    run_bench,
    run_dir_of,
)
from noisyseg.bench.grid import fix_cell_configs, fix_plan
from noisyseg.bench.report import cell_key, paired_differences, peak_minus_final, read_curve, recovered_fraction
from noisyseg.cli import main
from noisyseg.config import config_from_dict
from noisyseg.engine.run_folder import RunFolder
from noisyseg.errors import NoisysegError
from noisyseg.losses.registry import RoIClassificationLoss


def read_csv(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


# ---- the grid ------------------------------------------------------------------------------------------

def test_noise_settings_parse():
    s = parse_noise("clean,sym0.4,asym0.2")
    assert [(x.name, x.kind, x.rate) for x in s] == [("clean", "clean", 0.0), ("sym0.4", "symmetric", 0.4),
                                                       ("asym0.2", "asymmetric", 0.2)]
    for bad, msg in [("sym1.5", "must be in"), ("noisy", "cannot read"), ("", "no setting"),
                     ("clean,sym0.4,clean", r"^--noise: 'clean' is given twice$"),
                     ("sym0.4,sym.4", r"^--noise: 'sym.4' is given twice \(the same setting as 'sym0.4'\)$")]:
        with pytest.raises(NoisysegError, match=msg):
            parse_noise(bad)


def test_methods_and_seeds_parse():
    assert parse_methods("ce,lncis-pon,good") == ["ce", "lncis-pon", "good"]
    with pytest.raises(NoisysegError, match="unknown method 'focal'; available: ce, sce"):
        parse_methods("ce,focal")
    assert parse_methods("lncis:log_zero=-4,lncis-gce:q=0.5") == ["lncis:log_zero=-4", "lncis-gce:q=0.5"]
    with pytest.raises(NoisysegError, match="'lncis:beta=1'.*unknown parameter"):
        parse_methods("lncis:beta=1")  # beta belongs to the sce robust term, not rce
    with pytest.raises(NoisysegError, match="cannot read 'log_zero' in 'lncis:log_zero'"):
        parse_methods("lncis:log_zero")
    with pytest.raises(NoisysegError, match="log_zero"):
        parse_methods("lncis:log_zero=2")
    with pytest.raises(NoisysegError, match=r"'good:tau=0.5'.*tau must be >= 1"):
        parse_methods("good:tau=0.5")
    with pytest.raises(NoisysegError, match=r"^--methods: 'ce' is given twice$"):
        parse_methods("ce,lncis,ce")
    with pytest.raises(NoisysegError, match=r"'lncis:log_zero=-4.0' is given twice \(the same method as "):
        parse_methods("lncis:log_zero=-4,lncis:log_zero=-4.0")
    assert parse_seeds("0,1,2") == [0, 1, 2]
    with pytest.raises(NoisysegError, match="integers"):
        parse_seeds("a")
    with pytest.raises(NoisysegError, match=r"^--seeds: 0 is given twice$"):
        parse_seeds("0,0")


def test_cell_config_sets_the_method_loss_and_warmup():
    base = {"seed": 0, "data": {"train_json": "clean.json"}, "loss": {"name": "ce", "warmup_epochs": 6}}
    assert cell_config(base, "lncis", "n.json", 2)["loss"] == {"name": "lncis", "params": {}, "warmup_epochs": 6}
    assert cell_config(base, "lncis-nowarmup", "n.json", 2)["loss"]["warmup_epochs"] == 0
    assert cell_config(base, "lncis-pon", "n.json", 2)["loss"]["params"] == {"pon_threshold": 6.0}
    assert cell_config(base, "sce", "n.json", 2)["loss"] == {"name": "sce", "params": {}, "warmup_epochs": 0}
    assert cell_config(base, "lncis-pon:log_zero=-4", "n.json", 2)["loss"] == {
        "name": "lncis", "params": {"pon_threshold": 6.0, "log_zero": -4}, "warmup_epochs": 6}
    assert cell_config(base, "good", "n.json", 2)["loss"] == {"name": "good", "params": {}, "warmup_epochs": 6}
    assert cell_config(base, "good-nowarmup:tau=5", "n.json", 2)["loss"] == {
        "name": "good", "params": {"tau": 5}, "warmup_epochs": 0}
    assert method_dir("lncis:log_zero=-4") == "lncis_log_zero=-4"
    tree = cell_config(base, "ce", "n.json", 2)
    assert tree["seed"] == 2 and tree["data"]["train_json"] == "n.json"
    assert base["data"]["train_json"] == "clean.json"  # the base is not modified
    assert set(METHODS) >= {"ce", "sce", "gce", "apl", "lncis", "lncis-nowarmup", "lncis-pon", "lncis-sce", "lncis-gce",
                            "good"}
    agnostic = cell_config(base, "lncis-agnostic", "n.json", 0)
    assert agnostic["model"] == {"class_agnostic": True} and agnostic["loss"]["warmup_epochs"] == 6
    assert cell_config(base, "ls:epsilon=0.4", "n.json", 0)["loss"] == {  # from the first epoch, no CE stage
        "name": "ls", "params": {"epsilon": 0.4}, "warmup_epochs": 0}
    with pytest.raises(NoisysegError, match=r"^--methods: 'ls:epsilon=1': loss ls: epsilon must be in \[0, 1\)"):
        parse_methods("ls:epsilon=1")


def test_a_method_s_warmup_epochs_sets_its_ce_stage_not_a_loss_parameter():
    base = {"seed": 0, "data": {"train_json": "clean.json"}, "loss": {"name": "ce", "warmup_epochs": 6},
            "train": {"epochs": 12}}
    assert cell_config(base, "lncis:warmup_epochs=9", "n.json", 0)["loss"] == {
        "name": "lncis", "params": {}, "warmup_epochs": 9}
    assert cell_config(base, "sce:warmup_epochs=3:alpha=0.5", "n.json", 0)["loss"] == {
        "name": "sce", "params": {"alpha": 0.5}, "warmup_epochs": 3}  # a method without a CE stage gets one
    for retrain_spec, retrain_warmup in [("", 9), (":retrain=lncis", 6)]:  # the retrain is the base unless told
        plan = fix_plan(f"lncis+fix:warmup_epochs=9:checkpoint=ce_stage_end{retrain_spec}")
        first, retrain = fix_cell_configs(base, plan, "n.json", "f.json", 0)
        assert (first["loss"]["warmup_epochs"], retrain["loss"]["warmup_epochs"]) == (9, retrain_warmup)
    # another CE stage is another method; the same one written twice is refused
    assert parse_methods("lncis,lncis:warmup_epochs=9") == ["lncis", "lncis:warmup_epochs=9"]
    with pytest.raises(NoisysegError, match=r"^--methods: 'lncis:warmup_epochs=6' is given twice$"):
        parse_methods("lncis,lncis:warmup_epochs=6,lncis:warmup_epochs=6")
    for bad, msg in [("lncis:warmup_epochs=0", r"^--methods: 'lncis:warmup_epochs=0': warmup_epochs must be an "
                                               r"integer >= 1, got 0$"),
                     ("lncis:warmup_epochs=x", "warmup_epochs must be an integer >= 1, got 'x'"),
                     ("ce:warmup_epochs=4", r"^--methods: 'ce:warmup_epochs=4': warmup_epochs needs a method whose "
                                            r"loss is not ce")]:
        with pytest.raises(NoisysegError, match=msg):
            parse_methods(bad)



def test_a_method_s_epochs_stretches_the_whole_schedule_alike():
    base = {"seed": 0, "data": {"train_json": "clean.json"}, "loss": {"name": "ce", "warmup_epochs": 12},
            "train": {"epochs": 24, "lr_steps": [20], "eval_interval": 12, "keep_epochs": [6, 24], "warmup_iters": 50}}
    ce = cell_config(base, "ce:epochs=48", "n.json", 0)
    assert ce["train"] == {"epochs": 48, "lr_steps": [40], "eval_interval": 24, "keep_epochs": [12, 48],
                           "warmup_iters": 50}  # iterations are not epochs: unchanged
    assert ce["loss"] == {"name": "ce", "params": {}, "warmup_epochs": 0}
    assert cell_config(base, "lncis:epochs=36", "n.json", 0)["loss"]["warmup_epochs"] == 18  # the CE stage too
    explicit = cell_config(base, "lncis:epochs=48:warmup_epochs=30", "n.json", 0)
    assert (explicit["loss"]["warmup_epochs"], explicit["train"]["lr_steps"]) == (30, [40])  # its own CE stage stays
    assert base["train"]["epochs"] == 24 and base["train"]["lr_steps"] == [20]  # the base tree is not changed
    config_from_dict({**cell_config(base, "ce:epochs=48", "n.json", 0), "data": {
        "train_json": "t.json", "val_json": "v.json", "image_root": "."}})  # a valid config
    assert parse_methods("ce,ce:epochs=48") == ["ce", "ce:epochs=48"]
    for bad in ("ce:epochs=0", "ce:epochs=x", "ce:epochs=true"):
        with pytest.raises(NoisysegError, match=rf"^--methods: '{bad}': epochs must be an integer >= 1, got "):
            parse_methods(bad)


# ---- the tables ----------------------------------------------------------------------------------------

def rows_of(values):
    """Result rows from {(method, noise): [AP per seed 0, 1, ...]}."""
    return [{"method": m, "noise": n, "seed": s, "mask_AP": v} for (m, n), aps in values.items()
            for s, v in enumerate(aps)]


def test_table_has_mean_std_and_bold_best():
    rows = rows_of({("ce", "sym0.4"): [10.0, 12.0], ("lncis", "sym0.4"): [14.0, 16.0], ("ce", "clean"): [20.0]})
    table = format_table(rows, ["ce", "lncis"], ["clean", "sym0.4"])
    assert "| ce | **20.0** | 11.0 ± 1.4 |" in table
    assert "| lncis | – | **15.0 ± 1.4** |" in table


def test_paired_differences_recovered_share_and_peak_minus_final():
    rows = rows_of({("ce", "clean"): [30.0, 34.0, 32.0], ("ce", "sym0.4"): [20.0, 18.0, 22.0],
                    ("lncis", "clean"): [29.0, 35.0, 30.0], ("lncis", "sym0.4"): [25.0, 20.0],  # seed 2 missing
                    ("good", "sym0.4"): [15.0, 18.0, 21.0]})
    assert paired_differences(rows, "lncis", "sym0.4") == {0: 5.0, 1: 2.0}
    assert paired_differences(rows, "lncis", "clean") == {0: -1.0, 1: 1.0, 2: -2.0}
    # recovered = mean paired difference / (mean CE clean - mean CE noisy) = 3.5 / (32 - 20)
    assert recovered_fraction(rows, "lncis", "sym0.4") == pytest.approx(3.5 / 12)
    assert recovered_fraction(rows, "good", "sym0.4") == pytest.approx(-2.0 / 12)
    assert recovered_fraction(rows, "lncis", "clean") is None  # CE lost nothing there
    curves = [{"method": "ce", "noise": "sym0.4", "seed": s, "epoch": e, "mask_AP": v}
              for s, points in enumerate([[10.0, 24.0, 20.0], [12.0, 19.0, 18.0]]) for e, v in enumerate(points, 1)]
    curves += [{"method": "ce", "noise": "clean", "seed": 0, "epoch": 3, "mask_AP": 30.0}]  # one point: no drop
    assert peak_minus_final(curves, "ce", "sym0.4") == {0: (4.0, 2), 1: (1.0, 2)}
    assert peak_minus_final(curves, "ce", "clean") == {}

    table = format_report(rows, curves, ["ce", "lncis", "good"], ["clean", "sym0.4"])
    assert "| lncis | -0.7 (-1.0 / +1.0 / -2.0) | +3.5 (+5.0 / +2.0) |" in table
    assert "| good | – | -2.0 (-5.0 / +0.0 / -1.0) |" in table
    assert "| recovered | sym0.4 |" in table and "| lncis | 29% |" in table and "| good | -17% |" in table
    assert "| ce | – | 2.5 (4.0 / 1.0) |" in table
    assert "seeds: 0, 1, 2" in table
    without_curves = format_report(rows, [], ["ce", "lncis"], ["clean", "sym0.4"])
    assert "no curves with two or more evaluated epochs" in without_curves


def test_curves_come_from_the_eval_lines_last_one_per_epoch(tmp_path):
    from noisyseg.engine.run_folder import RunFolder

    run = RunFolder(tmp_path)
    lines = [{"event": "train", "epoch": 1, "loss": 2.0}, {"event": "eval", "epoch": 1, "segm_AP": 5.0, "bbox_AP": 6.0},
             {"event": "eval", "epoch": 2, "segm_AP": 7.0, "bbox_AP": 8.0},
             {"event": "eval", "epoch": 2, "segm_AP": 7.5, "bbox_AP": 8.5}]  # epoch 2 again after a resume
    run.log_path.write_text("\n".join(json.dumps(x) for x in lines) + '\n{"event": "ev')  # a line cut by a kill
    assert read_curve(run.log_records(), "ce", "clean", 3) == [
        {"method": "ce", "noise": "clean", "seed": 3, "epoch": 1, "mask_AP": 5.0, "box_AP": 6.0},
        {"method": "ce", "noise": "clean", "seed": 3, "epoch": 2, "mask_AP": 7.5, "box_AP": 8.5}]
    assert read_curve(RunFolder(tmp_path / "missing").log_records(), "ce", "clean", 3) == []


def test_command_file_keeps_every_distinct_call(tmp_path):
    record_command(tmp_path, "noisyseg bench a --seeds 0\n")
    record_command(tmp_path, "noisyseg bench a --seeds 1\n")
    record_command(tmp_path, "noisyseg bench a --seeds 0\n")  # a resumed call adds nothing
    assert (tmp_path / "command.txt").read_text() == "noisyseg bench a --seeds 0\nnoisyseg bench a --seeds 1\n"


# ---- the runner, end to end on the tiny fixture ------------------------------------------------------------

def bench_args(cfg, out, methods="ce,lncis", noise="clean,sym0.5", extra=()):
    return ["bench", str(cfg), "--methods", methods, "--noise", noise, "--seeds", "0", "-o", str(out),
            "--no-progress", *extra]


@pytest.fixture(scope="module")
def bench(tmp_path_factory):
    """One bench over ce, lncis x clean, sym0.5 (seed 0), 2 epochs evaluated after each, CE stage 1 epoch."""
    root = tmp_path_factory.mktemp("bench")
    tree = tiny_config(write_tiny_coco(root / "tiny"), epochs=2, eval_interval=1)
    cfg = root / "base.yaml"
    cfg.write_text(yaml.safe_dump(tree))
    out = root / "bench"
    assert main(bench_args(cfg, out)) == 0
    return {"cfg": cfg, "out": out, "results": (out / "results.csv").read_text()}


def test_bench_writes_results_curves_and_tables(bench):
    out = bench["out"]
    rows = read_csv(out / "results.csv")
    assert [(r["method"], r["noise"], r["seed"]) for r in rows] == [
        ("ce", "clean", "0"), ("lncis", "clean", "0"), ("ce", "sym0.5", "0"), ("lncis", "sym0.5", "0")]
    curves = read_csv(out / "curves.csv")
    assert [(c["method"], c["noise"], c["epoch"]) for c in curves] == [
        (r["method"], r["noise"], e) for r in rows for e in ("1", "2")]
    for r in rows:  # the curve ends at the final AP
        last = [c for c in curves if (c["method"], c["noise"]) == (r["method"], r["noise"])][-1]
        assert float(last["mask_AP"]) == float(r["mask_AP"]) and float(last["box_AP"]) == float(r["box_AP"])
    log = RunFolder(out / "runs" / "lncis" / "sym0.5" / "seed0").log_records()
    assert read_curve(log, "lncis", "sym0.5", 0)[0]["mask_AP"] == float(curves[6]["mask_AP"])
    table = (out / "table.md").read_text()
    diff = float(rows[3]["mask_AP"]) - float(rows[2]["mask_AP"])
    assert f"| lncis | {float(rows[1]['mask_AP']) - float(rows[0]['mask_AP']):+.1f} (" in table
    assert f"| {diff:+.1f} ({diff:+.1f}) |" in table
    assert "| recovered | sym0.5 |" in table and "| peak - final | clean | sym0.5 |" in table
    assert (out / "ap_vs_noise.png").stat().st_size > 1000
    noisy = json.loads((out / "noisy" / "sym0.5_seed0.json").read_text())
    assert noisy["info"]["noise"]["kind"] == "symmetric"
    assert float(rows[2]["realised_noise_rate"]) == round(noisy["info"]["noise"]["realised_rate"], 4)
    record = json.loads((out / "cells" / "lncis" / "sym0.5" / "seed0.json").read_text())
    assert record["config"]["loss"] == {"name": "lncis", "params": {}, "warmup_epochs": 1}
    command = (out / "command.txt").read_text()
    assert command.startswith("noisyseg bench") and command.rstrip().endswith(f"-o {out}")


def test_a_second_call_trains_nothing(bench, capsys):
    out = bench["out"]
    command = (out / "command.txt").read_text()
    capsys.readouterr()
    assert main(bench_args(bench["cfg"], out)) == 0
    printed = capsys.readouterr().out
    assert "[bench] cell" not in printed and "4 already done" in printed
    assert (out / "command.txt").read_text() == command  # the same call is recorded once
    assert (out / "results.csv").read_text() == bench["results"]


def test_a_trained_cell_without_its_final_ap_is_scored_from_its_checkpoint(bench, capsys):
    out = bench["out"]
    run = run_dir_of(out, "lncis", "sym0.5", 0)
    kept = read_csv(out / "results.csv")
    mtime = (run / "checkpoints" / "last.pt").stat().st_mtime_ns
    # what a resumed finished run used to leave: metrics.json without AP, and no results row
    metrics = json.loads((run / "metrics.json").read_text())
    (run / "metrics.json").write_text(json.dumps({"epoch": 2, "train_seconds": metrics["train_seconds"]}))
    lines = bench["results"].splitlines(keepends=True)
    (out / "results.csv").write_text("".join(line for line in lines if not line.startswith("lncis,sym0.5,")))
    capsys.readouterr()
    assert main(bench_args(bench["cfg"], out)) == 0
    printed = capsys.readouterr().out
    assert "lncis / sym0.5 / seed 0: trained, but" in printed and "has no final AP: evaluating" in printed
    assert "(resuming)" not in printed and "1 re-evaluated, 3 already done" in printed
    assert read_csv(out / "results.csv") == kept  # the same AP as the first evaluation, bit for bit
    assert json.loads((run / "metrics.json").read_text())["segm"]["AP"] == metrics["segm"]["AP"]
    assert (run / "checkpoints" / "last.pt").stat().st_mtime_ns == mtime  # nothing was trained
    # a run killed after its last checkpoint, before the final evaluation: no metrics.json at all
    (run / "metrics.json").unlink()
    (out / "results.csv").write_text("".join(line for line in lines if not line.startswith("lncis,sym0.5,")))
    assert main(bench_args(bench["cfg"], out)) == 0
    rescored = next(r for r in read_csv(out / "results.csv") if r["method"] == "lncis" and r["noise"] == "sym0.5")
    before = next(r for r in kept if r["method"] == "lncis" and r["noise"] == "sym0.5")
    # the lost file's time included the final evaluation; the last checkpoint's, kept instead, stops before it
    from noisyseg.engine.checkpoint import load_checkpoint

    at_last_checkpoint = round(load_checkpoint(run / "checkpoints" / "last.pt")["train_seconds"], 1)
    assert rescored == {**before, "train_seconds": str(at_last_checkpoint)}
    assert 0 < at_last_checkpoint <= float(before["train_seconds"])
    assert (out / "results.csv").read_text().count("lncis,sym0.5,") == 1
    (out / "results.csv").write_text(bench["results"])  # as the other tests expect it


def test_a_run_of_another_setup_is_refused_in_one_line(bench, capsys):
    out = bench["out"]
    capsys.readouterr()
    assert main(bench_args(bench["cfg"], out, extra=["--set", "train.lr=0.02"])) == 2
    err = capsys.readouterr().err
    assert err == (f"noisyseg bench: error: {run_dir_of(out, 'ce', 'clean', 0)}: holds a run of another setup "
                   "(train.lr differ); delete it or choose another -o\n")
    assert (out / "results.csv").read_text() == bench["results"]


def test_an_interrupted_cell_resumes_to_the_uninterrupted_result(bench, tmp_path, monkeypatch, capsys):
    out = tmp_path / "bench"
    args = bench_args(bench["cfg"], out, methods="lncis", noise="sym0.5")
    real_call = RoIClassificationLoss.__call__

    def killed_in_the_robust_stage(self, logits, labels):
        if self.name == "lncis":  # the first step of epoch 2, after epoch 1's checkpoint and evaluation
            raise KeyboardInterrupt
        return real_call(self, logits, labels)

    monkeypatch.setattr(RoIClassificationLoss, "__call__", killed_in_the_robust_stage)
    assert main(args) == 130
    run = run_dir_of(out, "lncis", "sym0.5", 0)
    assert (run / "checkpoints" / "last.pt").is_file() and not (run / "metrics.json").exists()
    assert not (out / "results.csv").exists()  # no cell finished
    monkeypatch.setattr(RoIClassificationLoss, "__call__", real_call)
    capsys.readouterr()
    assert main(args) == 0
    assert "lncis / sym0.5 / seed 0 (resuming)" in capsys.readouterr().out
    resumed = read_csv(out / "results.csv")[0]
    uninterrupted = next(r for r in read_csv(bench["out"] / "results.csv") if r["method"] == "lncis"
                         and r["noise"] == "sym0.5")
    for field in ("mask_AP", "mask_AP50", "box_AP", "box_AP75", "realised_noise_rate"):
        assert resumed[field] == uninterrupted[field]
    weights = torch.load(run / "checkpoints" / "last.pt", weights_only=True)["model"]
    reference = torch.load(run_dir_of(bench["out"], "lncis", "sym0.5", 0) / "checkpoints" / "last.pt",
                           weights_only=True)["model"]
    assert all(torch.equal(weights[k], reference[k]) for k in reference)
    both = [c for c in read_csv(bench["out"] / "curves.csv") if c["method"] == "lncis" and c["noise"] == "sym0.5"]
    assert read_csv(out / "curves.csv") == both


@pytest.mark.parametrize("extra, message", [
    (["--seeds", "0,0"], "--seeds: 0 is given twice"),
    (["--methods", "ce,ce"], "--methods: 'ce' is given twice"),
    (["--noise", "sym0.4,sym0.40"], "--noise: 'sym0.40' is given twice (the same setting as 'sym0.4')"),
    (["--asym-preset", "bogus"], "--asym-preset: unknown preset 'bogus'; available: "),
    (["--methods", "good:ascent_weights=[0.1]"], "ascent_weights must be <= 0"),
])
def test_bad_grids_are_refused_before_any_work(bench, tmp_path, capsys, extra, message):
    out = tmp_path / "new"
    assert main(["bench", str(bench["cfg"]), "-o", str(out), *extra]) == 2
    err = capsys.readouterr().err
    assert err.startswith("noisyseg bench: error: ") and message in err and err.count("\n") == 1
    assert not out.exists()


def test_an_output_folder_under_a_file_or_unwritable_is_refused_before_any_work(bench, tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    assert main(bench_args(bench["cfg"], blocker / "bench")) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"noisyseg bench: error: {blocker / 'bench'}") and err.count("\n") == 1
    assert main(bench_args(bench["cfg"], blocker)) == 2
    assert "is a file, expected a folder" in capsys.readouterr().err
    assert blocker.read_text() == "x"
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o500)
    if not os.access(locked, os.W_OK):  # root may write anywhere
        assert main(bench_args(bench["cfg"], locked / "bench")) == 2
        assert "not writable" in capsys.readouterr().err
        assert list(locked.iterdir()) == []


def test_report_only_rewrites_the_tables_from_the_csv(bench, capsys):
    out = bench["out"]
    (out / "table.md").unlink()
    (out / "curves.csv").unlink()
    assert main(bench_args(bench["cfg"], out, extra=["--report-only"])) == 0
    assert "| recovered | sym0.5 |" in (out / "table.md").read_text()
    assert len(read_csv(out / "curves.csv")) == 8  # re-read from the runs' metrics.jsonl
    with pytest.raises(NoisysegError, match="results.csv: not found; nothing to report"):
        report_bench(Path(out).parent / "nothing", ["ce"], ["clean"])


def test_report_only_keeps_the_recorded_curve_of_a_row_whose_run_ends_elsewhere(bench, tmp_path):
    """A run in the folder that is not the one its row records (a fix cell's base trained again on another
    machine, to another AP) leaves the recorded curve in curves.csv; a run that is the row's replaces it."""
    import shutil

    out = tmp_path / "copy"
    shutil.copytree(bench["out"], out)
    rows, curves = read_csv(out / "results.csv"), read_csv(out / "curves.csv")
    moved, kept = rows[0], rows[1]
    key, kept_key = cell_key(moved), cell_key(kept)
    # the row and its curve as another machine recorded them: 0.5 AP higher at the end
    recorded = [dict(c) for c in curves if cell_key(c) == key]
    recorded[-1]["mask_AP"] = str(float(recorded[-1]["mask_AP"]) + 0.5)
    moved["mask_AP"] = recorded[-1]["mask_AP"]
    others = [c for c in curves if cell_key(c) not in (key, kept_key)]  # kept's curve is to be read back
    for name, table in (("results.csv", rows), ("curves.csv", recorded + others)):
        with open(out / name, "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=list(table[0]))
            writer.writeheader()
            writer.writerows(table)
    report_bench(out, ["ce", "lncis"], ["clean", "sym0.5"])
    after = read_csv(out / "curves.csv")
    assert [c for c in after if cell_key(c) == key] == recorded
    back = [c for c in after if cell_key(c) == kept_key]
    assert back and float(back[-1]["mask_AP"]) == pytest.approx(float(kept["mask_AP"]), rel=1e-9)


def test_the_python_api_takes_a_config_object(bench, tmp_path):
    from noisyseg.config import load_config

    cfg = load_config(bench["cfg"])
    with pytest.raises(NoisysegError, match=r"^--seeds: expected integers >= 0, got -1$"):
        run_bench(cfg, ["ce"], ["clean"], [-1], tmp_path / "x")
    with pytest.raises(NoisysegError, match="loss.warmup_epochs"):
        run_bench(cfg, ["lncis"], ["clean"], [0], tmp_path / "x", overrides=["loss.warmup_epochs=5"])
    assert not (tmp_path / "x").exists()




def test_per_class_ap_is_kept_per_cell_with_head_tail_and_per_class_tables(bench):
    out = bench["out"]
    train = json.loads(Path(yaml.safe_load(bench["cfg"].read_text())["data"]["train_json"]).read_text())
    names = {c["id"]: c["name"] for c in train["categories"]}
    counts = {name: sum(1 for a in train["annotations"] if names[a["category_id"]] == name and not a.get("iscrowd"))
              for name in names.values()}
    per_class = read_csv(out / "per_class.csv")
    rows = read_csv(out / "results.csv")
    assert {(r["method"], r["noise"], r["seed"]) for r in per_class} == {(r["method"], r["noise"], r["seed"]) for r in rows}
    assert {(r["class"], int(r["train_count"])) for r in per_class} == set(counts.items())
    metrics = json.loads((run_dir_of(out, "ce", "clean", 0) / "metrics.json").read_text())
    ce_clean = {r["class"]: r["mask_AP"] for r in per_class if (r["method"], r["noise"]) == ("ce", "clean")}
    assert ce_clean == {k: "" if v is None else str(v) for k, v in metrics["segm"]["per_class"].items()}
    # head = the most frequent third (here one class), tail = the least frequent; ties broken by name
    order = sorted(counts, key=lambda n: (-counts[n], n))
    head, tail = order[0], order[-1]
    table = (out / "table.md").read_text()
    shown = {name: "–" if ce_clean[name] == "" else f"{float(ce_clean[name]):.1f}" for name in (head, tail)}
    assert f"| ce | {shown[head]} / {shown[tail]} |" in table
    assert f"head / tail: mean mask AP of the 1 most frequent classes ({head})" in table
    assert "per class, sym0.5: mask AP mean ± std over seeds (minus ce, paired)" in table
    diffs = {r["class"]: float(r["mask_AP"]) for r in per_class if (r["method"], r["noise"]) == ("lncis", "sym0.5")
             and r["mask_AP"]}
    base = {r["class"]: float(r["mask_AP"]) for r in per_class if (r["method"], r["noise"]) == ("ce", "sym0.5")
            and r["mask_AP"]}
    worst = min((diffs[c] - base[c], c) for c in diffs if c in base)
    assert "| lncis | " in table and f"{worst[0]:+.1f} ({worst[1]})" in table


def test_a_cell_another_process_is_training_is_left_to_it(tmp_path, capsys):
    from noisyseg.engine.run_folder import RunLock

    tree = tiny_config(write_tiny_coco(tmp_path / "tiny"), epochs=1)
    tree["loss"] = {"name": "ce"}
    cfg = tmp_path / "base.yaml"
    cfg.write_text(yaml.safe_dump(tree))
    out = tmp_path / "bench"
    lock = RunLock(RunFolder(run_dir_of(out, "ce", "clean", 0)))  # as a second bench process would hold it
    try:
        rc = main(["bench", str(cfg), "--methods", "ce", "--noise", "clean", "--seeds", "0,1", "-o", str(out),
                   "--no-progress"])
    finally:
        lock.close()
    captured = capsys.readouterr()
    printed = captured.out
    assert rc == 0, captured.err
    assert "cell 1/2: ce / clean / seed 0: left to the process training it" in printed
    assert "1 trained, 1 left to another process" in printed
    assert [(r["method"], r["seed"]) for r in read_csv(out / "results.csv")] == [("ce", "1")]


def test_report_only_over_a_bad_value_is_one_line(bench, tmp_path, capsys):
    folder = tmp_path / "copy"
    folder.mkdir()
    lines = bench["results"].splitlines(keepends=True)
    lines[2] = lines[2].replace(lines[2].split(",")[5], "12.3.4", 1)  # row 2's mask_AP
    (folder / "results.csv").write_text("".join(lines))
    rc = main(["bench", str(bench["cfg"]), "--methods", "ce,lncis", "--noise", "clean,sym0.5", "-o", str(folder),
               "--report-only"])
    err = capsys.readouterr().err
    assert rc == 2
    assert err == (f"noisyseg bench: error: {folder / 'results.csv'}: row 2: column 'mask_AP': expected a number, "
                   "got '12.3.4'\n")
    assert not (folder / "table.md").exists()


def test_the_forward_method_trains_through_the_identity_on_clean_labels_and_the_data_s_matrix_otherwise(tiny_coco):
    base = tiny_config(tiny_coco)
    clean = cell_config(base, "forward", "train.json", 0, clean=True)
    noisy = cell_config(base, "forward", "noisy.json", 0)
    assert clean["loss"] == {"name": "forward", "params": {"transition": "identity"}, "warmup_epochs": 0}
    assert noisy["loss"] == {"name": "forward", "params": {}, "warmup_epochs": 0}  # the loss's default: "data"
    assert cell_config(base, "ce", "train.json", 0, clean=True)["loss"]["params"] == {}


def test_the_posterior_method_keeps_the_ce_stage_and_is_ce_on_clean_labels(tiny_coco):
    base = tiny_config(tiny_coco)  # loss.warmup_epochs: 1
    assert cell_config(base, "posterior", "noisy.json", 0)["loss"] == {"name": "posterior", "params": {},
                                                                       "warmup_epochs": 1}
    assert cell_config(base, "posterior", "train.json", 0, clean=True)["loss"]["params"] == {"transition": "identity"}
