"""What does exporting a run's live metrics cost the generator? Figures for
reports/run-metrics.md.

Same-run A/B at 10,000 connections x 1 msg/s (``rtbench run rtt --protocol echo``)
against the bare Node ``ws`` echo server, server pinned to core 0 and generator to core
1, as benchmarks/generator_efficiency.py measures generator CPU. Arm B adds all three
exporters: ``--metrics-listen`` (scraped every second by this driver), ``--remote-write``
and ``--otlp`` (to a local receiver that reads and acknowledges every request). The
driver and its receivers run on the server core, off the generator's. Runs alternate
A, B, B, A, A, B ... under the machine lock; the report gives the medians.

    python -m benchmarks.run_metrics_cost            # 3 pairs, writes the report
    python -m benchmarks.run_metrics_cost --pairs 1 --users 2000 --no-report
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from benchmarks.kit import measured_cpu_seconds
from benchmarks.lock import exclusive_machine
from benchmarks.procs import Cores, NodePeer

ROOT = Path(__file__).resolve().parent.parent
REPORT = ROOT / "reports" / "run-metrics.md"
CORES = Cores.detect()
KEYS = (
    "cpu_percent",
    "tree_cpu_s",
    "p90_ms",
    "p99_ms",
    "bound_p99_ms",
    "send_lag_p99_ms",
    "loop_lag_p99_ms",
)
RTBENCH = [sys.executable, "-c", "from rtbench.cli import run; run()"]


class _Sink(BaseHTTPRequestHandler):
    received = 0

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        type(self).received += len(body)
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: object) -> None:
        """Quiet."""


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _scrape_every_second(url: str, stop: threading.Event, scraped: list[int]) -> None:
    while not stop.wait(1.0):  # a Prometheus with a 1 s scrape interval
        try:
            with urllib.request.urlopen(url, timeout=2) as answer:
                scraped.append(len(answer.read()))
        except OSError:
            pass  # not up yet, or already closed


def one_run(url: str, users: int, duration: float, export: bool, sink_port: int) -> dict:
    with tempfile.TemporaryDirectory(prefix="rtbench-rm-") as out:
        command = [*CORES.client_prefix(), *RTBENCH, "run", "rtt", "--users", str(users)]
        command += ["--rate", "1", "--ramp", str(users / 1500), "--duration", str(duration)]
        command += ["--target", url, "--protocol", "echo", "--out", out, "--quiet"]
        stop, scraped = threading.Event(), []
        scraper = None
        if export:
            port = _free_port()
            command += ["--metrics-listen", f"127.0.0.1:{port}"]
            command += ["--remote-write", f"http://127.0.0.1:{sink_port}/api/v1/write"]
            command += ["--otlp", f"http://127.0.0.1:{sink_port}"]
            scraper = threading.Thread(
                target=_scrape_every_second,
                args=(f"http://127.0.0.1:{port}/metrics", stop, scraped),
                daemon=True,
            )
            scraper.start()
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        done = subprocess.run(command, capture_output=True, text=True, check=False)
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        stop.set()
        if scraper is not None:
            scraper.join(3)
        path = Path(out) / "results.json"
        if not path.exists():
            raise RuntimeError(f"rtbench run failed: {done.stderr.strip()}")
        results = json.loads(path.read_text())
    _, cpu_seconds = measured_cpu_seconds(results)
    rows = sum(1 for s in results["series"] if s.get("sent", 0) > 0)
    return {
        "cpu_percent": round(100.0 * cpu_seconds / max(1, rows), 2),
        # the workers' figure above leaves out the coordinator, where the export threads
        # run: the whole process tree's CPU over the whole run (start, ramp, drain included)
        "tree_cpu_s": round(after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime, 2),
        "p90_ms": results["latency"]["delivery"]["p90"],
        "p99_ms": results["latency"]["delivery"]["p99"],
        # the generator's own delay that may be inside that p99 (issue 16): if p99 rises
        # with export on and this does not, the added delay is not the generator's
        "bound_p99_ms": results["latency"]["delivery"].get("bound", {}).get("p99"),
        "send_lag_p99_ms": results["latency"].get("send_lag", {}).get("p99"),
        "loop_lag_p99_ms": results["generator"].get("loop_lag_ms_p99"),
        "scrapes": len(scraped),
        "warnings": [line for line in done.stderr.splitlines() if "warning" in line],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pairs", type=int, default=3)
    parser.add_argument("--users", type=int, default=10_000)
    parser.add_argument("--duration", type=float, default=15.0)
    parser.add_argument("--no-report", action="store_true")
    args = parser.parse_args()
    if CORES.server is not None:
        os.sched_setaffinity(0, {CORES.server})  # the driver and its receivers: off core 1
    sink = ThreadingHTTPServer(("127.0.0.1", 0), _Sink)
    threading.Thread(target=sink.serve_forever, daemon=True).start()
    order = [
        arm for k in range(args.pairs) for arm in ((False, True) if k % 2 == 0 else (True, False))
    ]
    runs: dict[bool, list[dict]] = {False: [], True: []}
    with exclusive_machine("run-metrics-cost"):
        server = NodePeer(CORES, "echo.js")
        try:
            for k, export in enumerate(order):
                figures = one_run(
                    server.url, args.users, args.duration, export, sink.server_address[1]
                )
                runs[export].append(figures)
                print(f"[{k + 1}/{len(order)}] export={export}: {figures}", flush=True)
        finally:
            server.stop()
            sink.shutdown()
    medians = {
        export: {key: statistics.median(r[key] for r in rs if r[key] is not None) for key in KEYS}
        for export, rs in runs.items()
    }
    summary = {
        "runs": {str(k): v for k, v in runs.items()},
        "medians": {str(k): v for k, v in medians.items()},
    }
    print(json.dumps(summary, indent=2))
    if not args.no_report:
        (REPORT.parent / "run-metrics.json").write_text(json.dumps(summary, indent=2) + "\n")
        print(f"wrote {REPORT.parent / 'run-metrics.json'}")


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    main()
