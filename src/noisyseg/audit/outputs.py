"""Where the audit commands write, checked before any work: never over an input, never over a file they did
not make, and never two audits into one folder at once.

An audit folder records what it holds in ``audit_manifest.json`` (the files an audit wrote there, paths
relative to the folder). A later audit into the same folder may replace exactly those files; any other
existing file at one of its output paths is an error, so a user's own file is never replaced. Folders
made before the manifest existed are recognised by their ``summary.json``. A repaired COCO file (``audit
--fix``, ``apply-decisions -o``) may replace an earlier repaired file (one whose ``info.audit`` says an
audit made it), nothing else.

While an audit writes a folder it holds an exclusive ``flock`` on the folder itself: a second audit into
the same folder stops at once with one line instead of mixing its files with the first one's.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import json
import os
from pathlib import Path
from typing import Any, Iterable, Iterator

from noisyseg.errors import NoisysegError
from noisyseg.utils.io import atomic_write_json, ensure_output_dir, ensure_output_file

MANIFEST = "audit_manifest.json"
# the files of an audit folder written before the manifest existed
LEGACY_FILES = ("label_issues.csv", "label_issues.json", "summary.json", "summary.md", "review.html",
                "contact_sheet.png")


def same_path(a: str | os.PathLike, b: str | os.PathLike) -> bool:
    """True when ``a`` and ``b`` name one file: the same resolved path, or (both existing) the same inode
    (a hard link or a symbolic link to it)."""
    a, b = Path(a), Path(b)
    if a.resolve() == b.resolve():
        return True
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False


def check_not_an_input(output: str | os.PathLike, inputs: Iterable[tuple[str, str | os.PathLike]],
                       option: str) -> None:
    """One-line error when ``output`` is one of ``inputs`` (pairs of what it is, path)."""
    for what, path in inputs:
        if same_path(output, path):
            raise NoisysegError(f"{output}: {option} would write over the {what} ({path}); choose another path")


def written_by_audit(path: str | os.PathLike) -> bool:
    """Whether the existing file ``path`` is a COCO file an audit repaired (its ``info.audit`` is set)."""
    try:
        with open(path, "rb") as f:
            obj = json.load(f)
    except (OSError, ValueError):
        return False
    return isinstance(obj, dict) and isinstance(obj.get("info"), dict) and "audit" in obj["info"]


def check_repaired_output(output: str | os.PathLike, inputs: Iterable[tuple[str, str | os.PathLike]],
                          option: str) -> Path:
    """Check, before any work, that the repaired COCO file can be written at ``output``.

    Refused: one of ``inputs``, a folder, an unwritable place, and an existing file that is not an
    earlier repaired file (a user's own file is never replaced).
    """
    output = Path(output)
    check_not_an_input(output, inputs, option)
    ensure_output_file(output, f"{option} output")
    if output.exists() and not written_by_audit(output):
        raise NoisysegError(f"{output}: {option} would replace an existing file that no audit wrote; "
                            "remove it or choose another path")
    return output


def previous_files(folder: Path) -> set[str]:
    """The files (relative paths) an earlier audit wrote into ``folder``: its manifest's list, or for a
    folder from before manifests, the fixed file names when its summary.json is an audit summary."""
    manifest = folder / MANIFEST
    if manifest.is_file():
        try:
            obj = json.loads(manifest.read_text(encoding="utf-8"))
        except (OSError, ValueError) as e:
            raise NoisysegError(f"{manifest}: not a readable audit manifest ({e}); remove it or choose "
                                "another output folder") from None
        files = obj.get("files") if isinstance(obj, dict) else None
        if not isinstance(files, list) or not all(isinstance(f, str) and _inside(f) for f in files):
            raise NoisysegError(f"{manifest}: expected {{\"files\": [relative paths]}}; remove it or choose "
                                "another output folder")
        return set(files)
    summary = folder / "summary.json"
    try:
        obj = json.loads(summary.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return set()
    if isinstance(obj, dict) and {"n_annotations", "n_flagged", "rule"} <= set(obj):
        return {name for name in LEGACY_FILES if (folder / name).is_file()}
    return set()


def _inside(relative: str) -> bool:
    p = Path(relative)
    return not p.is_absolute() and ".." not in p.parts and relative not in ("", ".")


def check_folder_outputs(folder: Path, names: Iterable[str], owned_dirs: Iterable[str],
                         inputs: Iterable[tuple[str, str | os.PathLike]], option: str = "-o") -> set[str]:
    """Check, before any work, the files an audit is about to write into ``folder``.

    ``names``: the relative paths it will write; ``owned_dirs``: subfolders it fills (every file in them
    must be its own). Raises a one-line :class:`NoisysegError` when an output is one of ``inputs`` or an
    existing file (or folder) that an earlier audit did not write. Returns the earlier audit's files.
    """
    ensure_output_dir(folder, f"{option} folder")
    inputs = list(inputs)
    before = previous_files(folder) if folder.is_dir() else set()
    for name in [*names, MANIFEST]:
        path = folder / name
        check_not_an_input(path, inputs, option)
        if path.is_dir() and not path.is_symlink():
            raise NoisysegError(f"{path}: a folder is in the way of an audit output; choose another {option} folder")
        if (path.exists() or path.is_symlink()) and name not in before and name != MANIFEST:
            raise NoisysegError(f"{path}: exists and was not written by noisyseg audit; remove it or choose "
                                f"another {option} folder")
    for sub in owned_dirs:
        path = folder / sub
        if path.is_symlink() or (path.exists() and not path.is_dir()):
            raise NoisysegError(f"{path}: expected the audit's own folder of page files; remove it or choose "
                                f"another {option} folder")
        if path.is_dir():
            for entry in sorted(path.rglob("*")):
                rel = entry.relative_to(folder).as_posix()
                if rel not in before and not entry.is_dir():
                    raise NoisysegError(f"{entry}: a file noisyseg audit did not write is in its page folder "
                                        f"{path}; remove it or choose another {option} folder")
                check_not_an_input(entry, inputs, option)
    for name in before:  # files an earlier audit wrote may be removed below: never an input
        check_not_an_input(folder / name, inputs, option)
    return before


class Spool:
    """Output files kept on disk until :func:`write_folder` writes them: one temporary file without a name
    (made in ``folder``, so on the same disk; the system removes it when it is closed or the process ends),
    so an audit's large outputs (its table, thousands of crop sheets) do not stay in memory."""

    def __init__(self, folder: Path | None) -> None:
        import tempfile

        # kept open until close(): the spool outlives any one block
        self._file = tempfile.TemporaryFile(dir=folder)  # noqa: SIM115 (None: the system's temporary folder)
        self._end = 0

    @property
    def size(self) -> int:
        """Bytes spooled so far."""
        return self._end

    def add(self, data: bytes | Iterable[bytes]) -> SpooledFile:
        """Append one file's bytes (or its chunks, in order); returns where they are."""
        start = self._end
        for chunk in [data] if isinstance(data, (bytes, bytearray, memoryview)) else data:
            self._file.write(chunk)
            self._end += len(chunk)
        return SpooledFile(self, start, self._end - start)

    def writer(self) -> _SpoolWriter:
        """A file-like ``write`` target for one file; its ``.file`` is the spooled file once done."""
        return _SpoolWriter(self)

    def read(self, start: int, length: int) -> bytes:
        self._file.flush()
        return os.pread(self._file.fileno(), length, start)

    def close(self) -> None:
        self._file.close()


class _SpoolWriter:
    def __init__(self, spool: Spool) -> None:
        self.spool, self.start = spool, spool._end

    def write(self, data: bytes) -> int:
        self.spool._file.write(data)
        self.spool._end += len(data)
        return len(data)

    @property
    def file(self) -> SpooledFile:
        return SpooledFile(self.spool, self.start, self.spool._end - self.start)


@dataclasses.dataclass(frozen=True)
class SpooledFile:
    """One file's bytes in a :class:`Spool`."""

    spool: Spool
    start: int
    length: int

    def read(self) -> bytes:
        return self.spool.read(self.start, self.length)


def write_folder(folder: Path, files: dict[str, Any], before: set[str], extra: Iterable[str] = ()) -> dict[str, Path]:
    """Write ``files`` (relative path -> bytes, or a :class:`SpooledFile`, read one at a time) into ``folder``, then remove what the earlier audit wrote and
    this one did not (so a folder never mixes two audits' files).

    The manifest is written first with the union of both sets (a crash mid-way leaves a folder the next
    audit still recognises as its own), and last with this audit's files (plus ``extra``: files written
    into the folder by the caller). Returns name -> path of every file written.
    """
    from noisyseg.utils.io import atomic_write_bytes

    names = sorted({*files, *extra})
    atomic_write_json(folder / MANIFEST, {"written_by": "noisyseg audit", "files": sorted({*before, *names})})
    written = {}
    for name, data in files.items():
        written[name] = atomic_write_bytes(folder / name, data.read() if isinstance(data, SpooledFile) else data)
    atomic_write_json(folder / MANIFEST, {"written_by": "noisyseg audit", "files": names})
    for name in sorted(before - set(names)):
        path = folder / name
        if path.is_file() and not path.is_symlink():
            path.unlink()
    for sub in sorted({Path(n).parent for n in before if Path(n).parent != Path(".")}, reverse=True):
        with contextlib.suppress(OSError):  # only an empty folder goes
            (folder / sub).rmdir()
    return written


@contextlib.contextmanager
def locked_folder(folder: Path, command: str = "noisyseg audit") -> Iterator[Path]:
    """Hold an exclusive lock on ``folder`` (created when missing) for the block.

    A second holder is refused at once with one line. When the block fails, folders this call created
    are removed again if still empty, so a failed audit leaves nothing behind.
    """
    folder = Path(folder)
    created = []
    p = folder
    while not p.exists() and p != p.parent:
        created.append(p)
        p = p.parent
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    except OSError as e:
        raise NoisysegError(f"{folder}: cannot make the output folder ({e.strerror or e})") from None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise NoisysegError(f"{folder}: another {command} is writing this folder now; wait for it to end "
                                "or choose another output folder") from None
        try:
            yield folder
        except BaseException:
            for d in created:  # deepest first
                with contextlib.suppress(OSError):
                    d.rmdir()
            raise
    finally:
        os.close(fd)
