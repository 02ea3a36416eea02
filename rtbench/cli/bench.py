"""``rtbench bench``: the benchmark suite (micro and macro), figures to a run folder."""

from __future__ import annotations

import signal
from pathlib import Path
from typing import Any

import typer

from rtbench.cli import UserError

HELP = (
    "Run the benchmark suite under the machine lock and write its figures.\n\n"
    "Micro-benchmarks (pytest-benchmark); capacity, fan-out and latency vs load, each "
    "against a Node ws peer in the same run; and the per-issue scripts (generator "
    "efficiency, store durability, recovery, scale-out) when present. Each benchmark "
    "writes NAME.json to the out folder, then summary.md and SVG charts are rendered "
    "there; --publish also rewrites reports/BENCHMARKS.md (keeping its hand-written "
    "part).\n\n"
    "Exit codes: 0 every selected benchmark ran, 1 one failed to run, 2 usage. "
    "Details: reports/BENCHMARKS.md."
)


def _interrupt_on_signals() -> dict[int, Any]:
    """SIGTERM and SIGINT unwind the suite like Ctrl-C, so every server it started is stopped.

    A suite started in the background (``cmd &``) inherits SIGINT ignored, and a plain
    SIGTERM would end the driver at once and orphan its servers and load runs.
    """

    def interrupt(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    return {sig: signal.signal(sig, interrupt) for sig in (signal.SIGTERM, signal.SIGINT)}


def register(app: typer.Typer) -> None:
    app.command("bench", help=HELP)(bench)


def bench(
    only: list[str] | None = typer.Option(
        None, "--only", help="Run only this benchmark (repeatable); see --list."
    ),
    quick: bool = typer.Option(False, "--quick", help="Small, fast version (~3 min smoke check)."),
    out: Path | None = typer.Option(
        None, "--out", "-o", help="Output folder (default reports/runs/bench-<timestamp>)."
    ),
    runs: int | None = typer.Option(
        None, "--runs", min=1, max=9, help="Repetitions per macro benchmark (default 3; 1 quick)."
    ),
    publish: bool = typer.Option(
        False, "--publish", help="Also write reports/BENCHMARKS.md and its charts."
    ),
    render_only: Path | None = typer.Option(
        None, "--render", help="Re-render summary.md (and --publish) from a finished run folder."
    ),
    list_: bool = typer.Option(False, "--list", help="List the benchmarks and exit."),
) -> int:
    from benchmarks import render, suite

    if list_:
        for entry in suite.BENCHMARKS.values():
            extra = "" if entry.in_default else f"  (only with --only: {entry.why_not_default})"
            typer.echo(f"{entry.name:22} {entry.title}{extra}")
        return 0
    if render_only is not None:
        folder = render_only
    else:
        try:
            entries = suite.select(only)
        except suite.UnknownBenchmark as exc:
            raise UserError(str(exc)) from None
        folder = out or suite.default_out()
        if quick and publish:
            raise UserError("--publish needs a full run: quick figures are not for publishing")
        previous = _interrupt_on_signals()
        try:
            suite.run_suite(
                entries,
                folder,
                quick=quick,
                runs=runs or (1 if quick else 3),
                log=lambda line: typer.echo(line, err=True),
            )
        except suite.MixedRun as exc:
            raise UserError(str(exc)) from None
        except KeyboardInterrupt:
            raise UserError("interrupted: servers and load runs stopped", code=130) from None
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
    try:
        index, outcomes = suite.load_outcomes(folder)
    except FileNotFoundError as exc:
        raise UserError(str(exc)) from None
    charts = render.write_charts(outcomes, folder)
    summary = folder / "summary.md"
    summary.write_text(render.render(index, outcomes, charts))
    typer.echo(f"wrote {summary}")
    if publish:
        if index.get("quick"):
            raise UserError(f"{folder} is a quick run: quick figures are not for publishing")
        reports = suite.ROOT / "reports"
        published = render.write_charts(outcomes, reports / "benchmarks")
        text = render.render(
            index, outcomes, published, title="rtbench benchmarks", chart_dir="benchmarks/"
        )
        target = reports / "BENCHMARKS.md"
        target.write_text(render.publish(text, target, suite.ROOT))
        typer.echo(f"wrote {target}")
    failed = [name for name, o in outcomes.items() if o.get("status") == "failed"]
    if failed:
        typer.echo(f"rtbench bench: failed: {', '.join(failed)}", err=True)
        return 1
    return 0
