"""Messages per generator CPU-second of the graphql-ws, graphql-legacy and nats adapters.

Each adapter loads its real server: the graphql-ws library and subscriptions-transport-ws
on Node (``tests/thirdparty/graphql_server``) and nats-server's WebSocket listener. The
server is pinned to core 0, the generator (``rtbench run``) to core 1, the whole run
holds the machine lock, and each figure is the median of ``--runs`` runs.

The load is the same chat for each: 100 users in rooms of 10, 4 msgs/s each (400 sends/s,
3,600 expected deliveries/s, plus the sender's own copy that each of these servers sends
back). A message is a send or a delivery the generator handled; the figure divides the
messages of the seconds in which sends went out by the generator's CPU-seconds in them
(``series`` of results.json, as benchmarks/generator_efficiency.py does).

    python -m benchmarks.adapters_graphql_nats            # 3 runs each, writes the report
    python -m benchmarks.adapters_graphql_nats --runs 1 --no-report
"""

from __future__ import annotations

import argparse
import contextlib
import json
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from benchmarks.lock import exclusive_machine
from benchmarks.procs import Cores

ROOT = Path(__file__).resolve().parent.parent
REPORT = ROOT / "reports" / "adapters-graphql-nats.md"
GRAPHQL_DIR = ROOT / "tests" / "thirdparty" / "graphql_server"
CORES = Cores.detect()
RTBENCH = [sys.executable, "-c", "from rtbench.entry import run; run()"]
LOAD = ["--users", "100", "--room-size", "10", "--rate", "4", "--ramp", "1", "--duration", "10"]
NODE_LINE = re.compile(rb"listening on 127\.0\.0\.1:(\d+)")
NATS_LINE = re.compile(rb"Listening for websocket clients on ws://127\.0\.0\.1:(\d+)")
NATS_CONF = 'listen: "127.0.0.1:-1"\nwebsocket {\n  listen: "127.0.0.1:-1"\n  no_tls: true\n}\n'


@dataclass
class Row:
    protocol: str
    server: str
    msgs_per_cpu_s: float
    cpu_percent: float
    sent_per_s: float
    delivered_per_s: float
    lost: int
    p99_ms: float


@contextlib.contextmanager
def server(argv: list[str], line: re.Pattern[bytes]) -> Iterator[str]:
    """A server pinned to the server core; yields its ws:// URL; ends it by its PID.

    Its output goes to a file (read for the listening line), so it can never block on
    a full pipe however much it logs.
    """
    pin = ["taskset", "-c", str(CORES.server)] if CORES.server is not None else []
    with tempfile.TemporaryFile() as log:
        proc = subprocess.Popen(
            [*pin, *argv], stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
        try:
            found, deadline = None, time.monotonic() + 20
            while found is None and time.monotonic() < deadline and proc.poll() is None:
                time.sleep(0.05)  # the log is a file: poll it, within the deadline
                log.seek(0)
                found = line.search(log.read())
            if found is None:
                log.seek(0)
                raise RuntimeError(f"{argv} did not start: {log.read()[-500:]!r}")
            yield f"ws://127.0.0.1:{int(found.group(1))}"
        finally:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(5)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait(5)


def one_run(protocol: str, url: str) -> dict:
    """``rtbench run chat`` on the generator core; its results.json."""
    pin = CORES.client_prefix()
    with tempfile.TemporaryDirectory() as out:
        command = [*pin, *RTBENCH, "run", "chat", "--target", url, "--protocol", protocol]
        command += [*LOAD, "--quiet", "--out", out]
        done = subprocess.run(command, capture_output=True, text=True, check=False)
        path = Path(out) / "results.json"
        if not path.exists():
            raise RuntimeError(f"{' '.join(command)} failed: {done.stderr.strip()}")
        return json.loads(path.read_text())


def figures(protocol: str, name: str, url: str, runs: int) -> Row:
    rates, cpus, sents, delivs, lost, p99s = [], [], [], [], 0, []
    for _ in range(runs):
        results = one_run(protocol, url)
        rows = [s for s in results["series"] if s.get("sent", 0) > 0]
        cpu_s = sum(s.get("generator_cpu", 0.0) for s in rows) / 100.0
        sent = sum(s.get("sent", 0) for s in rows)
        delivered = sum(s.get("delivered", 0) for s in rows)
        rates.append((sent + delivered) / cpu_s if cpu_s else 0.0)
        cpus.append(100.0 * cpu_s / max(1, len(rows)))
        sents.append(sent / max(1, len(rows)))
        delivs.append(delivered / max(1, len(rows)))
        lost += results["totals"].get("lost", 0)
        p99s.append(results["latency"]["delivery"].get("p99") or 0.0)
    med = statistics.median
    return Row(
        protocol, name, round(med(rates)), round(med(cpus), 1), round(med(sents)),
        round(med(delivs)), lost, round(med(p99s), 2),
    )  # fmt: skip


def measure(runs: int) -> list[Row]:
    if not (GRAPHQL_DIR / "node_modules" / "graphql-ws").is_dir():
        subprocess.run(["npm", "ci", "--no-audit", "--no-fund"], cwd=GRAPHQL_DIR, check=True)
    node = ["node", str(GRAPHQL_DIR / "server.mjs"), "--port", "0"]
    rows = []
    with server(node, NODE_LINE) as url:
        rows.append(figures("graphql-ws", "graphql-ws 6 (useServer on ws 8), Node", url, runs))
    with server([*node, "--legacy"], NODE_LINE) as url:
        name = "subscriptions-transport-ws 0.11, Node"
        rows.append(figures("graphql-legacy", name, url, runs))
    with tempfile.TemporaryDirectory() as conf_dir:
        conf = Path(conf_dir) / "nats.conf"
        conf.write_text(NATS_CONF)
        version = subprocess.run(["nats-server", "--version"], capture_output=True, text=True)
        name = f"{version.stdout.strip()} (websocket listener)"
        with server(["nats-server", "-c", str(conf)], NATS_LINE) as url:
            rows.append(figures("nats", name, url, runs))
    return rows


def render(rows: list[Row], runs: int) -> str:
    lines = [
        "# Adapters: GraphQL over WebSocket and NATS — messages per generator CPU-second",
        "",
        f"Measured {time.strftime('%Y-%m-%d', time.gmtime())} with "
        f"`python -m benchmarks.adapters_graphql_nats` (medians of {runs} runs; "
        f"{CORES.describe()}; the machine lock held throughout).",
        "",
        "Load: `rtbench run chat " + " ".join(LOAD) + "` against each real server: 400 "
        "sends/s and 3,600 expected deliveries/s (each server also sends the sender its own "
        "copy, counted as `own_message`, not as a delivery). A message is a send or a "
        "delivery; the figure is messages / generator CPU-seconds over the seconds in "
        "which sends went out (results.json `series`).",
        "",
        "| `--protocol` | server | msgs per generator CPU-s | generator CPU (% of a core) "
        "| sends/s | deliveries/s | lost | delivery p99 ms |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| `{r.protocol}` | {r.server} | {r.msgs_per_cpu_s:,} | {r.cpu_percent} "
            f"| {r.sent_per_s:,} | {r.delivered_per_s:,} | {r.lost} | {r.p99_ms} |"
        )
    lines += [
        "",
        "The delivery p99 is the server's as much as the generator's: each Node GraphQL "
        "server executes the subscription's selection set once per recipient on one core.",
        "",
    ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--no-report", action="store_true")
    args = parser.parse_args()
    CORES.pin_self()
    with exclusive_machine("adapters-graphql-nats"):
        rows = measure(args.runs)
    text = render(rows, args.runs)
    print(text)
    if not args.no_report:
        REPORT.write_text(text)
        print(f"wrote {REPORT.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
