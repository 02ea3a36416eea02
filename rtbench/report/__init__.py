"""What a person reads after a run and what a CI system acts on.

``write_outputs`` is the one entry point ``rtbench run`` and ``rtbench report``
share: the HTML report (``report.html``), JUnit XML and a Markdown summary, each
written atomically. ``rtbench compare`` (the regression gate) lives in
``rtbench.report.compare``.
"""

from __future__ import annotations

import os
from pathlib import Path

from rtbench.report.html import render_html
from rtbench.report.junit import render_junit
from rtbench.report.markdown import render_markdown
from rtbench.results import Results

REPORT_NAME = "report.html"

__all__ = ["REPORT_NAME", "render_html", "render_junit", "render_markdown", "write_outputs"]


def write_text(path: Path, text: str) -> Path:
    """Write through a temporary file and rename: a reader never sees half a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)
    return path


def write_outputs(
    results: Results,
    out_dir: Path | None,
    *,
    html: bool = True,
    junit: Path | None = None,
    summary_md: Path | None = None,
) -> list[Path]:
    """Write ``out_dir/report.html`` (when ``html`` and ``out_dir``), JUnit XML and a
    Markdown summary where asked; return the paths written."""
    written: list[Path] = []
    if html and out_dir is not None:
        written.append(write_text(Path(out_dir) / REPORT_NAME, render_html(results)))
    if junit is not None:
        written.append(write_text(Path(junit), render_junit(results)))
    if summary_md is not None:
        written.append(write_text(Path(summary_md), render_markdown(results)))
    return written
