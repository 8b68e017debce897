"""Values shown in messages, cut to a bounded length.

An error line quotes what the user gave (``got 'x'``); a value expanded from a small input (a YAML
alias tree, a long --set value) can be megabytes, and a one-line message must stay one readable line.
"""

from __future__ import annotations

from typing import Any

#: The most characters of a value a message shows.
SHOWN_CHARS = 80
#: The most characters of a path a message shows: Linux's PATH_MAX, so any path the system can open is
#: named whole (an error must name the file; deep folders easily pass 80 characters) and only a value
#: no system could open as a path is cut.
PATH_CHARS = 4096


def clipped(text: str, limit: int = SHOWN_CHARS) -> str:
    """``text`` cut to at most ``limit`` characters: the head, ``...``, the tail and the full length.

    A cut text ends ``... (N characters)`` so the reader sees it was cut.
    """
    if len(text) <= limit:
        return text
    note = f" ({len(text)} characters)"
    keep = max(limit - len(note) - 3, 8)
    head = keep - keep // 3
    return f"{text[:head]}...{text[len(text) - keep // 3:]}{note}"


def shown_path(path: Any) -> str:
    """``str(path)`` whole, unless it is longer than any path the system opens (:data:`PATH_CHARS`)."""
    return clipped(str(path), PATH_CHARS)


def shown(value: Any, limit: int = SHOWN_CHARS) -> str:
    """``repr(value)`` cut as :func:`clipped` cuts text (``repr`` is linear in a container's size;
    callers bound what they parse, see :mod:`noisyseg.config`)."""
    return clipped(repr(value), limit)
