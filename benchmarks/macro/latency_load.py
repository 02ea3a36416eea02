"""Latency vs load: step the chat rate up until delivery p99 crosses 100 ms.

Chat in rooms of 10 (``rtbench run chat``, sends only, so the Node peer can take the
same load): every send is stored by the reference server (SQLite, group commit,
synchronous=FULL: its defaults) and acked only once durable, then broadcast to the 9
other members. Each step is one open-loop run at a higher rate against the same server;
a sweep stops at the first step whose p99 is over the limit. The crossing load is
interpolated between the last step under it and the first over it.

When the load generator saturates before the server crosses, the sweep stops there
too and says so: the server's limit is then beyond what one generator core measures.
"""

from __future__ import annotations

from typing import Any

from benchmarks.context import Context, Goal, Outcome, median
from benchmarks.procs import (
    Sampler,
    commands_shown,
    on_each_server,
    rtbench_run,
)

NAME = "latency_load"
TITLE = "Latency vs load: chat in rooms of 10, the load at which delivery p99 crosses 100 ms"
LIMIT_MS = 100.0
ROOM = 10


def _plan(ctx: Context) -> dict[str, Any]:
    if ctx.tiny:
        return {"users": 20, "rates": [1.0, 4.0], "duration": 1.0, "ramp": 0.5}
    if ctx.quick:
        return {"users": 200, "rates": [1.0, 5.0], "duration": 3.0, "ramp": 1.0}
    rates = [0.5, 1.0, 1.5, 1.75, 2.0, 2.5, 3.0, 4.0]  # x 1,000 users: messages per second
    return {"users": 1000, "rates": rates, "duration": 8.0, "ramp": 2.0}


def crossing(steps: list[dict[str, Any]]) -> float | None:
    """Messages/s at which p99 reaches the limit, interpolated between two steps."""
    below = None
    for step in steps:
        p99 = step["p99_ms"]
        if p99 is None:
            continue
        if p99 >= LIMIT_MS:
            if below is None:
                return step["msgs_per_s"]
            x0, y0 = below["msgs_per_s"], below["p99_ms"]
            x1, y1 = step["msgs_per_s"], p99
            return x0 + (LIMIT_MS - y0) * (x1 - x0) / (y1 - y0) if y1 > y0 else x1
        below = step
    return None


def _sweep(ctx: Context, server: Any, plan: dict[str, Any], tag: str) -> dict[str, Any]:
    steps: list[dict[str, Any]] = []
    stop = "every step stayed under the limit"
    with Sampler(server) as sampler:
        for rate in plan["rates"]:
            run = rtbench_run(
                ctx.cores, server.url, "chat",
                "--users", str(plan["users"]), "--room-size", str(ROOM), "--rate", f"{rate:g}",
                "--dm-share", "0", "--typing-share", "0", "--receipt-share", "0",
                "--ramp", f"{plan['ramp']:g}", "--duration", f"{plan['duration']:g}",
                "--drain", "3",
                timeout_s=plan["duration"] + 90, keep=ctx.keep(NAME, tag, f"rate{rate:g}"),
            )  # fmt: skip
            totals = run.results["totals"]
            delivery = run.results.get("latency", {}).get("delivery", {})
            window = run.sending_window()
            seconds = (window[1] - window[0]) if window else plan["duration"]
            cpu = sampler.cpu_between(window[0], window[1] + 1.0) if window else None
            step = {
                "rate_per_user": rate,
                # Sends span exactly --duration (the window's one-second buckets overhang it).
                "msgs_per_s": totals.get("sent", 0) / plan["duration"],
                "deliveries_per_s": totals.get("delivered", 0) / plan["duration"],
                "p50_ms": delivery.get("p50"),
                "p99_ms": delivery.get("p99"),
                "server_cpu_percent": 100 * cpu / (seconds + 1.0) if cpu is not None else None,
                "lost": totals.get("lost", 0),
                "errors": sum(totals.get("errors_by_code", {}).values()),
                "generator_saturated": run.generator_saturated,
                "command": run.shown_command(),
            }
            steps.append(step)
            ctx.log(
                f"latency_load {server.kind} {step['msgs_per_s']:,.0f} msgs/s: "
                f"p99 {step['p99_ms'] or 0:.1f} ms"
                + (" (generator saturated)" if step["generator_saturated"] else "")
            )
            if step["p99_ms"] is not None and step["p99_ms"] >= LIMIT_MS:
                stop = "p99 crossed the limit"
                break
            if step["generator_saturated"]:
                stop = "the load generator saturated"
                break
    crossed = crossing(steps)
    return {
        "steps": steps,
        "stopped": stop,
        "crossing_msgs_per_s": crossed if stop == "p99 crossed the limit" else None,
        "highest_under_limit": max(
            (s["msgs_per_s"] for s in steps if s["p99_ms"] is not None and s["p99_ms"] < LIMIT_MS),
            default=None,
        ),
    }


def _step_medians(runs: list[dict[str, Any]], rate: float) -> dict[str, Any]:
    """One step's figures across the runs that reached it (steps are the same loads)."""
    steps = [s for r in runs for s in r["steps"] if s["rate_per_user"] == rate]
    out: dict[str, Any] = {"rate_per_user": rate, "runs": len(steps)}
    for key in ("msgs_per_s", "p50_ms", "p99_ms", "server_cpu_percent"):
        out[key] = median(s[key] for s in steps)
    out["generator_saturated"] = sum(s["generator_saturated"] for s in steps)
    return out


def run(ctx: Context) -> Outcome:
    plan = _plan(ctx)
    out = Outcome(NAME, TITLE)
    sweeps = on_each_server(
        ctx.runs, ctx.cores, lambda server, kind, n: _sweep(ctx, server, plan, f"{kind}-{n}")
    )
    out.runs = [r for runs in sweeps.values() for r in runs]
    for kind, runs in sweeps.items():
        crossed = [r["crossing_msgs_per_s"] for r in runs]
        out.summary[kind] = {
            "crossing_msgs_per_s": median(crossed) if all(c is not None for c in crossed) else None,
            "highest_under_limit_msgs_per_s": median(r["highest_under_limit"] for r in runs),
            "stopped": sorted({r["stopped"] for r in runs}),
            "curve": [
                _step_medians(runs, rate)
                for rate in plan["rates"]
                if any(s["rate_per_user"] == rate for r in runs for s in r["steps"])
            ],
        }
    out.summary["users"] = plan["users"]
    out.summary["room_size"] = ROOM
    out.commands = commands_shown(ctx.cores, {s["command"] for r in out.runs for s in r["steps"]})
    ref = out.summary["reference"]
    crossed = ref["crossing_msgs_per_s"]
    under = ref["highest_under_limit_msgs_per_s"]
    out.goals.append(
        Goal(
            f"delivery p99 < {LIMIT_MS:g} ms under chat load (rooms of {ROOM})",
            None,
            f"crosses at {crossed:,.0f} msgs/s"
            if crossed
            else f"under the limit up to {under or 0:,.0f} msgs/s",
            "; ".join(ref["stopped"]),
        )
    )
    return out
