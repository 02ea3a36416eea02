"""The open-loop send schedule of one worker: a merged Poisson process on one timer.

Why one timer and not one per connection: at 10,000 connections x 1 msg/s a timer per
send (``call_later`` or an awaited sleep) costs a handle or a future per message, and even
this single ``timerfd`` cost a wake-up, a ``read`` and a ``timerfd_settime`` per message:
profiled at 10,000 msgs/s, those were about a quarter of the worker's busy time.

So each wake-up sends every message whose time has come *and* those due within the next
``SEND_WINDOW_NS``, then re-arms once. Honesty of the figures is kept by the stamp each
message carries (the instant its latency is counted from):

- a message sent late (the loop was busy) carries its *scheduled* time, so the lateness
  counts in the latency (no coordinated omission);
- a message sent early (inside the window) carries the *actual* send time, never the
  later scheduled one, so it cannot under-report either.

The arrival process stays open-loop (it never waits for replies); it only moves sends at
most ``SEND_WINDOW_NS`` earlier, far below the per-sender mean interval.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Callable, Sequence
from random import Random
from typing import Any

from loadtest.engine.clock import PreciseTimer

SEND_WINDOW_NS = 1_000_000
"""How far ahead of its scheduled time a message may go out in a batch (1 ms)."""
BATCH = 64
"""Sends per wake-up before letting the loop read replies (when far behind)."""


class OpenLoop:
    """Drives ``send_one(sender, stamp_ns)`` for a merged Poisson schedule of ``senders``.

    ``rate`` is the total messages per second of all senders; sends scheduled at or past
    ``end_ns`` are not made. ``done`` resolves when the schedule is over.
    """

    def __init__(
        self,
        send_one: Callable[[Any, int], None],
        senders: Sequence[Any],
        rate: float,
        rng: Random,
        start_ns: int,
        end_ns: int,
        window_ns: int = SEND_WINDOW_NS,
    ) -> None:
        self.send_one = send_one
        self.senders = senders
        self.end_ns = end_ns
        self.window_ns = window_ns
        # the draws inline ``randrange`` and ``expovariate`` (same distributions, one
        # ``random()`` each): their Python frames cost more than the arithmetic here
        self.random = rng.random
        self.mean_gap_ns = 1e9 / rate
        self.next_ns = start_ns + self._gap()
        self.wakeups = 0
        self.done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.timer = PreciseTimer(self.fire)
        self.timer.arm(self.next_ns)

    def _gap(self) -> int:
        """One exponential inter-arrival time in ns."""
        return int(-math.log(1.0 - self.random()) * self.mean_gap_ns)

    def fire(self) -> None:
        now = time.monotonic_ns()
        self.wakeups += 1
        horizon = min(now + self.window_ns, self.end_ns - 1)
        budget = BATCH
        send_one = self.send_one
        senders = self.senders
        random, log, mean_gap_ns = self.random, math.log, self.mean_gap_ns
        n = len(senders)
        next_ns = self.next_ns
        while next_ns <= horizon:
            # (``% n``: random() * n may round up to n itself, once in 2**53 draws)
            send_one(senders[int(random() * n) % n], next_ns if next_ns <= now else now)
            next_ns += int(-log(1.0 - random()) * mean_gap_ns)
            budget -= 1
            if budget == 0:  # far behind (or a dense window): let replies be read first
                self.next_ns = next_ns
                self.timer.arm(now)
                return
        self.next_ns = next_ns
        if next_ns >= self.end_ns:
            if not self.done.done():
                self.done.set_result(None)
            return
        self.timer.arm(next_ns)

    def close(self) -> None:
        self.timer.close()
