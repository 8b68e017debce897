import json

import pytest
import yaml

from helpers import tiny_config
from noisyseg.bench import METHODS, cell_config, method_dir, record_command, format_table, parse_methods, parse_noise, parse_seeds
from noisyseg.cli import main
from noisyseg.errors import NoisysegError


def test_noise_settings_parse():
    s = parse_noise("clean,sym0.4,asym0.2")
    assert [(x.name, x.kind, x.rate) for x in s] == [("clean", "clean", 0.0), ("sym0.4", "symmetric", 0.4),
                                                       ("asym0.2", "asymmetric", 0.2)]
    for bad, msg in [("sym1.5", "must be in"), ("noisy", "cannot read"), ("", "no setting")]:
        with pytest.raises(NoisysegError, match=msg):
            parse_noise(bad)


def test_methods_and_seeds_parse():
    assert parse_methods("ce,lncis-pon") == ["ce", "lncis-pon"]
    with pytest.raises(NoisysegError, match="unknown method 'focal'; available: ce, sce"):
        parse_methods("ce,focal")
    assert parse_methods("lncis:log_zero=-4,lncis-gce:q=0.5") == ["lncis:log_zero=-4", "lncis-gce:q=0.5"]
    with pytest.raises(NoisysegError, match="'lncis:beta=1'.*unknown parameter"):
        parse_methods("lncis:beta=1")  # beta belongs to the sce robust term, not rce
    with pytest.raises(NoisysegError, match="cannot read 'log_zero' in 'lncis:log_zero'"):
        parse_methods("lncis:log_zero")
    with pytest.raises(NoisysegError, match="log_zero"):
        parse_methods("lncis:log_zero=2")
    assert parse_seeds("0,1,2") == [0, 1, 2]
    with pytest.raises(NoisysegError, match="integers"):
        parse_seeds("a")


def test_cell_config_sets_the_method_loss_and_warmup():
    base = {"seed": 0, "data": {"train_json": "clean.json"}, "loss": {"name": "ce", "warmup_epochs": 6}}
    assert cell_config(base, "lncis", "n.json", 2)["loss"] == {"name": "lncis", "params": {}, "warmup_epochs": 6}
    assert cell_config(base, "lncis-nowarmup", "n.json", 2)["loss"]["warmup_epochs"] == 0
    assert cell_config(base, "lncis-pon", "n.json", 2)["loss"]["params"] == {"pon_threshold": 6.0}
    assert cell_config(base, "sce", "n.json", 2)["loss"] == {"name": "sce", "params": {}, "warmup_epochs": 0}
    assert cell_config(base, "lncis-pon:log_zero=-4", "n.json", 2)["loss"] == {
        "name": "lncis", "params": {"pon_threshold": 6.0, "log_zero": -4}, "warmup_epochs": 6}
    assert method_dir("lncis:log_zero=-4") == "lncis_log_zero=-4"
    tree = cell_config(base, "ce", "n.json", 2)
    assert tree["seed"] == 2 and tree["data"]["train_json"] == "n.json"
    assert base["data"]["train_json"] == "clean.json"  # the base is not modified
    assert set(METHODS) >= {"ce", "sce", "gce", "apl", "lncis", "lncis-nowarmup", "lncis-pon", "lncis-sce", "lncis-gce"}
    agnostic = cell_config(base, "lncis-agnostic", "n.json", 0)
    assert agnostic["model"] == {"class_agnostic": True} and agnostic["loss"]["warmup_epochs"] == 6


def test_table_has_mean_std_and_bold_best():
    rows = [{"method": "ce", "noise": "sym0.4", "mask_AP": v} for v in (10.0, 12.0)]
    rows += [{"method": "lncis", "noise": "sym0.4", "mask_AP": v} for v in (14.0, 16.0)]
    rows += [{"method": "ce", "noise": "clean", "mask_AP": 20.0}]
    table = format_table(rows, ["ce", "lncis"], ["clean", "sym0.4"])
    assert "| ce | **20.0** | 11.0 ± 1.4 |" in table
    assert "| lncis | – | **15.0 ± 1.4** |" in table


def test_bench_runs_cells_once_and_resumes(tiny_coco, tmp_path, capsys):
    tree = tiny_config(tiny_coco, epochs=1)
    tree["loss"]["warmup_epochs"] = 0
    cfg = tmp_path / "base.yaml"
    cfg.write_text(yaml.safe_dump(tree))
    out = tmp_path / "bench"
    args = ["bench", str(cfg), "--methods", "ce,lncis", "--noise", "clean,sym0.5", "--seeds", "0", "-o", str(out),
            "--no-progress"]
    assert main(args) == 0
    rows = (out / "results.csv").read_text().splitlines()
    assert len(rows) == 1 + 4 and rows[0].startswith("method,noise,noise_kind,noise_rate,seed,mask_AP")
    assert (out / "table.md").is_file() and (out / "ap_vs_noise.png").stat().st_size > 1000
    noisy = json.loads((out / "noisy" / "sym0.5_seed0.json").read_text())
    assert noisy["info"]["noise"]["kind"] == "symmetric"
    command = (out / "command.txt").read_text()
    assert command.startswith("noisyseg bench") and command.rstrip().endswith(f"-o {out}")
    capsys.readouterr()
    assert main(args) == 0  # every cell done: nothing is trained again
    assert "[bench] cell" not in capsys.readouterr().out
    assert (out / "command.txt").read_text() == command  # the same call is recorded once
    assert len((out / "results.csv").read_text().splitlines()) == 5


def test_command_file_keeps_every_distinct_call(tmp_path):
    record_command(tmp_path, "noisyseg bench a --seeds 0\n")
    record_command(tmp_path, "noisyseg bench a --seeds 1\n")
    record_command(tmp_path, "noisyseg bench a --seeds 0\n")  # a resumed call adds nothing
    assert (tmp_path / "command.txt").read_text() == "noisyseg bench a --seeds 0\nnoisyseg bench a --seeds 1\n"
