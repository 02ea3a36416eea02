"""History group commit: the SQLite store (real file, WAL, synchronous=FULL) taking sends.

One round submits a burst of message appends, as a busy room's sends arriving within
a few milliseconds would, and waits until every one is durable (the point at which the
server acks). Group commit is why the time grows far slower than the burst: one fsync
per transaction, not per message. The single-message round is the floor (one commit).
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Iterator
from pathlib import Path

import pytest
import uvloop

from reference_server.store.base import KIND_MESSAGE, AppendItem, EnsureRoom, WriteOp
from reference_server.store.sqlite import SqliteStore

ROOM = "bench-room"
BODY = "x" * 100


class Durable:
    """Counts operations the store has committed (its batch callback runs on the loop)."""

    def __init__(self) -> None:
        self.done = 0
        self.batches = 0
        self.waiter: asyncio.Future[None] | None = None
        self.target = 0

    def on_batch(self, batch: list[WriteOp], seconds: float, ended_ns: int) -> None:
        self.batches += 1
        for op in batch:
            assert op.error is None, op.error
        self.done += len(batch)
        if self.waiter is not None and self.done >= self.target and not self.waiter.done():
            self.waiter.set_result(None)


@pytest.fixture
def store(tmp_path: Path) -> Iterator[tuple[asyncio.AbstractEventLoop, SqliteStore, Durable]]:
    loop = uvloop.new_event_loop()
    durable = Durable()
    sqlite = SqliteStore(str(tmp_path / "history.db"), "full")
    loop.run_until_complete(sqlite.open(durable.on_batch))
    sqlite.submit(EnsureRoom(None, ROOM, False, ["bench"]))
    loop.run_until_complete(sqlite.flush())
    try:
        yield loop, sqlite, durable
    finally:
        loop.run_until_complete(sqlite.close())
        loop.close()


@pytest.mark.parametrize("burst", [1, 100])
def test_group_commit(benchmark, store, burst: int) -> None:  # type: ignore[no-untyped-def]
    loop, sqlite, durable = store
    cids = itertools.count()

    async def burst_until_durable() -> None:
        durable.target = durable.done + burst
        durable.waiter = loop.create_future()
        for _ in range(burst):
            cid = f"c{next(cids)}"
            sqlite.submit(AppendItem(None, ROOM, "bench", KIND_MESSAGE, cid, body=BODY))
        await durable.waiter

    before_ops, before_batches = durable.done, durable.batches

    def one_round() -> None:
        loop.run_until_complete(burst_until_durable())

    benchmark(one_round)
    ops = durable.done - before_ops
    assert ops > 0 and ops % burst == 0  # every submitted append became durable
    rounds = ops // burst
    benchmark.extra_info["commits_per_round"] = (durable.batches - before_batches) / rounds
