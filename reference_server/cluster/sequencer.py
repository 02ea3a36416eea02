"""Every room's stored items reach its subscribers in seq order, whoever committed them.

With one process the store hands items over in seq order and this is a pass
through (one comparison per batch). With several workers sharing a store, seq
``n`` may be committed by worker A and ``n + 1`` by worker B an instant later,
and B's own commit can come back before A's item arrives through the broker; or
the broker may drop an item (Redis pub/sub is at-most-once; a publisher can die
between its commit and its publish). So items that arrive past a gap are parked;
when the gap closes they go out in order, and if it stays open for
``gap_timeout_s`` the missing items are read from the store, which has every
acked item. Duplicates (``seq`` at or below the room's) are dropped, so each
subscriber gets each item exactly once.

Items for a room that is being loaded from the store are parked until it is
installed; items for rooms not in memory are dropped, but the highest dropped
seq is remembered (bounded), so a room created in memory an instant later still
catches up. After a broker outage, ``catch_up`` compares every loaded room with
the store.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Coroutine, Iterable
from typing import Any

from reference_server.fanout import Item
from reference_server.frames import encode_item
from reference_server.metrics import Metrics
from reference_server.rooms import Room, RoomDirectory
from reference_server.store.base import Store, StoreError
from rtbench.bounded import BoundedDict

log = logging.getLogger("rtbench.server.sequencer")

MAX_PARKED = 10000  # items held past one room's gap before it is repaired at once
MAX_DROPPED = 65536  # rooms remembered with the highest seq seen while not loaded
CATCH_UP_CHUNK = 500  # rooms per head query after an outage

Deliver = Callable[[Room, list[Item]], None]
Spawn = Callable[[Coroutine[Any, Any, None], str], None]


class Sequencer:
    """Orders each room's items; parks what arrives past a gap; repairs gaps from the store."""

    def __init__(
        self,
        rooms: RoomDirectory,
        store: Store,
        deliver: Deliver,
        spawn: Spawn,
        *,
        gap_timeout_s: float = 0.2,
        max_replay: int = 10000,
        too_far_behind: Callable[[Room], None] | None = None,
        metrics: Metrics | None = None,
    ) -> None:
        self.rooms = rooms
        self.store = store
        self.deliver = deliver
        self.spawn = spawn
        self.gap_timeout_s = gap_timeout_s
        self.max_replay = max_replay
        self.too_far_behind = too_far_behind or (lambda room: None)
        self.parked: dict[str, dict[int, Item]] = {}  # room -> seq -> item past a gap
        self._timers: dict[str, asyncio.TimerHandle] = {}
        self._repairing: set[str] = set()
        self._unloaded: dict[str, list[Item]] = {}  # rooms being loaded: items meanwhile
        # room not in memory -> highest seq seen, the longest unseen forgotten first
        self._dropped: BoundedDict[str, int] = BoundedDict(MAX_DROPPED)
        self._expected: dict[str, int] = {}  # DM rooms being loaded: deliver after this seq
        self.metrics = metrics or Metrics()  # gap_repairs, repaired_items

    # ------------------------------------------------------------------ ordering

    def accept(self, room: Room, items: list[Item], again: bool = False) -> list[Item]:
        """Push what is now in order into the room's ring and return it; park the rest.

        ``again`` (a resend the store already had, ``Broker.publish``): the seqs the room
        already holds are returned too, to go out to its audience once more, instead of
        being dropped."""
        if again:
            known = [item for item in items if item[0] <= room.seq]
            return known + self.accept(room, items)
        if room.name not in self.parked:
            seq = room.seq
            if items[0][0] == seq + 1 and items[-1][0] == seq + len(items):
                push = room.push
                for item in items:
                    push(item[0], item[1])
                return items
        return self._reorder(room, items)

    def _reorder(self, room: Room, items: Iterable[Item]) -> list[Item]:
        name = room.name
        parked = self.parked.setdefault(name, {})
        for item in items:
            if item[0] > room.seq:
                parked.setdefault(item[0], item)
        out: list[Item] = []
        following = room.seq + 1
        while following in parked:
            item = parked.pop(following)
            room.push(item[0], item[1])
            out.append(item)
            following += 1
        if not parked:
            del self.parked[name]
            timer = self._timers.pop(name, None)
            if timer is not None:
                timer.cancel()
        elif len(parked) > MAX_PARKED:
            self._repair_soon(name, now=True)
        elif name not in self._timers:
            self._repair_soon(name)
        return out

    def remote(self, name: str, items: list[tuple[int, bytes]], again: bool = False) -> None:
        """Items another worker committed: deliver in order, or park, or remember the seq
        (``again``: as in ``accept``)."""
        room = self.rooms.cached(name)
        tagged: list[Item] = [(seq, frame, None) for seq, frame in items]
        if room is None:
            if name in self._expected or self.rooms.loading(name):
                self._unloaded.setdefault(name, []).extend(tagged)
            else:
                self._note_dropped(name, items[-1][0])
            return
        out = self.accept(room, tagged, again)
        if out:
            self.deliver(room, out)

    def _note_dropped(self, name: str, seq: int) -> None:
        if seq > self._dropped.get(name, 0):
            self._dropped.renew(name, seq)

    def expect(self, name: str, after: int) -> None:
        """A DM room is being loaded because its items arrived: once it is, its audience
        (the two users' sessions, who never subscribed) gets every item after ``after``."""
        self._expected.setdefault(name, after)

    def room_cached(self, room: Room) -> None:
        """A room was loaded (or created) here: apply what arrived meanwhile, repair gaps."""
        after = self._expected.pop(room.name, None)
        if after is not None and room.seq > after:
            first = max(after + 1, room.ring_first)
            frames = room.frames(first, room.seq)
            self.deliver(room, [(first + i, f, None) for i, f in enumerate(frames)])
        waiting = self._unloaded.pop(room.name, None)
        if waiting:
            out = self._reorder(room, waiting)
            if out:
                self.deliver(room, out)
        seen = self._dropped.pop(room.name, 0)
        if seen > room.seq:
            self._repair_soon(room.name, now=True, upto=seen)

    def forget(self, name: str) -> None:
        """The room left memory: drop its parked items (a reload reads the store)."""
        self.parked.pop(name, None)
        self._unloaded.pop(name, None)
        self._expected.pop(name, None)
        timer = self._timers.pop(name, None)
        if timer is not None:
            timer.cancel()

    # ------------------------------------------------------------------ repair

    def _repair_soon(self, name: str, now: bool = False, upto: int = 0) -> None:
        timer = self._timers.pop(name, None)
        if timer is not None:
            timer.cancel()
        if now:
            self._start_repair(name, upto)
            return
        loop = asyncio.get_running_loop()
        self._timers[name] = loop.call_later(self.gap_timeout_s, self._start_repair, name, upto)

    def _start_repair(self, name: str, upto: int = 0) -> None:
        self._timers.pop(name, None)
        if name in self._repairing:
            return
        self._repairing.add(name)
        self.spawn(self._repair(name, upto), f"rtbench-repair-{name[:32]}")

    async def _repair(self, name: str, upto: int) -> None:
        try:
            room = self.rooms.cached(name)
            if room is None:
                self.forget(name)
                return
            parked = self.parked.get(name)
            target = max(upto, max(parked) - 1 if parked else 0)
            if target <= room.seq:
                return
            await self._fill(room, target)
        except StoreError as exc:
            log.warning("rtbench: cannot fill a gap in room %r yet: %s", name, exc)
            self._repairing.discard(name)
            self._repair_soon(name, upto=upto)  # try again after the next timeout
            return
        finally:
            self._repairing.discard(name)
        if self.parked.get(name) and name not in self._timers:
            self._repair_soon(name)

    async def _fill(self, room: Room, target: int) -> None:
        """Read seqs after the room's up to ``target`` from the store and deliver them."""
        if target - room.seq > self.max_replay:
            log.warning(
                "rtbench: room %r is %d items behind the store: its subscribers resume",
                room.name,
                target - room.seq,
            )
            self.forget(room.name)
            self.too_far_behind(room)
            return
        stored = await self.store.load_items(room.name, room.seq, target)
        if not stored:
            return
        self.metrics.gap_repairs += 1
        self.metrics.repaired_items += len(stored)
        out = self._reorder(room, [(item.seq, encode_item(item), None) for item in stored])
        if out:
            self.deliver(room, out)

    async def catch_up(self, rooms: list[Room]) -> None:
        """After a broker outage: bring every given room level with the store."""
        heads_of = getattr(self.store, "room_seqs", None)
        for start in range(0, len(rooms), CATCH_UP_CHUNK):
            chunk = rooms[start : start + CATCH_UP_CHUNK]
            try:
                if heads_of is not None:
                    heads = await heads_of([room.name for room in chunk])
                else:
                    heads = {room.name: await self.store.max_seq(room.name) for room in chunk}
            except StoreError as exc:
                log.warning("rtbench: catching rooms up after a broker outage failed: %s", exc)
                return
            for room in chunk:
                head = heads.get(room.name, 0)
                if head > room.seq and self.rooms.cached(room.name) is room:
                    self._repair_soon(room.name, now=True, upto=head)
