"""What the third-party test servers do wrong on command, and the truth they keep about it.

Both test servers (Socket.IO, plain JSON) fan a message out one recipient at a time
through ``FanOut``: it drops, duplicates, swaps or delays deliveries by a server-wide
delivery number, counts each fault, and records the true latency of every delivery it
writes (write time - the scheduled send time in the message's marker; one machine-wide
monotonic clock). A test compares the load engine's figures with these counts exactly.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass, field, fields
from typing import Any

from loadtest.adapters.rules import find_marker
from rtbench.histogram import LatencyHistogram

SWAP_RELEASE_S = 1.0
"""A held (swapped) delivery whose stream sends nothing more goes out after this long."""


@dataclass
class Faults:
    """Every k-th delivery (server-wide) is dropped / sent twice / held behind the next."""

    drop_every: int = 0
    dup_every: int = 0
    swap_every: int = 0
    delay_ms: float = 0.0  # every delivery waits this long

    def update(self, values: dict[str, Any]) -> None:
        for f in fields(self):
            if f.name in values:
                setattr(self, f.name, type(f.default)(values[f.name]))


@dataclass
class Stats:
    sends: int = 0  # messages received from senders
    deliveries: int = 0  # recipient copies due (before faults): the engine's "expected"
    dropped: int = 0
    duplicated: int = 0
    swapped: int = 0
    own: int = 0  # copies sent back to the sender (echo-sender mode), nobody's delivery
    truth: LatencyHistogram = field(default_factory=LatencyHistogram)

    def as_dict(self) -> dict[str, Any]:
        out = {k: v for k, v in asdict(self).items() if k != "truth"}
        out["truth_count"] = self.truth.count
        out["truth_p50_ms"] = self.truth.percentile_ms(50)
        out["truth_p99_ms"] = self.truth.percentile_ms(99)
        return out


class Outbox:
    """One connection's ordered outgoing deliveries: each leaves at its due time, in order."""

    LIMIT = 100_000

    def __init__(self, write: Callable[[Any], Awaitable[None]], stats: Stats) -> None:
        self.write = write
        self.stats = stats
        self.queue: asyncio.Queue[tuple[float, Any, int | None]] = asyncio.Queue(self.LIMIT)
        self.held: dict[Any, tuple[Any, int | None]] = {}
        self.task = asyncio.create_task(self._run())

    def put(self, item: Any, due: float, sched_ns: int | None) -> None:
        self.queue.put_nowait((due, item, sched_ns))

    async def close(self) -> None:
        self.task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self.task

    async def _run(self) -> None:
        while True:
            due, item, sched_ns = await self.queue.get()
            delay = due - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            try:
                await self.write(item)
            except Exception:
                return  # the connection is gone
            if sched_ns is not None:
                self.stats.truth.record_us((time.monotonic_ns() - sched_ns) // 1000)


class FanOut:
    """Deliver one message to many outboxes, applying the faults and counting the truth."""

    def __init__(self, faults: Faults, stats: Stats) -> None:
        self.faults = faults
        self.stats = stats
        self.number = 0  # server-wide delivery number

    def deliver(self, targets: list[Outbox], item: Any, stream: Any, text: Any) -> None:
        """Send ``item`` (carrying marker ``text``) to every target; ``stream`` orders swaps."""
        found = find_marker(text)
        sched = found[3] if found else None
        f = self.faults
        due = time.monotonic() + f.delay_ms / 1000.0
        self.stats.sends += 1
        for out in targets:
            self.number += 1
            n = self.number
            self.stats.deliveries += 1
            held = out.held.pop(stream, None)
            if f.drop_every and n % f.drop_every == 0:
                self.stats.dropped += 1
                if held is not None:  # the next one is gone: the held one goes now, in order
                    out.put(held[0], due, held[1])
                continue
            if f.swap_every and held is None and n % f.swap_every == 0:
                out.held[stream] = (item, sched)
                asyncio.get_running_loop().call_later(SWAP_RELEASE_S, self._release, out, stream)
                continue
            out.put(item, due, sched)
            if f.dup_every and n % f.dup_every == 0:
                self.stats.duplicated += 1
                out.put(item, due, None)
            if held is not None:
                self.stats.swapped += 1
                out.put(held[0], due, held[1])

    def echo(self, out: Outbox, item: Any) -> None:
        """The sender's own copy (servers that broadcast to the sender too)."""
        self.stats.own += 1
        out.put(item, time.monotonic(), None)

    def _release(self, out: Outbox, stream: Any) -> None:
        held = out.held.pop(stream, None)
        if held is not None:  # nothing came after it: late, but not out of order
            out.put(held[0], time.monotonic(), held[1])
