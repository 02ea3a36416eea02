"""The default ``rtbench check`` of the reference server: each verdict's figure and the
wall time, medians of several runs.

The check is the one a user runs (``rtbench check --server-cmd ...`` with the root
``slo.toml``): 10,000 connections held, chat on them, a SIGTERM restart a third of the
way in, an uptime probe every second. The server (started and restarted by the check)
is pinned to core 0, the check and its generator processes to core 1, so neither steals
the other's core; the store is SQLite in a temporary folder, fresh each run.

    .venv/bin/python -m benchmarks.check                 # 3 runs of the default check
    .venv/bin/python -m benchmarks.check --runs 1 --connections 2000 --duration 30

Writes reports/check.md (and prints JSON last). Takes the machine lock.
"""

from __future__ import annotations

import argparse
import json
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks.kit import median_present
from benchmarks.lock import exclusive_machine
from rtbench.results import read_results

ROOT = Path(__file__).resolve().parents[1]
REPORT = ROOT / "reports" / "check.md"
SERVER_CORE, CHECK_CORE = "0", "1"


def one_check(run: int, extra: list[str]) -> dict[str, Any]:
    """Run one check; its verdicts' figures, the fault's and the wall time."""
    with tempfile.TemporaryDirectory(prefix="rtbench-check-bench-") as tmp:
        server = (
            f"taskset -c {SERVER_CORE} {shlex.quote(sys.executable)} -m reference_server "
            f"--port {{port}} --insecure-dev --store sqlite:///{tmp}/chat.db"
        )
        out = Path(tmp) / "out"
        command = ["taskset", "-c", CHECK_CORE, sys.executable, "-c"]
        command += ["from rtbench.entry import run; run()", "check", "--server-cmd", server]
        command += ["--slo", str(ROOT / "slo.toml"), "--out", str(out), "--quiet", *extra]
        began = time.monotonic()
        done = subprocess.run(command, capture_output=True, text=True, check=False)
        wall = time.monotonic() - began
        if not (out / "results.json").exists():
            raise SystemExit(f"check {run} wrote no results: {done.stderr[-2000:]}")
        results = read_results(out / "results.json")
    by = {v.target.value: v for v in results.verdicts}
    fault = next((f for f in results.run.faults if "connections_lost" in f), {})
    t = results.totals
    return {
        "run": run,
        "exit_code": done.returncode,
        "wall_s": round(wall, 1),
        "uptime_percent": by["uptime"].measured,
        "uptime": by["uptime"].status.value,
        "probes": len(results.probes),
        "bad_probes": sum(1 for p in results.probes if not p.ok),
        "delivery_p99_ms": by["delivery_latency"].measured,
        "delivery": by["delivery_latency"].status.value,
        "delivery_p50_ms": results.latency["delivery"].p50,
        "connections_held": by["connections"].measured,
        "connections": by["connections"].status.value,
        "recovery_p99_ms": by["recovery"].measured,
        "recovery": by["recovery"].status.value,
        "recovery_p50_ms": fault.get("recovery_ms", {}).get("p50"),
        "restart_s": round(fault.get("ended_s", 0.0) - fault.get("started_s", 0.0), 3),
        "lost": t.lost,
        "duplicated_after_dedupe": t.duplicated_after_dedupe,
        "errors": dict(t.errors_by_code),
        "generator_saturated": results.generator.saturated,
        "generator_cpu_max": results.generator.cpu_percent_max,
        "trusted": all(v.trusted for v in results.verdicts),
    }


def _median(rows: list[dict[str, Any]], key: str) -> float | None:
    value = median_present(rows, key)
    return round(value, 2) if value is not None else None


def render(rows: list[dict[str, Any]], extra: list[str]) -> str:
    command = "python -m benchmarks.check" + (" " + " ".join(extra) if extra else "")
    lines = [
        "# The default `rtbench check` of the reference server",
        "",
        f"`{command}` on {time.strftime('%Y-%m-%d', time.gmtime())}: the check a user runs "
        "(`rtbench check --server-cmd ... --slo slo.toml`, 10,000 connections held, chat in "
        "rooms of 10 at 0.1 msg/s each for 90 s, a SIGTERM restart at 30 s, an uptime probe "
        "every second), server pinned to core 0, check and generator to core 1, SQLite store, "
        f"{len(rows)} runs; medians, then every run.",
        "",
        "| target | median figure | verdicts (per run) |",
        "|---|---|---|",
        f"| uptime | {_median(rows, 'uptime_percent')} % of probe intervals good "
        f"({_median(rows, 'bad_probes')} bad of {_median(rows, 'probes')}) | "
        + " / ".join(r["uptime"] for r in rows)
        + " |",
        f"| delivery latency | p99 {_median(rows, 'delivery_p99_ms')} ms "
        f"(p50 {_median(rows, 'delivery_p50_ms')} ms) | "
        + " / ".join(r["delivery"] for r in rows)
        + " |",
        f"| connections | {_median(rows, 'connections_held')} held through the run | "
        + " / ".join(r["connections"] for r in rows)
        + " |",
        f"| recovery | p99 {_median(rows, 'recovery_p99_ms')} ms "
        f"(p50 {_median(rows, 'recovery_p50_ms')} ms) | "
        + " / ".join(r["recovery"] for r in rows)
        + " |",
        f"| wall time | {_median(rows, 'wall_s')} s | exit codes "
        + " / ".join(str(r["exit_code"]) for r in rows)
        + " |",
        "",
        "Every run:",
        "",
        "```json",
        *[json.dumps(r, sort_keys=True) for r in rows],
        "```",
        "",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--connections", type=int, default=None)
    parser.add_argument("--duration", type=float, default=None)
    parser.add_argument("--write", action="store_true", help="write reports/check.md")
    args = parser.parse_args(argv)
    extra: list[str] = []
    if args.connections:
        extra += ["--connections", str(args.connections)]
    if args.duration:
        extra += ["--duration", str(args.duration)]
    rows = []
    with exclusive_machine("the default rtbench check"):
        for run in range(1, args.runs + 1):
            rows.append(one_check(run, extra))
            print(json.dumps(rows[-1]), flush=True)
    text = render(rows, extra)
    if args.write:
        REPORT.write_text(text)
        print(f"wrote {REPORT}")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
