"""Values shown in messages, cut to a bounded length.

An error line quotes what the user gave (``got 'x'``); a value expanded from a small input (a YAML
alias tree, a long --set value) can be megabytes, and a one-line message must stay one readable line.
"""

from __future__ import annotations

from typing import Any

#: The most characters of a value a message shows.
SHOWN_CHARS = 80


def shown(value: Any, limit: int = SHOWN_CHARS) -> str:
    """``repr(value)``, cut to at most ``limit`` characters: the head, ``...``, the tail and the length.

    A cut value ends ``... (N characters)`` so the reader sees it was cut. Containers are cut after
    ``repr``, which is linear in their size; callers bound what they parse (see :mod:`noisyseg.config`).
    """
    text = repr(value)
    if len(text) <= limit:
        return text
    note = f" ({len(text)} characters)"
    keep = max(limit - len(note) - 3, 8)
    head = keep - keep // 3
    return f"{text[:head]}...{text[len(text) - keep // 3:]}{note}"
