"""Messages per generator CPU-second of the MQTT and STOMP adapters against RabbitMQ.

For reports/adapters-mqtt-stomp.md. The same chat load for each adapter configuration
(``rtbench run`` under ``taskset -c <client core>``), RabbitMQ's scheduler threads pinned
to the server core for the runs and given back their affinity after, medians of
``--runs`` runs, all under the machine lock (benchmarks.lock). The generator's CPU comes
from results.json's per-second series (the seconds in which messages were sent), as in
benchmarks/generator_efficiency.py.

    python -m benchmarks.adapters_mqtt_stomp            # 3 runs each, writes the report
    python -m benchmarks.adapters_mqtt_stomp --runs 1 --no-report
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from benchmarks.kit import measured_cpu_seconds, median_of
from benchmarks.lock import exclusive_machine
from benchmarks.procs import Cores

ROOT = Path(__file__).resolve().parent.parent
REPORT = ROOT / "reports" / "adapters-mqtt-stomp.md"
CORES = Cores.detect()
MQTT_URL = os.environ.get("RTBENCH_TEST_MQTT_URL", "ws://127.0.0.1:15675/ws")
STOMP_URL = os.environ.get("RTBENCH_TEST_STOMP_URL", "ws://127.0.0.1:15674/ws")
LOAD = ["--users", "100", "--room-size", "10", "--rate", "4", "--ramp", "2", "--duration", "10"]
"""100 connections in rooms of 10, each sending 4 msg/s: 400 sends and 3,600 deliveries
per second (plus 400 copies back to their senders, which both brokers send). At 10 msg/s
RabbitMQ 3.10 on one core falls behind at QoS 1 (p99 of seconds, messages still queued
at the end of the drain): the broker, not the generator, would be measured."""


@dataclass
class Case:
    name: str
    protocol: str
    url: str
    options: dict


CASES = [
    Case("mqtt 3.1.1, QoS 0", "mqtt", MQTT_URL, {}),
    Case("mqtt 3.1.1, QoS 1 (PUBACKs)", "mqtt", MQTT_URL, {"qos": 1}),
    Case("stomp 1.2", "stomp", STOMP_URL, {}),
    Case("stomp 1.2, receipts", "stomp", STOMP_URL, {"receipts": True}),
]


def _toml(case: Case) -> str:
    lines = ['scenario = "chat"', f'protocol = "{case.protocol}"', "[protocol_options]"]
    lines += [f"{k} = {json.dumps(v).lower()}" for k, v in case.options.items()]
    return "\n".join(lines) + "\n"


def run_once(case: Case, folder: Path) -> dict:
    """One run; its figures from results.json."""
    scenario = folder / "scenario.toml"
    scenario.write_text(_toml(case))
    out = folder / "out"
    command = [*CORES.client_prefix(), sys.executable, "-c", "from rtbench.entry import run; run()"]
    command += ["run", str(scenario), "-t", case.url, *LOAD, "-q", "-o", str(out)]
    done = subprocess.run(command, capture_output=True, text=True, timeout=300, check=False)
    if done.returncode not in (0, 1, 4):  # a verdict may fail; the figures stand
        raise RuntimeError(f"{case.name}: rtbench exited {done.returncode}: {done.stderr[-2000:]}")
    results = json.loads((out / "results.json").read_text())
    delivered, cpu_s = measured_cpu_seconds(results)
    rows = [s for s in results["series"] if s.get("sent", 0) > 0]
    sent = sum(s.get("sent", 0) for s in rows)
    t = results["totals"]
    return {
        "delivered_per_cpu_s": delivered / cpu_s if cpu_s else 0.0,
        "messages_per_cpu_s": (delivered + sent) / cpu_s if cpu_s else 0.0,
        "cpu_percent": 100.0 * cpu_s / max(1, len(rows)),
        "p99_ms": results["latency"]["delivery"]["p99"],
        "lost": t.get("lost", 0),
        "duplicated": t.get("duplicated", 0),
        "acked": t.get("acked", 0),
        "sent": t.get("sent", 0),
    }


def _beam_pids() -> list[int]:
    done = subprocess.run(["pgrep", "-x", "beam.smp"], capture_output=True, text=True, check=False)
    return [int(p) for p in done.stdout.split()]


def _threads(pid: int) -> list[int]:
    return [int(t) for t in os.listdir(f"/proc/{pid}/task")]


def pin_broker() -> dict[int, set[int]]:
    """Pin every thread of RabbitMQ's VM to the server core; returns what to restore."""
    saved: dict[int, set[int]] = {}
    if CORES.server is None:
        return saved
    for pid in _beam_pids():
        for tid in _threads(pid):
            try:
                saved[tid] = os.sched_getaffinity(tid)
                os.sched_setaffinity(tid, {CORES.server})
            except OSError:
                continue
    return saved


def unpin_broker(saved: dict[int, set[int]]) -> None:
    for tid, cpus in saved.items():
        try:
            os.sched_setaffinity(tid, cpus)
        except OSError:
            continue  # the thread ended meanwhile


def measure(runs: int) -> dict[str, list[dict]]:
    figures: dict[str, list[dict]] = {case.name: [] for case in CASES}
    with exclusive_machine("MQTT and STOMP adapter figures"):
        CORES.pin_self()
        saved = pin_broker()
        try:
            for _ in range(runs):
                for case in CASES:  # interleaved: a drift of the machine hits every case
                    with tempfile.TemporaryDirectory() as folder:
                        figures[case.name].append(run_once(case, Path(folder)))
                    time.sleep(1.0)  # the broker settles its closed connections
        finally:
            unpin_broker(saved)
    return figures


NOTES = (
    "MQTT 5 is not in the table: RabbitMQ speaks it from 3.13, and this machine's 3.10 "
    "closes the WebSocket (1011) at a version 5 CONNECT (tests/thirdparty/test_mqtt.py "
    "checks both cases). The MQTT 5 codec is checked byte for byte instead. Both brokers "
    "send each message back to its sender (a topic subscriber gets its own publishes): "
    "those copies cost the generator a parse each and are not in the delivery counts."
)


def render(figures: dict[str, list[dict]], runs: int, version: str) -> str:
    lines = [
        "# MQTT and STOMP adapters: messages per generator CPU-second",
        "",
        f"RabbitMQ {version} (Web MQTT on 15675, Web STOMP on 15674, both `/ws`), "
        f"{CORES.describe()} (the broker's threads pinned for the runs), the native engine "
        f"(`rtbench run`, one worker process). Load: `rtbench run chat {' '.join(LOAD)}` "
        "(100 connections in rooms of 10, 4 msg/s each: 400 sends and 3,600 measured "
        "deliveries a second, plus each send's copy back to its sender, counted as "
        f"`own_message`). Medians of {runs} runs, interleaved.",
        "",
        "Generator CPU-seconds are summed over the seconds in which messages were sent "
        "(results.json `series`), as in reports/generator-efficiency.md.",
        "",
        "| adapter | deliveries per CPU-s | sends + deliveries per CPU-s | generator CPU | "
        "delivery p99 | lost / duplicated |",
        "|---|---|---|---|---|---|",
    ]
    for name, rows in figures.items():
        lost = sum(r["lost"] for r in rows)
        dup = sum(r["duplicated"] for r in rows)
        lines.append(
            f"| {name} | {median_of(rows, 'delivered_per_cpu_s'):,.0f} | "
            f"{median_of(rows, 'messages_per_cpu_s'):,.0f} | "
            f"{median_of(rows, 'cpu_percent'):.1f} % | {median_of(rows, 'p99_ms'):.2f} ms | "
            f"{lost} / {dup} |"
        )
    lines += [
        "",
        "Per run (deliveries per CPU-second):",
        "",
    ]
    for name, rows in figures.items():
        lines.append(f"- {name}: " + ", ".join(f"{r['delivered_per_cpu_s']:,.0f}" for r in rows))
    lines += [
        "",
        NOTES,
        "",
        "Produced by `python -m benchmarks.adapters_mqtt_stomp` (under the machine lock).",
        "",
    ]
    return "\n".join(lines)


def broker_version() -> str:
    try:
        done = subprocess.run(
            ["rabbitmqctl", "version"], capture_output=True, text=True, timeout=60, check=False
        )
    except (OSError, subprocess.TimeoutExpired):
        return "(version unknown)"
    return done.stdout.strip().splitlines()[-1] if done.stdout.strip() else "(version unknown)"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--no-report", action="store_true")
    args = parser.parse_args()
    figures = measure(args.runs)
    text = render(figures, args.runs, broker_version())
    print(text)
    if not args.no_report:
        REPORT.write_text(text)
        print(f"wrote {REPORT}")


if __name__ == "__main__":
    main()
