"""The load generator's CPU, sampled per second, for its saturation verdict.

Two readings per second: the process's own CPU (is this worker at its limit?) and how
busy the CPUs it may run on were, with everything that ran there (did it have a CPU
to run on?). The second catches what the first cannot: workers that fill their CPUs
together, and a server on the same CPUs. On a loopback run both take their CPU from
one machine, so when those CPUs are full a late delivery may be the generator starving
the server, or the server starving the generator (``loadtest.judge``).

psutil counts CPU time in clock ticks (10 ms). Over a sliver of a second (the go just
before a tick, the partial last second) one tick reads as 200 %, and a short run's
saturation share would count it: such samples are reported live but not judged. One
meter serves the native engine's workers and the Locust nodes so both judge alike.
"""

from __future__ import annotations

import os
import time
from typing import NamedTuple

import psutil

MIN_SPAN_S = 0.5  # samples over a shorter span are not judged


class CpuReading(NamedTuple):
    own: float  # this process, percent of one core
    cpus_busy: float | None  # its CPUs, percent busy with all their work (None: unreadable)
    judged: bool  # the span was long enough to judge


def allowed_cpus() -> list[int]:
    """The CPUs this process may run on (its affinity; every CPU where that is unknown)."""
    try:
        return sorted(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not Linux
        return list(range(psutil.cpu_count() or 1))


def _busy_and_total(cpus: list[int]) -> tuple[float, float] | None:
    """Busy and total CPU seconds so far over ``cpus`` (as psutil's cpu_percent counts:
    idle and iowait are idle; steal, time the host gave to someone else, is busy)."""
    try:
        per_cpu = psutil.cpu_times(percpu=True)
    except (OSError, RuntimeError):
        return None
    busy = total = 0.0
    for cpu in cpus:
        if cpu >= len(per_cpu):
            continue
        t = per_cpu[cpu]
        all_s = sum(t) - getattr(t, "guest", 0.0) - getattr(t, "guest_nice", 0.0)
        idle_s = t.idle + getattr(t, "iowait", 0.0)
        total += all_s
        busy += all_s - idle_s
    return busy, total


class CpuMeter:
    """This process's CPU share, and its CPUs' busy share, since the previous reading."""

    def __init__(self, proc: psutil.Process | None = None) -> None:
        self.proc = proc or psutil.Process()
        self.cpus = allowed_cpus()
        self.reset()

    def reset(self) -> None:
        """Start a new span now (e.g. when the measured phase begins)."""
        self.since = time.monotonic()
        self.proc.cpu_percent(None)
        self._times = _busy_and_total(self.cpus)

    def read(self) -> CpuReading:
        now = time.monotonic()
        judged = now - self.since >= MIN_SPAN_S
        self.since = now
        times, before = _busy_and_total(self.cpus), self._times
        self._times = times
        busy: float | None = None
        if times is not None and before is not None and times[1] > before[1]:
            busy = round(100.0 * (times[0] - before[0]) / (times[1] - before[1]), 1)
        return CpuReading(self.proc.cpu_percent(None), busy, judged)
