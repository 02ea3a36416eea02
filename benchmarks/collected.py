"""Per-issue benchmark scripts the suite runs and collects instead of duplicating.

Each script is its own module (``python -m benchmarks.NAME``) owned by the issue that
measures it. The contract for joining the suite is small:

- ``--quick`` gives a small, fast version (a script without it is only run in full);
- the script may take ``benchmarks.lock.exclusive_machine`` itself: the suite already
  holds the lock and the lock is re-entrant for its children;
- its figures are the last JSON object it prints on stdout (an object printed with
  ``json.dumps(..., indent=2)`` at the very end is found); anything else it prints is
  kept in ``<out>/<name>.log``; Markdown it writes is its own report;
- a ``goals`` list in those figures (``{"goal", "met", "measured", "limit"}`` each) joins
  the summary's Goals table like a macro benchmark's.

A script that does not exist yet is reported as skipped, with the issue that adds it.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import signal
import subprocess
import sys
from dataclasses import dataclass
from typing import Any

from benchmarks.context import Context, Goal, Outcome
from benchmarks.procs import ROOT


@dataclass(frozen=True)
class Script:
    module: str  # benchmarks.NAME
    title: str
    full_args: tuple[str, ...] = ()
    quick_args: tuple[str, ...] | None = ("--quick",)  # None: no quick version
    timeout_s: float = 900.0
    needs: str = ""  # the issue that adds it, for the skip message
    out_flag: str | None = None  # a flag taking a path under the suite's out dir


STOP_GRACE_S = 30.0
"""How long a script stopped early (past its time, or the suite interrupted) gets to stop
what it started itself, after SIGINT, before its whole process group is killed."""


SCRIPTS: dict[str, Script] = {
    "generator_efficiency": Script(
        "benchmarks.generator_efficiency",
        "Load-generator efficiency (native engine, and Locust when present)",
        timeout_s=900,
    ),
    "locust_vs_native": Script(
        "benchmarks.locust_vs_native",
        "Locust users against the native engine",
        needs="issue 4 (Locust users)",
    ),
    "recovery": Script(
        "benchmarks.recovery",
        "Recovery after lost connections (faults)",
        needs="issue 6 (recovery faults)",
    ),
    "reconnect_cost": Script(
        "benchmarks.reconnect_cost",
        "Server CPU per reconnect-and-resume vs Node ws per bare handshake",
        timeout_s=300,
        out_flag="--out",
    ),
    "scaleout": Script(
        "benchmarks.scaleout",
        "Scale-out over workers (Redis, PostgreSQL)",
        # connections and fan-out, 3 runs each of every setup: about 20 minutes
        full_args=("suite",),
        quick_args=("suite", "--quick", "--runs", "1"),
        timeout_s=2400,
        needs="issue 7 (workers)",
        out_flag="--out",
    ),
    "store_durability": Script(
        "benchmarks.store_durability",
        "History durability: SQLite group commit, synchronous FULL vs NORMAL",
        quick_args=("--sends", "2000", "--runs", "1", "--in-flight", "1", "100"),
        out_flag="--out",
    ),
    "transport_choice": Script(
        "benchmarks.transport_choice",
        "Transport choice: picows vs websockets under the reference server",
        # Its full run takes ~10 minutes; the suite runs one repetition of the deciding
        # figures and writes its report into the suite's folder, not over the committed one.
        full_args=("--runs", "1", "--read-buffers", "2048", "16384", "--heartbeats", "2000"),
        quick_args=(
            "--runs",
            "1",
            "--idle",
            "1000",
            "--room",
            "200",
            "--messages",
            "50",
            "--read-buffers",
            "2048",
            "--heartbeats",
            "2000",
            "--hb-seconds",
            "2",
        ),
        out_flag="--out",
    ),
}


def available(script: Script) -> bool:
    return importlib.util.find_spec(script.module) is not None


def _child_setup() -> None:
    """In the child, before exec: undo the driver's own pinning (the script pins its
    processes itself), and let SIGINT stop it. A driver started in the background
    (``cmd &``, nohup, some CI runners) has SIGINT ignored, exec keeps an ignored signal
    ignored, and Python then installs no KeyboardInterrupt: the script would sit out the
    SIGINT that asks it to stop what it started (``run_child``)."""
    with contextlib.suppress(OSError):
        os.sched_setaffinity(0, range(os.cpu_count() or 1))
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def run_child(
    command: list[str], *, timeout_s: float, env: dict[str, str]
) -> subprocess.CompletedProcess[str]:
    """Run one script to its end, or stop it and everything it started.

    ``subprocess.run`` answers a timeout or Ctrl-C by SIGKILL to the script alone, which
    leaves the servers and load runs it started running on (a Node peer outlived an
    interrupted suite, 2026-12-08). The script gets its own process group instead; when
    it must stop early, the group gets SIGINT, as from a terminal, so the script's own
    ``finally`` blocks stop what it started, and after ``STOP_GRACE_S`` SIGKILL.
    """
    proc = subprocess.Popen(
        command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
        preexec_fn=_child_setup, start_new_session=True,
    )  # fmt: skip
    try:
        stdout, stderr = proc.communicate(timeout=timeout_s)
    except BaseException:  # past its time, or the suite interrupted (KeyboardInterrupt)
        _stop_group(proc)
        raise
    return subprocess.CompletedProcess(command, proc.returncode, stdout, stderr)


def _stop_group(proc: subprocess.Popen[str]) -> None:
    """SIGINT to the script's process group, then SIGKILL to what is left of it."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGINT)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.communicate(timeout=STOP_GRACE_S)
    with contextlib.suppress(ProcessLookupError):  # the script, or anything it left behind
        os.killpg(proc.pid, signal.SIGKILL)
    proc.communicate()


def last_json_object(text: str) -> dict[str, Any] | None:
    """The last top-level JSON object in a script's stdout (None when it printed none)."""
    lines = text.splitlines()
    for start in range(len(lines) - 1, -1, -1):
        if not lines[start].startswith("{"):
            continue
        try:
            found = json.loads("\n".join(lines[start:]))
        except ValueError:
            continue
        if isinstance(found, dict):
            return found
    return None


def run_script(ctx: Context, name: str) -> Outcome:
    script = SCRIPTS[name]
    out = Outcome(name, script.title)
    if not available(script):
        out.status = "skipped"
        out.notes.append(f"{script.module} does not exist yet (comes with {script.needs})")
        return out
    if ctx.quick and script.quick_args is None:
        out.status = "skipped"
        out.notes.append("no quick version: runs only in the full suite")
        return out
    args = list(script.quick_args if ctx.quick else script.full_args)
    if script.out_flag:
        args += [script.out_flag, str(ctx.out / f"{name}.md")]
    command = [sys.executable, "-m", script.module, *args]
    ctx.log(f"{name}: {' '.join(command[1:])}")
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    try:
        done = run_child(command, timeout_s=script.timeout_s, env=env)
    except subprocess.TimeoutExpired:
        out.status = "failed"
        out.notes.append(f"ran past {script.timeout_s:.0f} s and was stopped")
        return out
    (ctx.out / f"{name}.log").write_text(done.stdout + "\n--- stderr ---\n" + done.stderr)
    out.commands.append(".venv/bin/python -m " + " ".join(command[2:]))
    figures = last_json_object(done.stdout)
    if done.returncode != 0:
        out.status = "failed"
        tail = (done.stderr.strip() or done.stdout.strip()).splitlines()[-1:] or ["no output"]
        out.notes.append(f"exit {done.returncode}: {tail[0]}")
    if figures is not None:
        out.summary = figures
        for goal in figures.get("goals", []):
            out.goals.append(
                Goal(goal["goal"], goal["met"], goal["measured"], goal.get("limit", ""))
            )
    elif not (ctx.out / f"{name}.md").exists():
        out.notes.append(f"printed no JSON figures; its output is in {name}.log")
    report = ctx.out / f"{name}.md"
    if report.exists():
        out.notes.append(f"its report: {report.name}")
        out.markdown = report.read_text()
    return out
