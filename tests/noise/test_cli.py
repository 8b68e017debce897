import json
import subprocess
import sys

import pytest

from noisyseg.cli import main
from noisyseg.noise import inject


@pytest.fixture
def coco_file(make, tmp_path):
    path = tmp_path / "in.json"
    path.write_text(json.dumps(make({"a": 30, "b": 30, "c": 30})))
    return path


def _noise(*args):
    return main(["noise", *map(str, args)])


def test_cli_writes_byte_identical_files_for_the_same_seed(coco_file, tmp_path):
    for name in ("x.json", "y.json"):
        assert _noise(coco_file, "-o", tmp_path / name, "--kind", "symmetric", "--rate", "0.4", "--seed", "3",
                      "--report", tmp_path / "r.json") == 0
    assert (tmp_path / "x.json").read_bytes() == (tmp_path / "y.json").read_bytes()
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["n_changed"] == 36 and report["seed"] == 3
    # the file is what inject() returns, and the report is its info.noise
    expected, _ = inject(json.loads(coco_file.read_text()), "symmetric", 0.4, seed=3)
    written = json.loads((tmp_path / "x.json").read_text())
    assert written == expected and written["info"]["noise"] == report


def test_cli_keeps_everything_else(coco_file, tmp_path):
    out = tmp_path / "o.json"
    assert _noise(coco_file, "-o", out, "--rate", "0.5", "--seed", "1") == 0
    clean, noisy = json.loads(coco_file.read_text()), json.loads(out.read_text())
    assert list(noisy) == list(clean)
    for a, b in zip(clean["annotations"], noisy["annotations"]):
        assert list(b) == list(a) + ["clean_category_id"]
        b = dict(b)
        b["category_id"] = b.pop("clean_category_id")
        assert b == a
    noisy["info"].pop("noise")
    assert noisy == {**clean, "annotations": noisy["annotations"]} and noisy["info"] == clean["info"]


def test_kind_follows_preset_pairs_or_matrix(make, tmp_path, capsys):
    src = tmp_path / "in.json"
    src.write_text(json.dumps(make({"bus": 10, "car": 10, "cat": 10, "dog": 10})))
    out = tmp_path / "o.json"
    assert _noise(src, "-o", out, "--pairs", "bus>car", "--rate", "1") == 0
    assert json.loads(out.read_text())["info"]["noise"]["kind"] == "pairs"
    matrix = tmp_path / "m.json"
    matrix.write_text(json.dumps({"classes": ["cat", "dog"], "matrix": [[0, 1], [1, 0]]}))
    assert _noise(src, "-o", out, "--matrix", matrix, "--rate", "1", "--sampling", "bernoulli") == 0
    block = json.loads(out.read_text())["info"]["noise"]
    assert block["kind"] == "matrix" and block["sampling"] == "bernoulli" and block["n_changed"] == 20
    assert "20 of 20 eligible annotations changed class" in capsys.readouterr().out


def test_classes_and_include_crowd_options(make, tmp_path):
    src = tmp_path / "in.json"
    src.write_text(json.dumps(make({"a": 30, "b": 30, "c": 30}, crowd_every=3)))
    out = tmp_path / "o.json"
    assert _noise(src, "-o", out, "--rate", "1", "--classes", "a, b") == 0
    report = json.loads(out.read_text())["info"]["noise"]
    assert report["target_classes"] == ["a", "b"] and report["n_eligible"] == 40
    assert _noise(src, "-o", out, "--rate", "1", "--include-crowd") == 0
    assert json.loads(out.read_text())["info"]["noise"]["n_eligible"] == 90


def test_stats_prints_the_matrix(coco_file, tmp_path, capsys):
    out = tmp_path / "n.json"
    assert _noise(coco_file, "-o", out, "--rate", "0.5") == 0
    capsys.readouterr()
    assert _noise("--stats", out) == 0
    lines = capsys.readouterr().out.splitlines()
    assert "kind symmetric, rate 0.5, seed 0, sampling exact" in lines[0]
    assert lines[1].split() == ["clean", "\\", "noisy", "a", "b", "c", "noise"]
    assert [line.split()[0] for line in lines[2:5]] == ["a", "b", "c"]
    assert all(line.split()[-1] == "50.0%" and int(line.split()[1 + i]) == 15 for i, line in enumerate(lines[2:5]))
    assert len({len(line) for line in lines[1:5]}) == 1  # aligned columns
    assert lines[5] == "overall: 45 of 90 annotations differ from their clean class (50.00%)"


def _write(path, obj):
    path.write_text(obj if isinstance(obj, str) else json.dumps(obj))
    return path


GOOD = {"images": [], "annotations": [{"id": 1, "category_id": 1}, {"id": 2, "category_id": 2}],
        "categories": [{"id": 1, "name": "a"}, {"id": 2, "name": "b"}]}


@pytest.mark.parametrize("content, args, message", [
    ("{oops", [], "not valid JSON"),
    ({"categories": GOOD["categories"]}, [], "missing 'annotations'"),
    ({"annotations": GOOD["annotations"]}, [], "missing 'categories'"),
    ({**GOOD, "annotations": [{"id": 1, "category_id": 1}, {"id": 2, "category_id": 9}]}, [],
     "annotations[1] (id 2) has category_id 9, not a listed category"),
    (GOOD, ["--kind", "asymmetric", "--preset", "voc"], "preset 'voc': classes 'aeroplane', 'bicycle', 'bird'"),
    (GOOD, ["--preset", "nope"], "unknown preset 'nope'"),
    (GOOD, ["--kind", "pairs", "--pairs", "a>nope"], "class 'nope' is not a category of this file"),
    (GOOD, ["--pairs", "a"], "'a' is not of the form source>target"),
    (GOOD, ["--rate", "1.2"], "rate must be a number in [0, 1], got 1.2"),
    (GOOD, ["--rate", "-0.5"], "rate must be a number in [0, 1], got -0.5"),
    (GOOD, ["--rate", "nan"], "rate must be a number in [0, 1], got nan"),
    (GOOD, ["--rate", "abc"], "--rate: 'abc' is not a number"),
    (GOOD, ["--no-rate"], "needs --rate"),
    (GOOD, ["--classes", "a,zz"], "class 'zz' is not a category of this file"),
    (GOOD, ["--kind", "symmetric", "--preset", "voc"], "--preset only applies to --kind asymmetric"),
    (GOOD, ["--kind", "matrix"], "matrix noise needs a matrix"),
    (GOOD, ["--matrix", {"classes": ["a", "b"], "matrix": [[1, 0]]}], "must be 2 x 2"),
    (GOOD, ["--matrix", {"classes": ["a", "b"], "matrix": [[0.5, 0.2], [0, 1]]}], "row 0 (a) sums to 0.7, not 1"),
    (GOOD, ["--matrix", {"classes": ["a", "q"], "matrix": [[1, 0], [0, 1]]}], "class 'q' is not a category"),
    (GOOD, ["--matrix", "{bad"], "not valid JSON"),
])
def test_bad_input_exit_2_one_line_no_output(tmp_path, capsys, content, args, message):
    src = _write(tmp_path / "in.json", content)
    args = list(args)
    if "--matrix" in args:
        i = args.index("--matrix") + 1
        args[i] = str(_write(tmp_path / "T.json", args[i]))
    if "--rate" not in args and "--no-rate" not in args:
        args += ["--rate", "0.5"]
    args = [a for a in args if a != "--no-rate"]
    out, report = tmp_path / "out.json", tmp_path / "report.json"
    assert _noise(src, "-o", out, "--report", report, *args) == 2
    captured = capsys.readouterr()
    err = captured.err.strip()
    assert message in err, err
    assert len(err.splitlines()) == 1 and err.startswith("noisyseg noise: error: ")
    assert not out.exists() and not report.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["in.json"] + (["T.json"] if "--matrix" in args else []))


def test_file_errors_name_the_file(tmp_path, capsys):
    src = _write(tmp_path / "in.json", {"annotations": []})
    assert _noise(src, "-o", tmp_path / "o.json", "--rate", "0.1") == 2
    assert f"{src}: missing 'categories'" in capsys.readouterr().err
    assert _noise(tmp_path / "none.json", "-o", tmp_path / "o.json", "--rate", "0.1") == 2
    assert "none.json: COCO annotation file not found" in capsys.readouterr().err
    matrix = _write(tmp_path / "T.json", {"classes": ["a"], "matrix": [[0.5]]})
    assert _noise(src, "-o", tmp_path / "o.json", "--rate", "0.1", "--matrix", matrix) == 2
    assert f"{matrix}: matrix: row 0 (a) sums to 0.5" in capsys.readouterr().err


def test_missing_arguments(coco_file, tmp_path, capsys):
    assert _noise(coco_file, "--rate", "0.1") == 2
    assert "needs IN.json and -o OUT.json" in capsys.readouterr().err
    assert _noise(coco_file, "-o", tmp_path / "o.json", "--stats", coco_file) == 2
    assert "--stats FILE takes no other input" in capsys.readouterr().err


def test_refuses_to_overwrite_the_input_without_force(coco_file, tmp_path, capsys):
    before = coco_file.read_bytes()
    assert _noise(coco_file, "-o", coco_file, "--rate", "0.3") == 2
    assert "refusing to overwrite the input" in capsys.readouterr().err
    assert _noise(coco_file, "-o", tmp_path / "o.json", "--rate", "0.3", "--report", coco_file) == 2
    assert coco_file.read_bytes() == before and not (tmp_path / "o.json").exists()
    assert _noise(coco_file, "-o", coco_file, "--rate", "0.3", "--force") == 0
    assert coco_file.read_bytes() != before
    assert json.loads(coco_file.read_text())["info"]["noise"]["n_changed"] == 27


def test_stats_of_a_clean_file_is_an_error(coco_file, capsys):
    assert _noise("--stats", coco_file) == 2
    err = capsys.readouterr().err.strip()
    assert "no 'clean_category_id'" in err and str(coco_file) in err and len(err.splitlines()) == 1


def test_real_subprocess_and_no_torch_import(coco_file, tmp_path):
    code = ("import sys; from noisyseg.cli import main; rc = main(sys.argv[1:]); "
            "assert 'torch' not in sys.modules, 'noise imported torch'; sys.exit(rc)")
    out = tmp_path / "s.json"
    proc = subprocess.run([sys.executable, "-c", code, "noise", str(coco_file), "-o", str(out), "--rate", "0.2"],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert "18 of 90 eligible annotations changed class (realised rate 0.2000" in proc.stdout
    proc = subprocess.run([sys.executable, "-m", "noisyseg", "noise", str(coco_file), "-o", str(out),
                           "--rate", "7"], capture_output=True, text=True)
    assert proc.returncode == 2 and proc.stderr.strip() == "noisyseg noise: error: rate must be a number in [0, 1], got 7"


def test_a_nan_anywhere_is_refused_rather_than_written(tmp_path, capsys):
    coco = {**GOOD, "info": {"scale": float("nan")}}
    src = _write(tmp_path / "in.json", json.dumps(coco))  # a bare NaN token, as Python's json writes it
    out = tmp_path / "out.json"
    assert _noise(src, "-o", out, "--rate", "0.5") == 2
    err = capsys.readouterr().err.strip()
    assert err == f"noisyseg noise: error: {src}: holds a NaN or Infinity number (not valid JSON); {out} not written"
    assert not out.exists()


def test_output_modes_follow_the_umask(tmp_path, coco_file):
    import os
    import stat

    old = os.umask(0o027)
    try:
        assert _noise(coco_file, "-o", tmp_path / "o.json", "--rate", "0.2", "--report", tmp_path / "r.json") == 0
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "o.json").stat().st_mode) == 0o640
    assert stat.S_IMODE((tmp_path / "r.json").stat().st_mode) == 0o640
