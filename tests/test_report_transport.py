"""The suite's own plumbing: a failing test's report always reaches the pytest-xdist controller."""

import pytest
from _pytest.reports import TestReport
from execnet.gateway_base import DumpError, dumps

from helpers import utf8_safe_report


def _report(longrepr, sections) -> TestReport:
    return TestReport("tests/x.py::test_x", ("tests/x.py", 1, "test_x"), {}, "failed", longrepr, "call",
                      sections=sections)


def test_a_report_with_lone_surrogates_is_escaped_and_can_be_sent():
    """A lone surrogate (a file name decoded with surrogateescape) makes execnet refuse the report, which
    stops the whole run; escaped, the report is sent and still shows the character as \\udcff."""
    name = b"scene_\xff.png".decode("utf-8", "surrogateescape")
    report = _report(f"AssertionError: {name} missing", [("Captured stderr call", f"reading {name}\n")])
    with pytest.raises(DumpError):
        dumps(report._to_json())
    utf8_safe_report(report)
    sent = dumps(report._to_json())
    assert report.longrepr == "AssertionError: scene_\\udcff.png missing"
    assert report.sections == [("Captured stderr call", "reading scene_\\udcff.png\n")]
    assert b"scene_\\udcff.png" in sent


def test_an_encodable_report_is_left_as_it_is():
    report = _report("AssertionError: caf\u00e9 \U0001f600", [("Captured stdout call", "caf\u00e9\n")])
    utf8_safe_report(report)
    assert report.longrepr == "AssertionError: caf\u00e9 \U0001f600"
    assert report.sections == [("Captured stdout call", "caf\u00e9\n")]
