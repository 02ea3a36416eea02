"""The HTML report: verdicts first, every chart, honest accounting, one offline file."""

from __future__ import annotations

import re

import msgspec
import pytest

from rtbench.report import REPORT_NAME, render_html, write_outputs
from rtbench.report.charts import MAX_POINTS, build_charts
from rtbench.results import SecondSample, Totals
from tests.report.factory import CHART_IDS, histogram, make_results


def _verdict_states(html: str) -> dict[str, str]:
    return dict(re.findall(r'data-target="(\w+)" data-state="(\w+)"', html))


def test_verdicts_come_first_with_their_four_states():
    results = make_results(
        delivery=histogram((9_000, 2.0), (1_000, 150.0)),
        recovery=histogram((100, 300.0)),
    )
    html = render_html(results)
    assert _verdict_states(html) == {
        "uptime": "not_measured",
        "delivery_latency": "fail",
        "connections": "not_measured",
        "recovery": "pass",
    }
    assert html.index('id="verdicts"') < html.index('id="charts"') < html.index('id="environment"')
    assert 'data-exit-code="1"' in html


def test_saturated_generator_marks_verdicts_untrustworthy():
    results = make_results(saturated=True, delivery=histogram((9_000, 2.0), (1_000, 150.0)))
    html = render_html(results)
    assert _verdict_states(html)["delivery_latency"] == "untrustworthy"
    assert 'id="saturated"' in html and "untrustworthy (fail)" in html
    assert 'data-exit-code="4"' in html


def test_every_chart_has_data_from_a_full_run():
    results = make_results(recovery=histogram((95, 300.0), (5, 2_500.0)))
    charts = build_charts(results)
    assert tuple(c.id for c in charts) == CHART_IDS
    for chart in charts:
        assert chart.svg, chart.id
        counts = [int(n) for n in re.findall(r'data-points="(\d+)"', chart.svg)]
        assert counts and all(n > 0 for n in counts), chart.id
    html = render_html(results)
    # The SLO threshold and the generator's saturation thresholds are marked: its CPU,
    # its loop lag, and how busy its CPUs were with everything.
    assert "SLO: p99 &lt; 100 ms" in html
    assert html.count(">saturation<") == 3


def test_percentile_plot_is_drawn_from_the_encoded_histograms():
    results = make_results(delivery=histogram((990, 1.0), (10, 80.0)))
    plot = next(c for c in build_charts(results) if c.id == "percentiles")
    assert plot.svg is not None
    assert 'data-series="delivery"' in plot.svg and 'data-series="ack"' in plot.svg
    # Tooltips carry the values the histogram really holds.
    tips = [
        (p, float(ms))
        for p, ms in re.findall(r"<title>delivery (p[\d.]+|max): ([\d.]+) ms</title>", plot.svg)
    ]
    # HDR keeps 3 significant digits: 80 ms reads back as 80.0 or 80.1.
    assert tips[0] == ("p0", 1.0) and tips[-1][0] == "max"
    assert tips[-1][1] == pytest.approx(80.0, rel=2e-3)
    below = [float(p[1:]) for p, ms in tips[:-1] if ms < 2]
    above = [float(p[1:]) for p, ms in tips[:-1] if ms > 79]
    assert max(below) <= 99.0 < min(above)  # 1 % of the values are 80 ms


def test_a_run_without_samples_says_why_each_chart_is_empty():
    results = msgspec.structs.replace(make_results(), series=[], latency={})
    charts = build_charts(results)
    assert all(c.svg is None and c.empty for c in charts)
    html = render_html(results)
    assert "The run recorded no latency histogram." in html
    assert "The run recorded no per-second p50, p99, max, generator delay." in html


def test_long_runs_are_folded_to_a_bounded_number_of_points():
    seconds = 3 * MAX_POINTS + 7
    series = [
        SecondSample(t=float(i), connections=10, delivery_p99=5.0 if i != 1234 else 900.0)
        for i in range(seconds)
    ]
    results = msgspec.structs.replace(make_results(), series=series)
    chart = build_charts(results)[0]
    assert chart.svg is not None
    counts = [int(n) for n in re.findall(r'data-points="(\d+)"', chart.svg)]
    assert max(counts) <= MAX_POINTS
    assert "Each point covers 4 s" in chart.caption
    assert "minutes since start" in chart.svg
    # The worst second survives the folding: the p99 axis reaches the 900 ms spike.
    assert ">1,000<" in chart.svg


def test_accounting_identity_is_checked_not_assumed():
    good = render_html(make_results(lost=7))
    assert 'data-holds="true"' in good and "+ lost 7" in good
    broken = msgspec.structs.replace(
        make_results(), totals=Totals(expected_deliveries=100, delivered=90, lost=5)
    )
    html = render_html(broken)
    assert 'data-holds="false"' in html
    assert "expected 100 ≠ delivered 90 + lost 5" in html


def test_the_file_is_self_contained_and_escapes_what_it_shows():
    results = make_results(
        scenario="<script>alert('x')</script>", config={"note": "<img src=x onerror=alert(1)>"}
    )
    html = render_html(results)
    assert "<script" not in html.lower()
    assert "<img" not in html.lower()
    assert "default-src 'none'" in html  # the browser itself forbids any network load
    urls = re.findall(r"""(?:src|href)\s*=\s*["']?(https?:|//)""", html)
    assert urls == []
    assert len(html) < 200_000


def test_configuration_and_environment_are_shown():
    results = make_results(config={"users": 1000, "room": {"size": 10}})
    html = render_html(results)
    assert "room.size" in html
    assert results.environment.python in html
    assert "msgspec" in html


@pytest.mark.parametrize("html", [True, False])
def test_write_outputs_writes_what_was_asked(tmp_path, html):
    junit, summary = tmp_path / "ci" / "junit.xml", tmp_path / "summary.md"
    written = write_outputs(
        make_results(), tmp_path / "run", html=html, junit=junit, summary_md=summary
    )
    expected = ([tmp_path / "run" / REPORT_NAME] if html else []) + [junit, summary]
    assert written == expected
    assert all(p.stat().st_size > 0 for p in written)
    assert not list(tmp_path.rglob("*.tmp"))
    assert write_outputs(make_results(), None) == []


class _EngineTotals(Totals, kw_only=True):
    """Totals as an engine that records more counters than the report knows by name."""

    rejected: int = 0
    drained: bool | None = None
    events_by_type: dict[str, int] = {}


def test_counters_the_report_does_not_know_are_still_shown():
    totals = _EngineTotals(rejected=3, drained=False, events_by_type={"typing": 12})
    html = render_html(msgspec.structs.replace(make_results(), totals=totals))
    assert '<th>rejected</th><td class="num">3</td>' in html
    assert '<th>drained</th><td class="num">no</td>' in html
    assert "typing 12" in html
