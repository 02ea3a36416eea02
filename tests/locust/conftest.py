"""Fixtures for the Locust users' tests: real Locust processes against the real server.

Locust monkey-patches the standard library with gevent when imported, so these tests
never import it: every Locust master, worker or single process is a subprocess (ended
by its PID), talking to the reference server on a loopback port of its own.
"""

from __future__ import annotations

import csv
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.support.fixtures import reference_server, start_server  # noqa: F401  (real servers, port 0)

ROOT = Path(__file__).resolve().parents[2]
LOCUSTFILE = ROOT / "loadtest" / "locustfile.py"
RUN_TIMEOUT_S = 120

QUIET_GENERATOR = """
max_cpu_percent = 100.0      # this shared machine is noisy: a test judges the server,
max_loop_lag_ms = 10000.0    # never the generator's own saturation
"""


def locust_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "locust", "-f", str(LOCUSTFILE), *args]


def run_locust(
    *args: str, cwd: Path, timeout: float = RUN_TIMEOUT_S
) -> subprocess.CompletedProcess:
    """A bounded Locust run; output captured; killed by its PID if it overruns."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(
        locust_command(*args),
        cwd=cwd,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
    )
    try:
        out, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, _ = proc.communicate()
        pytest.fail(f"locust ran past {timeout} s:\n{out[-4000:]}")
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, "")


def start_locust(*args: str, cwd: Path, log: Path) -> subprocess.Popen:
    """A Locust process left running (web UI, master, worker); the caller ends it."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    handle = log.open("w")
    return subprocess.Popen(
        locust_command(*args), cwd=cwd, stdout=handle, stderr=subprocess.STDOUT, env=env
    )


def stop(proc: subprocess.Popen, timeout: float = 20) -> int:
    """End a Locust process we started, by its PID: SIGTERM (Locust shuts down), then kill."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
    return proc.returncode


def scenario_file(path: Path, body: str) -> Path:
    path.write_text(body + QUIET_GENERATOR)
    return path


def slo_file(path: Path, delivery_ms: float, connections: int = 1) -> Path:
    path.write_text(
        f"[delivery_latency]\npercentile = 99\nthreshold_ms = {delivery_ms}\n"
        f"[connections]\nmin = {connections}\n[recovery]\nthreshold_ms = 60000\n"
    )
    return path


def stats_rows(prefix: Path) -> dict[str, dict[str, str]]:
    """Locust's --csv statistics by entry name (Aggregated included)."""
    with Path(f"{prefix}_stats.csv").open() as handle:
        return {row["Name"]: row for row in csv.DictReader(handle)}


def failure_rows(prefix: Path) -> list[dict[str, str]]:
    with Path(f"{prefix}_failures.csv").open() as handle:
        return list(csv.DictReader(handle))


def listening_port(pid: int, timeout: float = 30) -> int:
    """The TCP port a process we started listens on (it was given port 0)."""
    import psutil

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        ports = [
            c.laddr.port
            for c in psutil.Process(pid).net_connections(kind="tcp")
            if c.status == psutil.CONN_LISTEN
        ]
        if ports:
            return ports[0]
        time.sleep(0.1)
    raise AssertionError(f"process {pid} did not listen within {timeout} s")


def free_port() -> int:
    """A port for a Locust master to bind (Locust's master port cannot be 0: workers need it)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]
