import json

from noisyseg.cli import main


def test_demo_end_to_end_on_a_tiny_set(tmp_path, capsys):
    out = tmp_path / "demo"
    args = ["demo", "--out", str(out), "--train", "8", "--val", "4", "--size", "64", "--epochs", "2", "--no-progress"]
    assert main(args) == 0
    printed = capsys.readouterr().out
    assert "| method | mask AP | box AP | mask AP50 | train s |" in printed
    assert "| ce |" in printed and "| lncis |" in printed
    report = (out / "report.md").read_text()
    assert "40% symmetric class noise" in report and "| lncis |" in report
    assert (out / "ap.png").stat().st_size > 1000
    assert len(list((out / "overlays").glob("*.png"))) == 3
    noisy = next((out / "data").glob("train_sym40_seed0.json"))
    assert noisy.stat().st_size > 0
    assert json.loads((out / "data" / "train.json").read_text())["info"]["params"]["class_colours"] is True
    # a second call reuses the data and both finished runs
    assert main(args) == 0
    again = capsys.readouterr().out
    assert again.count("reusing the finished run") == 2 and "[demo] training" not in again
