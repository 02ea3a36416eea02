"""How long the reference server takes from spawn to answering HTTP, by entry point.

A restarted server is down until it answers; every client's recovery after a restart
contains that time (reports/recovery.md). This times ``rtbench serve`` (the console
script's path, ``rtbench.entry``, which parses the server's flags without loading
typer) against the same server reached through the typer app (``rtbench.cli``) and
``python -m reference_server``, alternating, on an empty SQLite store each start.

    .venv/bin/python -m benchmarks.server_start            # 9 starts each
    .venv/bin/python -m benchmarks.server_start --starts 15

Prints one line per entry point (median and every start, ms) and JSON last. Takes the
machine lock (a start is CPU-bound: a load beside it would be in the figure).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time

from benchmarks.lock import exclusive_machine
from loadtest.faults.server import free_port

ENTRIES = {
    "rtbench serve (rtbench.entry)": "from rtbench.entry import run; run()",
    "through the typer app (rtbench.cli)": "from rtbench.cli import run; run()",
}
PROBE = b"GET /healthz HTTP/1.1\r\nHost: rtbench\r\nConnection: close\r\n\r\n"
TIMEOUT_S = 30.0


def _answers(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5) as sock:
            sock.sendall(PROBE)
            return bool(sock.recv(1))
    except OSError:
        return False


def start_once(argv: list[str]) -> float:
    """Seconds from spawn to the first HTTP answer; the server is then killed."""
    port = free_port()
    with tempfile.TemporaryDirectory(prefix="rtbench-start-") as tmp:
        cmd = [*argv, "--port", str(port), "--insecure-dev", "--store", f"sqlite:///{tmp}/s.db"]
        began = time.perf_counter()
        proc = subprocess.Popen(
            cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
        )
        try:
            while not _answers(port):
                if proc.poll() is not None or time.perf_counter() - began > TIMEOUT_S:
                    raise SystemExit(f"the server did not start: {' '.join(cmd)}")
                time.sleep(0.002)
            return time.perf_counter() - began
        finally:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--starts", type=int, default=9, help="starts per entry point")
    args = parser.parse_args(argv)
    commands = {name: [sys.executable, "-c", code, "serve"] for name, code in ENTRIES.items()}
    commands["python -m reference_server"] = [sys.executable, "-m", "reference_server"]
    times: dict[str, list[float]] = {name: [] for name in commands}
    with exclusive_machine("server start times"):
        for _ in range(args.starts):  # alternating, so drift hits every entry alike
            for name, command in commands.items():
                times[name].append(start_once(command) * 1000)
    summary = {}
    for name, values in times.items():
        median = statistics.median(values)
        summary[name] = {"median_ms": round(median, 1), "starts_ms": [round(v) for v in values]}
        print(f"{name}: median {median:.0f} ms (starts: {', '.join(f'{v:.0f}' for v in values)})")
    print(json.dumps(summary, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
