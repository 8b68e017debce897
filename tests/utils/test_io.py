"""noisyseg.utils.io: output checks before work, atomic writes with the umask's permissions, json reading."""

import json
import os
import stat
from pathlib import Path

import pytest

from helpers import unwritable_dir
from noisyseg.errors import NoisysegError
from noisyseg.utils.io import (atomic_write_bytes, atomic_write_json, atomic_write_text, check_not_overwriting_input,
                               ensure_output_dir, ensure_output_file, read_json)


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture
def umask():
    """Set a umask for one test and restore the old one."""
    old = os.umask(0o022)
    yield os.umask
    os.umask(old)


def test_ensure_output_file_accepts_new_and_existing_files_and_creates_nothing(tmp_path):
    assert ensure_output_file(tmp_path / "a" / "b" / "out.json") == tmp_path / "a" / "b" / "out.json"
    existing = tmp_path / "old.json"
    existing.write_text("x")
    assert ensure_output_file(existing) == existing
    assert sorted(p.name for p in tmp_path.iterdir()) == ["old.json"]  # no folder, no probe file left


def test_ensure_output_file_refuses_a_folder_a_path_under_a_file_and_an_unwritable_folder(tmp_path):
    with pytest.raises(NoisysegError) as e:
        ensure_output_file(tmp_path, "report file")
    assert str(e.value) == f"{tmp_path}: the report file is a folder, expected a file path"
    blocker = tmp_path / "plain.txt"
    blocker.write_text("x")
    with pytest.raises(NoisysegError) as e:
        ensure_output_file(blocker / "sub" / "out.json")
    assert str(e.value) == f"{blocker / 'sub' / 'out.json'}: cannot write the output file: {blocker} is a file, not a folder"
    locked = unwritable_dir(tmp_path)
    with pytest.raises(NoisysegError, match=r"cannot write the output file: .* is not writable \(") as e:
        ensure_output_file(locked / "new" / "out.json")
    assert "\n" not in str(e.value) and str(locked) in str(e.value)


def test_ensure_output_dir(tmp_path):
    assert ensure_output_dir(tmp_path / "new" / "deeper") == tmp_path / "new" / "deeper"
    assert ensure_output_dir(tmp_path) == tmp_path
    assert list(tmp_path.iterdir()) == []
    f = tmp_path / "file"
    f.write_text("x")
    with pytest.raises(NoisysegError) as e:
        ensure_output_dir(f)
    assert str(e.value) == f"{f}: the output folder is a file, expected a folder"
    with pytest.raises(NoisysegError) as e:
        ensure_output_dir(f / "sub")
    assert str(e.value) == f"{f / 'sub'}: cannot write the output folder: {f} is a file, not a folder"
    locked = unwritable_dir(tmp_path)
    for given in (locked, locked / "sub"):  # the message names the folder given, not a file inside it
        with pytest.raises(NoisysegError) as e:
            ensure_output_dir(given)
        assert str(e.value).startswith(f"{given}: cannot write the output folder: {locked} is not writable")


@pytest.mark.parametrize("mask, expected", [(0o022, 0o644), (0o077, 0o600), (0o002, 0o664), (0o027, 0o640)])
def test_new_files_get_the_umask_permissions(tmp_path, umask, mask, expected):
    umask(mask)
    written = atomic_write_text(tmp_path / "sub" / "f.txt", "hello")
    assert written.read_text() == "hello"
    assert _mode(written) == expected
    # what a plain open() would give, as an independent reference
    reference = tmp_path / "plain.txt"
    reference.write_text("x")
    assert _mode(reference) == expected


def test_a_replaced_file_keeps_its_mode(tmp_path, umask):
    umask(0o022)
    path = tmp_path / "f.json"
    path.write_text("{}")
    path.chmod(0o640)
    atomic_write_json(path, {"a": 1})
    assert json.loads(path.read_text()) == {"a": 1} and _mode(path) == 0o640


def test_atomic_write_replaces_whole_and_leaves_no_temporary_file(tmp_path):
    path = tmp_path / "data.bin"
    atomic_write_bytes(path, b"old contents that are longer")
    atomic_write_bytes(path, b"new")
    assert path.read_bytes() == b"new"
    assert [p.name for p in tmp_path.iterdir()] == ["data.bin"]


def test_atomic_write_errors_are_one_line_and_leave_nothing(tmp_path):
    blocker = tmp_path / "plain.txt"
    blocker.write_text("x")
    with pytest.raises(NoisysegError, match=r"cannot write") as e:
        atomic_write_text(blocker / "out.json", "{}")
    assert str(e.value).startswith(f"{blocker / 'out.json'}: cannot write (") and "\n" not in str(e.value)
    with pytest.raises(NoisysegError, match="cannot write"):
        atomic_write_text(tmp_path, "{}")  # a folder in the way of the rename
    assert sorted(p.name for p in tmp_path.iterdir()) == ["plain.txt"]
    assert blocker.read_text() == "x"


def test_read_json_errors(tmp_path):
    with pytest.raises(NoisysegError) as e:
        read_json(tmp_path / "none.json", "COCO annotation file")
    assert str(e.value) == f"{tmp_path / 'none.json'}: COCO annotation file not found"
    with pytest.raises(NoisysegError, match="expected a config, found a folder"):
        read_json(tmp_path, "config")
    bad = tmp_path / "bad.json"
    bad.write_text("{nope")
    with pytest.raises(NoisysegError, match="not valid JSON"):
        read_json(bad)
    bad.write_bytes(b"\xff\xfe\x00")
    with pytest.raises(NoisysegError, match="not valid JSON"):
        read_json(bad)
    good = tmp_path / "good.json"
    good.write_text('{"a": [1, 2]}')
    assert read_json(good) == {"a": [1, 2]}


def test_check_not_overwriting_input(tmp_path):
    inp = tmp_path / "in.json"
    inp.write_text("{}")
    check_not_overwriting_input(tmp_path / "out.json", [inp], force=False)
    with pytest.raises(NoisysegError, match="refusing to overwrite the input file"):
        check_not_overwriting_input(tmp_path / "." / "in.json", [inp], force=False)
    check_not_overwriting_input(inp, [inp], force=True)
