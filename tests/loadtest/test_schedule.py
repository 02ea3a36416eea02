"""The open-loop schedule (loadtest.engine.schedule): batching wake-ups without lying.

Real event loop and real timer; the send callback records what it was given.
"""

from __future__ import annotations

import asyncio
import random
import time

from loadtest.engine.schedule import OpenLoop


def _run(rate: float, seconds: float, window_ns: int, busy_every: int = 0) -> tuple[list, int]:
    """Run a schedule; returns [(sender, stamp, sent_at)] and the number of wake-ups.

    ``busy_every``: every that many sends, block the loop for 3 ms (a busy generator), so
    some sends go out late."""
    sent: list[tuple[int, int, int]] = []

    async def main() -> int:
        start = time.monotonic_ns() + 20_000_000
        end = start + int(seconds * 1e9)

        def send_one(sender: int, stamp: int) -> None:
            sent.append((sender, stamp, time.monotonic_ns()))
            if busy_every and len(sent) % busy_every == 0:
                time.sleep(0.003)

        schedule = OpenLoop(
            send_one, list(range(50)), rate, random.Random(7), start, end, window_ns
        )
        try:
            await asyncio.wait_for(schedule.done, seconds + 5)
        finally:
            schedule.close()
        assert all(start <= stamp < end for _, stamp, _ in sent)
        return schedule.wakeups

    wakeups = asyncio.run(main())
    return sent, wakeups


def test_stamps_never_later_than_the_send_and_lateness_counts() -> None:
    """Early sends carry their actual time, late ones their scheduled time: a stamp is
    never after the send (no under-reporting), and a blocked loop shows as lag."""
    sent, _ = _run(rate=5_000, seconds=0.4, window_ns=1_000_000, busy_every=200)
    assert 1_600 <= len(sent) <= 2_400  # Poisson: 2,000 expected
    assert all(stamp <= at for _, stamp, at in sent)
    lags = sorted(at - stamp for _, stamp, at in sent)
    assert lags[-1] >= 2_000_000  # the 3 ms stalls are in the figures, not hidden


def test_one_wakeup_sends_a_window_of_messages() -> None:
    """At 20,000 msgs/s a 1 ms window batches ~20 sends per wake-up; with no window the
    timer wakes for nearly every message."""
    batched, batched_wakeups = _run(rate=20_000, seconds=0.3, window_ns=1_000_000)
    single, single_wakeups = _run(rate=20_000, seconds=0.3, window_ns=0)
    assert batched_wakeups * 4 < len(batched)
    assert single_wakeups > batched_wakeups * 3
    assert {s for s, _, _ in batched} == set(range(50))  # every sender is picked
    assert abs(len(batched) - len(single)) < 1_500  # same rate either way (6,000 expected)
