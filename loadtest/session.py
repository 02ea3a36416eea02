"""Per-client sequence state a resuming client needs, kept sans-IO.

A client that loses its connection resumes by telling the server where to start again
in each room (reference protocol: ``hello.resume``) and then drops any replayed item it
already has. That memory lives here, not in a socket class, so the native engine, the
monitor and the Locust users share one implementation; ``loadtest.client`` adds
reconnecting (backoff, heartbeats, the outbox of unacked sends) on top of it.

Deduplication is exact, not "anything at or below the newest seq": items of one room
can legitimately arrive out of seq order across a reconnect (a live direct message
overtaking the replay of its room, for one), so every seq skipped over is remembered as
missing until it arrives, and a resume starts before the oldest missing one. The
client's own sends come back as acks carrying their seq, which fill their place too.
"""

from __future__ import annotations

from enum import IntEnum

ITEM_KINDS = frozenset({"message", "event"})
"""Notice kinds whose seq is a stored item's (a receipt's seq is a read marker, not one)."""
MAX_MISSING_PER_ROOM = 10_000
"""Missing seqs remembered per room; past it the oldest are given up (``forgotten``)."""


class SeqOrder(IntEnum):
    """How an item's seq relates to what this session has seen in its room."""

    NEXT = 0  # exactly the next seq: in order, nothing missed
    GAP = 1  # newer than the next: the items in between are missing (so far)
    OLD = 2  # seen before: a duplicate (a replay overlapping what arrived); drop it
    FILL = 3  # one of the missing seqs, arriving late: new, keep it


class SessionState:
    """Seen seqs per room (newest, plus the missing ones below it) and the rooms to resume.

    ``last_seq[room]`` is the newest seq seen; ``missing[room]`` the seqs below it not
    seen yet. ``rooms`` are the rooms the client is subscribed to (joined, or learned from
    traffic such as a direct-message room): all of them are named when resuming, even
    those that never carried an item.
    """

    __slots__ = ("forgotten", "gaps", "last_seq", "missing", "old", "rooms")

    def __init__(self) -> None:
        self.last_seq: dict[str, int] = {}
        self.missing: dict[str, set[int]] = {}
        self.rooms: set[str] = set()
        self.gaps = 0  # items that arrived past a hole
        self.old = 0  # duplicates dropped
        self.forgotten = 0  # missing seqs given up past MAX_MISSING_PER_ROOM

    def joined(self, room: str, seq: int) -> None:
        """A fresh join at the room's ``seq``: items up to it were sent before we were in."""
        self.rooms.add(room)
        if seq > self.last_seq.get(room, 0):
            self.last_seq[room] = seq
        holes = self.missing.get(room)
        if holes:
            holes.difference_update([s for s in holes if s <= seq])

    def observe(self, room: str, seq: int) -> SeqOrder:
        """Classify an item (or the seq of an own ack) and remember it as seen."""
        last = self.last_seq.get(room, 0)
        if seq == last + 1:
            self.last_seq[room] = seq
            return SeqOrder.NEXT
        if seq > last:  # (a room first seen this way, e.g. a DM room, misses 1 .. seq-1)
            self.last_seq[room] = seq
            self._hole(room, last + 1, seq)
            self.gaps += 1
            return SeqOrder.GAP
        holes = self.missing.get(room)
        if holes and seq in holes:
            holes.discard(seq)
            return SeqOrder.FILL
        self.old += 1
        return SeqOrder.OLD

    def _hole(self, room: str, first: int, end: int) -> None:
        """Remember seqs ``first .. end - 1`` as missing (bounded)."""
        holes = self.missing.setdefault(room, set())
        if len(holes) + end - first > MAX_MISSING_PER_ROOM:
            dropped = len(holes) + end - first - MAX_MISSING_PER_ROOM
            self.forgotten += dropped
            keep = sorted(holes)[dropped:] if dropped < len(holes) else []
            holes.clear()
            holes.update(keep)
            first = max(first, end - (MAX_MISSING_PER_ROOM - len(holes)))
        holes.update(range(first, end))

    def complete(self, room: str, upto: int) -> bool:
        """True when every seq of ``room`` up to ``upto`` has been seen (or predates us)."""
        if self.last_seq.get(room, 0) < upto:
            return False
        holes = self.missing.get(room)
        return not holes or min(holes) > upto

    def resume_point(self, room: str) -> int:
        """The seq to resume ``room`` after: just before the oldest missing one."""
        holes = self.missing.get(room)
        if holes:
            return min(holes) - 1
        return self.last_seq.get(room, 0)

    def resume(self) -> dict[str, int]:
        """The ``{room: seq}`` map to send when resuming: every subscribed room."""
        names = self.rooms | self.last_seq.keys()
        return {room: self.resume_point(room) for room in sorted(names)}
