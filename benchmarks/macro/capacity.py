"""Capacity: idle connections held by one server process, and the server RSS each costs.

``rtbench run connect`` opens N connections (hello, then nothing but heartbeats) and
checks at the end that every one still answers a heartbeat round trip. Meanwhile the
suite samples the server's RSS from outside: (peak RSS while all N are held - RSS
before the run) / N is what one idle client costs the server. The same load goes to
the Node ``ws`` peer in the same run. The reference server runs with its defaults
(SQLite store, server heartbeats every 2 s), so it pays for its features.

Goals (issue 2): 10,000+ held on one worker, under 10 KB per idle connection.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from benchmarks.context import Context, Goal, Outcome, median, ratio
from benchmarks.procs import (
    LoadRun,
    PinnedServer,
    Sampler,
    commands_shown,
    on_each_server,
    rtbench_run,
)

NAME = "capacity"
TITLE = "Capacity: idle connections held, server RSS per connection"
GOAL_HELD = 10_000
GOAL_BYTES = 10 * 1024


def _load(ctx: Context) -> dict[str, Any]:
    if ctx.tiny:
        return {"users": 60, "ramp": 0.5, "duration": 1.0, "heartbeat": 1.0}
    if ctx.quick:
        return {"users": 1500, "ramp": 2.0, "duration": 3.0, "heartbeat": 3.0}
    return {"users": 15_000, "ramp": 12.0, "duration": 10.0, "heartbeat": 5.0}


def _one(ctx: Context, server: Any, load: dict[str, Any], keep: Path) -> dict[str, Any]:
    with Sampler(server) as sampler:
        time.sleep(1.0)  # let the freshly started server settle before the baseline
        before = server.rss()
        run: LoadRun = rtbench_run(
            ctx.cores, server.url, "connect",
            "--users", str(load["users"]), "--procs", "2", "--ramp", str(load["ramp"]),
            "--duration", str(load["duration"]), "--heartbeat", str(load["heartbeat"]),
            "--connect-timeout", "20",
            timeout_s=load["ramp"] + load["duration"] + 120, keep=keep,
        )  # fmt: skip
    totals = run.results["totals"]
    held = totals.get("connections_answering") or 0
    window = run.holding_window()
    peak = sampler.peak_rss_between(*window) if window else None
    cpu = sampler.cpu_between(*window) if window else None
    hold_s = (window[1] - window[0]) if window else None
    return {
        "command": run.shown_command(),
        "exit_code": run.exit_code,
        "aimed": load["users"],
        "held": held,
        "failed": totals.get("connections_failed", 0),
        "rss_before": before,
        "rss_peak": peak,
        "rss_per_conn": (peak - before) / held if peak and held else None,
        "idle_cpu_percent": 100 * cpu / hold_s if cpu is not None and hold_s else None,
        "generator_saturated": run.generator_saturated,
    }


def run(ctx: Context) -> Outcome:
    load = _load(ctx)
    out = Outcome(NAME, TITLE)

    def measure(server: PinnedServer, kind: str, n: int) -> dict[str, Any]:
        figures = _one(ctx, server, load, ctx.keep(NAME, kind, n))
        ctx.log(
            f"capacity run {n}/{ctx.runs} {kind}: {figures['held']:,} held, "
            f"{(figures['rss_per_conn'] or 0) / 1024:.1f} KB/conn"
        )
        return figures

    per_server = on_each_server(ctx.runs, ctx.cores, measure)
    out.runs = [r for rows in per_server.values() for r in rows]
    for kind, rows in per_server.items():
        out.summary[kind] = {
            key: median(r[key] for r in rows)
            for key in ("held", "rss_per_conn", "idle_cpu_percent", "rss_before")
        }
        out.summary[kind]["aimed"] = load["users"]
    ref, node = out.summary["reference"], out.summary["node"]
    out.summary["rss_ratio_vs_node"] = ratio(ref["rss_per_conn"], node["rss_per_conn"])
    out.commands = commands_shown(ctx.cores, {r["command"] for r in out.runs})
    held = ref["held"] or 0
    per_conn = ref["rss_per_conn"]
    decidable = load["users"] >= GOAL_HELD
    out.goals = [
        Goal(
            f"reference server holds {GOAL_HELD:,}+ idle connections on one worker",
            (held >= GOAL_HELD) if decidable else None,
            f"{held:,.0f} of {load['users']:,} held (median)",
            "" if decidable else f"this run aimed at {load['users']:,} only",
        ),
        Goal(
            "reference server RSS per idle connection < 10 KB",
            None if per_conn is None else per_conn < GOAL_BYTES,
            "-"
            if per_conn is None
            else f"{per_conn / 1024:.1f} KB (Node ws: {(node['rss_per_conn'] or 0) / 1024:.1f} KB)",
        ),
    ]
    if any(r["generator_saturated"] for r in out.runs):
        out.notes.append("the load generator reported saturation in at least one run")
    return out
