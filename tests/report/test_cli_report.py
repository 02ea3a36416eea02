"""`rtbench report`: saved results to HTML, JUnit and Markdown."""

from __future__ import annotations

import xml.etree.ElementTree as ET

import pytest

from rtbench.cli import main
from rtbench.exitcodes import ExitCode
from rtbench.results import write_results
from tests.report.factory import make_results


@pytest.fixture
def saved(tmp_path):
    return write_results(make_results(), tmp_path / "run" / "results.json")


def test_report_defaults_to_report_html_beside_the_results(saved, capsys):
    assert main(["report", str(saved)]) == ExitCode.OK
    report = saved.parent / "report.html"
    assert report.read_text().startswith("<!doctype html>")
    assert capsys.readouterr().out == f"wrote {report}\n"


@pytest.mark.parametrize(
    ("out", "expected"),
    [
        ("custom.html", "custom.html"),
        ("site", "site/report.html"),  # no suffix: a folder, created
        ("existing", "existing/report.html"),
    ],
)
def test_out_names_a_file_or_a_folder(saved, tmp_path, out, expected):
    (tmp_path / "existing").mkdir()
    assert main(["report", str(saved), "--out", str(tmp_path / out)]) == ExitCode.OK
    assert (tmp_path / expected).is_file()


def test_junit_and_summary_alongside(saved, tmp_path):
    junit, summary = tmp_path / "out" / "slo.xml", tmp_path / "summary.md"
    args = ["report", str(saved), "--junit", str(junit), "--summary-md", str(summary)]
    assert main([*args, "--no-html"]) == ExitCode.OK
    assert ET.parse(junit).getroot().find("testsuite").get("name") == "rtbench SLO"
    assert summary.read_text().startswith("### ")
    assert not (saved.parent / "report.html").exists()


def test_unreadable_results_exit_2(tmp_path, capsys):
    assert main(["report", str(tmp_path / "missing.json")]) == ExitCode.USAGE
    err = capsys.readouterr().err
    assert err.startswith("rtbench: cannot read results file") and err.count("\n") == 1


def test_unwritable_destination_exit_2(saved, tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("")
    assert main(["report", str(saved), "--out", str(blocker / "x.html")]) == ExitCode.USAGE
    assert "cannot write report" in capsys.readouterr().err
