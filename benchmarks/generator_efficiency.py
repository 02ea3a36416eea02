"""How efficient is the native load generator? Figures for reports/generator-efficiency.md.

Against a bare Node ``ws`` echo server (so the server is never the limit), server pinned
to core 0 and generator to core 1, medians of ``--runs`` runs, each run under the
machine lock (benchmarks.lock):

1. connections held by one generator process, and client RSS per connection;
2. generator CPU at 10,000 connections x 1 msg/s (open loop, rtt scenario);
3. reported latency against the truth at 1,000 connections x 1 msg/s: the truth is a
   minimal picows ping-pong client on the same core, one round trip every 10 ms;
4. the closed-loop ceiling: round trips per generator CPU-second (rtt --closed-loop).

Other generators (Locust, issue 4) plug in through ``GENERATORS``: a function that takes
the echo server's URL and a ``Load`` and returns ``Figures``; the report gets a column
per generator and ratios against the native one.

    python -m benchmarks.generator_efficiency            # full: 3 runs, writes the report
    python -m benchmarks.generator_efficiency --quick    # smaller loads, 1 run, no report
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

from benchmarks.lock import exclusive_machine
from benchmarks.procs import Cores, NodePeer, node_versions

ROOT = Path(__file__).resolve().parent.parent
REPORT = ROOT / "reports" / "generator-efficiency.md"
CORES = Cores.detect()
CLIENT = CORES.client_prefix()  # taskset -c <client core>, or nothing on one core
RTBENCH = [sys.executable, "-c", "from rtbench.cli import run; run()"]


@dataclass
class Load:
    """The loads every generator is measured at (the same for each)."""

    held: int = 18_000  # connections one process holds
    idle_base: int = 100  # small run whose RSS is the per-process baseline
    cpu_users: int = 10_000  # connections x 1 msg/s for the CPU figure
    cpu_duration: float = 15.0
    truth_users: int = 1_000  # connections x 1 msg/s for the latency-truth figure
    truth_duration: float = 15.0
    ceiling_users: int = 100  # closed-loop connections
    ceiling_duration: float = 8.0


QUICK = Load(
    held=3000,
    cpu_users=2000,
    cpu_duration=8,
    truth_users=300,
    truth_duration=8,
    ceiling_duration=4,
)


@dataclass
class Figures:
    held: int | None = None
    rss_per_conn_kb: float | None = None
    cpu_percent: float | None = None  # of one core, at cpu_users x 1 msg/s
    reported_p50_ms: float | None = None
    reported_p99_ms: float | None = None
    truth_p50_ms: float | None = None
    truth_p99_ms: float | None = None
    ceiling_msgs_per_cpu_s: float | None = None
    notes: list[str] = field(default_factory=list)


# -- the native generator ----------------------------------------------------------------------


def rtbench_run(url: str, *args: str) -> dict:
    """``rtbench run`` pinned to the generator core; returns results.json as a dict."""
    with tempfile.TemporaryDirectory(prefix="rtbench-eff-") as out:
        command = [*CLIENT, *RTBENCH, "run", *args]
        command += ["--target", url, "--protocol", "echo", "--out", out, "--quiet"]
        done = subprocess.run(command, capture_output=True, text=True, check=False)
        path = Path(out) / "results.json"
        if not path.exists():
            raise RuntimeError(f"rtbench run {' '.join(args)} failed: {done.stderr.strip()}")
        return json.loads(path.read_text())


def measured_cpu_seconds(results: dict) -> tuple[int, float]:
    """(round trips, generator CPU-seconds) over the seconds in which requests were sent."""
    rows = [s for s in results["series"] if s.get("sent", 0) > 0]
    return (
        sum(s.get("delivered", 0) for s in rows),
        sum(s.get("generator_cpu", 0.0) for s in rows) / 100.0,
    )


def truth_probe(url: str, delay_s: float, seconds: float, out: str) -> subprocess.Popen:
    """A minimal picows client on the generator core: one round trip every 10 ms."""
    return subprocess.Popen(
        [*CLIENT, sys.executable, "-m", "benchmarks.generator_efficiency",
         "--truth-probe", url, str(delay_s), str(seconds), out],
        cwd=ROOT,
    )  # fmt: skip


def native(url: str, load: Load) -> Figures:
    figures = Figures()
    base = rtbench_run(url, "connect", "--users", str(load.idle_base), "--duration", "3")
    held = rtbench_run(
        url, "connect", "--users", str(load.held), "--ramp", str(load.held / 1500),
        "--duration", "5", "--heartbeat", "5", "--connect-timeout", "20",
    )  # fmt: skip
    figures.held = held["totals"].get("connections_answering", 0)
    grown = held["generator"]["rss_bytes_max"] - base["generator"]["rss_bytes_max"]
    figures.rss_per_conn_kb = round(grown / max(1, load.held - load.idle_base) / 1024, 1)

    cpu = rtbench_run(
        url, "rtt", "--users", str(load.cpu_users), "--rate", "1",
        "--ramp", str(load.cpu_users / 1500), "--duration", str(load.cpu_duration),
    )  # fmt: skip
    _, cpu_seconds = measured_cpu_seconds(cpu)
    rows = sum(1 for s in cpu["series"] if s.get("sent", 0) > 0)
    figures.cpu_percent = round(100.0 * cpu_seconds / max(1, rows), 1)

    ramp = load.truth_users / 1500
    reported, truth = with_truth(
        url,
        load,
        ramp + 3.0,
        lambda: rtbench_run(
            url, "rtt", "--users", str(load.truth_users), "--rate", "1",
            "--ramp", str(ramp), "--duration", str(load.truth_duration),
        ),
    )  # fmt: skip
    delivery = reported["latency"]["delivery"]
    figures.reported_p50_ms, figures.reported_p99_ms = delivery["p50"], delivery["p99"]
    figures.truth_p50_ms, figures.truth_p99_ms = truth["p50"], truth["p99"]

    ceiling = rtbench_run(
        url, "rtt", "--users", str(load.ceiling_users), "--closed-loop",
        "--duration", str(load.ceiling_duration),
    )  # fmt: skip
    trips, cpu_s = measured_cpu_seconds(ceiling)
    figures.ceiling_msgs_per_cpu_s = round(trips / cpu_s) if cpu_s else None
    figures.notes.append(
        f"closed loop: generator CPU {ceiling['generator'].get('cpu_percent_mean')} % of a core"
    )
    return figures


def with_truth(url: str, load: Load, delay_s: float, measure: Callable[[], dict]) -> tuple:
    """Run ``measure`` while the truth probe times round trips beside it."""
    with tempfile.NamedTemporaryFile(suffix=".json") as truth_file:
        probe = truth_probe(url, delay_s, load.truth_duration - 4.0, truth_file.name)
        measured = measure()
        probe.wait(60)
        return measured, json.loads(Path(truth_file.name).read_text())


def bare_run(mode: str, url: str, *args: object) -> dict:
    """The bare picows peer (benchmarks.peers.picows_client.py) on the generator core."""
    with tempfile.NamedTemporaryFile(suffix=".json") as out:
        command = [*CLIENT, sys.executable, "-m"]
        command += ["benchmarks.peers.picows_client", mode, url, *map(str, args), out.name]
        subprocess.run(command, cwd=ROOT, check=True, timeout=600)
        return json.loads(Path(out.name).read_text())


def bare(url: str, load: Load) -> Figures:
    figures = Figures()
    base = bare_run("hold", url, load.idle_base, 2)
    held = bare_run("hold", url, load.held, 3)
    figures.held = held["users"]
    grown = held["rss_bytes"] - base["rss_bytes"]
    figures.rss_per_conn_kb = round(grown / max(1, load.held - load.idle_base) / 1024, 1)
    cpu = bare_run("open", url, load.cpu_users, 1, load.cpu_duration)
    figures.cpu_percent = round(100.0 * cpu["cpu_s"] / cpu["seconds"], 1)
    reported, truth = with_truth(
        url, load, 3.0, lambda: bare_run("open", url, load.truth_users, 1, load.truth_duration)
    )
    figures.reported_p50_ms, figures.reported_p99_ms = reported["p50"], reported["p99"]
    figures.truth_p50_ms, figures.truth_p99_ms = truth["p50"], truth["p99"]
    ceiling = bare_run("closed", url, load.ceiling_users, load.ceiling_duration)
    figures.ceiling_msgs_per_cpu_s = round(ceiling["trips"] / ceiling["cpu_s"])
    figures.notes.append(
        f"closed loop: CPU {100 * ceiling['cpu_s'] / ceiling['seconds']:.0f} % of a core"
    )
    return figures


GENERATORS: dict[str, Callable[[str, Load], Figures]] = {
    "rtbench (native)": native,
    "bare picows client": bare,
}
"""Generators to compare, at the same loads in the same session. The bare picows client is
the floor (no accounting at all); the Locust issue adds ``GENERATORS["locust"] = ...``."""


# -- the truth probe (a separate process) ------------------------------------------------------


def _truth_main(url: str, delay_s: float, seconds: float, out: str) -> None:
    import asyncio

    import uvloop
    from picows import WSListener, WSMsgType, ws_connect

    from rtbench.histogram import LatencyHistogram

    hist = LatencyHistogram()

    class Probe(WSListener):
        def __init__(self) -> None:
            self.sent_ns = 0
            self.reply: asyncio.Future | None = None

        def on_ws_frame(self, transport, frame) -> None:  # type: ignore[no-untyped-def]
            if frame.msg_type is WSMsgType.TEXT and self.reply and not self.reply.done():
                hist.record_us((time.monotonic_ns() - self.sent_ns) // 1000)
                self.reply.set_result(None)

    async def main() -> None:
        await asyncio.sleep(delay_s)
        transport, probe = await ws_connect(Probe, url)
        payload = b"x" * 100
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            probe.reply = asyncio.get_running_loop().create_future()
            probe.sent_ns = time.monotonic_ns()
            transport.send(WSMsgType.TEXT, payload)
            await asyncio.wait_for(probe.reply, 5)
            await asyncio.sleep(0.01)
        transport.disconnect()

    uvloop.run(main())
    Path(out).write_text(json.dumps(hist.summary()))


# -- running and reporting ---------------------------------------------------------------------


def median_figures(runs: list[Figures]) -> Figures:
    out = Figures()
    for name in asdict(out):
        if name == "notes":
            out.notes = sorted({n for r in runs for n in r.notes})
            continue
        values = [getattr(r, name) for r in runs if getattr(r, name) is not None]
        setattr(out, name, statistics.median(values) if values else None)
    return out


def _fmt(value: float | None, digits: int = 2) -> str:
    if value is None:
        return "-"
    return f"{value:,.{digits}f}" if isinstance(value, float) and digits else f"{value:,.0f}"


def render(results: dict[str, Figures], runs: int, load: Load, versions: dict[str, str]) -> str:
    names = list(results)
    header = "| figure | " + " | ".join(names) + " |"
    rows = [header, "|---" * (len(names) + 1) + "|"]

    def row(label: str, attr: str, digits: int = 2) -> None:
        cells = [_fmt(getattr(results[n], attr), digits) for n in names]
        rows.append(f"| {label} | " + " | ".join(cells) + " |")

    row(f"connections held by one process (of {load.held:,})", "held", 0)
    row("client RSS per connection (KB)", "rss_per_conn_kb", 1)
    row(f"generator CPU at {load.cpu_users:,} conns x 1 msg/s (% of a core)", "cpu_percent", 1)
    row(f"reported RTT p50 at {load.truth_users:,} x 1 msg/s (ms)", "reported_p50_ms")
    row("true RTT p50 (ms)", "truth_p50_ms")
    row(f"reported RTT p99 at {load.truth_users:,} x 1 msg/s (ms)", "reported_p99_ms")
    row("true RTT p99 (ms)", "truth_p99_ms")
    row("closed-loop round trips per generator CPU-second", "ceiling_msgs_per_cpu_s", 0)
    native_f, bare_f = results.get("rtbench (native)"), results.get("bare picows client")
    if native_f and bare_f and native_f.cpu_percent and bare_f.cpu_percent:
        share = (native_f.ceiling_msgs_per_cpu_s or 0) / (bare_f.ceiling_msgs_per_cpu_s or 1)
        rows.append("")
        rows.append(
            f"rtbench's measuring (markers, accounting, HDR, self-watch) costs "
            f"{native_f.cpu_percent / bare_f.cpu_percent:.1f}x the bare client's CPU at "
            f"{load.cpu_users:,} x 1 msg/s; its closed-loop ceiling is "
            f"{100 * share:.0f} % of the bare client's."
        )
    notes = [f"- {name}: {note}" for name, f in results.items() for note in f.notes]
    pkg = ", ".join(f"{k} {v}" for k, v in versions.items())
    return "\n".join(
        [
            "# Load-generator efficiency",
            "",
            f"Medians of {runs} runs on this machine (2 cores; {pkg}). Target: a bare Node "
            "`ws` echo server (`benchmarks/peers/node/echo.js`); "
            f"{CORES.describe()}; loopback; 100-byte messages.",
            "",
            *rows,
            "",
            "How each figure is taken (all by `rtbench run ... --protocol echo`):",
            "",
            f"- held: `rtbench run connect --users {load.held} --procs 1`; every connection "
            "answers a final heartbeat round trip. RSS per connection: the generator's peak "
            f"RSS minus that of a {load.idle_base}-connection run, divided by the difference.",
            f"- CPU: `rtbench run rtt --users {load.cpu_users} --rate 1 --duration "
            f"{load.cpu_duration:g}`: the worker's CPU (psutil) averaged over the seconds in "
            "which it sent (open loop, Poisson arrivals).",
            "- reported vs true: `rtbench run rtt --users "
            f"{load.truth_users} --rate 1`; meanwhile a minimal picows client on the same "
            "core times one round trip every 10 ms (`--truth-probe` in the script).",
            f"- ceiling: `rtbench run rtt --users {load.ceiling_users} --closed-loop`: "
            "round trips counted by the engine's own accounting divided by the worker's "
            "CPU-seconds.",
            "",
            *(["Notes:", "", *notes, ""] if notes else []),
            "Reproduce (takes the machine lock for each run, ~10 minutes in all):",
            "",
            "```sh",
            ".venv/bin/python -m benchmarks.generator_efficiency",
            "```",
            "",
            "Locust on the same loads joins this table when the Locust users land (issue 4): "
            "they register in `GENERATORS` in `benchmarks/generator_efficiency.py`.",
            "",
        ]
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="small loads, 1 run, no report")
    parser.add_argument("--truth-probe", nargs=4, metavar=("URL", "DELAY", "SECONDS", "OUT"))
    args = parser.parse_args()
    if args.truth_probe:
        url, delay, seconds, out = args.truth_probe
        _truth_main(url, float(delay), float(seconds), out)
        return
    load = QUICK if args.quick else Load()
    runs = 1 if args.quick else args.runs
    collected: dict[str, list[Figures]] = {name: [] for name in GENERATORS}
    for run in range(runs):
        with exclusive_machine("generator-efficiency"):
            server = NodePeer(CORES, "echo.js")
            try:
                for name, measure in GENERATORS.items():
                    started = time.monotonic()
                    figures = measure(server.url, load)
                    collected[name].append(figures)
                    took = time.monotonic() - started
                    print(f"[run {run + 1}/{runs}] {name} ({took:.0f} s): {figures}", flush=True)
            finally:
                server.stop()
    medians = {name: median_figures(figs) for name, figs in collected.items()}
    from importlib import metadata

    versions = {
        "Python": sys.version.split()[0],
        "picows": metadata.version("picows"),
        "uvloop": metadata.version("uvloop"),
        **node_versions(),
    }
    text = render(medians, runs, load, versions)
    if args.quick:
        print(text)
        return
    REPORT.parent.mkdir(parents=True, exist_ok=True)
    REPORT.write_text(text)
    print(f"wrote {REPORT}")
    print(json.dumps({k: asdict(v) for k, v in medians.items()}, indent=2))


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    main()
