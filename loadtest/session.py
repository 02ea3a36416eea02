"""Per-connection session state a reconnecting client needs, kept sans-IO.

A client that loses its connection resumes by telling the server the last seq it saw
in each room (reference protocol: ``hello.resume``) and then drops any replayed item it
already has. That memory lives here, not in a socket class, so the engine, the monitor
and the Locust users share one implementation (the recovery issue adds reconnect with
backoff on top of it).
"""

from __future__ import annotations

from enum import IntEnum


class SeqOrder(IntEnum):
    """How an item's seq relates to what this session has seen in its room."""

    NEXT = 0  # exactly the next seq: in order, nothing missed
    GAP = 1  # newer than the next: the items in between are missing (so far)
    OLD = 2  # at or below the last seen: a duplicate or a late item; a resumed client drops it


class SessionState:
    """Last seq seen per room, and counts of gaps and old items (for resume and receipts)."""

    __slots__ = ("gaps", "last_seq", "old")

    def __init__(self) -> None:
        self.last_seq: dict[str, int] = {}
        self.gaps = 0
        self.old = 0

    def joined(self, room: str, seq: int) -> None:
        """The room's seq at join time: items up to it were sent before we subscribed."""
        if seq > self.last_seq.get(room, 0):
            self.last_seq[room] = seq

    def observe(self, room: str, seq: int) -> SeqOrder:
        last = self.last_seq.get(room, 0)
        if seq == last + 1:
            self.last_seq[room] = seq
            return SeqOrder.NEXT
        if seq > last:
            self.last_seq[room] = seq
            self.gaps += 1
            return SeqOrder.GAP
        self.old += 1
        return SeqOrder.OLD

    def resume(self) -> dict[str, int]:
        """The ``{room: last_seq}`` map to send when resuming."""
        return dict(self.last_seq)
