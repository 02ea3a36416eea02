"""``rtbench demo`` (what ``make demo`` runs): the whole product in one ``rtbench check``.

It checks the reference server against ``slo.toml`` (the defaults when there is none):
the check starts the server itself (``python -m reference_server --port {port}
--insecure-dev`` with a SQLite store in a temporary folder), holds the SLO's 10,000
connections, chats on them, restarts the server a third of the way in, probes its
uptime from start to end, prints the four verdicts, writes results.json and the report
under ``reports/runs/<timestamp>/`` and stops the server by its PID.

A demo shows; it does not gate. It exits 0 once the check has run and judged all four
targets, whatever the verdicts (it prints the exit code ``rtbench check`` gives for the
same run, which is what a CI job acts on); a usage error, an unreachable server or a
failed generator keep their own codes.
"""

from __future__ import annotations

import shlex
import sys
import tempfile
import time
from pathlib import Path

import typer

from rtbench.exitcodes import ExitCode

DEFAULT_RUNS_DIR = Path("reports") / "runs"
SLO_FILE = Path("slo.toml")

HELP = """Show rtbench end to end: `rtbench check` of the reference server (what `make demo` runs).

Starts the reference server on a free port (SQLite store in a temporary folder), holds
slo.toml's connection count (10,000), chats on the connections, restarts the server a
third of the way in, probes uptime throughout, prints the four verdicts and writes
results.json and report.html under reports/runs/<timestamp>/. Exits 0 once all four
targets were judged (it prints the code `rtbench check` would exit with).
"""


def register(app: typer.Typer) -> None:
    app.command("demo", help=HELP)(demo_command)


def server_command(store: str) -> str:
    """The reference server on ``{port}``, started (and restarted) by the check."""
    python = shlex.quote(sys.executable)
    return f"{python} -m reference_server --port {{port}} --insecure-dev --store {store}"


def demo_command(
    connections: int | None = typer.Option(
        None, "--connections", "-c", help="Connections to hold (default: slo.toml's, 10,000)."
    ),
    duration: float | None = typer.Option(
        None, "--duration", "-d", help="Seconds of chat after the ramp (default 90)."
    ),
    out: Path | None = typer.Option(
        None, "--out", "-o", help="Output folder (default reports/runs/<timestamp>/)."
    ),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No live panel."),
) -> int:
    from rtbench.cli.check import SHARED, check_command
    from rtbench.cli.run import make_console

    console = make_console()
    out = out or DEFAULT_RUNS_DIR / time.strftime("%Y%m%d-%H%M%S")
    slo = SLO_FILE if SLO_FILE.is_file() else None
    with tempfile.TemporaryDirectory(prefix="rtbench-demo-") as tmp:
        store = f"sqlite:///{Path(tmp) / 'demo.db'}"
        console.print(
            f"rtbench check of the reference server (store {store}) against "
            f"{slo or 'the default targets'}",
            highlight=False,
        )
        flags = dict.fromkeys(SHARED)  # every other option at the check's default
        flags.update(
            server_cmd=server_command(store), duration=duration, slo=slo, out=out, quiet=quiet
        )
        code = check_command(
            scenario=None,
            connections=connections,
            fault=None,
            kill=False,
            probe_interval=1.0,
            **flags,
        )
    console.print(f"results: {out / 'results.json'}", highlight=False)
    report = out / "report.html"
    if report.exists():
        console.print(f"report:  {report}", highlight=False)
    console.print(
        f"`rtbench check` exits {code} for this run (0 pass, 1 a target fails, 4 inconclusive); "
        "your own server next: rtbench check --target ws://HOST:PORT --slo slo.toml",
        highlight=False,
    )
    return (
        ExitCode.OK if code in (ExitCode.OK, ExitCode.SLO_FAILED, ExitCode.INCONCLUSIVE) else code
    )
