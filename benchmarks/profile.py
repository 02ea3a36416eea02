"""Where a server process spends its time: py-spy samples, summarised by part.

A benchmark that finds a bound (a latency crossing, a rate ceiling) should say what
bounds it, measured rather than guessed. ``profiling(pid, out_path)`` records the process
with py-spy (``record --format raw``: one line per distinct Python stack with its sample
count) for as long as the ``with`` block runs, and fills the dict it yields with a
summary: each part's share of the samples, own (the stack's innermost frame is in that
part) and cumulative (any frame of the stack is), and the top functions by own and by
cumulative share.

py-spy samples with ``--nonblocking`` (it does not pause the process to read its stacks,
so the profiled figures are not slowed by the profiler; a sample may now and then be torn,
which 100 samples a second over seconds average away). Without ``idle`` it leaves out a
thread it judges idle, and on Linux that includes a thread blocked in a system call: a
store writer waiting on fsync. So the benchmarks record with ``idle=True``: each thread's
samples then span its wall time, and its share by part says where that time went (the
writer's share inside a commit is the time the store took, fsync included; the loop's
innermost-frame ``Runner.run`` is uvloop's own C code, working or waiting in epoll).
Measured at 10,000 connections and 3,000 msgs/s (2026-12-07): without ``idle`` the writer
thread was 12 % of the samples while the server's own metrics had it committing 85 % of
the time. Reading another process's memory needs root or ptrace rights; without them (or
without py-spy) the summary says why instead of failing the benchmark.
"""

from __future__ import annotations

import contextlib
import re
import shutil
import signal
import subprocess
import sys
import threading
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

PARTS: tuple[tuple[str, tuple[str, ...]], ...] = (
    # (part, substrings of a frame "function (path:line)"); the first match wins.
    # The store is its own thread's work (a commit, its fsync) and the store's reads;
    # a committed batch's completion on the loop (acks, broadcast: groupcommit's
    # _batch_done, commits.py) is fan-out's, which it is for the time it takes.
    ("fsync/store", ("/store/sqlite", "/store/postgres", "/store/memory", "sqlite3", "asyncpg")),
    ("codec", ("rtbench/protocol/", "msgspec", "json/", "frames.py")),
    ("fan-out", ("fanout.py", "commits.py", "groupcommit.py", "/broker/", "sequencer.py")),
    ("dispatch/handlers", ("dispatch.py", "/handlers/", "session.py", "access.py")),
    ("event loop/transport", ("/transport/", "asyncio/", "uvloop", "picows", "websockets/")),
)
ENTRY = ("(<string>", "rtbench/entry.py", "launch.py", "reference_server/server.py:",
         "uvloop/__init__.py", "asyncio/runners.py", "threading.py")  # fmt: skip
"""Frames every stack of a thread starts with (the process's entry, the loop's run, a
thread's bootstrap): an ancestor of everything is no part's cumulative share. As the
innermost frame (the loop's own C code, polling and transport callbacks, shows as
``Runner.run``) it is counted as its part's own."""
OTHER = "other"
_FRAME = re.compile(r"^(?P<func>.*?) \((?P<where>[^()]*)\)$")
TOP = 12


def _py_spy() -> str | None:
    """The py-spy next to this interpreter (the venv's), else on PATH."""
    local = Path(sys.executable).with_name("py-spy")
    return str(local) if local.exists() else shutil.which("py-spy")


def part_of(frame: str) -> str:
    """Which part of the server a frame belongs to (``other`` when none claims it)."""
    for part, needles in PARTS:
        if any(n in frame for n in needles):
            return part
    return OTHER


def _short(frame: str) -> str:
    """``func (/long/path/pkg/mod.py:12)`` -> ``pkg/mod.py:func``: the same function on
    every line of it counts as one."""
    match = _FRAME.match(frame.strip())
    if not match:
        return frame.strip()
    where = match["where"].rsplit(":", 1)[0]
    for marker in ("site-packages/", "/lib/python3"):
        if marker in where:
            where = where.split(marker, 1)[1]
            break
    else:
        where = "/".join(where.split("/")[-2:])
    return f"{where}:{match['func']}"


def _thread(frames: list[str]) -> str:
    """A stack's thread: the event loop's, or the function a thread was started on."""
    if "threading.py" not in frames[0]:
        return "main (event loop)"
    target = next((f for f in frames if "threading.py" not in f), frames[-1])
    return _short(target)


def summarise(raw: str) -> dict[str, Any]:
    """The summary of py-spy's raw (collapsed) output: ``frame;frame;...;leaf count``
    per line, outermost frame first."""
    total = 0
    own: Counter[str] = Counter()
    cumulative: Counter[str] = Counter()
    part_own: Counter[str] = Counter()
    part_cum: Counter[str] = Counter()
    threads: Counter[str] = Counter()
    thread_parts: dict[str, Counter[str]] = {}
    thread_own: dict[str, Counter[str]] = {}
    for line in raw.splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        n = int(count)
        frames = [f for f in stack.split(";") if f]
        # py-spy starts each stack with the thread ("process 1:\"python\"" / "thread ...")
        frames = [f for f in frames if "(" in f] or frames
        if not frames:
            continue
        total += n
        leaf = frames[-1]
        own[_short(leaf)] += n
        part_own[part_of(leaf)] += n
        thread = _thread(frames)
        threads[thread] += n
        thread_parts.setdefault(thread, Counter())[part_of(leaf)] += n
        thread_own.setdefault(thread, Counter())[_short(leaf)] += n
        inner = [f for f in frames[:-1] if not any(e in f for e in ENTRY)] + [leaf]
        for name in {_short(f) for f in inner}:
            cumulative[name] += n
        for part in {part_of(f) for f in inner}:
            part_cum[part] += n

    def share(n: int) -> float:
        return round(100.0 * n / total, 1) if total else 0.0

    parts = [name for name, _ in PARTS] + [OTHER]
    return {
        "samples": total,
        "parts": {
            p: {"own_percent": share(part_own[p]), "cumulative_percent": share(part_cum[p])}
            for p in parts
        },
        # each thread's share of the samples, and its own samples by part: with ``idle``
        # a thread's part share is the share of its wall time (the store writer's in a
        # commit, fsync included)
        "threads": {
            name: {
                "percent": share(n),
                "parts": {
                    part: round(100.0 * k / n, 1) for part, k in thread_parts[name].most_common()
                },
                # a part is too coarse inside one thread (the store writer's commit and its
                # wait for work are both the store's): its top functions by own samples
                "top_own": [
                    {"function": f, "percent": round(100.0 * k / n, 1)}
                    for f, k in thread_own[name].most_common(4)
                ],
            }
            for name, n in threads.most_common()
        },
        "top_own": [{"function": f, "percent": share(n)} for f, n in own.most_common(TOP)],
        "top_cumulative": [
            {"function": f, "percent": share(n)} for f, n in cumulative.most_common(TOP)
        ],
    }


@contextlib.contextmanager
def profiling(
    pid: int,
    out_path: Path,
    *,
    rate: int = 100,
    after_s: float = 0.0,
    duration_s: float | None = None,
    prefix: list[str] | None = None,
    idle: bool = False,
) -> Iterator[dict[str, Any]]:
    """Record ``pid`` with py-spy while the block runs; the yielded dict holds the summary
    once the block is left (or ``{"error": why}`` when it could not be recorded).

    ``after_s`` / ``duration_s``: record only from ``after_s`` seconds into the block, for
    at most ``duration_s`` (a load run's sending seconds, not its connection ramp and
    drain, which would dilute every share). ``prefix``: a command prefix for py-spy
    itself (``taskset -c N``: keep the profiler off the profiled process's core).
    ``idle``: count waiting threads too, so shares are of wall time (see above).
    """
    summary: dict[str, Any] = {}
    spy = _py_spy()
    if spy is None:
        summary["error"] = "py-spy is not installed (pip install py-spy)"
        yield summary
        return
    out_path.parent.mkdir(parents=True, exist_ok=True)
    out_path.unlink(missing_ok=True)
    command = [*(prefix or []), spy, "record", "--pid", str(pid), "--format", "raw"]
    command += ["--rate", str(rate), "--nonblocking", "-o", str(out_path)]
    if duration_s is not None:
        command += ["--duration", f"{max(1, round(duration_s))}"]
    if idle:
        command.append("--idle")
    procs: list[subprocess.Popen[bytes]] = []

    def start() -> None:
        procs.append(
            subprocess.Popen(
                command,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
            )
        )

    timer = threading.Timer(after_s, start)
    timer.start()
    try:
        yield summary
    finally:
        timer.cancel()
        timer.join()
        _finish(procs[0] if procs else None, out_path, summary)


def _finish(proc: subprocess.Popen[bytes] | None, out_path: Path, summary: dict[str, Any]) -> None:
    if proc is None:
        summary["error"] = "the block ended before the profile was to start"
        return
    # py-spy writes its file when interrupted, as on Ctrl-C.
    if proc.poll() is None:
        proc.send_signal(signal.SIGINT)
    try:
        output, _ = proc.communicate(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        output, _ = proc.communicate()
    if out_path.exists() and out_path.stat().st_size:
        summary.update(summarise(out_path.read_text()))
        summary["raw"] = str(out_path)
    else:
        tail = output.decode(errors="replace").strip().splitlines()[-1:] or ["no output"]
        summary["error"] = f"py-spy recorded nothing (exit {proc.returncode}): {tail[0]}"


def profile_step(
    pid: int, path: Path, plan: dict[str, Any], prefix: list[str], step: Callable[[], Any]
) -> dict[str, Any]:
    """The server's profile over one more run of a sweep's step (``step()``: the run).

    Recorded over the sending seconds only: a run starts its processes (about a second),
    ramps (``plan["ramp"]``), then sends for ``plan["duration"]``. The summary gains the
    run's rate, p99 and losses beside the profile, so a reader knows what was profiled.
    """
    with profiling(
        pid, path, after_s=plan["ramp"] + 1.5, duration_s=plan["duration"] - 0.5,
        prefix=prefix, idle=True,
    ) as summary:  # fmt: skip
        run = step()
    totals = run.results["totals"]
    summary.update(
        msgs_per_s=totals.get("sent", 0) / plan["duration"],
        p99_ms=run.results.get("latency", {}).get("delivery", {}).get("p99"),
        lost=totals.get("lost", 0),
    )
    return summary
