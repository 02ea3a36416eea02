"""A per-issue script stopped early takes what it started with it.

Real processes: the script (tests/bench/holding_script.py) starts ``sleep`` as a real
script starts a server or a Node peer. Before, a timeout or an interrupted suite sent
SIGKILL to the script alone and its child ran on (a Node peer outlived an interrupted
``rtbench bench``, 2026-12-08).
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from benchmarks import collected

SCRIPT = [sys.executable, "-m", "tests.bench.holding_script"]


def _gone(pid: int, within_s: float = 5.0) -> bool:
    """True once ``pid`` has ended (a zombie waiting for init to reap it counts as ended)."""
    deadline = time.monotonic() + within_s
    while True:
        try:
            if psutil.Process(pid).status() == psutil.STATUS_ZOMBIE:
                return True
        except psutil.NoSuchProcess:
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.05)  # polling another process's end: nothing to wait on


@pytest.fixture
def pid_file(tmp_path: Path) -> Iterator[Path]:
    path = tmp_path / "child.pid"
    yield path
    if path.exists():  # never leave the test's own sleep behind, whatever failed
        pid = int(path.read_text())
        if not _gone(pid, within_s=0):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


def _child(pid_file: Path) -> int:
    assert pid_file.exists(), "the script never started its child"
    return int(pid_file.read_text())


def test_a_script_past_its_time_stops_what_it_started(pid_file: Path) -> None:
    started = time.monotonic()
    with pytest.raises(subprocess.TimeoutExpired):
        collected.run_child(
            [*SCRIPT, "--pid-file", str(pid_file)], timeout_s=3.0, env=dict(os.environ)
        )
    assert _gone(_child(pid_file))
    # SIGINT let its own finally stop the child: no wait for the grace period
    assert time.monotonic() - started < 3.0 + collected.STOP_GRACE_S / 2


def test_a_script_that_ignores_sigint_is_killed_with_its_group(
    pid_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(collected, "STOP_GRACE_S", 1.0)
    with pytest.raises(subprocess.TimeoutExpired):
        collected.run_child(
            [*SCRIPT, "--pid-file", str(pid_file), "--ignore-sigint"],
            timeout_s=3.0,
            env=dict(os.environ),
        )
    assert _gone(_child(pid_file))


def test_an_interrupted_suite_stops_the_script_and_what_it_started(pid_file: Path) -> None:
    """``rtbench bench`` turns SIGINT and SIGTERM into KeyboardInterrupt; one arrives here
    while the script runs (a timer's signal, raising as bench's handler does)."""

    def interrupt(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGALRM, interrupt)
    try:
        signal.setitimer(signal.ITIMER_REAL, 3.0)
        with pytest.raises(KeyboardInterrupt):
            collected.run_child(
                [*SCRIPT, "--pid-file", str(pid_file)], timeout_s=60.0, env=dict(os.environ)
            )
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
    assert _gone(_child(pid_file))
