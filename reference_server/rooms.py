"""Rooms in memory: subscribers, last seq, a ring of recent frames, typing state.

A room is loaded from the store once (coalesced: ten thousand clients resuming
into one room after a restart cause one load) and then served from memory. The
ring keeps the encoded frames of the newest stored items, so a resume replays
by sending bytes that already exist, with no store read and no re-encoding.
"""

from __future__ import annotations

import asyncio
import itertools
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING

from reference_server.store.base import RoomRecord, Store, StoredItem

if TYPE_CHECKING:
    from reference_server.session import Session


def dm_users(room: str) -> tuple[str, str] | None:
    """The two users of a ``dm:A:B`` room, or None for any other room id."""
    if not room.startswith("dm:"):
        return None
    parts = room[3:].split(":")
    return (parts[0], parts[1]) if len(parts) == 2 else None


class Room:
    __slots__ = ("dm", "members", "name", "private", "ring", "seq", "subs", "typing")

    def __init__(self, name: str, private: bool, seq: int, members: dict[str, int], ring: int):
        self.name = name
        self.private = private
        self.dm = dm_users(name)
        self.seq = seq  # last durable seq
        self.members = members  # user -> read-up-to seq
        self.subs: set[Session] = set()  # connections subscribed to live traffic
        self.ring: deque[bytes] = deque(maxlen=ring)  # frames of seqs ring_first..seq
        self.typing: dict[str, float] | None = None  # user -> expiry (monotonic)

    @property
    def ring_first(self) -> int:
        """Seq of the oldest frame in the ring (seq + 1 when the ring is empty)."""
        return self.seq - len(self.ring) + 1

    def push(self, seq: int, frame: bytes) -> bool:
        """Record a newly durable item; False if it was already known (a reload raced it)."""
        if seq <= self.seq:
            return False
        if seq != self.seq + 1:  # should not happen; keep the ring contiguous regardless
            self.ring.clear()
        self.seq = seq
        self.ring.append(frame)
        return True

    def frames(self, first: int, last: int) -> list[bytes]:
        """Ring frames for seqs first..last (caller checks they are in the ring).

        A resume asks for the newest few of up to ``ring_size`` frames, and a deque is
        walked from one end: from the newest end that costs the gap, not the ring.
        """
        ring = self.ring
        start = first - self.ring_first
        count = last - first + 1
        from_end = len(ring) - start - count
        if from_end < start:
            out = list(itertools.islice(reversed(ring), from_end, from_end + count))
            out.reverse()
            return out
        return list(itertools.islice(ring, start, start + count))


class RoomDirectory:
    """The cache of loaded rooms, with coalesced loads and a user -> rooms index."""

    def __init__(self, store: Store, ring: int, encode_item: Callable[[StoredItem], bytes]):
        self.store = store
        self.ring = ring
        self.encode_item = encode_item
        self.cache: dict[str, Room] = {}
        self.by_user: dict[str, set[str]] = {}  # user -> loaded rooms they are a member of
        self._loading: dict[str, asyncio.Future[Room | None]] = {}
        # Called with each room that enters the cache (loaded or created): items that
        # other workers committed meanwhile are applied there (cluster.sequencer).
        self.on_cached: Callable[[Room], None] | None = None

    def __len__(self) -> int:
        return len(self.cache)

    def cached(self, name: str) -> Room | None:
        return self.cache.get(name)

    def loading(self, name: str) -> bool:
        """True while the room is being read from the store."""
        return name in self._loading

    async def get(self, name: str) -> Room | None:
        """The room, loading it from the store on first use; None if it does not exist."""
        room = self.cache.get(name)
        if room is not None:
            return room
        pending = self._loading.get(name)
        if pending is not None:
            return await asyncio.shield(pending)
        future: asyncio.Future[Room | None] = asyncio.get_running_loop().create_future()
        future.add_done_callback(_consume)
        self._loading[name] = future
        try:
            loaded = await self.store.load_room(name, self.ring)
        except BaseException as exc:
            future.set_exception(exc)
            raise
        finally:
            del self._loading[name]
        room = self.cache.get(name)  # created by a join while we were loading
        if room is None and loaded is not None:
            room = self._install(*loaded)
        future.set_result(room)
        return room

    def _install(self, record: RoomRecord, items: list[StoredItem]) -> Room:
        room = Room(record.room, record.private, record.seq, record.members, self.ring)
        if items and items[-1].seq == record.seq:
            room.ring.extend(self.encode_item(item) for item in items)
        self.cache[room.name] = room
        for user in room.members:
            self.by_user.setdefault(user, set()).add(room.name)
        if self.on_cached is not None:
            self.on_cached(room)
        return room

    def create(self, name: str, private: bool, members: list[str]) -> Room:
        """A room that is being created now (its EnsureRoom is on its way to the store)."""
        room = Room(name, private, 0, dict.fromkeys(members, 0), self.ring)
        self.cache[name] = room
        for user in members:
            self.by_user.setdefault(user, set()).add(name)
        if self.on_cached is not None:
            self.on_cached(room)
        return room

    def add_member(self, room: Room, user: str) -> None:
        room.members.setdefault(user, 0)
        self.by_user.setdefault(user, set()).add(room.name)

    def remove_member(self, room: Room, user: str) -> None:
        room.members.pop(user, None)
        rooms = self.by_user.get(user)
        if rooms is not None:
            rooms.discard(room.name)
            if not rooms:
                del self.by_user[user]

    def forget(self, name: str) -> None:
        """Drop a room from memory (unused, or its creation failed); the store keeps it."""
        room = self.cache.pop(name, None)
        if room is None:
            return
        for user in room.members:
            rooms = self.by_user.get(user)
            if rooms is not None:
                rooms.discard(name)
                if not rooms:
                    del self.by_user[user]

    def evict_idle(self, keep: int) -> int:
        """Forget rooms nobody is subscribed to until at most ``keep`` remain."""
        excess = len(self.cache) - keep
        if excess <= 0:
            return 0
        idle = [n for n, r in self.cache.items() if not r.subs and not r.typing][:excess]
        for name in idle:
            self.forget(name)
        return len(idle)


def _consume(future: asyncio.Future[Room | None]) -> None:
    if not future.cancelled():
        future.exception()  # a failed load is raised to its awaiters; don't log it twice
