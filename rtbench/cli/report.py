"""``rtbench report``: render a saved results.json as HTML, JUnit XML and Markdown."""

from __future__ import annotations

from pathlib import Path

import typer


def _html_path(results_file: Path, out: Path | None) -> Path:
    """``--out`` may name the HTML file or a folder for it; by default it sits by the results."""
    from rtbench.report import REPORT_NAME

    if out is None:
        return results_file.parent / REPORT_NAME
    if out.is_dir() or (not out.exists() and out.suffix.lower() not in {".html", ".htm"}):
        return out / REPORT_NAME
    return out


def register(app: typer.Typer) -> None:
    @app.command("report")
    def report(
        results_file: Path = typer.Argument(
            ..., metavar="RESULTS.json", help="A results.json written by `rtbench run`."
        ),
        out: Path | None = typer.Option(
            None,
            "--out",
            "-o",
            metavar="FILE|DIR",
            help="Where to write the HTML report: a .html file, or a folder for report.html "
            "(default: report.html beside RESULTS.json).",
        ),
        junit: Path | None = typer.Option(
            None, "--junit", metavar="FILE", help="Also write the SLO verdicts as JUnit XML."
        ),
        summary_md: Path | None = typer.Option(
            None,
            "--summary-md",
            metavar="FILE",
            help="Also write a Markdown summary (e.g. to $GITHUB_STEP_SUMMARY).",
        ),
        html: bool = typer.Option(True, "--html/--no-html", help="Write the HTML report."),
    ) -> int:
        """Render saved results: a self-contained HTML report, JUnit XML, a Markdown summary.

        Exits 0 once the files are written, 2 when RESULTS.json is unreadable.
        Gate on verdicts with the exit code of `rtbench run`, on a baseline with `rtbench compare`.
        """
        from rtbench.cli import UserError
        from rtbench.report import render_html, write_outputs, write_text
        from rtbench.results import ResultsFileError, read_results

        try:
            results = read_results(results_file)
        except ResultsFileError as exc:
            raise UserError(str(exc)) from None
        try:
            written = write_outputs(results, None, junit=junit, summary_md=summary_md)
            if html:
                written.insert(0, write_text(_html_path(results_file, out), render_html(results)))
        except OSError as exc:
            raise UserError(f"cannot write report: {exc.strerror or exc}: {exc.filename}") from None
        for path in written:
            typer.echo(f"wrote {path}")
        return 0
