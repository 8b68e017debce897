import json
import subprocess
import sys

import pytest

from noisyseg.cli import main


@pytest.fixture
def coco_file(make, tmp_path):
    path = tmp_path / "in.json"
    path.write_text(json.dumps(make({"a": 30, "b": 30, "c": 30})))
    return path


def test_cli_writes_byte_identical_files_for_the_same_seed(coco_file, tmp_path):
    for name in ("x.json", "y.json"):
        assert main(["noise", str(coco_file), "-o", str(tmp_path / name), "--kind", "symmetric", "--rate", "0.4",
                     "--seed", "3", "--report", str(tmp_path / "r.json")]) == 0
    assert (tmp_path / "x.json").read_bytes() == (tmp_path / "y.json").read_bytes()
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["n_changed"] == 36 and report["seed"] == 3


def test_stats_prints_the_matrix(coco_file, tmp_path, capsys):
    out = tmp_path / "n.json"
    assert main(["noise", str(coco_file), "-o", str(out), "--rate", "0.5"]) == 0
    capsys.readouterr()
    assert main(["noise", "--stats", str(out)]) == 0
    text = capsys.readouterr().out
    assert "clean \\ noisy" in text and "50.0%" in text and "45 of 90 annotations" in text


@pytest.mark.parametrize("args, message", [
    (["--rate", "1.2"], "rate must be a number in [0, 1]"),
    (["--rate", "0.2", "--kind", "asymmetric", "--preset", "voc"], "is not a category of this file"),
    (["--rate", "0.2", "--kind", "pairs", "--pairs", "a>nope"], "class 'nope'"),
    (["--rate", "0.2", "--classes", "a,zz"], "class 'zz'"),
])
def test_bad_input_exit_2_one_line_no_output(coco_file, tmp_path, capsys, args, message):
    out = tmp_path / "out.json"
    assert main(["noise", str(coco_file), "-o", str(out), *args]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1 and str(coco_file) in err
    assert not out.exists()


def test_bad_files(tmp_path, capsys):
    bad = tmp_path / "bad.json"
    bad.write_text("{oops")
    assert main(["noise", str(bad), "-o", str(tmp_path / "o.json"), "--rate", "0.1"]) == 2
    assert "not valid JSON" in capsys.readouterr().err
    bad.write_text(json.dumps({"annotations": []}))
    assert main(["noise", str(bad), "-o", str(tmp_path / "o.json"), "--rate", "0.1"]) == 2
    assert "missing 'categories'" in capsys.readouterr().err
    matrix = tmp_path / "m.json"
    matrix.write_text(json.dumps({"classes": ["a"], "matrix": [[0.5]]}))
    assert main(["noise", str(tmp_path / "none.json"), "-o", str(tmp_path / "o.json"), "--rate", "0.1"]) == 2
    assert "not found" in capsys.readouterr().err
    assert main(["noise", "--stats", str(bad)]) == 2


def test_refuses_to_overwrite_the_input_without_force(coco_file, capsys):
    before = coco_file.read_bytes()
    assert main(["noise", str(coco_file), "-o", str(coco_file), "--rate", "0.3"]) == 2
    assert "refusing to overwrite the input" in capsys.readouterr().err
    assert coco_file.read_bytes() == before
    assert main(["noise", str(coco_file), "-o", str(coco_file), "--rate", "0.3", "--force"]) == 0
    assert coco_file.read_bytes() != before


def test_stats_of_a_clean_file_is_an_error(coco_file, capsys):
    assert main(["noise", "--stats", str(coco_file)]) == 2
    assert "no 'clean_category_id'" in capsys.readouterr().err


def test_real_subprocess_and_no_torch_import(coco_file, tmp_path):
    code = ("import sys; from noisyseg.cli import main; rc = main(sys.argv[1:]); "
            "assert 'torch' not in sys.modules, 'noise imported torch'; sys.exit(rc)")
    proc = subprocess.run([sys.executable, "-c", code, "noise", str(coco_file), "-o", str(tmp_path / "s.json"),
                           "--rate", "0.2"], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert "realised rate 0.2000" in proc.stdout
