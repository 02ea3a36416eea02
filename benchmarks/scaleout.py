"""Scale-out benchmark (issue 7): 1 worker vs 2 workers, and the most connections one box holds.

    .venv/bin/python -m benchmarks.scaleout connections   # held, RSS per connection
    .venv/bin/python -m benchmarks.scaleout fanout        # deliveries/s and p99, live + stored
    .venv/bin/python -m benchmarks.scaleout max           # 50,000 with every trick
    .venv/bin/python -m benchmarks.scaleout render        # reports/scaleout.md again
    .venv/bin/python -m benchmarks.scaleout suite --out F # connections + fanout, into F
                                                          # (what ``rtbench bench`` runs)

Setups: the embedded default (1 worker, SQLite, no broker), and Redis + PostgreSQL with 1
and with 2 workers (the machine's own services, a schema and key prefix of the run's own).
Each measurement holds the machine lock (``benchmarks.lock``) for itself only, so no load
overlaps another and the lock is never held for long; repetitions alternate between the
setups, and the report shows medians of ``--runs`` (3). Nothing is pinned: the client and
every worker share this machine's two cores, which the report says. Figures go to
``reports/scaleout.json`` (every run, raw) and ``reports/scaleout.md``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import re
import secrets
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psutil

from benchmarks.kit import median_present
from benchmarks.lock import exclusive_machine
from benchmarks.procs import Cores, PinnedServer, Sampler, rtbench_run, workdir

ROOT = Path(__file__).resolve().parent.parent
JSON_OUT = ROOT / "reports" / "scaleout.json"
MD_OUT = ROOT / "reports" / "scaleout.md"
RUNS_LOG = ROOT / "reports" / "runs" / "scaleout-runs.jsonl"
REDIS = "redis://127.0.0.1:6379/0"
POSTGRES = "postgresql://postgres@127.0.0.1:5432/test"
UNPINNED = Cores(server=None, client=None)

SETUPS: dict[str, dict[str, Any]] = {
    "1 worker, embedded": {"workers": 1, "cluster": False},
    "1 worker, Redis + PostgreSQL": {"workers": 1, "cluster": True},
    "2 workers, Redis + PostgreSQL": {"workers": 2, "cluster": True},
}
CAPACITY_HEARTBEAT = {"heartbeat_interval_ms": 20000, "heartbeat_timeout_ms": 20000}
QUICK = {"on": False}  # --quick: a small, short version of every load (checks the script)


def _scaled(value: int) -> int:
    return max(20, value // 20) if QUICK["on"] else value


# ---------------------------------------------------------------------- the server under test


class ClusterServer(PinnedServer):
    """``rtbench serve`` with its workers: CPU and RSS summed over the process tree."""

    kind = "reference server"

    def __init__(self, command: list[str], cwd: Path) -> None:
        super().__init__(command, cwd, UNPINNED, {})
        self._tree: list[psutil.Process] = []

    def processes(self) -> list[psutil.Process]:
        if len(self._tree) < 2 or not all(p.is_running() for p in self._tree):
            self._tree = [self.ps, *self.ps.children(recursive=True)]
        return self._tree

    def cpu_seconds(self) -> float:
        total = 0.0
        for proc in self.processes():
            with contextlib.suppress(psutil.Error):
                times = proc.cpu_times()
                total += times.user + times.system
        return total

    def rss(self) -> int:
        total = 0
        for proc in self.processes():
            with contextlib.suppress(psutil.Error):
                total += proc.memory_info().rss
        return total


def shown(setup: str, extra: dict[str, dict[str, Any]] | None = None) -> str:
    """How a person starts this setup (for the report)."""
    spec = SETUPS[setup]
    parts = ["rtbench serve --port $PORT --insecure-dev"]
    if spec["cluster"]:
        parts.append(f"--store '{POSTGRES}?search_path=bench' --broker {REDIS}")
        if spec["workers"] > 1:
            parts.append(f"--workers {spec['workers']}")
    else:
        parts.append("--store sqlite:///bench.db")
    if extra:
        parts.append("--config bench.toml")
    return " ".join(parts)


@contextlib.contextmanager
def started(
    setup: str, workers: int | None = None, config: dict[str, dict[str, Any]] | None = None
) -> Iterator[ClusterServer]:
    """Start one setup in a scratch folder, with a PostgreSQL schema and Redis prefix of its own."""
    spec = SETUPS[setup]
    count = workers or spec["workers"]
    tag = f"bench_{secrets.token_hex(4)}"
    with workdir("rtbench-scaleout-") as tmp:
        sections = {k: dict(v) for k, v in (config or {}).items()}
        command = ["serve", "--port", "0", "--insecure-dev"]
        if spec["cluster"] or count > 1:
            sections.setdefault("cluster", {})["prefix"] = tag
            command += ["--store", f"{POSTGRES}?search_path={tag}", "--broker", REDIS]
            if count > 1:
                command += ["--workers", str(count)]
        else:
            command += ["--store", f"sqlite:///{tmp / 'bench.db'}"]
        if sections:
            (tmp / "bench.toml").write_text(_toml(sections))
            command += ["--config", str(tmp / "bench.toml")]
        rtbench = [sys.executable, "-c", "from rtbench.entry import run; run()"]
        server = ClusterServer([*rtbench, *command], tmp)
        try:
            yield server
        finally:
            server.stop()
            if spec["cluster"] or count > 1:
                asyncio.run(_drop_schema(tag))


def _toml(sections: dict[str, dict[str, Any]]) -> str:
    lines: list[str] = []
    for name, values in sections.items():
        lines.append(f"[{name}]")
        lines += [f"{k} = {json.dumps(v)}" for k, v in values.items()]
    return "\n".join(lines) + "\n"


async def _drop_schema(schema: str) -> None:
    import asyncpg
    import redis.asyncio as aioredis

    conn = await asyncpg.connect(POSTGRES)
    try:
        await conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
    finally:
        await conn.close()
    client = aioredis.Redis.from_url(REDIS)
    try:
        keys = [k async for k in client.scan_iter(match=f"{schema}:*", count=1000)]
        if keys:
            await client.delete(*keys)
    finally:
        await client.aclose()


# ---------------------------------------------------------------------- measurements


def measure_connections(
    setup: str, users: int, procs: int, workers: int | None = None, tricks: bool = False
) -> dict[str, Any]:
    """``rtbench run connect``: ramp to ``users``, hold, every connection probed."""
    users = _scaled(users)
    ramp = max(5.0, users / 1000) if not QUICK["on"] else 1.0
    config = {"timing": CAPACITY_HEARTBEAT} if tricks else None
    with started(setup, workers, config) as server, Sampler(server) as sampler:
        time.sleep(1.5)
        before = server.rss()
        run = rtbench_run(
            UNPINNED, server.url, "connect",
            "--users", str(users), "--procs", str(procs), "--ramp", str(ramp),
            "--duration", "3" if QUICK["on"] else "15", "--heartbeat", "5",
            "--connect-timeout", "30", timeout_s=ramp + 15 + 180,
        )  # fmt: skip
    totals = run.results["totals"]
    held = totals.get("connections_answering") or 0
    window = run.holding_window()
    peak = sampler.peak_rss_between(*window) if window else None
    cpu = sampler.cpu_between(*window) if window else None
    hold_s = window[1] - window[0] if window else None
    handshake = run.results.get("latency", {}).get("handshake", {})
    return {
        "command": run.shown_command(),
        "exit_code": run.exit_code,
        "aimed": users,
        "held": held,
        "failed": totals.get("connections_failed", 0),
        "failures": totals.get("failures_by_cause", {}),
        "rss_before": before,
        "rss_peak": peak,
        "rss_per_conn": (peak - before) / held if peak and held else None,
        "hold_cpu_percent": 100 * cpu / hold_s if cpu is not None and hold_s else None,
        "handshake_p99_ms": _ms(handshake.get("p99")),
        "generator_saturated": run.generator_saturated,
    }


def measure_fanout(setup: str, kind: str) -> dict[str, Any]:
    """Live events (``fanout``) or stored messages (``chat`` in big rooms), fixed offered load."""
    if kind == "live":
        subs = str(_scaled(4000))
        args = ["--users", subs, "--room-size", subs, "--publishers", "1", "--rate", "10"]
        scenario = "fanout"
    else:
        users, room = str(_scaled(2000)), str(_scaled(500))
        args = ["--users", users, "--room-size", room, "--rate", "0.05", "--dm-share", "0"]
        args += ["--typing-share", "0", "--receipt-share", "0"]
        scenario = "chat"
    with started(setup) as server, Sampler(server) as sampler:
        time.sleep(1.5)
        run = rtbench_run(
            UNPINNED, server.url, scenario, *args, "--procs", "2",
            "--ramp", "2" if QUICK["on"] else "8", "--duration", "3" if QUICK["on"] else "20",
            "--drain", "5", "--connect-timeout", "30", timeout_s=300,
        )  # fmt: skip
    totals = run.results["totals"]
    window = run.sending_window()
    seconds = window[1] - window[0] if window else None
    cpu = sampler.cpu_between(*window) if window else None
    delivery = run.results.get("latency", {}).get("delivery", {})
    delivered = totals.get("delivered", 0)
    return {
        "command": run.shown_command(),
        "exit_code": run.exit_code,
        "sent": totals.get("sent", 0),
        "expected": totals.get("expected_deliveries", 0),
        "delivered": delivered,
        "lost": totals.get("lost", 0),
        "duplicated": totals.get("duplicated", 0),
        "out_of_order": totals.get("out_of_order", 0),
        "deliveries_per_s": delivered / seconds if seconds else None,
        "server_cpu_percent": 100 * cpu / seconds if cpu is not None and seconds else None,
        "deliveries_per_server_cpu_s": delivered / cpu if cpu else None,
        "p50_ms": _ms(delivery.get("p50")),
        "p99_ms": _ms(delivery.get("p99")),
        "p999_ms": _ms(delivery.get("p999")),
        "generator_saturated": run.generator_saturated,
    }


def _ms(value: float | None) -> float | None:
    """results.json latencies are already in milliseconds (docs/RESULTS.md)."""
    return value


# ---------------------------------------------------------------------- parts


def part_connections(runs: int) -> dict[str, Any]:
    aims = {"1 worker, embedded": 18_000, "1 worker, Redis + PostgreSQL": 18_000}
    out: dict[str, list[dict[str, Any]]] = {s: [] for s in SETUPS}
    for n in range(runs):
        for setup in SETUPS:
            users = aims.get(setup, 30_000)
            with exclusive_machine(f"scaleout connections {setup}"):
                figures = measure_connections(setup, users, procs=2)
            figures["run"] = n + 1
            _log(f"connections {setup} #{n + 1}: {figures['held']:,} held")
            out[setup].append(figures)
            _keep_run("connections", setup, figures)
    return {"runs": out, "shown": {s: shown(s) for s in SETUPS}}


def part_fanout(runs: int) -> dict[str, Any]:
    out: dict[str, dict[str, list[dict[str, Any]]]] = {"live": {}, "stored": {}}
    for n in range(runs):
        for kind in ("live", "stored"):
            for setup in SETUPS:
                with exclusive_machine(f"scaleout fanout {kind} {setup}"):
                    figures = measure_fanout(setup, kind)
                figures["run"] = n + 1
                _log(f"fanout {kind} {setup} #{n + 1}: {figures['deliveries_per_s'] or 0:,.0f}/s")
                out[kind].setdefault(setup, []).append(figures)
                _keep_run(f"fanout {kind}", setup, figures)
    return {"runs": out, "shown": {s: shown(s) for s in SETUPS}}


def part_max(runs: int, users: int, workers: int, procs: int) -> dict[str, Any]:
    setup = "2 workers, Redis + PostgreSQL"
    results = []
    for n in range(runs):
        with exclusive_machine("scaleout max"):
            figures = measure_connections(setup, users, procs, workers=workers, tricks=True)
        figures["run"] = n + 1
        _log(f"max #{n + 1}: {figures['held']:,} of {users:,} held")
        results.append(figures)
        _keep_run("max", f"{workers} workers", figures)
    command = shown(setup, {"timing": CAPACITY_HEARTBEAT}).replace(
        "--workers 2", f"--workers {workers}"
    )
    return {"runs": results, "users": users, "workers": workers, "procs": procs, "shown": command}


# ---------------------------------------------------------------------- report


def _rates(row: dict[str, Any]) -> dict[str, Any]:
    """Deliveries/s over the run's ``--duration`` (the per-second buckets overhang the sending
    time, so dividing by them overstates the rate ~10 %, as reports/BENCHMARKS.md found), and
    per server CPU-second from that rate and the CPU share measured while sending."""
    match = re.search(r"--duration (\S+)", row["command"])
    seconds = float(match.group(1)) if match else None
    rate = row["delivered"] / seconds if seconds else None
    cpu = row.get("server_cpu_percent")
    per_cpu = rate / (cpu / 100) if rate is not None and cpu else None
    return {**row, "rate": rate, "per_cpu": per_cpu}


def _attempts(value: Any) -> list[dict[str, Any]]:
    """The ``max`` attempts (an early version of the file kept a single one)."""
    if not value:
        return []
    return [value] if isinstance(value, dict) else list(value)


def _attempt_key(attempt: dict[str, Any]) -> tuple[int, int, int]:
    return attempt["users"], attempt["workers"], attempt.get("procs", 3)


def _saturated(rows: list[dict[str, Any]]) -> str:
    """How many runs' generator said it was saturated (their latencies are suspect)."""
    return f"{sum(1 for r in rows if r.get('generator_saturated'))} of {len(rows)}"


def _header(*names: str) -> list[str]:
    return ["| " + " | ".join(names) + " |", "|" + "---|" * len(names)]


def _fmt(value: float | None, spec: str = ",.0f", unit: str = "") -> str:
    return "n/a" if value is None else f"{value:{spec}}{unit}"


def render(data: dict[str, Any], raw: str = "reports/scaleout.json") -> str:
    env = data.get("environment", {})
    lines = [
        "# Scale-out: workers, Redis and PostgreSQL (issue 7)",
        "",
        f"Measured {env.get('date', '?')} on {env.get('machine', '?')}. "
        "Every figure is the median of the runs shown; every run is in "
        f"`{raw}`. **Nothing is pinned: the load generator and every server "
        "worker share this machine's two cores**, so these are the figures of one box loading "
        "itself, not of the server alone. Redis and PostgreSQL are the machine's own services "
        "(a fresh schema and key prefix per run); the embedded setup is SQLite with `synchronous "
        "= full`. Reproduce with `.venv/bin/python -m benchmarks.scaleout connections|fanout|max` "
        "(each measurement takes the machine lock for itself).",
        "",
    ]
    conn = data.get("connections")
    if conn:
        lines += [
            "## Connections held, and server RSS per connection",
            "",
            "`rtbench run connect`: ramp at ~1,000 connections/s, hold 15 s, every connection "
            "answering a heartbeat probe at the end. One process may hold at most 20,000 open "
            "files here, so one worker is asked for 18,000 and two workers for 30,000. RSS is "
            "the whole server (supervisor and workers), sampled from outside.",
            "",
            *_header(
                "setup", "asked", "held (median)", "failed", "server RSS / connection",
                "server CPU while holding", "handshake p99", "generator saturated", "runs",
            ),
        ]  # fmt: skip
        for setup, rows in conn["runs"].items():
            lines.append(
                f"| {setup} | {rows[0]['aimed']:,} | {_fmt(median_present(rows, 'held'))} | "
                f"{_fmt(median_present(rows, 'failed'))} | "
                f"{_fmt(median_present(rows, 'rss_per_conn'), ',.0f', ' B')} | "
                f"{_fmt(median_present(rows, 'hold_cpu_percent'), '.0f', ' %')} | "
                f"{_fmt(median_present(rows, 'handshake_p99_ms'), '.1f', ' ms')} | "
                f"{_saturated(rows)} | {len(rows)} |"
            )
        lines += ["", "Commands (server, then load):", "", "```"]
        for setup, rows in conn["runs"].items():
            lines += [conn["shown"][setup], rows[0]["command"]]
        lines += ["```", ""]
    fan = data.get("fanout")
    if fan:
        lines += [
            "## Fan-out: deliveries per second and delivery latency",
            "",
            "Same offered load on every setup. *Live*: `rtbench run fanout`, one room of 4,000 "
            "subscribers, one publisher at 10 events/s (events not stored: 40,000 deliveries/s "
            "offered). *Stored*: `rtbench run chat`, 2,000 users in rooms of 500, each sending "
            "0.05 msg/s (100 messages/s, each stored in the setup's store before it is "
            "delivered: ~50,000 deliveries/s offered). Latency is from the scheduled send to "
            "each recipient (open loop). With 2 workers the subscribers are split between them "
            "by the kernel, and every message crosses Redis to reach the other half. "
            "Deliveries/s: every delivery counted, over the run's `--duration`. Server CPU: all "
            "server processes while sending, in % of one core (two workers can pass 100 %).",
            "",
            *_header(
                "load", "setup", "deliveries/s", "delivery p50", "p99", "p99.9",
                "lost / dup / out of order", "server CPU", "deliveries per server CPU-s",
                "generator saturated",
            ),
        ]  # fmt: skip
        for kind, by_setup in fan["runs"].items():
            for setup, rows in by_setup.items():
                rows = [_rates(r) for r in rows]
                bad = "/".join(
                    _fmt(median_present(rows, k)) for k in ("lost", "duplicated", "out_of_order")
                )
                lines.append(
                    f"| {kind} | {setup} | {_fmt(median_present(rows, 'rate'))} | "
                    f"{_fmt(median_present(rows, 'p50_ms'), '.2f', ' ms')} | "
                    f"{_fmt(median_present(rows, 'p99_ms'), '.2f', ' ms')} | "
                    f"{_fmt(median_present(rows, 'p999_ms'), '.2f', ' ms')} | {bad} | "
                    f"{_fmt(median_present(rows, 'server_cpu_percent'), '.0f', ' %')} | "
                    f"{_fmt(median_present(rows, 'per_cpu'))} | "
                    f"{_saturated(rows)} |"
                )
        lines += ["", "Commands (server, then load):", "", "```"]
        lines += list(fan["shown"].values())
        for by_setup in fan["runs"].values():
            lines.append(next(iter(by_setup.values()))[0]["command"])
        lines += ["```", ""]
    attempts = _attempts(data.get("max"))
    if attempts:
        lines += [
            "## The most connections on this box",
            "",
            "Redis + PostgreSQL, with every trick of docs/SCALING.md (\"Holding the most "
            "connections on one machine\"): server heartbeats every 20 s (`bench.toml`: "
            f"`[timing] heartbeat_interval_ms = {CAPACITY_HEARTBEAT['heartbeat_interval_ms']}`, "
            f"`heartbeat_timeout_ms = {CAPACITY_HEARTBEAT['heartbeat_timeout_ms']}`), one worker "
            "per < 19,000 connections, the client spread over processes (each < 19,000 "
            "sockets) and, past 25,000 connections, over source addresses 127.0.0.2, "
            "127.0.0.3, ...; every connection must still answer the client's heartbeat probe.",
            "",
            *_header(
                "asked", "workers", "client procs", "held (median)", "failed",
                "server RSS / connection", "server RSS at peak", "server CPU while holding",
                "handshake p99", "generator saturated", "runs",
            ),
        ]  # fmt: skip
        for top in attempts:
            rows = top["runs"]
            lines.append(
                f"| {rows[0].get('aimed', top['users']):,} | {top['workers']} | "
                f"{top.get('procs', 3)} | "
                f"{_fmt(median_present(rows, 'held'))} | {_fmt(median_present(rows, 'failed'))} | "
                f"{_fmt(median_present(rows, 'rss_per_conn'), ',.0f', ' B')} | "
                f"{_fmt((median_present(rows, 'rss_peak') or 0) / 2**20, ',.0f', ' MiB')} | "
                f"{_fmt(median_present(rows, 'hold_cpu_percent'), '.0f', ' %')} | "
                f"{_fmt(median_present(rows, 'handshake_p99_ms'), '.1f', ' ms')} | "
                f"{_saturated(rows)} | {len(rows)} |"
            )
        lines += ["", "```"]
        for top in attempts:
            lines += [top["shown"], top["runs"][0]["command"]]
        lines += ["```", ""]
    notes = data.get("notes")
    if notes:  # written by a person after reading the figures (reports/scaleout.json)
        lines += ["## Reading the figures", ""]
        for note in notes:
            lines += [note, ""]
    return "\n".join(lines)


def _environment() -> dict[str, Any]:
    import platform

    return {
        "date": time.strftime("%Y-%m-%d"),
        "machine": f"{psutil.cpu_count()} cores, {psutil.virtual_memory().total / 2**30:.0f} "
        f"GiB, Python {platform.python_version()}",
    }


def _keep_run(part: str, setup: str, figures: dict[str, Any]) -> None:
    """Every finished run, at once, to reports/runs/ (not committed): an interrupted part
    loses no measurement, only its summary."""
    if QUICK["on"]:
        return
    RUNS_LOG.parent.mkdir(parents=True, exist_ok=True)
    with RUNS_LOG.open("a") as handle:
        handle.write(json.dumps({"part": part, "setup": setup, **figures}) + "\n")


def _log(message: str) -> None:
    print(f"[scaleout] {message}", file=sys.stderr, flush=True)


def _suite(runs: int, out: Path | None) -> int:
    """``rtbench bench``'s part: connections and fan-out (not ``max``, a log of attempts
    at the most one box holds), reported into the suite's folder; the committed
    reports/scaleout.* are written only by the parts run on their own."""
    data = {
        "connections": part_connections(runs),
        "fanout": part_fanout(runs),
        "environment": _environment(),
    }
    if out is None:
        print(render(data))
        return 0
    out.write_text(render(data, raw=out.with_suffix(".json").name))
    out.with_suffix(".json").write_text(json.dumps(data, indent=1) + "\n")
    print(f"wrote {out}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("part", choices=["connections", "fanout", "max", "render", "suite"])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--users", type=int, default=50_000, help="max: connections to ask for")
    parser.add_argument("--workers", type=int, default=3, help="max: server workers")
    parser.add_argument("--procs", type=int, default=3, help="max: load generator processes")
    parser.add_argument("--quick", action="store_true", help="tiny loads; writes nothing")
    parser.add_argument(
        "--out",
        type=Path,
        help="suite: write the report here (its figures beside it, .json) instead of "
        "reports/scaleout.*",
    )
    args = parser.parse_args(argv)
    QUICK["on"] = args.quick
    if args.part == "suite":
        return _suite(args.runs, args.out)
    parts: dict[str, Callable[[], dict[str, Any]]] = {
        "connections": lambda: part_connections(args.runs),
        "fanout": lambda: part_fanout(args.runs),
        "max": lambda: part_max(args.runs, args.users, args.workers, args.procs),
    }
    if args.quick:
        result = parts[args.part]() if args.part != "render" else {}
        print(render({args.part: result, "environment": _environment()}))
        return 0
    if args.part == "render":
        data = json.loads(JSON_OUT.read_text()) if JSON_OUT.exists() else {}
    else:
        result = parts[args.part]()
        data = json.loads(JSON_OUT.read_text()) if JSON_OUT.exists() else {}  # read it now:
        # another part may have finished meanwhile
        if args.part == "max":  # attempts accumulate, one per (users, workers, procs)
            key = (result["users"], result["workers"], result["procs"])
            kept = [a for a in _attempts(data.get("max")) if _attempt_key(a) != key]
            result = sorted([*kept, result], key=_attempt_key)
        data[args.part] = result
        data["environment"] = _environment()
        JSON_OUT.write_text(json.dumps(data, indent=1) + "\n")
    MD_OUT.write_text(render(data))
    print(f"wrote {MD_OUT.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
