"""The delay meter every driver runs (loadtest.delay): a stall of the event loop is seen,
placed on the clock, and counted once over any span it overlaps."""

from __future__ import annotations

import asyncio
import time

from loadtest.delay import DELAY_PERIOD_S, StallLog, corrected_us, meter


def test_corrected_samples_walk_down_the_stall_by_the_period() -> None:
    assert list(corrected_us(35.0)) == [35_000, 25_000, 15_000, 5_000]
    assert list(corrected_us(0.0)) == [0]


def test_the_stalls_overlapping_a_span_are_its_own_delay() -> None:
    log = StallLog()
    log.late(200.0, now=10.2)  # kept from running over [10.0, 10.2]
    log.late(50.0, now=11.05)  # over [11.0, 11.05]
    assert abs(log.own_s(9.0, 12.0) - 0.25) < 1e-9
    assert abs(log.own_s(10.1, 11.025) - 0.125) < 1e-9  # half of each
    assert log.own_s(10.3, 10.9) == 0.0
    log.late(0.4, now=12.0)  # the timer's own slack: not a stall
    assert abs(log.own_s(9.0, 13.0) - 0.25) < 1e-9


async def test_a_blocked_loop_is_seen_by_the_meter_and_while_it_is_overdue() -> None:
    log = StallLog()
    seen: list[float] = []
    task = asyncio.get_running_loop().create_task(meter(seen.append, log))
    await asyncio.sleep(5 * DELAY_PERIOD_S)  # a few wake-ups on time
    start = time.monotonic()
    time.sleep(0.3)  # noqa: ASYNC251  (on purpose: the loop blocked, as a SIGSTOP does)
    # overdue now, before the meter has run again: the stall under way already counts
    assert log.own_s(start, time.monotonic()) >= 0.25
    await asyncio.sleep(3 * DELAY_PERIOD_S)
    task.cancel()
    end = time.monotonic()
    assert max(seen) >= 250.0  # the meter's late wake-up
    assert 0.25 <= log.own_s(start, end) <= 0.3 + 0.1  # counted once, not twice
