"""The benchmark suite: which benchmarks exist, and running a selection of them.

``rtbench bench`` (and ``make bench``) lands here. The whole suite runs under the
machine lock (``benchmarks.lock``), one benchmark after another, each writing
``<out>/<name>.json``; then ``summary.md`` and the SVG charts are rendered from those
files (``benchmarks.render``), so a summary can be re-made from a finished run.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import platform
import subprocess
import sys
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

import psutil

from benchmarks import collected, micro_runner
from benchmarks.context import Context, Outcome, Stopwatch
from benchmarks.lock import exclusive_machine
from benchmarks.macro import capacity, chat_10k, fanout, latency_load
from benchmarks.procs import ROOT, BenchError, Cores, node_versions


@dataclass(frozen=True)
class Entry:
    name: str
    title: str
    run: Callable[[Context], Outcome]
    in_default: bool = True  # part of a plain `rtbench bench` (else only with --only)
    why_not_default: str = ""


def _script(name: str) -> Callable[[Context], Outcome]:
    return lambda ctx: collected.run_script(ctx, name)


BENCHMARKS: dict[str, Entry] = {
    e.name: e
    for e in (
        Entry(micro_runner.NAME, micro_runner.TITLE, micro_runner.run),
        Entry(capacity.NAME, capacity.TITLE, capacity.run),
        Entry(fanout.NAME, fanout.TITLE, fanout.run),
        Entry(latency_load.NAME, latency_load.TITLE, latency_load.run),
        Entry(chat_10k.NAME, chat_10k.TITLE, chat_10k.run),
        *(
            Entry(name, script.title, _script(name))
            for name, script in collected.SCRIPTS.items()
            if name != "transport_choice"
        ),
        Entry(
            "transport_choice",
            collected.SCRIPTS["transport_choice"].title,
            _script("transport_choice"),
            in_default=False,
            why_not_default="answers issue 2's transport question; its committed report "
            "(reports/transport-choice.md) has its own full run",
        ),
    )
}


class UnknownBenchmark(ValueError):
    pass


class MixedRun(ValueError):
    """A rerun into a folder whose earlier run was of the other size (quick vs full)."""


def select(only: list[str] | None) -> list[Entry]:
    if not only:
        return [e for e in BENCHMARKS.values() if e.in_default]
    unknown = [name for name in only if name not in BENCHMARKS]
    if unknown:
        raise UnknownBenchmark(
            f"unknown benchmark {', '.join(unknown)}; choose from {', '.join(BENCHMARKS)}"
        )
    return [BENCHMARKS[name] for name in BENCHMARKS if name in only]


def default_out() -> Path:
    stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    return ROOT / "reports" / "runs" / f"bench-{stamp}"


def environment(cores: Cores) -> dict[str, Any]:
    """The machine and versions, so a reader can tell what the figures were taken on."""
    packages = {}
    for name in ("rtbench", "picows", "websockets", "uvloop", "msgspec", "hdrhistogram",
                 "pytest-benchmark", "locust", "psutil"):  # fmt: skip
        try:
            packages[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    cpu = platform.processor()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True,
        check=False,
    ).stdout.strip()  # fmt: skip
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "memory_gib": round(psutil.virtual_memory().total / 2**30, 1),
        "platform": platform.platform(),
        "python": sys.version.split()[0],
        "packages": packages,
        **node_versions(),
        "pinning": cores.describe(),
        "git_commit": commit,
    }


def run_suite(
    entries: list[Entry],
    out: Path,
    *,
    quick: bool,
    runs: int,
    log: Callable[[str], None],
    tiny: bool = False,
) -> dict[str, Any]:
    """Run ``entries`` under the machine lock; returns the suite index (also written).

    Into a folder that already holds a run, the entries are run again and merged into
    its index (the others' figures stay), so one noisy benchmark can be redone alone.
    """
    out.mkdir(parents=True, exist_ok=True)
    previous = _previous_index(out, quick or tiny)
    cores = Cores.detect()
    index: dict[str, Any] = {"quick": quick or tiny, "runs": runs, "benchmarks": {}}
    with exclusive_machine("rtbench bench"), cores.pinned_self():
        index["started_at"] = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
        index["load_average_before"] = [round(x, 2) for x in os.getloadavg()]
        index["environment"] = environment(cores)
        for entry in entries:
            ctx = Context(out=out, quick=quick or tiny, runs=runs, cores=cores, log=log, tiny=tiny)
            watch = Stopwatch()
            log(f"== {entry.name}: {entry.title}")
            for stale in (out / "runs").glob(f"{entry.name}-*.json"):  # from an earlier run
                stale.unlink()
            load_before = os.getloadavg()[0]
            try:
                outcome = entry.run(ctx)
            except BenchError as exc:
                outcome = Outcome(entry.name, entry.title, status="failed", notes=[str(exc)])
            except Exception as exc:  # a broken benchmark must not lose the others' figures
                outcome = Outcome(entry.name, entry.title, status="failed")
                outcome.notes.append(f"{type(exc).__name__}: {exc}")
                (out / f"{entry.name}.traceback.txt").write_text(traceback.format_exc())
            outcome.seconds = watch.seconds
            result = outcome.to_json()
            result["load_average"] = [round(load_before, 2), round(os.getloadavg()[0], 2)]
            (out / f"{entry.name}.json").write_text(json.dumps(result, indent=2) + "\n")
            index["benchmarks"][entry.name] = {"status": outcome.status, "seconds": outcome.seconds}
            log(f"== {entry.name}: {outcome.status} in {outcome.seconds:.0f} s")
        index["ended_at"] = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
        index["load_average_after"] = [round(x, 2) for x in os.getloadavg()]
    if previous is not None:
        rerun = {key: index[key] for key in ("started_at", "ended_at")}
        rerun["load_average_before"] = index["load_average_before"]
        rerun["load_average_after"] = index["load_average_after"]
        rerun["benchmarks"] = list(index["benchmarks"])
        previous["benchmarks"].update(index["benchmarks"])
        previous.setdefault("reruns", []).append(rerun)
        index = previous
    (out / "suite.json").write_text(json.dumps(index, indent=2) + "\n")
    return index


def _previous_index(out: Path, quick: bool) -> dict[str, Any] | None:
    path = out / "suite.json"
    if not path.exists():
        return None
    previous = json.loads(path.read_text())
    if bool(previous.get("quick")) != quick:
        size = "quick" if previous.get("quick") else "full"
        raise MixedRun(f"{out} holds a {size} run; rerun into it with the same size, or use --out")
    return previous


def load_outcomes(out: Path) -> tuple[dict[str, Any], dict[str, dict[str, Any]]]:
    """The suite index and every benchmark's JSON of a finished run folder."""
    index_path = out / "suite.json"
    if not index_path.exists():
        raise FileNotFoundError(f"{out} holds no benchmark run (no suite.json)")
    index = json.loads(index_path.read_text())
    outcomes = {
        name: json.loads((out / f"{name}.json").read_text())
        for name in index["benchmarks"]
        if (out / f"{name}.json").exists()
    }
    return index, outcomes
