"""End to end: a real short `rtbench run` against the reference server, then its reports."""

from __future__ import annotations

import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from rtbench.results import read_results

pytestmark = [pytest.mark.slow, pytest.mark.browser]

RTBENCH = str(Path(sys.executable).with_name("rtbench"))


def _rtbench(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [RTBENCH, *args], capture_output=True, text=True, check=False, timeout=timeout
    )


def test_a_real_run_renders_reports_and_compares(reference_server, browser, tmp_path):
    slo = tmp_path / "slo.toml"
    slo.write_text("[connections]\nmin = 20\n")
    out = tmp_path / "run"
    run = _rtbench(
        "run", "chat", "--target", reference_server.url, "--users", "20", "--rate", "2",
        "--duration", "3", "--ramp", "0.5", "--drain", "2", "--slo", str(slo),
        "--out", str(out), "--junit", str(out / "junit.xml"), "--quiet",
    )  # fmt: skip
    assert run.returncode in (0, 1, 4), run.stderr
    results = read_results(out / "results.json")
    assert results.totals.delivered > 0 and results.latency["delivery"].hdr

    # `rtbench run` wrote the report through rtbench.report; `rtbench report` re-renders it.
    assert (out / "report.html").is_file()
    again = _rtbench("report", str(out / "results.json"), "--out", str(tmp_path / "again.html"))
    assert again.returncode == 0, again.stderr
    browser.get_log("browser")
    browser.get((tmp_path / "again.html").as_uri())
    drawn = browser.execute_script(
        "return [...document.querySelectorAll('svg.chart path.series')]"
        ".filter(p => Number(p.dataset.points) > 0).length"
    )
    assert drawn >= 7
    rows = browser.execute_script("return document.querySelectorAll('tr.verdict').length")
    assert rows == len(results.verdicts) == 4
    assert [e for e in browser.get_log("browser") if e["level"] == "SEVERE"] == []

    suite = ET.parse(out / "junit.xml").getroot().find("testsuite")
    assert suite is not None and suite.get("tests") == "4"

    # A run compared with itself: every measured metric unchanged, the gate passes.
    same = _rtbench("compare", str(out / "results.json"), str(out / "results.json"))
    assert same.returncode == 0, same.stdout + same.stderr
    assert "delivery p99 (ms)" in same.stdout and "REGRESSION" not in same.stdout
