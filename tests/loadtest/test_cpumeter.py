"""The generator's CPU meter reads its own CPU and how busy its CPUs were, for real.

A generator process pinned to one CPU (``taskset``, as the benchmarks pin it) measures a
second in which another process spins on that CPU: its own share stays near zero while
its CPU reads full. That is what ``loadtest.judge`` calls the generator's CPUs full (a
server on the same CPUs starving it, or it starving the server).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

READ = (
    "import json, time; from loadtest.cpumeter import CpuMeter; m = CpuMeter(); "
    "time.sleep(1.0); r = m.read(); "
    "print(json.dumps({'own': r.own, 'busy': r.cpus_busy, 'judged': r.judged, 'cpus': m.cpus}))"
)
SPIN = "import time\nend = time.monotonic() + {s}\nwhile time.monotonic() < end: pass"


def _read_on(cpu: int) -> dict:
    done = subprocess.run(
        ["taskset", "-c", str(cpu), sys.executable, "-c", READ],
        capture_output=True, text=True, check=True, timeout=30,
    )  # fmt: skip
    return json.loads(done.stdout)


@pytest.fixture
def cpu() -> int:
    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) < 2:
        pytest.skip("needs two CPUs: one to measure on while the test runs on another")
    return cpus[-1]


def test_a_cpu_filled_by_another_process_reads_full(cpu: int) -> None:
    spinner = subprocess.Popen(["taskset", "-c", str(cpu), sys.executable, "-c", SPIN.format(s=4)])
    try:
        reading = _read_on(cpu)
    finally:
        spinner.kill()  # the spinner this test started, by its PID
        spinner.wait()
    assert reading["cpus"] == [cpu]
    assert reading["judged"]
    assert reading["own"] < 20.0  # the meter's process only slept
    assert reading["busy"] >= 90.0  # the spinner held the CPU


def test_an_idle_cpu_reads_mostly_idle(cpu: int) -> None:
    reading = _read_on(cpu)
    assert reading["cpus"] == [cpu]
    assert reading["busy"] is not None and reading["busy"] < 60.0
