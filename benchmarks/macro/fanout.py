"""Fan-out: room broadcast deliveries per server CPU-second, with delivery p50/p99.

``rtbench run fanout`` puts subscribers in rooms (of 100 and of 1,000) with one
publisher each, publishing events open-loop (Poisson) at a rate chosen so both room
sizes offer the same deliveries per second. The reference server and the Node ``ws``
peer get the identical load in the same run. The server's CPU time is sampled from
outside over the seconds in which the run sent, so the headline figure (deliveries
per server CPU-second) is the server's efficiency whether or not it was saturated,
and the ratio against Node compares cores, not whole machines.

Goal (issue 2): at least 1.2x Node ``ws`` per core, at delivery p99 < 100 ms.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from benchmarks.context import Context, Goal, Outcome, median, ratio
from benchmarks.procs import (
    PinnedServer,
    Sampler,
    commands_shown,
    on_each_server,
    rtbench_run,
)

NAME = "fanout"
TITLE = "Fan-out: deliveries per server CPU-second, rooms of 100 and 1,000"
GOAL_RATIO = 1.2
P99_LIMIT_MS = 100.0


def _cases(ctx: Context) -> list[dict[str, Any]]:
    """(room size, rooms, rate per publisher): equal offered deliveries per second."""
    if ctx.tiny:
        return [
            # Poisson: 20 publishes expected per room, so none sent is a 1 in 5e8 event
            {"room": 100, "users": 100, "rate": 10.0, "duration": 2.0, "ramp": 0.5},
            {"room": 1000, "users": 1000, "rate": 10.0, "duration": 2.0, "ramp": 1.0},
        ]
    if ctx.quick:
        return [
            {"room": 100, "users": 300, "rate": 10.0, "duration": 3.0},
            {"room": 1000, "users": 1000, "rate": 3.0, "duration": 3.0},
        ]
    deliveries = 15_000  # offered per second: well within one generator core (p99 is its own)
    return [
        {"room": 100, "users": 1000, "rate": deliveries / 1000, "duration": 10.0},
        {"room": 1000, "users": 1000, "rate": deliveries / 1000, "duration": 10.0},
    ]


def _one(ctx: Context, server: Any, case: dict[str, Any], keep: Path) -> dict[str, Any]:
    with Sampler(server) as sampler:
        run = rtbench_run(
            ctx.cores, server.url, "fanout",
            "--users", str(case["users"]), "--room-size", str(case["room"]),
            "--publishers", "1", "--rate", f"{case['rate']:g}",
            "--ramp", f"{case.get('ramp', 3.0):g}", "--duration", f"{case['duration']:g}",
            "--drain", "3",
            timeout_s=case["duration"] + 90, keep=keep,
        )  # fmt: skip
    totals = run.results["totals"]
    delivery = run.results.get("latency", {}).get("delivery", {})
    window = run.sending_window()
    cpu = None
    seconds = None
    if window:
        # Deliveries trail the last send: count the server's CPU one second past it.
        cpu = sampler.cpu_between(window[0], window[1] + 1.0)
        seconds = window[1] - window[0]
    delivered = totals.get("delivered", 0)
    return {
        "command": run.shown_command(),
        "exit_code": run.exit_code,
        "sent": totals.get("sent", 0),
        "delivered": delivered,
        "lost": totals.get("lost", 0),
        # The engine sends for exactly --duration seconds (the window's buckets overhang it).
        "deliveries_per_s": delivered / case["duration"],
        "server_cpu_s": cpu,
        "server_cpu_percent": 100 * cpu / (seconds + 1.0) if cpu is not None and seconds else None,
        "per_cpu_s": delivered / cpu if cpu else None,
        "p50_ms": delivery.get("p50"),
        "p99_ms": delivery.get("p99"),
        "p999_ms": delivery.get("p999"),
        "hdr": delivery.get("hdr"),
        "generator_saturated": run.generator_saturated,
        "generator_cpu_mean": run.results.get("generator", {}).get("cpu_percent_mean"),
    }


def run(ctx: Context) -> Outcome:
    out = Outcome(NAME, TITLE)
    for case in _cases(ctx):
        room = case["room"]

        def measure(server: PinnedServer, kind: str, n: int, case: dict[str, Any] = case) -> dict:
            figures = _one(ctx, server, case, ctx.keep(NAME, case["room"], kind, n))
            figures["room"] = case["room"]
            ctx.log(
                f"fanout room {case['room']} run {n}/{ctx.runs} {kind}: "
                f"{figures['per_cpu_s'] or 0:,.0f} deliveries/CPU-s, "
                f"p99 {figures['p99_ms'] or 0:.1f} ms"
            )
            return figures

        rows = on_each_server(ctx.runs, ctx.cores, measure)
        out.runs += [r for runs in rows.values() for r in runs]
        summary: dict[str, Any] = {
            # rooms x rate x room size: every publish reaches the room's other members
            "offered_deliveries_per_s": case["users"] * case["rate"],
        }
        for kind, runs in rows.items():
            summary[kind] = {
                key: median(r[key] for r in runs)
                for key in (
                    "deliveries_per_s",
                    "per_cpu_s",
                    "server_cpu_percent",
                    "p50_ms",
                    "p99_ms",
                )
            }
            summary[kind]["lost"] = sum(r["lost"] for r in runs)
            summary[kind]["saturated_runs"] = sum(r["generator_saturated"] for r in runs)
        summary["ratio_per_cpu_s"] = ratio(
            summary["reference"]["per_cpu_s"], summary["node"]["per_cpu_s"]
        )
        out.summary[f"room_{room}"] = summary
        ref_p99 = summary["reference"]["p99_ms"]
        factor = summary["ratio_per_cpu_s"]
        met = None
        if factor is not None and ref_p99 is not None:
            met = factor >= GOAL_RATIO and ref_p99 < P99_LIMIT_MS
        out.goals.append(
            Goal(
                f"room of {room:,}: >= {GOAL_RATIO}x Node ws deliveries per server CPU-second "
                f"at p99 < {P99_LIMIT_MS:g} ms",
                met,
                "-"
                if factor is None
                else f"{factor:.2f}x at p99 {ref_p99:.1f} ms "
                f"(Node p99 {summary['node']['p99_ms'] or 0:.1f} ms)",
            )
        )
    out.commands = commands_shown(ctx.cores, {r["command"] for r in out.runs})
    saturated = sum(r["generator_saturated"] for r in out.runs)
    if saturated:
        out.notes.append(
            f"the load generator reported saturation in {saturated} of {len(out.runs)} runs: "
            "their latencies include the generator's own delay"
        )
    return out
