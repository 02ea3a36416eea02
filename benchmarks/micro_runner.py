"""Runs the pytest-benchmark micro-benchmarks (benchmarks/micro/) as one suite entry.

pytest runs in a child process on the client core with ``--benchmark-json``; the
suite keeps that JSON next to its own and summarises each benchmark's median time and
operations per second.
"""

from __future__ import annotations

import json
import subprocess
import sys

from benchmarks.context import Context, Outcome
from benchmarks.procs import ROOT

NAME = "micro"
TITLE = "Micro-benchmarks: codec, fan-out path, group commit, histograms"
MICRO_DIR = ROOT / "benchmarks" / "micro"


def command(ctx: Context, json_path: str) -> list[str]:
    args = [sys.executable, "-m", "pytest", str(MICRO_DIR), "-q", "-p", "no:cacheprovider"]
    args += [f"--benchmark-json={json_path}", "--benchmark-sort=name"]
    if ctx.tiny:
        args += ["--benchmark-max-time=0.005", "--benchmark-min-rounds=1"]
    elif ctx.quick:
        args += ["--benchmark-max-time=0.05", "--benchmark-min-rounds=3"]
    return [*ctx.cores.client_prefix(), *args]


def run(ctx: Context) -> Outcome:
    out = Outcome(NAME, TITLE)
    json_path = ctx.out / "micro-pytest-benchmark.json"
    cmd = command(ctx, str(json_path))
    done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, check=False, timeout=900)
    (ctx.out / "micro.log").write_text(done.stdout + "\n--- stderr ---\n" + done.stderr)
    out.commands.append(".venv/bin/pytest benchmarks/micro --benchmark-json=micro.json")
    if done.returncode != 0:
        out.status = "failed"
        failed = [line for line in done.stdout.splitlines() if line.startswith("FAILED")]
        out.notes.append(
            f"pytest exit {done.returncode}: " + ("; ".join(failed) or "see micro.log")
        )
    if not json_path.exists():
        return out
    data = json.loads(json_path.read_text())
    for bench in data.get("benchmarks", []):
        stats = bench["stats"]
        out.summary[bench["name"]] = {
            "median_us": stats["median"] * 1e6,
            "mean_us": stats["mean"] * 1e6,
            "ops_per_s": stats["ops"],
            "rounds": stats["rounds"],
            **bench.get("extra_info", {}),
        }
    out.summary["_machine"] = {
        "python": data.get("machine_info", {}).get("python_version"),
        "pytest_benchmark": data.get("version"),
    }
    return out
