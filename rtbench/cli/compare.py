"""``rtbench compare``: the regression gate between a baseline run and a new one."""

from __future__ import annotations

from pathlib import Path

import typer


def register(app: typer.Typer) -> None:
    @app.command("compare")
    def compare(
        base: Path = typer.Argument(..., metavar="BASE.json", help="The baseline results.json."),
        new: Path = typer.Argument(..., metavar="NEW.json", help="The results.json to judge."),
        max_regression: str = typer.Option(
            "10%",
            "--max-regression",
            metavar="PERCENT",
            help="How much worse a metric may get before it is a regression.",
        ),
        metric: list[str] = typer.Option(
            [],
            "--metric",
            "-m",
            metavar="NAME[=PERCENT]",
            help="A metric to gate on, optionally with its own allowance; repeat or "
            "comma-separate. Default: delivery_p50, delivery_p99, throughput, connections, "
            "recovery_p99. Also: delivery_p90, delivery_p999, delivery_max, recovery_p50, "
            "ack_p99, handshake_p99, loss.",
        ),
        min_delta_ms: float = typer.Option(
            0.0,
            "--min-delta-ms",
            min=0.0,
            metavar="MS",
            help="Latency changes of at most this many ms are noise, never regressions.",
        ),
        summary_md: Path | None = typer.Option(
            None,
            "--summary-md",
            metavar="FILE",
            help="Also write the diff as Markdown (e.g. to $GITHUB_STEP_SUMMARY).",
        ),
    ) -> int:
        """Compare two runs metric by metric; exit 1 on a regression beyond the allowance.

        Higher latency, lower throughput and fewer connections held are regressions.
        A metric missing from either run is "not comparable", never a pass.
        Exit codes: 0 no regression, 1 regression, 2 unreadable input or nothing comparable.
        """
        from rtbench.cli import UserError
        from rtbench.report import write_text
        from rtbench.report.compare import compare as run_compare
        from rtbench.report.compare import (
            parse_metrics,
            parse_percent,
            render_markdown,
            render_text,
        )
        from rtbench.results import ResultsFileError, read_results

        try:
            allowance = parse_percent(max_regression)
            metrics = parse_metrics(metric, allowance)
        except ValueError as exc:
            raise UserError(str(exc)) from None
        try:
            base_results, new_results = read_results(base), read_results(new)
        except ResultsFileError as exc:
            raise UserError(str(exc)) from None
        comparison = run_compare(
            base_results,
            new_results,
            metrics,
            min_delta_ms=min_delta_ms,
            base_name=str(base),
            new_name=str(new),
        )
        for warning in comparison.warnings:
            typer.echo(f"warning: {warning}", err=True)
        typer.echo(render_text(comparison), nl=False)
        if summary_md is not None:
            try:
                write_text(summary_md, render_markdown(comparison))
            except OSError as exc:
                raise UserError(f"cannot write {summary_md}: {exc.strerror or exc}") from None
        return comparison.exit_code
