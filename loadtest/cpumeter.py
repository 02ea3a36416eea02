"""The load generator's own CPU, sampled per second, for its saturation verdict.

psutil counts CPU time in clock ticks (10 ms). Over a sliver of a second (the go just
before a tick, the partial last second) one tick reads as 200 %, and a short run's
saturation share would count it: such samples are reported live but not judged. One
meter serves the native engine's workers and the Locust nodes so both judge alike.
"""

from __future__ import annotations

import time

import psutil

MIN_SPAN_S = 0.5  # samples over a shorter span are not judged


class CpuMeter:
    """This process's CPU share since the previous reading."""

    def __init__(self, proc: psutil.Process | None = None) -> None:
        self.proc = proc or psutil.Process()
        self.since = time.monotonic()
        self.proc.cpu_percent(None)

    def reset(self) -> None:
        """Start a new span now (e.g. when the measured phase begins)."""
        self.since = time.monotonic()
        self.proc.cpu_percent(None)

    def read(self) -> tuple[float, bool]:
        """(percent of a core since the last reading, whether its span is long enough to judge)."""
        now = time.monotonic()
        judged = now - self.since >= MIN_SPAN_S
        self.since = now
        return self.proc.cpu_percent(None), judged
