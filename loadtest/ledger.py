"""Delivery accounting: every message's fate at every recipient, exact and sans-IO.

Each message carries (sender, stream, counter) where the counter runs 1, 2, 3... per
(sender, stream). A recipient keeps, per (stream, sender), the highest counter it has
seen and the set of missing counters below it (bounded). From that alone each arrival
is classified exactly:

- ``NEW``: a counter above the highest (any skipped counters become gaps);
- ``LATE``: a counter that fills a gap: unique but out of order;
- ``DUPLICATE``: at or below the highest and not a gap: seen before.

The sender's process counts what it sent and to how many recipients; recipients'
processes count unique arrivals. ``lost = expected - delivered`` once the run has
drained, summed across processes, with no message ids to ship between them.
"""

from __future__ import annotations

from enum import IntEnum

MAX_GAPS_PER_STREAM = 100_000
"""Gaps remembered per (recipient, stream, sender); beyond it the oldest are forgotten (a
late arrival for a forgotten gap then counts as a duplicate, and ``gap_overflow`` says so)."""


class Arrival(IntEnum):
    NEW = 0
    LATE = 1
    DUPLICATE = 2


class RecipientLedger:
    """One recipient's view of every sender stream it receives."""

    __slots__ = ("gap_overflow", "streams")

    def __init__(self) -> None:
        # (stream, sender) -> [highest counter, set of missing counters or None]
        self.streams: dict[tuple[int, int], list] = {}
        self.gap_overflow = 0

    def arrive(self, stream: int, sender: int, counter: int) -> Arrival:
        key = (stream, sender)
        state = self.streams.get(key)
        if state is None:
            state = self.streams[key] = [0, None]
        highest = state[0]
        if counter == highest + 1:
            state[0] = counter
            return Arrival.NEW
        if counter > highest:
            gaps = state[1]
            if gaps is None:
                gaps = state[1] = set()
            missing = counter - highest - 1
            if missing + len(gaps) > MAX_GAPS_PER_STREAM:
                self.gap_overflow += missing
                missing = min(missing, MAX_GAPS_PER_STREAM)
                gaps.clear()
            gaps.update(range(counter - missing, counter))
            state[0] = counter
            return Arrival.NEW
        gaps = state[1]
        if gaps and counter in gaps:
            gaps.discard(counter)
            return Arrival.LATE
        return Arrival.DUPLICATE

    def seen(self, stream: int, sender: int, counter: int) -> bool:
        """True when ``counter`` already arrived (nothing is recorded: a look only)."""
        state = self.streams.get((stream, sender))
        if state is None or counter > state[0]:
            return False
        gaps = state[1]
        return not gaps or counter not in gaps

    def missing(self) -> int:
        """Counters skipped and not (yet) arrived, over every stream."""
        return sum(len(state[1]) for state in self.streams.values() if state[1])
