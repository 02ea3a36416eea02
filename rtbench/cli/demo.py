"""``rtbench demo`` (what ``make demo`` runs): the whole product in half a minute.

It starts the reference server itself (``rtbench serve --port 0 --insecure-dev`` with a
SQLite store in a temporary folder), reads the address from the server's listening line,
drives a short ``chat`` load at it (a few hundred users, typing and read receipts mixed
in), prints the figures and SLO verdicts, writes results.json and the HTML report under
``reports/runs/<timestamp>/``, stops the server by its PID and says where everything went.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import typer

from rtbench.cli import UserError

LISTEN_RE = re.compile(
    r"(?:wss?|https?)://(?P<host>\[[0-9a-fA-F:.]+\]|[0-9.]+|localhost)(?::(?P<port>\d+))"
)
START_TIMEOUT_S = 30.0
STOP_TIMEOUT_S = 10.0
DEFAULT_RUNS_DIR = Path("reports") / "runs"


HELP = """Show rtbench end to end in half a minute (what `make demo` runs).

Starts the reference server on a free port, drives a short chat load at it (300 users,
DMs, typing and read receipts mixed in), prints figures and SLO verdicts, writes
results.json and report.html under reports/runs/<timestamp>/, and stops the server.
"""


def register(app: typer.Typer) -> None:
    app.command("demo", help=HELP)(demo_command)


class ServerProcess:
    """``rtbench serve`` in a child process, found by its listening line, ended by its PID."""

    def __init__(self, args: list[str]) -> None:
        self.args = args
        self.proc: subprocess.Popen[str] | None = None
        self.url: str | None = None
        self.lines: list[str] = []

    def start(self) -> str:
        command = [
            sys.executable,
            "-c",
            "import sys; from rtbench.cli import run; sys.argv[0] = 'rtbench'; run()",
            "serve",
            *self.args,
        ]
        self.proc = subprocess.Popen(
            command,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            bufsize=1,
        )
        found = threading.Event()

        def pump() -> None:
            assert self.proc is not None and self.proc.stdout is not None
            for line in self.proc.stdout:
                if len(self.lines) < 200:
                    self.lines.append(line.rstrip())
                match = LISTEN_RE.search(line)
                if match and self.url is None:
                    host = match.group("host")
                    host = "127.0.0.1" if host in ("0.0.0.0", "localhost") else host
                    self.url = f"ws://{host}:{match.group('port')}"
                    found.set()
            found.set()

        threading.Thread(target=pump, daemon=True).start()
        deadline = time.monotonic() + START_TIMEOUT_S
        while not found.wait(0.1):
            if time.monotonic() > deadline:
                self.stop()
                raise UserError("the reference server did not report its address in time")
        if self.url is None:
            code = self.proc.poll()
            tail = " | ".join(self.lines[-3:]) or "no output"
            self.stop()
            raise UserError(f"the reference server exited (code {code}): {tail}")
        return self.url

    def stop(self) -> None:
        proc = self.proc
        if proc is None or proc.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.kill(proc.pid, signal.SIGTERM)
        try:
            proc.wait(STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.kill(proc.pid, signal.SIGKILL)
            proc.wait()

    @contextlib.contextmanager
    def running(self) -> Iterator[str]:
        try:
            yield self.start()
        finally:
            self.stop()


def demo_command(
    users: int = typer.Option(300, "--users", "-u", help="Chat users (rooms of 10)."),
    rate: float = typer.Option(0.5, "--rate", help="Messages per second per user."),
    duration: float = typer.Option(20.0, "--duration", "-d", help="Seconds of load."),
    out: Path | None = typer.Option(
        None, "--out", "-o", help="Output folder (default reports/runs/<timestamp>/)."
    ),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No live panel."),
) -> int:
    from loadtest.scenarios import Kind, Scenario, ScenarioError
    from rtbench.cli.run import execute, make_console

    console = make_console()
    out = out or DEFAULT_RUNS_DIR / time.strftime("%Y%m%d-%H%M%S")
    with tempfile.TemporaryDirectory(prefix="rtbench-demo-") as tmp:
        store = f"sqlite:///{Path(tmp) / 'demo.db'}"
        server = ServerProcess(["--port", "0", "--insecure-dev", "--store", store])
        with server.running() as url:
            console.print(f"reference server up at {url} (PID {server.proc.pid}, store {store})")
            try:
                scenario = Scenario(
                    scenario=Kind.CHAT,
                    name="demo",
                    target=url,
                    users=users,
                    room_size=10,
                    rate=rate,
                    dm_share=0.1,
                    typing_share=0.2,
                    receipt_share=0.2,
                    ramp=3.0,
                    duration=duration,
                ).resolved()
            except ScenarioError as exc:
                raise UserError(str(exc)) from None
            console.print(
                f"chat: {users} users in rooms of 10, {rate:g} msg/s each, {duration:g} s "
                "(typing and read receipts mixed in)"
            )
            code = execute(scenario, slo_path=None, out=out, quiet=quiet, console=console)
        console.print(f"reference server (PID {server.proc.pid}) stopped")
    console.print(f"results: {out / 'results.json'}")
    report = out / "report.html"
    if report.exists():
        console.print(f"report:  {report}")
    console.print("your own server next: rtbench run chat --target ws://HOST:PORT --out DIR")
    return code
