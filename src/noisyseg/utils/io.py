"""File I/O that never leaves a half-written output and reports bad input in one line.

Outputs are checked before any work starts (:func:`ensure_output_file`, :func:`ensure_output_dir`) and
written through a temporary file in the target folder and an atomic rename (:func:`atomic_write_bytes`).
Written files get the permissions a plain ``open(path, "w")`` would give them: a new file
``0o666 & ~umask``, a replaced file keeps its mode.
"""

from __future__ import annotations

import json
import os
import stat
import tempfile
from pathlib import Path
from typing import Any

from noisyseg.errors import NoisysegError


def _umask() -> int:
    """The process umask, read without changing it where the platform allows (Linux /proc)."""
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)  # the only portable way to read it is to set it; restore it at once
    os.umask(mask)
    return mask


def _mode_for(path: Path) -> int:
    """Permission bits for a file about to be written at ``path``: the old file's, else 0o666 & ~umask."""
    try:
        return stat.S_IMODE(os.stat(path).st_mode)
    except OSError:
        return 0o666 & ~_umask()


def _nearest_existing(path: Path) -> Path:
    """``path`` or its closest ancestor that exists (the folder where new folders would be created)."""
    p = path
    while not p.exists() and not p.is_symlink() and p != p.parent:
        p = p.parent
    return p


def _check_can_create_under(path: Path, what: str, folder: Path | None = None) -> None:
    """One-line error naming ``path`` unless ``folder`` (default: the folder above ``path``) exists or can be
    created, and the closest existing folder is writable."""
    base = _nearest_existing(path.parent if folder is None else folder)
    if not base.is_dir():
        raise NoisysegError(f"{path}: cannot write the {what}: {base} is a file, not a folder")
    # os.access is not enough: it says yes to root on read-only file systems. Creating a file is the test.
    try:
        fd, probe = tempfile.mkstemp(prefix=".noisyseg-write-test.", dir=base)
    except OSError as e:
        raise NoisysegError(f"{path}: cannot write the {what}: {base} is not writable ({e.strerror})") from None
    os.close(fd)
    os.unlink(probe)


def ensure_output_file(path: str | os.PathLike, what: str = "output file") -> Path:
    """Check, before any work, that a file can be written at ``path``; create nothing.

    Raises :class:`NoisysegError` (one line naming ``path`` and ``what``) when ``path`` is a folder, when a
    component above it is a file, or when the folder that would hold it is not writable. Returns ``path``.
    """
    path = Path(path)
    if path.is_dir():
        raise NoisysegError(f"{path}: the {what} is a folder, expected a file path")
    _check_can_create_under(path, what)
    return path


def ensure_output_dir(path: str | os.PathLike, what: str = "output folder") -> Path:
    """Check, before any work, that ``path`` is a writable folder or can be created as one; create nothing.

    Raises :class:`NoisysegError` (one line) when ``path`` is a file, a component above it is a file, or
    the folder (or the one that would hold it) is not writable. Returns ``path``.
    """
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise NoisysegError(f"{path}: the {what} is a file, expected a folder")
    _check_can_create_under(path, what, folder=path)
    return path


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write ``data`` to ``path`` through a temporary file in the same folder and an atomic rename.

    Readers see either the old file or the complete new one, never a partial write. Parent folders are
    created. A new file gets mode ``0o666 & ~umask``; a replaced file keeps its mode. An OS error (a
    parent that is a file, a full disk, no permission) is a one-line :class:`NoisysegError`; nothing is
    left behind. Returns the path written.
    """
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        mode = _mode_for(path)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as e:
        raise NoisysegError(f"{path}: cannot write ({e.strerror or e})") from None
    try:
        with os.fdopen(fd, "wb") as f:
            os.fchmod(f.fileno(), mode)  # mkstemp makes 0o600 whatever the umask
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as e:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        if isinstance(e, OSError):
            raise NoisysegError(f"{path}: cannot write ({e.strerror or e})") from None
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
    except PermissionError:
        raise NoisysegError(f"{path}: cannot read the {what} (permission denied)") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise NoisysegError(f"{path}: not valid JSON ({e})") from None


def check_not_overwriting_input(output: str | os.PathLike, inputs: list[str | os.PathLike], force: bool) -> None:
    """Refuse to write ``output`` over one of ``inputs`` unless ``force`` is set."""
    out = Path(output).resolve()
    for inp in inputs:
        if Path(inp).resolve() == out and not force:
            raise NoisysegError(f"{output}: refusing to overwrite the input file (pass --force to allow it)")
