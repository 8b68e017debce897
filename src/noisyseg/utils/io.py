"""File I/O that never leaves a half-written output and reports bad input in one line."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

from noisyseg.errors import NoisysegError


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write ``data`` to ``path`` through a temporary file in the same folder and an atomic rename.

    Readers see either the old file or the complete new one, never a partial write. Parent folders are
    created. Returns the path written.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    return path


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    """Atomically write UTF-8 ``text`` to ``path`` (see :func:`atomic_write_bytes`)."""
    return atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | os.PathLike, obj: Any, indent: int | None = None) -> Path:
    """Atomically write ``obj`` as JSON to ``path``."""
    return atomic_write_text(path, json.dumps(obj, indent=indent))


def read_json(path: str | os.PathLike, what: str = "JSON file") -> Any:
    """Read a JSON file, turning a missing file or malformed JSON into a one-line :class:`NoisysegError`."""
    path = Path(path)
    try:
        with open(path, "rb") as f:
            return json.load(f)
    except FileNotFoundError:
        raise NoisysegError(f"{path}: {what} not found") from None
    except IsADirectoryError:
        raise NoisysegError(f"{path}: expected a {what}, found a folder") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise NoisysegError(f"{path}: not valid JSON ({e})") from None


def check_not_overwriting_input(output: str | os.PathLike, inputs: list[str | os.PathLike], force: bool) -> None:
    """Refuse to write ``output`` over one of ``inputs`` unless ``force`` is set."""
    out = Path(output).resolve()
    for inp in inputs:
        if Path(inp).resolve() == out and not force:
            raise NoisysegError(f"{output}: refusing to overwrite the input file (pass --force to allow it)")
