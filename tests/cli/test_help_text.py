"""--help is plain text: no reST marks from the docstrings it shows; bench's help shows the +fix syntax."""

import pytest

from noisyseg.cli import build_parser
from noisyseg.cli.help_text import plain_text

REST_MARKS = (":func:", ":mod:", ":class:", ":data:", ":meth:", "``")


def _help(*verbs) -> str:
    parser = build_parser()
    for verb in verbs:
        parser = parser._subparsers._group_actions[0].choices[verb]
    return parser.format_help()


def _every_command(parser=None, path=()):
    parser = parser or build_parser()
    yield path
    if parser._subparsers:
        for action in parser._subparsers._group_actions:
            for name, sub in action.choices.items():
                yield from _every_command(sub, (*path, name))


@pytest.mark.parametrize("verbs", list(_every_command()), ids=lambda v: " ".join(v) or "noisyseg")
def test_no_help_shows_rest_markup(verbs):
    text = _help(*verbs)
    assert not [m for m in REST_MARKS if m in text], text


def test_plain_text_keeps_the_words_of_roles_and_literals():
    doc = ("Runs :func:`noisyseg.bench.run_bench`, :func:`~noisyseg.bench.report_bench`, "
           ":class:`the folder <noisyseg.engine.RunFolder>` and ``OUT/runs``;\nR**k, :py:meth:`a.b`.")
    assert plain_text(doc) == ("Runs noisyseg.bench.run_bench, report_bench, the folder and OUT/runs;\n"
                               "R**k, a.b.\n")


def test_bench_help_shows_the_fix_syntax_the_readme_uses():
    from noisyseg.audit import ACTIONS
    from noisyseg.bench import grid

    text = " ".join(_help("bench").split())  # argparse wraps lines
    assert "METHOD+fix[:KEY=VALUE...]" in text and "ce+fix:retrain=ce" in text
    for key in grid.FIX_DEFAULTS:
        assert f"{key}=" in text, key
    assert f"action={'|'.join(ACTIONS)}" in text and f"checkpoint={'|'.join(grid.FIX_CHECKPOINTS)}" in text
    assert f"transition={'|'.join(grid.FIX_TRANSITIONS)}" in text
    for method in grid.METHODS:
        assert method in text
    for option in ("--methods", "--noise", "--seeds", "--set", "--no-progress"):
        assert option in text
