"""The processes of a macro benchmark: the server under test, its Node peer, the load run.

Every macro benchmark has the same shape: start a server on the server core, drive it
with ``rtbench run`` on the client core, and read the server's own CPU time and RSS
from the outside (psutil), so the reference server and the Node ``ws`` peer are
measured the same way, neither reporting on itself.

Core pinning: on a machine with two or more usable cores the server gets core 0 and
the load generator (and this process) core 1, so neither steals the other's cycles.
On one core nothing is pinned and the reports say so.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import re
import resource
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil

ROOT = Path(__file__).resolve().parent.parent
NODE_DIR = ROOT / "benchmarks" / "peers" / "node"
RTBENCH = [sys.executable, "-c", "from rtbench.entry import run; run()"]
START_TIMEOUT_S = 20.0
_LISTEN_RE = re.compile(r"ws://127\.0\.0\.1:(\d+)/ws")


class BenchError(RuntimeError):
    """A benchmark cannot run here (a missing tool, a server that does not start)."""


# -- cores ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Cores:
    """Which core the server and the client run on (None: not pinned)."""

    server: int | None
    client: int | None

    @classmethod
    def detect(cls) -> Cores:
        usable = sorted(os.sched_getaffinity(0))
        if len(usable) >= 2:
            return cls(server=usable[0], client=usable[1])
        return cls(server=None, client=None)

    def describe(self) -> str:
        if self.server is None:
            return "not pinned (fewer than two usable cores)"
        return f"server pinned to core {self.server}, load generator to core {self.client}"

    def pin_server(self, pid: int) -> None:
        if self.server is not None:
            os.sched_setaffinity(pid, {self.server})

    def client_prefix(self) -> list[str]:
        """Command prefix that runs a client process on the client core."""
        if self.client is None or shutil.which("taskset") is None:
            return []
        return ["taskset", "-c", str(self.client)]

    def pin_self(self) -> None:
        """Keep the benchmark driver itself off the server core."""
        if self.client is not None:
            os.sched_setaffinity(0, {self.client})

    @contextlib.contextmanager
    def pinned_self(self) -> Iterator[None]:
        """``pin_self`` while the block runs, and the driver's own CPUs back after it.

        A caller that runs the suite in its own process (the tests do) was otherwise left
        on the client core: every test after tests/bench ran on one CPU of two."""
        before = os.sched_getaffinity(0)
        self.pin_self()
        try:
            yield
        finally:
            os.sched_setaffinity(0, before)


# -- servers ----------------------------------------------------------------------------------


def _open_files_to_hard_limit() -> None:
    """In the child before exec: one socket per connection needs every descriptor allowed."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


class PinnedServer:
    """A server under test, started on the server core; stops on context exit."""

    kind = "server"
    shown = ""  # how a person starts it, for the report

    def __init__(self, command: list[str], cwd: Path, cores: Cores, env: dict[str, str]) -> None:
        self.command = command
        self.proc = subprocess.Popen(
            command,
            cwd=cwd,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env={**os.environ, **env},
            preexec_fn=_open_files_to_hard_limit,
        )
        self.url = self._wait_listening()
        cores.pin_server(self.proc.pid)
        self.ps = psutil.Process(self.proc.pid)
        self._log: list[str] = []
        self._reader = threading.Thread(target=self._drain_output, daemon=True)
        self._reader.start()

    def _wait_listening(self) -> str:
        assert self.proc.stdout is not None
        deadline = time.monotonic() + START_TIMEOUT_S
        seen: list[str] = []
        while time.monotonic() < deadline:
            line = self.proc.stdout.readline()
            if not line:
                break
            seen.append(line.rstrip())
            match = _LISTEN_RE.search(line)
            if match and "listening on" in line:
                return f"ws://127.0.0.1:{match.group(1)}/ws"
        self.stop()
        tail = " | ".join(seen[-3:]) or "no output"
        raise BenchError(f"{self.kind} did not start ({' '.join(self.command[:4])}...): {tail}")

    def _drain_output(self) -> None:
        # The pipe must be read, or a chatty server blocks on a full pipe mid-benchmark.
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            if len(self._log) < 200:
                self._log.append(line.rstrip())

    def cpu_seconds(self) -> float:
        """User + system CPU of the server process (all its threads)."""
        times = self.ps.cpu_times()
        return times.user + times.system

    def rss(self) -> int:
        return self.ps.memory_info().rss

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)

    def __enter__(self) -> PinnedServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


class ReferenceServer(PinnedServer):
    """``rtbench serve`` with its defaults (SQLite store, heartbeats, every feature on)."""

    kind = "reference server"
    shown = "rtbench serve --port $PORT --insecure-dev --store sqlite:///bench.db"

    def __init__(self, cores: Cores, workdir: Path, store: str = "sqlite") -> None:
        url = f"sqlite:///{workdir / 'bench.db'}" if store == "sqlite" else "memory"
        command = [*RTBENCH, "serve", "--port", "0", "--insecure-dev", "--store", url]
        super().__init__(command, workdir, cores, {})


class NodePeer(PinnedServer):
    """The Node ``ws`` broadcast peer (benchmarks/peers/node/broadcast.js)."""

    kind = "Node ws peer"
    shown = "env PORT=$PORT node benchmarks/peers/node/broadcast.js"

    def __init__(self, cores: Cores, script: str = "broadcast.js") -> None:
        ensure_node_ws()
        super().__init__(["node", script], NODE_DIR, cores, {})


SERVER_KINDS = ("reference", "node")
"""The servers every macro benchmark runs, in this order, with the same load."""


@contextlib.contextmanager
def started(kind: str, cores: Cores) -> Iterator[PinnedServer]:
    """Start the reference server (in a scratch folder for its store) or the Node peer."""
    with workdir(f"rtbench-bench-{kind}-") as tmp:
        server = ReferenceServer(cores, tmp) if kind == "reference" else NodePeer(cores)
        with server:
            yield server


Measure = Callable[[PinnedServer, str, int], dict[str, Any]]


def on_each_server(runs: int, cores: Cores, measure: Measure) -> dict[str, list[dict[str, Any]]]:
    """``measure(server, kind, run)`` on a fresh server of each kind, ``runs`` times over.

    Repetitions alternate between the servers (reference, Node, reference, ...), so slow
    drift in the machine's background load falls on both alike.
    """
    by_kind: dict[str, list[dict[str, Any]]] = {kind: [] for kind in SERVER_KINDS}
    for n in range(1, runs + 1):
        for kind in SERVER_KINDS:
            with started(kind, cores) as server:
                figures = measure(server, kind, n)
            figures.update(server=kind, run=n)
            by_kind[kind].append(figures)
    return by_kind


def ensure_node_ws() -> None:
    """Install the peers' npm packages (node_modules is never committed) when missing."""
    if (NODE_DIR / "node_modules" / "ws").is_dir():
        return
    if shutil.which("node") is None or shutil.which("npm") is None:
        raise BenchError(
            "the Node ws peer needs Node.js and npm (Debian: apt-get install nodejs npm)"
        )
    lock = (NODE_DIR / "package-lock.json").exists()
    command = ["npm", "ci" if lock else "install", "--no-audit", "--no-fund"]
    done = subprocess.run(command, cwd=NODE_DIR, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        last = (done.stderr or done.stdout).strip().splitlines()[-1:] or ["no output"]
        raise BenchError(f"`{' '.join(command)}` in {NODE_DIR} failed: {last[0]}")


def node_versions() -> dict[str, str]:
    out: dict[str, str] = {}
    with contextlib.suppress(OSError):
        node = subprocess.run(["node", "--version"], capture_output=True, text=True, check=False)
        out["node"] = node.stdout.strip()
    manifest = NODE_DIR / "node_modules" / "ws" / "package.json"
    if manifest.exists():
        out["ws"] = json.loads(manifest.read_text())["version"]
    return out


# -- server sampling ----------------------------------------------------------------------------


@dataclass
class Sample:
    at: float  # time.time()
    cpu_s: float
    rss: int


@dataclass
class Sampler:
    """Samples a server's CPU time and RSS in a thread, so windows can be cut afterwards."""

    server: PinnedServer
    period_s: float = 0.2
    samples: list[Sample] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def _loop(self) -> None:
        while not self._stop.is_set():
            with contextlib.suppress(psutil.Error):
                self.samples.append(
                    Sample(time.time(), self.server.cpu_seconds(), self.server.rss())
                )
            self._stop.wait(self.period_s)

    def __enter__(self) -> Sampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(5)

    def cpu_between(self, start: float, end: float) -> float | None:
        """Server CPU-seconds spent between two wall-clock times.

        The samples inside the window span a little less than it (up to one period at
        each end); their rate is scaled to the whole window.
        """
        inside = [s for s in self.samples if start <= s.at <= end]
        if len(inside) < 2 or inside[-1].at <= inside[0].at:
            return None
        rate = (inside[-1].cpu_s - inside[0].cpu_s) / (inside[-1].at - inside[0].at)
        return rate * (end - start)

    def peak_rss_between(self, start: float, end: float) -> int | None:
        inside = [s.rss for s in self.samples if start <= s.at <= end]
        return max(inside) if inside else None


# -- load runs --------------------------------------------------------------------------------


@dataclass
class LoadRun:
    """One ``rtbench run``: its command, exit code and results.json (as a dict)."""

    command: list[str]
    exit_code: int
    results: dict[str, Any]
    stderr: str

    @property
    def started(self) -> float:
        return dt.datetime.fromisoformat(self.results["run"]["started_at"]).timestamp()

    def sending_window(self) -> tuple[float, float] | None:
        """Wall-clock (start, end) of the seconds in which the run sent, from its series."""
        seconds = [s["t"] for s in self.results.get("series", []) if s.get("sent", 0) > 0]
        if not seconds:
            return None
        return self.started + min(seconds) - 1.0, self.started + max(seconds)

    def holding_window(self) -> tuple[float, float] | None:
        """connect runs: from the second every connection was up to the end of the run."""
        series = self.results.get("series", [])
        peak = self.results["totals"].get("peak_connections", 0)
        full = [s["t"] for s in series if peak and s.get("connections", 0) >= peak]
        if not full:
            return None
        return self.started + min(full), self.started + max(full)

    @property
    def generator_saturated(self) -> bool:
        """The run's own verdict, or its worker processes together filled the generator
        core: every benchmark runs them on one core (``taskset``), where 4 workers each at
        25 % of a core are a full core, which a per-worker rule cannot see."""
        return bool(self.results.get("generator", {}).get("saturated")) or (
            self.generator_core_percent_hot() is not None
        )

    def generator_core_percent_hot(self) -> float | None:
        """The workers' summed CPU (% of one core) in the sending seconds when it was at the
        run's saturation limit in a fifth of them (at least 2; the run's own rule, in
        ``loadtest.judge``, applied to the sum); None when it was not."""
        generator = self.results.get("generator", {})
        limit = generator.get("cpu_saturation_percent") or 95.0
        rows = [s.get("generator_cpu", 0.0) for s in self.results.get("series", [])
                if s.get("sent", 0) > 0]  # fmt: skip
        hot = [v for v in rows if v >= limit]
        if rows and len(hot) >= max(2, 0.2 * len(rows)):
            return round(sum(rows) / len(rows), 1)
        return None

    def shown_command(self) -> str:
        """The command as a person would type it (no taskset or interpreter detail)."""
        args = self.command[self.command.index("run") :]
        args = [a for a in args if a not in ("--quiet",)]
        if "--out" in args:
            at = args.index("--out")
            del args[at : at + 2]
        # The server's port changes every run: show where it goes, not which it was.
        args = [_LISTEN_RE.sub("ws://127.0.0.1:$PORT/ws", a) for a in args]
        return "rtbench " + " ".join(args)


def rtbench_run(
    cores: Cores, url: str, scenario: str, *args: str, timeout_s: float, keep: Path | None = None
) -> LoadRun:
    """Run ``rtbench run SCENARIO`` on the client core against ``url``; parse its results.

    ``keep``: also save the run's results.json there (``rtbench report`` renders it).
    """
    with tempfile.TemporaryDirectory(prefix="rtbench-bench-run-") as out:
        command = [*cores.client_prefix(), *RTBENCH, "run", scenario, "--target", url]
        command += [*args, "--quiet", "--out", out]
        try:
            done = subprocess.run(
                command, capture_output=True, text=True, check=False, timeout=timeout_s
            )
        except subprocess.TimeoutExpired as exc:
            raise BenchError(f"`{' '.join(command)}` ran past {timeout_s:.0f} s") from exc
        path = Path(out) / "results.json"
        if not path.exists():
            last = done.stderr.strip().splitlines()[-1:] or ["no output"]
            raise BenchError(
                f"rtbench run {scenario} wrote no results (exit {done.returncode}): {last[0]}"
            )
        if keep is not None:
            keep.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(path, keep)
        return LoadRun(command, done.returncode, json.loads(path.read_text()), done.stderr)


def commands_shown(cores: Cores, loads: set[str]) -> list[str]:
    """The servers' and the load's commands as a person would type them, pinned alike."""
    server = f"taskset -c {cores.server} " if cores.server is not None else ""
    client = f"taskset -c {cores.client} " if cores.client is not None else ""
    return [
        "# the server under test (one, then the other):",
        server + ReferenceServer.shown,
        server + NodePeer.shown,
        "# the load:",
        *(client + load for load in sorted(loads)),
    ]


@contextlib.contextmanager
def workdir(prefix: str) -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix=prefix) as path:
        yield Path(path)
