"""``rtbench run``: put a scenario's load on a target and judge it against the SLO file.

The command is a thin shell over ``loadtest``: it resolves the scenario (built-in name
or TOML file, then flags), runs the native engine with a live panel, prints figures and
verdicts, writes results.json (and the HTML/JUnit/Markdown reports when ``rtbench.report``
is installed) and exits with ``rtbench.exitcodes``: 0 pass, 1 fail, 2 usage, 3
unreachable, 4 inconclusive (the generator's own delay or saturation could explain a
failure).
"""

from __future__ import annotations

from collections.abc import Coroutine
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import typer

from rtbench.cli import UserError
from rtbench.cli.export_options import (
    METRICS_LISTEN,
    NATIVE_HISTOGRAMS,
    OTLP,
    REMOTE_WRITE,
    export_settings,
    exporting,
)
from rtbench.cli.scenario_options import overrides, with_scenario_options
from rtbench.exitcodes import ExitCode

if TYPE_CHECKING:
    from rich.console import Console

    from loadtest.export import Exporters, ExportSettings
    from loadtest.scenarios import Scenario
    from rtbench.results import Results
    from rtbench.slo import SLO

T = TypeVar("T")

HELP = """Load a realtime WebSocket server with SCENARIO and judge the four SLO targets.

SCENARIO is connect, chat, fanout, rtt, soak, or a scenario FILE.toml (examples in
loadtest/scenarios/). Flags override the file. Exit codes: 0 every measured target
passes, 1 one fails, 2 usage or config error, 3 the target cannot be reached,
4 a target failed but the load generator was saturated (inconclusive).
"""


def register(app: typer.Typer) -> None:
    app.command("run", help=HELP, no_args_is_help=True)(run_command)


@with_scenario_options("run")
def run_command(
    scenario: str = typer.Argument(..., help="connect | chat | fanout | rtt | soak | FILE.toml"),
    slo: Path | None = typer.Option(None, "--slo", help="SLO file (TOML); defaults otherwise."),
    out: Path | None = typer.Option(
        None, "--out", "-o", help="Write results.json (+ report) here."
    ),
    junit: Path | None = typer.Option(None, "--junit", help="Write JUnit XML verdicts here."),
    summary_md: Path | None = typer.Option(None, "--summary-md", help="Write a Markdown summary."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No live panel."),
    metrics_listen: str | None = METRICS_LISTEN,
    remote_write: str | None = REMOTE_WRITE,
    otlp: str | None = OTLP,
    native_histograms: bool = NATIVE_HISTOGRAMS,
    **knobs: Any,
) -> int:
    """Typer calls this with the scenario's options (``knobs``: ``Scenario`` fields) too."""
    from loadtest.faults.server import ServerError, prepare
    from loadtest.scenarios import ScenarioError, scenario_from

    export = export_settings(metrics_listen, remote_write, otlp, native_histograms)
    given = overrides(knobs, "run")
    try:
        base = scenario_from(scenario)
        server_cmd = given["server_cmd"] or base.server_cmd
        if server_cmd:
            given["server_cmd"], given["target"] = prepare(
                server_cmd, given["target"] or base.target
            )
        resolved = base.with_overrides(**given).resolved()
    except (ScenarioError, ServerError) as exc:
        raise UserError(str(exc)) from None
    if resolved.target is None:
        raise UserError("no target: give --target ws://HOST:PORT (or target = ... in the file)")
    return execute(
        resolved,
        slo_path=slo,
        out=out,
        junit=junit,
        summary_md=summary_md,
        quiet=quiet,
        export=export,
    )


def execute(
    scenario: Scenario,
    *,
    slo_path: Path | None,
    out: Path | None,
    junit: Path | None = None,
    summary_md: Path | None = None,
    quiet: bool = False,
    console: Console | None = None,
    export: ExportSettings | None = None,
) -> int:
    """Run a resolved scenario, print and write its results; return the exit code.

    ``export`` (live metrics: ``rtbench.cli.export_options``) labels every series with
    the run id that results.json then carries.
    """
    from loadtest.export import ExportSettings, RunLabels, new_run_id
    from rtbench.slo import SLOFileError, load_slo

    console = console or make_console()
    try:
        slo = load_slo(slo_path)
    except SLOFileError as exc:
        raise UserError(str(exc)) from None
    run_id = new_run_id()
    assert scenario.target is not None  # run_command refuses a scenario without one
    labels = RunLabels(run_id, scenario.scenario.value, scenario.target, scenario.protocol)
    with exporting(export or ExportSettings(), labels, slo, console) as exporters:
        return _execute(scenario, slo, run_id, exporters, console, out, junit, summary_md, quiet)


def _execute(
    scenario: Scenario,
    slo: SLO,
    run_id: str,
    exporters: Exporters,
    console: Console,
    out: Path | None,
    junit: Path | None,
    summary_md: Path | None,
    quiet: bool,
) -> int:
    from loadtest.adapters import AdapterError
    from loadtest.console import ProgressView, print_summary
    from loadtest.engine.coordinator import EngineError
    from loadtest.faults.runner import FaultRunError
    from loadtest.judge import build_results
    from loadtest.run.entry import run_scenario
    from loadtest.scenarios import ScenarioError

    view = ProgressView(console, enabled=not quiet)
    try:
        with view:
            outcome = _run_loop(
                run_scenario(
                    scenario,
                    on_progress=view,
                    ontime_ms=slo.delivery_latency.threshold_ms,
                    log_dir=out,
                    exporters=exporters,
                )
            )
    except (ScenarioError, AdapterError, FaultRunError) as exc:
        raise UserError(str(exc)) from None
    except EngineError as exc:
        raise UserError(f"load generator failed: {exc}", code=ExitCode.INCONCLUSIVE) from None
    except KeyboardInterrupt:
        raise UserError("interrupted", code=130) from None
    results = build_results(outcome, slo, run_id=run_id)
    if results.exit_code == ExitCode.UNREACHABLE:
        paths = write_all(results, out, junit, summary_md)
        _print_paths(console, paths)
        raise UserError(unreachable_line(results), code=ExitCode.UNREACHABLE)
    print_summary(console, results)
    if results.run.faults:
        from loadtest.faults.report import print_faults

        print_faults(console, results)
    for line in warning_lines(results):
        typer.echo(f"rtbench: warning: {line}", err=True)
    paths = write_all(results, out, junit, summary_md)
    _print_paths(console, paths)
    return results.exit_code


def make_console() -> Console:
    """A rich console; 120 columns when writing to a pipe or a CI log (not 80)."""
    import sys

    from rich.console import Console

    return Console() if sys.stdout.isatty() else Console(width=120)


def _run_loop(coro: Coroutine[Any, Any, T]) -> T:
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency on Linux
        import asyncio

        return asyncio.run(coro)
    return uvloop.run(coro)


def _causes(counts: dict[str, int]) -> str:
    from loadtest.run.failures import describe

    return ", ".join(
        f"{n:,} {describe(cause)}" for cause, n in sorted(counts.items(), key=lambda kv: -kv[1])
    )


def unreachable_line(results: Results) -> str:
    """One line: why no connection became usable, with counts by cause."""
    t = results.totals
    if t.connections_opened == 0:
        return (
            f"cannot reach {results.run.target}: all {t.connections_attempted:,} "
            f"connections failed: {_causes(t.failures_by_cause)}"
        )
    return (
        f"{results.run.target} accepted {t.connections_opened:,} connections but none became "
        f"ready: {_causes(t.failures_by_cause)}"
    )


def warning_lines(results: Results) -> list[str]:
    t = results.totals
    lines = []
    if t.connections_failed:
        lines.append(
            f"{t.connections_failed:,} of {t.connections_attempted:,} connections failed: "
            f"{_causes(t.failures_by_cause)}"
        )
    closed = sum(t.closes_by_code.values())
    if t.connections_ready and t.connections_held == 0 and closed:
        codes = ", ".join(f"{n:,} with code {code}" for code, n in t.closes_by_code.items())
        lines.append(f"the server closed every connection: {codes}")
    if t.drained is False and t.lost:
        lines.append(f"{t.lost:,} expected deliveries never arrived within the drain timeout")
    return lines


def write_all(
    results: Results, out: Path | None, junit: Path | None, summary_md: Path | None
) -> list[Path]:
    """results.json, then whatever ``rtbench.report`` renders (when it is installed)."""
    from rtbench.results import write_results

    paths: list[Path] = []
    if out is not None:
        paths.append(write_results(results, Path(out) / "results.json"))
    if out is None and junit is None and summary_md is None:
        return paths
    try:
        from rtbench.report import write_outputs
    except ImportError:
        if junit or summary_md:
            typer.echo(
                "rtbench: warning: rtbench.report is not installed; wrote results.json only",
                err=True,
            )
        return paths
    paths.extend(
        write_outputs(results, out, html=out is not None, junit=junit, summary_md=summary_md)
    )
    return paths


def _print_paths(console: Console, paths: list[Path]) -> None:
    for path in paths:
        console.print(f"wrote {path}", highlight=False)
