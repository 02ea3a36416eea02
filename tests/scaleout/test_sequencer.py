"""Room order whoever committed: parking past a gap, repair from the store, duplicates."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any

from reference_server.cluster.sequencer import Sequencer
from reference_server.fanout import Item
from reference_server.frames import encode_item
from reference_server.rooms import Room, RoomDirectory
from reference_server.store import MemoryStore
from reference_server.store.base import KIND_MESSAGE, AppendItem, EnsureRoom, WriteOp
from tests.scaleout.polling import until


class Harness:
    """A real memory store and room directory; records what reaches the room's audience."""

    def __init__(self, gap_timeout_s: float = 0.05) -> None:
        self.store = MemoryStore()
        self.rooms = RoomDirectory(self.store, 100, encode_item)
        self.delivered: list[int] = []
        self.tasks: set[asyncio.Task[None]] = set()
        self.seq = Sequencer(
            self.rooms, self.store, self.deliver, self.spawn, gap_timeout_s=gap_timeout_s
        )
        self.rooms.on_cached = self.seq.room_cached

    def deliver(self, room: Room, items: list[Item]) -> None:
        self.delivered += [seq for seq, _, _ in items]

    def spawn(self, coro: Coroutine[Any, Any, None], name: str) -> None:
        task = asyncio.get_running_loop().create_task(coro, name=name)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def stored(self, room: str, count: int) -> list[tuple[int, bytes]]:
        """Commit ``count`` messages to ``room`` (as another worker would)."""
        base = await self.store.max_seq(room)
        ops: list[WriteOp] = [EnsureRoom(None, room, False, ["u"])]
        ops += [
            AppendItem(None, room, "u", KIND_MESSAGE, f"c{base + i}", f"b{i}") for i in range(count)
        ]
        await self.store.open(lambda batch, seconds, ended_ns: None)
        for op in ops:
            self.store.submit(op)
        await self.store.flush()
        return [(op.seq, encode_item(op.item())) for op in ops[1:]]  # type: ignore[attr-defined]


async def test_in_order_items_pass_straight_through() -> None:
    h = Harness()
    items = await h.stored("r", 3)
    room = h.rooms.create("r", False, ["u"])
    out = h.seq.accept(room, [(s, f, None) for s, f in items])
    assert [s for s, _, _ in out] == [1, 2, 3] and room.seq == 3 and not h.seq.parked


async def test_items_past_a_gap_wait_for_it_and_duplicates_are_dropped() -> None:
    h = Harness(gap_timeout_s=30)  # no repair in this test: the gap is filled in time
    items = await h.stored("r", 4)
    room = h.rooms.create("r", False, ["u"])
    h.seq.remote("r", [items[2], items[3]])  # 3 and 4 arrive before 1 and 2
    assert h.delivered == [] and room.seq == 0
    h.seq.remote("r", [items[0]])
    assert h.delivered == [1]
    h.seq.remote("r", [items[1], items[0]])  # 2 fills the gap; 1 again is a duplicate
    assert h.delivered == [1, 2, 3, 4] and room.seq == 4
    h.seq.remote("r", [items[3]])
    assert h.delivered == [1, 2, 3, 4] and not h.seq.parked


async def test_a_gap_that_stays_open_is_read_from_the_store() -> None:
    h = Harness(gap_timeout_s=0.05)
    items = await h.stored("r", 6)
    room = h.rooms.create("r", False, ["u"])
    h.seq.remote("r", items[:2])
    h.seq.remote("r", [items[5]])  # 3, 4, 5 were lost on the way (pub/sub is at-most-once)
    assert h.delivered == [1, 2]
    await until(lambda: h.delivered == [1, 2, 3, 4, 5, 6])
    assert room.seq == 6 and h.seq.metrics.gap_repairs == 1
    assert h.seq.metrics.repaired_items == 3
    assert room.frames(3, 5) == [f for _, f in items[2:5]]  # the ring has them, in order


class SlowLoadStore(MemoryStore):
    """A memory store whose room loads return only when the test says so (after reading)."""

    def __init__(self) -> None:
        super().__init__()
        self.gate = asyncio.Event()

    async def load_room(self, room: str, ring: int) -> Any:
        snapshot = await super().load_room(room, ring)
        await self.gate.wait()  # meanwhile other workers commit and publish more
        return snapshot


async def test_items_that_arrive_while_a_room_loads_are_applied_once_it_is() -> None:
    h = Harness()
    h.store = h.rooms.store = h.seq.store = SlowLoadStore()
    await h.stored("r", 5)
    loading = asyncio.get_running_loop().create_task(h.rooms.get("r"))
    await until(lambda: h.rooms.loading("r"))
    later = await h.stored("r", 2)  # seqs 6 and 7, committed after the load read seq 5
    h.seq.remote("r", later)
    assert h.delivered == []
    h.store.gate.set()  # type: ignore[attr-defined]
    room = await loading
    assert room is not None and room.seq == 7 and h.delivered == [6, 7]


async def test_a_tail_missed_before_a_room_was_created_is_caught_up() -> None:
    h = Harness()
    items = await h.stored("r", 2)
    h.seq.remote("r", items)  # nobody here has the room: remembered, not delivered
    assert h.delivered == []
    h.rooms.create("r", False, ["u"])  # a join here created it an instant later, at seq 0
    await until(lambda: h.delivered == [1, 2])
