"""The store contract on the real PostgreSQL: group commit, dense seqs across writers,
idempotent retries, versioned migrations, and outages of a real instance."""

from __future__ import annotations

import asyncio
import logging
import time

import asyncpg
import pytest

from reference_server.config import redact_url as redact
from reference_server.store import make_store
from reference_server.store.base import (
    KIND_EVENT,
    KIND_MESSAGE,
    AppendItem,
    EnsureRoom,
    MarkRead,
    RemoveMember,
)
from reference_server.store.postgres import SCHEMA_VERSION, PostgresStore
from tests.scaleout.conftest import with_schema
from tests.server.test_store import Recorder

pytestmark = pytest.mark.postgres


def append(i: int, room: str = "r", sender: str = "u", cid: str | None = None) -> AppendItem:
    return AppendItem(i, room, sender, KIND_MESSAGE, cid or f"{sender}-{i}", f"b{i}")


async def opened(dsn: str) -> tuple[PostgresStore, Recorder]:
    store = PostgresStore(dsn)
    rec = Recorder()
    await store.open(rec)
    return store, rec


async def test_group_commit_dense_seqs_dedupe_and_reads(pg_dsn: str) -> None:
    store, rec = await opened(pg_dsn)
    try:
        store.submit(EnsureRoom(None, "r", False, ["u", "v"]))
        ops = [append(i) for i in range(500)]
        for op in ops:
            store.submit(op)
        retry = append(999, cid="u-7")
        event = AppendItem(0, "r", "v", KIND_EVENT, None, event="rsvp", data={"going": 3})
        store.submit(retry)
        store.submit(event)
        await store.flush()
        assert [op.seq for op in ops] == list(range(1, 501))
        assert all(op.error is None and not op.duplicate for op in ops)
        assert retry.duplicate and retry.seq == 8 and retry.ts == ops[7].ts
        assert event.seq == 501 and not event.duplicate
        committed = sum(len(b) for b in rec.batches)
        assert committed == 503 and len(rec.batches) < committed  # many ops per commit
        assert await store.max_seq("r") == 501
        assert await store.find_cid("r", "u", "u-42") == (43, ops[42].ts)
        items = await store.load_items("r", 10, 13)
        assert [(i.seq, i.body) for i in items] == [(11, "b10"), (12, "b11"), (13, "b12")]
        [stored_event] = await store.load_items("r", 500, 501)
        assert (stored_event.event, stored_event.data, stored_event.body) == (
            "rsvp",
            {"going": 3},
            None,
        )
        store.submit(MarkRead(None, "r", "v", 30))
        store.submit(MarkRead(None, "r", "v", 20))  # read markers only move forward
        await store.flush()
        [u_row] = await store.user_rooms("u")
        [v_row] = await store.user_rooms("v")
        assert (u_row.room, u_row.seq, u_row.read) == ("r", 501, 500)  # own messages are read
        assert v_row.read == 501  # v's own event
        loaded = await store.load_room("r", 5)
        assert loaded is not None
        record, ring = loaded
        assert record.seq == 501 and record.members == {"u": 500, "v": 501}
        assert [i.seq for i in ring] == [497, 498, 499, 500, 501]
        assert await store.load_room("nowhere", 5) is None
        missing = append(1, room="nowhere")
        store.submit(missing)
        await store.flush()
        assert missing.error is not None and "does not exist" in missing.error
        store.submit(RemoveMember(None, "r", "v"))
        await store.flush()
        assert await store.user_rooms("v") == []
        assert store.health()["status"] == "ok"
        assert store.health()["schema_version"] == SCHEMA_VERSION
    finally:
        await store.close()


async def test_two_writers_share_one_room_seqs_stay_dense(pg_dsn: str) -> None:
    """Two stores (two workers, or two machines) appending to one room at once."""
    a, _ = await opened(pg_dsn)
    b, _ = await opened(pg_dsn)
    try:
        a.submit(EnsureRoom(None, "shared", False, ["x", "y"]))
        b.submit(EnsureRoom(None, "shared", False, ["x", "y"]))
        await asyncio.gather(a.flush(), b.flush())
        ops_a, ops_b = [], []
        for i in range(300):
            ops_a.append(append(i, room="shared", sender="x"))
            ops_b.append(append(i, room="shared", sender="y"))
            a.submit(ops_a[-1])
            b.submit(ops_b[-1])
            if i % 50 == 0:
                await asyncio.sleep(0)  # let the two writers interleave their batches
        # the same cid sent through both workers at once is stored once
        twin_a, twin_b = append(7, "shared", "x", "twin"), append(7, "shared", "x", "twin")
        a.submit(twin_a)
        b.submit(twin_b)
        await asyncio.gather(a.flush(), b.flush())
        stored_twin = twin_a if not twin_a.duplicate else twin_b
        seqs = sorted(op.seq for op in [*ops_a, *ops_b, stored_twin])
        assert seqs == list(range(1, 602))  # dense: no seq skipped or taken twice
        assert [op.seq for op in ops_a] == sorted(op.seq for op in ops_a)  # per writer: in order
        assert {twin_a.duplicate, twin_b.duplicate} == {True, False}
        assert twin_a.seq == twin_b.seq
        assert await a.max_seq("shared") == 601
    finally:
        await a.close()
        await b.close()


async def test_migrations_are_versioned_and_idempotent(pg_dsn: str, postgres_dsn: str) -> None:
    store, _ = await opened(pg_dsn)
    await store.close()
    again, _ = await opened(pg_dsn)  # a second start (or a second worker) migrates nothing
    await again.close()
    schema = pg_dsn.split("search_path=")[1]
    conn = await asyncpg.connect(postgres_dsn)
    try:
        versions = await conn.fetch(f'SELECT version FROM "{schema}".rtbench_schema')
        assert [r[0] for r in versions] == [SCHEMA_VERSION]
        await conn.execute(f'INSERT INTO "{schema}".rtbench_schema (version) VALUES (999)')
    finally:
        await conn.close()
    newer = PostgresStore(pg_dsn)
    with pytest.raises(OSError, match="schema is version 999, newer than this server"):
        await newer.open(Recorder())


async def test_unreachable_or_unknown_database_is_one_clear_error(postgres_dsn: str) -> None:
    with pytest.raises(OSError, match=r"cannot connect to postgresql://.*:1/"):
        await PostgresStore("postgresql://postgres@127.0.0.1:1/test").open(Recorder())
    base = postgres_dsn.rsplit("/", 1)[0]
    with pytest.raises(OSError, match="does not exist"):
        await PostgresStore(f"{base}/no_such_db_rtbench").open(Recorder())


def test_urls_and_redaction() -> None:
    assert isinstance(make_store("postgresql://u@h/db"), PostgresStore)
    assert isinstance(make_store("postgres://u@h/db"), PostgresStore)
    assert redact("postgresql://bob:s3cret@db:5433/chat") == "postgresql://bob:***@db:5433/chat"
    assert redact("postgresql://bob@db/chat") == "postgresql://bob@db/chat"
    assert make_store("postgresql://bob:s3cret@db/chat").url == "postgresql://bob:***@db/chat"


async def test_outage_fails_batches_fast_then_recovers_by_itself(own_postgres, caplog) -> None:
    """Stop a real PostgreSQL under the store: sends fail (never acked), then it comes back."""
    caplog.set_level(logging.INFO, logger="rtbench.server.store")
    dsn = with_schema(own_postgres.dsn, "outage")
    store, _ = await opened(dsn)
    try:
        store.submit(EnsureRoom(None, "r", False, ["u"]))
        first = append(1)
        store.submit(first)
        await store.flush()
        assert first.seq == 1 and first.error is None
        await asyncio.to_thread(own_postgres.stop)
        lost = [append(i) for i in range(2, 6)]
        started = time.monotonic()
        for op in lost:
            store.submit(op)
        await asyncio.wait_for(store.flush(), 10)
        assert time.monotonic() - started < 5
        assert all(op.error and "store unavailable" in op.error for op in lost)
        assert all(op.seq == 0 for op in lost)
        assert store.health()["status"] == "down"
        downs = [r for r in caplog.records if "unavailable" in r.getMessage()]
        assert len(downs) == 1  # one line for the outage, not one per batch
        await asyncio.to_thread(own_postgres.start)
        deadline = time.monotonic() + 20
        while store.health()["status"] != "ok":  # the probe notices while idle
            assert time.monotonic() < deadline, store.health()
            await asyncio.sleep(0.1)
        assert any("is back" in r.getMessage() for r in caplog.records)
        retry = append(2, cid="u-2")  # the client's retry of a refused send
        store.submit(retry)
        await store.flush()
        assert retry.error is None and retry.seq == 2 and not retry.duplicate
    finally:
        await store.close()
