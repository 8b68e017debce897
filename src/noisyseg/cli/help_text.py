"""Plain text for ``--help`` from docstrings written in reST.

A command's description is often its module's docstring, which says ``:func:`noisyseg.bench.run_bench```
and ````OUT/runs````; a terminal shows those marks raw. :func:`plain_text` keeps the words and drops the
marks. Imports nothing heavy: it runs when the parser is built.
"""

from __future__ import annotations

import re

# :role:`text <target>`, :role:`~a.b.name` or :role:`a.b.name` (Sphinx cross-references)
_ROLE = re.compile(r":[a-z]+(?::[a-z]+)?:`(~?)([^`<]*?)(?:\s*<[^`>]*>)?`")
_LITERAL = re.compile(r"``(.+?)``", re.DOTALL)


def _role_text(match: re.Match) -> str:
    tilde, text = match.group(1), match.group(2).strip()
    return text.rsplit(".", 1)[-1] if tilde else text  # "~" shows the last name only, as Sphinx does


def plain_text(doc: str | None) -> str:
    """``doc`` without reST markup: roles become their text and ````literal```` loses its marks; line
    breaks and paragraphs are kept (use with argparse's RawDescriptionHelpFormatter). ``**`` is left
    alone: in help it is more often a power (``R**k``) than bold."""
    text = _ROLE.sub(_role_text, doc or "")
    return _LITERAL.sub(r"\1", text).strip() + "\n"
