"""The ``noisyseg`` entry point (noisyseg.cli): every verb's --help, errors as one line, lazy imports."""

import argparse
import subprocess
import sys
from pathlib import Path

import pytest

import noisyseg
from noisyseg.cli import build_parser, main
from noisyseg.errors import NoisysegError

# Every command line a user can ask --help of: the verbs and their sub-verbs.
VERBS = [
    ("noise",), ("data",), ("data", "shapes"), ("data", "fashion"), ("convert",), ("convert", "cityscapes"),
    ("convert", "voc"), ("train",), ("eval",), ("predict",), ("weights",), ("weights", "fetch"), ("audit",),
    ("demo",), ("bench",), ("apply-decisions",),
]


def _sub_verbs(parser: argparse.ArgumentParser, prefix: tuple = ()) -> list[tuple]:
    found = []
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, child in action.choices.items():
                found.append(prefix + (name,))
                found += _sub_verbs(child, prefix + (name,))
    return found


def test_the_verb_list_is_complete():
    assert sorted(_sub_verbs(build_parser())) == sorted(VERBS)


@pytest.mark.parametrize("verb", VERBS, ids=" ".join)
def test_every_verb_has_help(verb, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main([*verb, "--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith(f"usage: noisyseg {' '.join(verb)} ")
    assert "-h, --help" in out


def test_version(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--version"])
    assert exit_info.value.code == 0
    from importlib.metadata import version

    assert capsys.readouterr().out == f"noisyseg {version('noisyseg')}\n"


def test_a_user_error_is_one_line_and_exit_2(monkeypatch, capsys):
    def refuse(args):
        raise NoisysegError("x.json: field 'a': expected a number")

    monkeypatch.setattr("noisyseg.cli.noise.run", refuse)
    assert main(["noise", "in.json", "-o", "out.json", "--rate", "0.1"]) == 2
    captured = capsys.readouterr()
    assert captured.err == "noisyseg noise: error: x.json: field 'a': expected a number\n" and captured.out == ""


def test_ctrl_c_is_exit_130(monkeypatch, capsys):
    def interrupted(args):
        raise KeyboardInterrupt

    monkeypatch.setattr("noisyseg.cli.bench.run", interrupted)
    assert main(["bench", "c.yaml", "-o", "out"]) == 130
    assert capsys.readouterr().err == "noisyseg bench: interrupted\n"


def test_help_and_noise_import_no_torch(tmp_path):
    code = ("import sys\nfrom noisyseg.cli import main\ntry:\n    main(sys.argv[1:])\nexcept SystemExit:\n    pass\n"
            "print(sorted(m for m in ('torch', 'torchvision') if m in sys.modules))")
    for argv in (["--help"], ["noise", "--help"], ["noise", "--stats", str(tmp_path / "missing.json")]):
        proc = subprocess.run([sys.executable, "-c", code, *argv], capture_output=True, text=True)
        assert proc.returncode == 0, proc.stderr
        assert proc.stdout.splitlines()[-1] == "[]", argv


def test_python_dash_m_is_the_same_entry_point():
    proc = subprocess.run([sys.executable, "-m", "noisyseg", "noise"], capture_output=True, text=True)
    assert proc.returncode == 2
    assert proc.stderr == "noisyseg noise: error: needs IN.json and -o OUT.json (or --stats FILE.json, or --predict FILE.json)\n"


def test_no_argparse_outside_the_cli_package():
    root = Path(noisyseg.__file__).parent
    offenders = [str(p.relative_to(root)) for p in root.rglob("*.py")
                 if "argparse" in p.read_text() and p.parent.name != "cli"]
    assert offenders == []


def test_a_reader_that_closes_the_pipe_early_is_no_traceback(tiny_coco, tmp_path, monkeypatch, capsys):
    """`noisyseg noise --stats FILE | head -1`: the command's next line meets a closed pipe; it ends quietly
    with 0 and its stdout is pointed at /dev/null, so the interpreter's final flush cannot fail again."""
    import sys

    noisy = tmp_path / "noisy.json"
    assert main(["noise", str(tiny_coco["train_json"]), "-o", str(noisy), "--kind", "symmetric", "--rate", "0.5"]) == 0
    sink = open(tmp_path / "sink", "w")

    class ClosedPipe:
        def write(self, text):
            raise BrokenPipeError(32, "Broken pipe")

        def flush(self):
            pass

        def fileno(self):
            return sink.fileno()

    capsys.readouterr()
    monkeypatch.setattr(sys, "stdout", ClosedPipe())
    assert main(["noise", "--stats", str(noisy)]) == 0
    assert capsys.readouterr().err == ""
    sink.close()
