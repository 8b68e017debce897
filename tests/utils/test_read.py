"""noisyseg.utils.read.read_bytes: one-line errors naming the path, and a bounded read."""

import os
import re

import pytest

from noisyseg.errors import NoisysegError
from noisyseg.utils.read import read_bytes


def test_reads_a_file_up_to_its_limit(tmp_path):
    path = tmp_path / "f.bin"
    path.write_bytes(b"x" * 10)
    assert read_bytes(path, "thing", 10) == b"x" * 10 and read_bytes(path, "thing") == b"x" * 10
    with pytest.raises(NoisysegError) as e:
        read_bytes(path, "thing", 9)
    assert str(e.value) == f"{path}: larger than 9 bytes; a thing is at most that"


@pytest.mark.skipif(not os.path.exists("/dev/zero"), reason="needs /dev/zero")
def test_an_endless_file_is_read_only_to_the_limit():
    with pytest.raises(NoisysegError, match=r"^/dev/zero: larger than 1000 bytes; a config file is at most that$"):
        read_bytes("/dev/zero", "config file", 1000)


def test_missing_folder_and_long_paths_are_one_line(tmp_path):
    for path, line in [(tmp_path / "none", f"{tmp_path / 'none'}: thing not found"),
                       (tmp_path, f"{tmp_path}: expected a thing, found a folder")]:
        with pytest.raises(NoisysegError) as e:
            read_bytes(path, "thing")
        assert str(e.value) == line
    deep = tmp_path.joinpath(*["a_folder_name_of_some_length"] * 8, "missing.json")  # > 80 characters
    with pytest.raises(NoisysegError) as e:
        read_bytes(deep, "thing")
    assert str(e.value) == f"{deep}: thing not found"  # named whole, however deep
    with pytest.raises(NoisysegError) as e:
        read_bytes("d" * 5000, "thing")  # longer than any path the system opens: cut
    assert "cannot read the thing (File name too long)" in str(e.value) and len(str(e.value)) < 4200
    assert re.fullmatch(r"d{100,}\.\.\.d{100,} \(5000 characters\): cannot read the thing \(File name too long\)", str(e.value))
