"""How fast do clients come back when the server restarts or drains, and what limits it?

Clients chat against the reference server (SQLite store) which rtbench started itself
(``--server-cmd``); at 8 s of load it is restarted (``restart:term``: SIGTERM, a
graceful drain with 1012; or ``restart:kill``: SIGKILL). Every client reconnects,
resumes its rooms and gets what it missed. Reported per case (medians of ``--runs``):
reconnect and recovery p50/p99/max over clients, the messages lost and duplicated, and
the phases that make up a client's recovery:

- **down**: the server's own restart (stop, then start until it answers HTTP) — no
  client can be back before it;
- **waste**: the time from the server being back (a drain: from the client's own loss) to
  the start of the client's successful attempt (its backoff sleeping through the moment
  the server came back, or its wait for a slot of the handshake gate);
- **handshake**: that attempt's upgrade and welcome (queued behind the others: the
  handshake rate);
- **replay**: welcome to every room resumed (the server reading its store).

Plus the server's CPU over the recovery (psutil, the new process), so "the server was
saturated by handshakes" is a measured statement, and the storm as numbers
(``run.faults[].storm``, loadtest/faults/analysis.py): accepted handshakes per second,
peak 100 ms and mean over the storm, and the time from the fault until 99 % of the
clients were back with every missed message. Server and generator are pinned to
separate cores. Takes the machine lock per case.

The full run is the storm cases (``STORM_CASES``, 3 runs each, ~5-6 minutes): 1,000
clients through a SIGKILL restart (the baseline of earlier reports), and 10,000 clients
through the same restart, through a drain in batches (the server asks its clients to
reconnect, 1,000 per 100 ms, and keeps running: ``drain:1000/100ms``), and through the
restart with admission in buckets (``--admit-rate 4000 --admit-burst 1000``: upgrades
past 4,000 a second refused 503, retried by the clients with backoff).

    .venv/bin/python -m benchmarks.recovery                 # full: the storm cases
    .venv/bin/python -m benchmarks.recovery --quick         # the storm cases at 1,000, once
    .venv/bin/python -m benchmarks.recovery --users 10000 --faults restart:kill --runs 1
    .venv/bin/python -m benchmarks.recovery --users 1000 --reconnect max_ms=250 jitter=1
    .venv/bin/python -m benchmarks.recovery --users 10000 --workers 2 --shared --procs 2
    .venv/bin/python -m benchmarks.recovery --users 10000 --faults drain:500/100ms \
        --server-args="--admit-rate 3000 --admit-burst 500"

``--workers N`` runs the server with N workers (Redis broker and PostgreSQL store from
RTBENCH_TEST_REDIS_URL / RTBENCH_TEST_POSTGRES_DSN); ``--shared`` pins nothing.
Writes reports/runs/recovery.md (or ``--out``: the tables and every run's figures) and
prints the medians as JSON last; reports/recovery.md is written from these by hand.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shlex
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgspec
import psutil

from benchmarks.lock import exclusive_machine
from benchmarks.procs import ROOT, Cores
from loadtest.client.policy import ReconnectPolicy
from loadtest.faults.runner import FaultSession
from loadtest.faults.schedule import FaultKind
from loadtest.faults.server import prepare
from loadtest.judge import build_results
from loadtest.run.entry import run_scenario
from loadtest.run.outcome import Outcome
from loadtest.scenarios import Kind, Scenario
from rtbench.histogram import LatencyHistogram
from rtbench.slo import SLO

FAULT_AT_S = 8.0
DURATION_S = 16.0  # 8 s of load after the fault: the slowest storm here is back in ~3-4 s
ADMISSION = "--admit-rate 4000 --admit-burst 1000"  # past ~ the server's 3,500 a second
PG_DSN = "postgresql://postgres@127.0.0.1:5432/test"
REDIS_URL = "redis://127.0.0.1:6379/0"
SAMPLE_S = 0.1


@dataclass
class Case:
    users: int
    fault: str
    rate: float = 0.1
    duration: float = DURATION_S
    procs: int = 0  # generator processes (0: one per 8,000 clients)
    pinned: bool = True  # server on one core, generator on the other (else: shared)
    workers: int = 1  # server worker processes (above 1: Redis broker + PostgreSQL store)
    reconnect: dict[str, float] = field(default_factory=dict)  # ReconnectPolicy overrides
    server_args: str = ""  # more `rtbench serve` flags (admission: --admit-rate ...)

    @property
    def name(self) -> str:
        procs = self.procs or max(1, self.users // 8000)
        layout = "pinned" if self.pinned else "shared cores"
        extra = "".join(f", {k}={v:g}" for k, v in sorted(self.reconnect.items()))
        server = f", serve {self.server_args}" if self.server_args else ""
        return (
            f"{self.users:,} clients, {self.fault}{server}, {self.workers} server worker(s), "
            f"{procs} generator proc(s), {layout}{extra}"
        )


def storm_cases(users: int, **common: Any) -> list[Case]:
    """A restart, a drain in batches of a tenth of the clients per 100 ms, and the restart
    with admission in buckets, at ``users`` clients."""
    return [
        Case(users, "restart:kill", **common),
        Case(users, f"drain:{max(1, users // 10)}/100ms", **common),
        Case(users, "restart:kill", server_args=ADMISSION, **common),
    ]


def default_cases(**common: Any) -> list[Case]:
    """The full run: the 1,000-client baseline, then the storm cases at 10,000."""
    return [Case(1000, "restart:kill", **common), *storm_cases(10000, **common)]


@dataclass
class CpuTrace:
    """The server process's CPU, sampled while the run goes (it changes pid on restart)."""

    samples: list[tuple[int, int, float]] = field(default_factory=list)  # (ns, pid, cpu s)

    async def follow(self, session: FaultSession) -> None:
        while True:
            server = session.server
            pid = server.pid if server is not None else None
            if pid is not None:
                try:
                    proc = psutil.Process(pid)
                    used = 0.0
                    for p in (proc, *proc.children(recursive=True)):  # workers too
                        times = p.cpu_times()
                        used += times.user + times.system
                    self.samples.append((time.monotonic_ns(), pid, used))
                except psutil.Error:
                    pass
            await asyncio.sleep(SAMPLE_S)

    def busy_share(self, start_ns: int, end_ns: int) -> float | None:
        """Server CPU seconds per wall second in [start, end] (1.0: a full core)."""
        used = 0.0
        span = 0.0
        last: dict[int, tuple[int, float]] = {}
        for ns, pid, cpu in self.samples:
            if pid in last and start_ns <= ns <= end_ns:
                prev_ns, prev_cpu = last[pid]
                used += cpu - prev_cpu
                span += (ns - prev_ns) / 1e9
            last[pid] = (ns, cpu)
        return round(used / span, 2) if span > 0 else None


def _scenario(case: Case, cores: Cores, workdir: Path) -> Scenario:
    pin = f"taskset -c {cores.server} " if cores.server is not None and case.pinned else ""
    serve = f"{shlex.quote(sys.executable)} -c 'from rtbench.entry import run; run()' serve"
    if case.workers > 1:
        store = shlex.quote(os.environ.get("RTBENCH_TEST_POSTGRES_DSN", PG_DSN))
        broker = shlex.quote(os.environ.get("RTBENCH_TEST_REDIS_URL", REDIS_URL))
        config = workdir / "cluster.toml"
        prefix = f"rtbench-recovery-{os.getpid()}-{time.time_ns()}"
        config.write_text(f'[cluster]\nprefix = "{prefix}"\n')
        extra = f"--workers {case.workers} --broker {broker} --config {config}"
    else:
        store, extra = f"sqlite:///{workdir / 'server.db'}", ""
    extra = f"{extra} {case.server_args}".strip()
    cmd, target = prepare(
        f"{pin}{serve} --port {{port}} --insecure-dev --store {store} {extra}".strip(), None
    )
    policy = msgspec.convert(case.reconnect, ReconnectPolicy) if case.reconnect else None
    return Scenario(
        scenario=Kind.CHAT,
        target=target,
        users=case.users,
        room_size=10,
        rate=case.rate,
        ramp=max(2.0, case.users / 2000),
        duration=case.duration,
        drain=15.0,
        procs=case.procs or max(1, case.users // 8000),
        reconnect=policy,
        faults=[f"{case.fault}@{FAULT_AT_S:g}s"],
        server_cmd=cmd,
        seed=5,
    ).resolved()


def _pct(values: list[float], p: float) -> float | None:
    if not values:
        return None
    hist = LatencyHistogram()
    for v in values:
        hist.record_us(int(v * 1000))
    return hist.percentile_ms(p)


def _phases(outcome: Outcome) -> dict[str, Any]:
    """Where each client's recovery went: server down, backoff waste, handshake, replay."""
    session = outcome.faults
    (injection,) = session.injections  # type: ignore[union-attr]
    # the restarted server answered HTTP; a server that never went down (a drain, a cut)
    # was up from the start
    restarts = injection.fault.kind is FaultKind.RESTART
    up = injection.ended_ns if restarts else injection.started_ns
    waste, handshake, replay, done = [], [], [], []
    for r in outcome.recoveries:
        if not r.resumed_ns:
            continue
        done.append(r.resumed_ns)
        if r.attempt_ns:  # from the later of: the server back, this client's loss
            waste.append(max(0, r.attempt_ns - max(up, r.lost_ns)) / 1e6)
            handshake.append((r.reconnected_ns - r.attempt_ns) / 1e6)
        replay.append((r.resumed_ns - r.reconnected_ns) / 1e6)
    done.sort()
    # the storm's throughput: clients resumed per second between 10 % and 90 % of them
    rate = None
    if len(done) >= 20:
        lo, hi = done[len(done) // 10], done[len(done) * 9 // 10]
        if hi > lo:
            rate = round(0.8 * len(done) / ((hi - lo) / 1e9))
    lost_ns = min((r.lost_ns for r in outcome.recoveries), default=injection.started_ns)
    return {
        "down_ms": round((up - lost_ns) / 1e6, 1) if restarts else None,
        "stop_s": injection.details.get("stop_s"),
        "start_s": injection.details.get("start_s"),
        "waste_ms_p50": _pct(waste, 50),
        "waste_ms_p99": _pct(waste, 99),
        "handshake_ms_p50": _pct(handshake, 50),
        "handshake_ms_p99": _pct(handshake, 99),
        "replay_ms_p50": _pct(replay, 50),
        "replay_ms_p99": _pct(replay, 99),
        "resumed_per_s": rate,
        "last_resumed_after_up_ms": round((done[-1] - up) / 1e6, 1) if done else None,
    }


async def _one_run(case: Case, cores: Cores, workdir: Path) -> dict[str, Any]:
    scenario = _scenario(case, cores, workdir)
    load_before = round(os.getloadavg()[0], 2)  # other work on the machine (tests)
    trace = CpuTrace()
    outcome = await run_scenario(scenario, log_dir=workdir, ontime_ms=100.0, observe=trace.follow)
    results = build_results(outcome, SLO())
    t = results.totals
    (fault,) = [f for f in results.run.faults if "spec" in f]
    phases = _phases(outcome)
    (injection,) = outcome.faults.injections  # type: ignore[union-attr]
    last = max((r.resumed_ns for r in outcome.recoveries), default=injection.ended_ns)
    # the server's CPU while clients come back: from the restarted server answering, or
    # from the fault's start for a server that stays up (a drain: its batches included)
    restarts = injection.fault.kind is FaultKind.RESTART
    busy_from = injection.ended_ns if restarts else injection.started_ns
    recovery = results.latency.get("recovery")
    reconnect = results.latency.get("reconnect")
    storm = fault.get("storm", {})
    rates = storm.get("handshakes_per_s", {})
    return {
        "clients": case.users,
        "fault": case.fault,
        "connections_lost": fault.get("connections_lost", 0),
        "recovered": fault.get("recovered", 0),
        "unrecovered": fault.get("unrecovered", 0),
        "reconnect_p50_ms": reconnect.p50 if reconnect else None,
        "reconnect_p99_ms": reconnect.p99 if reconnect else None,
        "recovery_p50_ms": recovery.p50 if recovery else None,
        "recovery_p99_ms": recovery.p99 if recovery else None,
        "recovery_max_ms": recovery.max if recovery else None,
        "attempts_per_loss": fault.get("attempts_per_loss"),
        "handshakes_peak_per_s": rates.get("peak"),
        "handshakes_mean_per_s": rates.get("mean"),
        "back_99_s": storm.get("resumed_99_s"),  # fault start -> 99 % back and whole
        "last_loss_s": storm.get("last_loss_s"),
        "flow_back_s": fault.get("flow_back_s"),
        "lost": t.lost,
        "duplicated": t.duplicated,  # sent twice by the server (before the clients' dedupe)
        "duplicated_after_dedupe": t.duplicated_after_dedupe,
        "resent": t.resent,
        "unacked": t.unacked,
        "drained": int(t.drained),  # 0: deliveries were still missing when the drain ended
        "server_cpu_during_recovery": trace.busy_share(busy_from, last),
        "generator_cpu_max": results.generator.cpu_percent_max,
        "generator_saturated": results.generator.saturated,
        "load_avg_before": load_before,
        **phases,
    }


def _median(runs: list[dict[str, Any]], key: str) -> Any:
    values = [r[key] for r in runs if isinstance(r.get(key), int | float)]
    if not values:
        return None
    median = statistics.median(values)
    return round(median, 1 if abs(median) >= 10 else 3)  # seconds keep their ms


def run_case(case: Case, runs: int, cores: Cores) -> dict[str, Any]:
    results = []
    with exclusive_machine(f"recovery {case.name}"):
        for index in range(runs):
            with tempfile.TemporaryDirectory(prefix="rtbench-recovery-") as tmp:
                print(f"[recovery] {case.name}: run {index + 1}/{runs}", file=sys.stderr)
                results.append(_run_loop(_one_run(case, cores, Path(tmp))))
    keys = [k for k in results[0] if k not in ("clients", "fault")]
    median = {k: _median(results, k) for k in keys}
    return {"case": case.name, "clients": case.users, "fault": case.fault, "runs": results,
            "median": median}  # fmt: skip


def _run_loop(coro: Any) -> Any:
    import uvloop

    return uvloop.run(coro)


def _fmt(value: Any, unit: str = "") -> str:
    if value is None:
        return "-"
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    text = f"{value:,}" if isinstance(value, int | float) else str(value)
    return f"{text}{unit}"


def render(cases: list[dict[str, Any]], cores: Cores, command: str, runs: int) -> str:
    lines = [
        "# Recovery after a server restart or drain",
        "",
        f"Generated by `{command}` ({time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}), "
        f"medians of {runs} run(s). Machine: {psutil.cpu_count()} cores; {cores.describe()}. "
        "Clients chat at 0.1 msg/s each in rooms of 10 (DMs, typing, receipts mixed in) "
        "against the reference server (SQLite store, picows); the fault (a restart, or a "
        f"drain in batches) comes at {FAULT_AT_S:g} s of load. Recovery = connection lost -> "
        "every room resumed with every missed message (docs/RECOVERY.md); 99 % back = the "
        "fault's start -> 99 % of its clients resumed with every missed message; handshakes "
        "per s = the clients' welcomes, busiest 100 ms and mean over the storm.",
        "",
        "| case | lost conns | recovered | reconnect p50 / p99 ms | recovery p50 / p99 / max ms "
        "| msgs lost / dup wire / dup after dedupe | server down ms "
        "| backoff waste p50 / p99 ms | handshake p50 / p99 ms "
        "| replay p50 / p99 ms | resumed per s | handshakes per s peak / mean "
        "| 99 % back s | attempts per loss | server CPU in recovery |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for case in cases:
        m = case["median"]
        lines.append(
            f"| {case['case']} | {_fmt(m['connections_lost'])} | {_fmt(m['recovered'])} | "
            f"{_fmt(m['reconnect_p50_ms'])} / {_fmt(m['reconnect_p99_ms'])} | "
            f"{_fmt(m['recovery_p50_ms'])} / {_fmt(m['recovery_p99_ms'])} / "
            f"{_fmt(m['recovery_max_ms'])} | {_fmt(m['lost'])} / {_fmt(m['duplicated'])} / "
            f"{_fmt(m.get('duplicated_after_dedupe'))} | "
            f"{_fmt(m['down_ms'])} | {_fmt(m['waste_ms_p50'])} / {_fmt(m['waste_ms_p99'])} | "
            f"{_fmt(m['handshake_ms_p50'])} / {_fmt(m['handshake_ms_p99'])} | "
            f"{_fmt(m['replay_ms_p50'])} / {_fmt(m['replay_ms_p99'])} | "
            f"{_fmt(m['resumed_per_s'])} | {_fmt(m['handshakes_peak_per_s'])} / "
            f"{_fmt(m['handshakes_mean_per_s'])} | {_fmt(m['back_99_s'])} | "
            f"{_fmt(m['attempts_per_loss'])} | {_fmt(m['server_cpu_during_recovery'])} |"
        )
    lines += ["", "Every run:", "", "```json", json.dumps(cases, indent=1), "```", ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--quick", action="store_true", help="the storm cases at 1,000 clients, once"
    )
    parser.add_argument(
        "--users", type=int, nargs="+", help="client counts (with --faults: every pair)"
    )
    parser.add_argument(
        "--faults", nargs="+", help="fault kinds without @TIME (restart:kill, drain:1000/100ms)"
    )
    parser.add_argument(
        "--server-args", default="", help='more `rtbench serve` flags, e.g. "--admit-rate 4000"'
    )
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--procs", type=int, default=0, help="generator processes")
    parser.add_argument("--workers", type=int, default=1, help="server worker processes")
    parser.add_argument(
        "--shared", action="store_true", help="pin nothing: server and generator share cores"
    )
    parser.add_argument(
        "--reconnect", nargs="*", default=[], help="ReconnectPolicy overrides, KEY=MS"
    )
    parser.add_argument("--out", type=Path, default=ROOT / "reports" / "runs" / "recovery.md")
    args = parser.parse_args(argv)
    if args.quick:
        args.runs = 1
    cores = Cores.detect()
    if not args.shared:
        cores.pin_self()  # this process and the generator workers it starts: the client core
    policy = {k: float(v) for k, _, v in (item.partition("=") for item in args.reconnect)}
    common: dict[str, Any] = {
        "procs": args.procs,
        "pinned": not args.shared,
        "workers": args.workers,
        "reconnect": policy,
    }
    if args.users or args.faults:  # a grid of its own
        plan = [
            Case(users, fault, server_args=args.server_args, **common)
            for users in args.users or [1000]
            for fault in args.faults or ["restart:kill"]
        ]
    elif args.quick:
        plan = storm_cases(1000, **common)
    else:
        plan = default_cases(**common)
    cases = [run_case(case, args.runs, cores) for case in plan]
    command = "python -m benchmarks.recovery " + " ".join(argv or sys.argv[1:])
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(render(cases, cores, command.strip(), args.runs))
    print(json.dumps({c["case"]: c["median"] for c in cases}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
