"""JUnit XML for CI test views, and the Markdown summary for job summaries."""

from __future__ import annotations

import xml.etree.ElementTree as ET

from rtbench.report import render_junit, render_markdown
from tests.report.factory import histogram, make_results


def _cases(xml: str) -> tuple[ET.Element, dict[str, ET.Element]]:
    root = ET.fromstring(xml)
    (suite,) = root.findall("testsuite")
    return suite, {case.get("name"): case for case in suite.findall("testcase")}


def test_junit_has_one_suite_with_a_case_per_target():
    results = make_results(
        delivery=histogram((9_000, 2.0), (1_000, 150.0)), recovery=histogram((100, 300.0))
    )
    suite, cases = _cases(render_junit(results))
    assert suite.get("name") == "rtbench SLO"
    assert list(cases) == ["uptime", "delivery_latency", "connections", "recovery"]
    assert (suite.get("tests"), suite.get("failures"), suite.get("skipped")) == ("4", "1", "2")
    properties = {p.get("name"): p.get("value") for p in suite.iter("property")}
    assert properties["scenario"] == "chat" and properties["generator_saturated"] == "false"

    failure = cases["delivery_latency"].find("failure")
    assert failure is not None and failure.get("type") == "slo_failed"
    assert "150 ms" in failure.get("message") and "p99 < 100 ms" in failure.get("message")
    assert "10,000 deliveries" in failure.text
    assert cases["recovery"].find("failure") is None and cases["recovery"].find("skipped") is None
    skipped = cases["uptime"].find("skipped")
    assert skipped is not None and skipped.get("message").startswith("not measured:")


def test_junit_says_when_a_failure_cannot_be_trusted():
    results = make_results(saturated=True, delivery=histogram((9_000, 2.0), (1_000, 150.0)))
    _, cases = _cases(render_junit(results))
    failure = cases["delivery_latency"].find("failure")
    assert failure is not None and failure.get("type") == "untrustworthy"
    assert failure.get("message").startswith("untrustworthy (load generator saturated)")


def test_junit_of_a_passing_run_has_no_failure():
    suite, cases = _cases(render_junit(make_results(peak=10_000, users=10_000)))
    assert suite.get("failures") == "0"
    assert cases["connections"].find("skipped") is None
    assert all(c.find("failure") is None for c in cases.values())


def test_markdown_summary_is_a_compact_verdict_table():
    results = make_results(delivery=histogram((9_000, 2.0), (1_000, 150.0)), lost=3)
    md = render_markdown(results)
    lines = md.splitlines()
    assert lines[0].startswith("### ❌ rtbench `chat`") and "SLO failed" in lines[0]
    table = [line for line in lines if line.startswith("| ")]
    assert table[0] == "| target | objective | measured | verdict |"
    assert "| Delivery latency | p99 < 100 ms | 150 ms | ❌ FAIL |" in table
    assert "| Uptime | > 99.9 % over 30d | — | ⚪ not measured |" in table
    assert "expected 10,003 = delivered 10,000 + lost 3 ✓" in md
    assert len(md) < 2_000


def test_markdown_escapes_table_breaking_text():
    md = render_markdown(make_results(scenario="a|b"))
    assert "`a\\|b`" in md
