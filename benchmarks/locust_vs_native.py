"""Locust users against the native engine: same scenario, same server, same run.

Both engines run the same rtbench scenarios (``rtbench run`` and ``rtbench locust
--headless`` take the same flags) against one reference server pinned to the server
core, each generator pinned to the client core, one process each, alternating which
goes first. Per engine, medians of ``--runs``:

1. users held per core: ``connect --users N``: connections one generator process opens
   and holds, each answering a final heartbeat, and its RSS per connection;
2. the chat load (rooms of 10, 1 msg/s, DMs, typing, receipts): measured messages (sends,
   acks, deliveries) per generator CPU-second, the chat users one core drives at that rate
   (users / CPU share), and the delivery latency each engine reports (p50, p99, p99.9),
   Locust's own statistics (whole milliseconds) beside it.

``benchmarks.generator_efficiency`` gives Locust a column too (the native engine's figures
against the bare Node echo server); both run the engines through ``benchmarks.kit``.

    python -m benchmarks.locust_vs_native            # 3 runs, writes reports/locust-vs-native.md
    python -m benchmarks.locust_vs_native --quick    # small loads, 1 run, prints the report
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import psutil

from benchmarks.kit import engine_run, median_figures, number, sending_rows
from benchmarks.lock import exclusive_machine
from benchmarks.procs import Cores, ReferenceServer, workdir

ROOT = Path(__file__).resolve().parent.parent
REPORT = ROOT / "reports" / "locust-vs-native.md"
CORES = Cores.detect()
ENGINES = ("native", "locust")
QUIET_CPU_PERCENT = 40.0
"""Other processes may use this much of the machine (percent of all cores) before a run
waits for them (up to QUIET_WAIT_S): this machine is shared, and a busy neighbour makes
both engines look slower."""
QUIET_WAIT_S = 300.0


@dataclass
class Load:
    held: int = 10_000
    held_ramp: float = 12.0
    chat_users: int = 500
    room_size: int = 10
    rate: float = 1.0
    chat_duration: float = 20.0
    chat_ramp: float = 5.0


QUICK = Load(held=2000, held_ramp=4.0, chat_users=200, chat_duration=8.0, chat_ramp=2.0)


@dataclass
class Figures:
    held: float | None = None
    rss_per_conn_kb: float | None = None
    msgs_per_cpu_s: float | None = None
    cpu_percent: float | None = None  # of one core, during the chat load
    users_per_core: float | None = None
    delivery_p50_ms: float | None = None
    delivery_p99_ms: float | None = None
    delivery_p999_ms: float | None = None
    stats_p50_ms: float | None = None  # Locust's own statistics (whole ms)
    stats_p99_ms: float | None = None
    lost: float | None = None
    saturated_runs: float | None = None
    background_cpu: float | None = None  # other processes' CPU before the run (% of machine)
    notes: list[str] = field(default_factory=list)


# -- running an engine ---------------------------------------------------------------------------


def cpu_share(results: dict[str, Any]) -> float:
    """Mean generator CPU (percent of one core) over the seconds in which it sent."""
    rows = sending_rows(results)
    return sum(s.get("generator_cpu", 0.0) for s in rows) / max(1, len(rows))


def messages_per_cpu_second(results: dict[str, Any]) -> float | None:
    """Measured messages (sends, acks, deliveries) per generator CPU-second, while sending."""
    rows = sending_rows(results)
    msgs = sum(s.get("sent", 0) + s.get("acked", 0) + s.get("delivered", 0) for s in rows)
    cpu_s = sum(s.get("generator_cpu", 0.0) for s in rows) / 100.0
    return round(msgs / cpu_s) if cpu_s else None


def background_cpu(sample_s: float = 2.0) -> float:
    """Machine CPU (percent of all cores) used now: nothing of ours is running."""
    return psutil.cpu_percent(interval=sample_s)


def wait_for_quiet() -> float:
    """Wait (bounded) until the neighbours are quiet; the last sample goes in the report."""
    deadline = time.monotonic() + QUIET_WAIT_S
    busy = background_cpu()
    while busy > QUIET_CPU_PERCENT and time.monotonic() < deadline:
        print(f"machine busy ({busy:.0f} % of all cores): waiting", file=sys.stderr)
        time.sleep(10)
        busy = background_cpu()
    return busy


def measure(engine: str, url: str, load: Load) -> Figures:
    figures = Figures(background_cpu=wait_for_quiet())
    held = engine_run(
        engine, url, "connect", "--users", str(load.held), "--ramp", str(load.held_ramp),
        "--duration", "5", "--heartbeat", "5", "--connect-timeout", "30",
    )  # fmt: skip
    answering = held["totals"].get("connections_answering", 0)
    figures.held = answering
    if answering:
        figures.rss_per_conn_kb = round(held["generator"]["rss_bytes_max"] / answering / 1024, 1)
    chat = engine_run(
        engine, url, "chat", "--users", str(load.chat_users), "--room-size", str(load.room_size),
        "--rate", str(load.rate), "--duration", str(load.chat_duration),
        "--ramp", str(load.chat_ramp), "--seed", "1",
    )  # fmt: skip
    figures.cpu_percent = round(cpu_share(chat), 1)
    figures.msgs_per_cpu_s = messages_per_cpu_second(chat)
    if figures.cpu_percent:
        figures.users_per_core = round(load.chat_users / (figures.cpu_percent / 100.0))
    delivery = chat["latency"].get("delivery", {})
    figures.delivery_p50_ms = delivery.get("p50")
    figures.delivery_p99_ms = delivery.get("p99")
    figures.delivery_p999_ms = delivery.get("p999")
    stats = chat.get("locust_stats") or {}
    if stats:
        figures.stats_p50_ms = float(stats["50%"])
        figures.stats_p99_ms = float(stats["99%"])
    figures.lost = chat["totals"].get("lost", 0)
    figures.saturated_runs = float(bool(held["generator"].get("saturated"))) + float(
        bool(chat["generator"].get("saturated"))
    )
    return figures


# -- report ---------------------------------------------------------------------------------------


def _ratio(a: float | None, b: float | None) -> str:
    return f"{a / b:.2f}x" if a and b else "-"


def render(medians: dict[str, Figures], runs: int, load: Load, versions: str) -> str:
    n, lo = medians["native"], medians["locust"]
    rows = [
        "| figure | native engine | Locust users | Locust / native |",
        "|---|---|---|---|",
    ]

    def row(label: str, attr: str, digits: int = 2, compare: bool = True) -> None:
        a, b = getattr(n, attr), getattr(lo, attr)
        ratio = _ratio(b, a) if compare else "-"
        cells = [number(v, digits, whole_ints=False) for v in (a, b)]
        rows.append(f"| {label} | {cells[0]} | {cells[1]} | {ratio} |")

    row(f"connections held by one process (of {load.held:,})", "held", 0)
    row("generator peak RSS / connections held (KB, base included)", "rss_per_conn_kb", 1)
    row("generator CPU during the chat load (% of a core)", "cpu_percent", 1)
    row("measured messages per generator CPU-second", "msgs_per_cpu_s", 0)
    row(f"chat users one core drives at {load.rate:g} msg/s", "users_per_core", 0)
    row("delivery latency p50 reported (ms)", "delivery_p50_ms")
    row("delivery latency p99 reported (ms)", "delivery_p99_ms")
    row("delivery latency p99.9 reported (ms)", "delivery_p999_ms")
    rows.append(
        f"| Locust's own statistics p50 / p99 (whole ms) | - | "
        f"{number(lo.stats_p50_ms, 0)} / {number(lo.stats_p99_ms, 0)} | - |"
    )
    row("deliveries lost", "lost", 0, compare=False)
    row("runs whose generator was saturated (of 2 per run)", "saturated_runs", 0, compare=False)
    row("other processes' CPU before a run (% of the machine)", "background_cpu", 0, False)
    notes = lo.notes + n.notes
    gap50 = (lo.delivery_p50_ms or 0) - (n.delivery_p50_ms or 0)
    gap99 = (lo.delivery_p99_ms or 0) - (n.delivery_p99_ms or 0)
    chat = (
        f"`chat --users {load.chat_users} --room-size {load.room_size} --rate {load.rate:g} "
        f"--duration {load.chat_duration:g} --ramp {load.chat_ramp:g} --seed 1`"
    )
    return "\n".join(
        [
            "# Locust users against the native engine",
            "",
            f"Medians of {runs} runs on this machine (2 cores; {versions}), in the same "
            f"session against one reference server (`rtbench serve`, SQLite store); "
            f"{CORES.describe()}; each engine one process; engines alternate which goes "
            "first.",
            "",
            *rows,
            "",
            f"On the same load and server, Locust's users report delivery latency "
            f"{gap50:+.2f} ms (p50) and {gap99:+.2f} ms (p99) away from the native engine's: "
            "the server is the same, so the difference is the generator's own time (gevent "
            "scheduling, websocket-client's pure-Python frames, Locust's statistics) counted "
            "as latency. `reports/generator-efficiency.md` has each engine's reported latency "
            "against the truth.",
            "",
            "How each figure is taken (`rtbench run` for the native engine, `rtbench locust "
            "--headless` for Locust, the same flags):",
            "",
            f"- held: `connect --users {load.held} --ramp {load.held_ramp:g} --duration 5 "
            "--heartbeat 5 --connect-timeout 30`; connections answering the final heartbeat "
            "probe; the generator's peak RSS divided by them (the process's own base "
            "included: `reports/generator-efficiency.md` has the marginal figure).",
            f"- the chat load: {chat}; CPU is the generator process's own (psutil) over the "
            "seconds in which it sent; messages are sends, acks and deliveries in those "
            "seconds; users per core = users / CPU share (linear, below saturation).",
            "- latency: each engine's HDR histogram of every delivery (scheduled send to "
            "receipt, lost deliveries counted as slowest); Locust's own statistics of the "
            "same deliveries are in whole milliseconds.",
            "",
            *(["Notes:", "", *[f"- {note}" for note in notes], ""] if notes else []),
            "## When to pick which engine",
            "",
            *when_to_pick(n, lo),
            "",
            "Reproduce (takes the machine lock per run, ~10 minutes in all):",
            "",
            "```sh",
            ".venv/bin/python -m benchmarks.locust_vs_native",
            "```",
            "",
        ]
    )


def when_to_pick(n: Figures, lo: Figures) -> list[str]:
    per_core = _ratio(n.msgs_per_cpu_s, lo.msgs_per_cpu_s)
    if n.held and lo.held and abs(n.held - lo.held) <= 0.01 * n.held:
        held = (
            f"Holding idle connections costs both about the same ({number(n.held, 0)} in one "
            "process each, similar memory): the difference is in traffic."
        )
    else:
        held = (
            f"One process held {number(n.held, 0)} connections on the native engine and "
            f"{number(lo.held, 0)} on Locust."
        )
    return [
        "- **Proving the targets (CI gates, capacity, latency under load): the native engine** "
        f"(`rtbench run`). It drives {per_core} the messages per CPU-second that the Locust "
        "users do and reports latency closest to the truth; its verdicts are the ones to "
        f"trust near a threshold. {held}",
        "- **Watching a run live, or a team that already lives in Locust: the Locust users** "
        "(`rtbench locust`, `locust -f loadtest/locustfile.py`). Same scenarios, same SLO "
        "file, same exit codes, Locust's web UI with the Realtime SLO tab, and its statistics "
        "beside your HTTP tests. Budget more cores for the same load (the figures above) and "
        "read latencies of a few milliseconds as partly Locust's own.",
        "- **Past one machine**: both spread over processes (`--procs N`); Locust also over "
        "machines (`--master` / `--worker`), with wall clocks that must be in sync (NTP) for "
        "cross-machine latency. The native engine gets further per machine before that is "
        "needed.",
        "- Either way, a run whose generator saturated says so (exit code 4, verdicts marked "
        "untrusted): add processes rather than trust its latency.",
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="small loads, 1 run, no report")
    args = parser.parse_args()
    load = QUICK if args.quick else Load()
    runs = 1 if args.quick else args.runs
    collected: dict[str, list[Figures]] = {engine: [] for engine in ENGINES}
    for run in range(runs):
        order = ENGINES if run % 2 == 0 else ENGINES[::-1]
        with exclusive_machine("locust-vs-native"), workdir("rtbench-lvn-") as tmp:
            server = ReferenceServer(CORES, tmp)
            try:
                for engine in order:
                    started = time.monotonic()
                    figures = measure(engine, server.url, load)
                    collected[engine].append(figures)
                    took = time.monotonic() - started
                    print(f"[run {run + 1}/{runs}] {engine} ({took:.0f} s): {figures}", flush=True)
            finally:
                server.stop()
    medians = {engine: median_figures(figs, Figures) for engine, figs in collected.items()}
    from importlib import metadata

    versions = ", ".join(
        f"{name} {metadata.version(name)}"
        for name in ("locust", "websocket-client", "gevent", "picows", "uvloop")
    )
    text = render(medians, runs, load, f"Python {sys.version.split()[0]}, {versions}")
    if args.quick:
        print(text)
    else:
        REPORT.parent.mkdir(parents=True, exist_ok=True)
        REPORT.write_text(text)
        print(f"wrote {REPORT}")
    print(json.dumps({k: asdict(v) for k, v in medians.items()}, indent=2))


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    main()
