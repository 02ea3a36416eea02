"""In-memory store: the same contract as SQLite, nothing survives the process.

For tests of the core and for fan-out benchmarks where the disk is not the
subject. Writes submitted in one loop iteration are applied together on the next
one, so callers see the same asynchronous, batched completion as with SQLite.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from reference_server.store.base import (
    AppendItem,
    BatchDone,
    EnsureRoom,
    MarkRead,
    RemoveMember,
    RoomRecord,
    Store,
    StoredItem,
    UserRoom,
    WriteOp,
)


class _Room:
    __slots__ = ("cids", "items", "members", "private")

    def __init__(self, private: bool) -> None:
        self.private = private
        self.members: dict[str, int] = {}
        self.items: list[StoredItem] = []  # items[i].seq == i + 1
        self.cids: dict[tuple[str, str], int] = {}


class MemoryStore(Store):
    url = "memory"

    def __init__(self) -> None:
        self._rooms: dict[str, _Room] = {}
        self._pending: list[WriteOp] = []
        self._on_batch: BatchDone | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._scheduled = False

    async def open(self, on_batch: BatchDone) -> None:
        self._loop = asyncio.get_running_loop()
        self._on_batch = on_batch

    async def close(self) -> None:
        self._apply()

    async def flush(self) -> None:
        self._apply()

    def health(self) -> dict[str, Any]:
        return {"status": "ok", "url": self.url, "pending_writes": len(self._pending)}

    @property
    def outstanding(self) -> int:
        return len(self._pending)

    def submit(self, op: WriteOp) -> None:
        self._pending.append(op)
        if not self._scheduled:
            self._scheduled = True
            assert self._loop is not None
            self._loop.call_soon(self._apply)

    def _apply(self) -> None:
        self._scheduled = False
        batch, self._pending = self._pending, []
        if not batch:
            return
        started = time.perf_counter()
        now = int(time.time() * 1000)
        for op in batch:
            if isinstance(op, AppendItem):
                self._append(op, now)
            elif isinstance(op, EnsureRoom):
                room = self._rooms.setdefault(op.room, _Room(op.private))
                for user in op.members:
                    room.members.setdefault(user, 0)
            elif isinstance(op, RemoveMember):
                if op.room in self._rooms:
                    self._rooms[op.room].members.pop(op.user, None)
            elif isinstance(op, MarkRead):
                members = self._rooms[op.room].members if op.room in self._rooms else {}
                if op.user in members:
                    members[op.user] = max(members[op.user], op.seq)
        assert self._on_batch is not None
        self._on_batch(batch, time.perf_counter() - started, time.monotonic_ns())

    def _append(self, op: AppendItem, now: int) -> None:
        room = self._rooms.get(op.room)
        if room is None:
            op.error = f"room {op.room!r} does not exist"
            return
        if op.cid is not None:
            seq = room.cids.get((op.sender, op.cid))
            if seq is not None:
                op.seq, op.ts, op.duplicate = seq, room.items[seq - 1].ts, True
                return
            room.cids[(op.sender, op.cid)] = len(room.items) + 1
        op.seq, op.ts = len(room.items) + 1, now
        room.items.append(op.item())
        if op.sender in room.members:  # your own messages are not unread to you
            room.members[op.sender] = op.seq

    async def load_room(self, room: str, ring: int) -> tuple[RoomRecord, list[StoredItem]] | None:
        r = self._rooms.get(room)
        if r is None:
            return None
        items = r.items[-ring:] if ring else []
        return RoomRecord(room, r.private, len(r.items), dict(r.members)), items

    async def load_items(self, room: str, after: int, upto: int) -> list[StoredItem]:
        r = self._rooms.get(room)
        return [] if r is None else r.items[max(after, 0) : max(upto, 0)]

    async def user_rooms(self, user: str) -> list[UserRoom]:
        return [
            UserRoom(name, len(r.items), r.members[user], r.private)
            for name, r in sorted(self._rooms.items())
            if user in r.members
        ]

    async def find_cid(self, room: str, sender: str, cid: str) -> tuple[int, int] | None:
        r = self._rooms.get(room)
        if r is None:
            return None
        seq = r.cids.get((sender, cid))
        return None if seq is None else (seq, r.items[seq - 1].ts)

    async def max_seq(self, room: str) -> int:
        r = self._rooms.get(room)
        return 0 if r is None else len(r.items)
