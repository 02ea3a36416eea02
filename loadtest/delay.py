"""The delay meter: how late a timer due every ``DELAY_PERIOD_S`` wakes, in one place.

Whatever keeps a process from running (its own work, another process on its core, a GC
pause, a SIGSTOP), a timer due every period wakes late by as long, and every frame that
arrived and every send or timeout that was due meanwhile waited as long. Every part of
rtbench that measures a server measures its own delay this way and feeds the same
arithmetic: the native engine's workers and the monitor run ``meter`` (asyncio), a
Locust process the same loop under gevent (``lateness_ms``). What a driver does with
each lateness is its own:

- ``loadtest.tally.Tally.loop_late`` records it into ``loop_delay`` as if a wake-up had
  been due every period through the stall (``corrected_us``), the generator's bound on
  every latency verdict (``loadtest.judge``);
- the monitor keeps a ``StallLog``: how much of one probe's span its own process was
  kept from running (``own_s``), so that span is not charged to the server
  (``monitor.prober``).

Socket-free: no driver's I/O, only the clock.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable

DELAY_PERIOD_S = 0.01
"""How often each delay meter wakes: 100 wake-ups a second cost a process well under 1 %
of a core, and sample a neighbour's CPU slices (a few ms each) finely enough that a stall
of one period is seen."""


def lateness_ms(before: float, after: float) -> float:
    """How late a sleep of one period begun at ``before`` ended at ``after`` (monotonic s)."""
    return max(0.0, (after - before - DELAY_PERIOD_S) * 1000.0)


def corrected_us(late_ms: float) -> range:
    """One late wake-up as the samples a wake-up due every period through the stall would
    have given (HdrHistogram's coordinated-omission correction), in microseconds: the
    distribution of what a moment taken at random waited for the process."""
    return range(int(late_ms * 1000), -1, -int(DELAY_PERIOD_S * 1_000_000))


async def meter(on_late: Callable[[float], None], log: StallLog | None = None) -> None:
    """The delay meter's timer (asyncio): ``on_late(ms)`` after every wake-up, until
    cancelled; with a ``log``, every wake-up is in it too (and its due time meanwhile)."""
    while True:
        before = time.monotonic()
        if log is not None:
            log.due = before + DELAY_PERIOD_S
        await asyncio.sleep(DELAY_PERIOD_S)
        after = time.monotonic()
        late = lateness_ms(before, after)
        if log is not None:
            log.late(late, after)
        on_late(late)


STALL_FLOOR_MS = 1.0
"""A ``StallLog`` keeps wake-ups at least this late: less is the timer's own slack (epoll
waits whole milliseconds), during which a frame arriving would have woken the loop at
once, not a stall."""


class StallLog:
    """The late wake-ups of the last ``keep_s`` seconds as stalls on the monotonic clock:
    how much of a span the process itself was kept from running."""

    def __init__(self, keep_s: float = 3600.0) -> None:
        self.keep_s = keep_s
        self.stalls: deque[tuple[float, float]] = deque()  # (start, end), monotonic s
        self.due: float | None = None  # when the meter's running sleep is due

    def late(self, late_ms: float, now: float) -> None:
        """The meter woke at ``now``, ``late_ms`` after it was due."""
        self.due = None
        if late_ms >= STALL_FLOOR_MS:
            self.stalls.append((now - late_ms / 1000.0, now))
        while self.stalls and self.stalls[0][1] < now - self.keep_s:
            self.stalls.popleft()

    def own_s(self, start: float, end: float) -> float:
        """Seconds of ``[start, end]`` (monotonic) the process was kept from running: the
        stalls its meter saw, and the one under way when the meter is overdue now (a
        process just resumed from a stop runs its other callbacks before the meter's)."""
        total = 0.0
        for s, e in reversed(self.stalls):
            if e <= start:
                break
            total += max(0.0, min(e, end) - max(s, start))
        now = time.monotonic()
        if self.due is not None and (now - self.due) * 1000.0 >= STALL_FLOOR_MS:
            total += max(0.0, min(now, end) - max(self.due, start))
        return total
