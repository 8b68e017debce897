"""Reading a file a user names, with one-line errors and a bound on its size."""

from __future__ import annotations

import os
from pathlib import Path

from noisyseg.errors import NoisysegError
from noisyseg.utils.text import shown_path


def read_bytes(path: str | os.PathLike, what: str, limit: int | None = None) -> bytes:
    """The bytes of the file at ``path`` (a ``what``, e.g. "config file", in messages).

    With ``limit``, at most that many bytes are read (the path may name a pipe or a device that never
    ends) and a longer file is refused.

    Raises:
        NoisysegError: one line naming the path: not found, a folder, unreadable (with the system's
            reason) or larger than ``limit``.
    """
    shown = shown_path(path)
    try:
        with Path(path).open("rb") as f:
            data = f.read() if limit is None else f.read(limit + 1)
    except FileNotFoundError:
        raise NoisysegError(f"{shown}: {what} not found") from None
    except IsADirectoryError:
        raise NoisysegError(f"{shown}: expected a {what}, found a folder") from None
    except OSError as e:
        raise NoisysegError(f"{shown}: cannot read the {what} ({e.strerror or e})") from None
    if limit is not None and len(data) > limit:
        raise NoisysegError(f"{shown}: larger than {limit} bytes; a {what} is at most that")
    return data
