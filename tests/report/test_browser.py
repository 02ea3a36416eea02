"""The HTML report as a browser sees it: it renders, the charts are there, no console errors."""

from __future__ import annotations

import pytest

from rtbench.report import write_outputs
from tests.report.factory import CHART_IDS, histogram, make_results

pytestmark = pytest.mark.browser


def _open(browser, tmp_path, results):
    (path,) = write_outputs(results, tmp_path)
    browser.get_log("browser")  # drop what earlier pages logged
    browser.get(path.as_uri())
    return path


def _severe(browser) -> list[dict]:
    return [entry for entry in browser.get_log("browser") if entry["level"] == "SEVERE"]


def test_full_report_renders_with_charts_and_no_console_errors(browser, tmp_path):
    results = make_results(
        delivery=histogram((9_000, 2.0), (1_000, 150.0)),
        recovery=histogram((95, 300.0), (5, 2_500.0)),
    )
    _open(browser, tmp_path, results)
    assert browser.title.startswith("rtbench: chat")
    rows = browser.execute_script(
        "return [...document.querySelectorAll('tr.verdict')]"
        ".map(r => [r.dataset.target, r.dataset.state, r.querySelector('.badge').innerText])"
    )
    assert rows == [
        ["uptime", "not_measured", "not measured"],
        ["delivery_latency", "fail", "FAIL"],
        ["connections", "not_measured", "not measured"],
        ["recovery", "fail", "FAIL"],
    ]
    charts = browser.execute_script(
        """return [...document.querySelectorAll('figure.chart-box')].map(f => {
             const svg = f.querySelector('svg.chart');
             const box = svg ? svg.getBoundingClientRect() : {width: 0, height: 0};
             const drawn = svg ? [...svg.querySelectorAll('path.series')]
                 .filter(p => Number(p.dataset.points) > 0 && p.getTotalLength() > 0).length : 0;
             return [f.id, Math.round(box.width), Math.round(box.height), drawn];
           })"""
    )
    assert [c[0] for c in charts] == [f"chart-{i}" for i in CHART_IDS]
    for chart_id, width, height, drawn in charts:
        assert width > 250 and height > 150, chart_id
        assert drawn >= 1, chart_id
    assert _severe(browser) == []


def test_report_of_an_empty_run_renders_cleanly(browser, tmp_path):
    import msgspec

    results = msgspec.structs.replace(make_results(), series=[], latency={}, verdicts=[])
    _open(browser, tmp_path, results)
    empty = browser.execute_script("return document.querySelectorAll('p.nodata').length")
    assert empty >= len(CHART_IDS)
    assert browser.execute_script("return document.querySelectorAll('svg.chart').length") == 0
    assert _severe(browser) == []


def test_a_blocked_network_load_would_be_caught(browser, tmp_path):
    """The console check has teeth: a page that tries to load anything logs SEVERE."""
    page = tmp_path / "leaky.html"
    report = write_outputs(make_results(), tmp_path)[0].read_text()
    page.write_text(report.replace("</main>", '<img src="http://127.0.0.1:9/x.png"></main>'))
    browser.get_log("browser")
    browser.get(page.as_uri())
    assert any("Content Security Policy" in e["message"] for e in _severe(browser))
