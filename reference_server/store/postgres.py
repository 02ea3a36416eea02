"""PostgreSQL store: history shared by every worker and machine, with group commit.

The same contract as SQLite (``base.Store``): operations are applied in
submission order, many per transaction, and a room's ``seq`` is assigned inside
the transaction that makes the item durable. With several workers (or machines)
appending to one room, the room's row is locked (``SELECT ... FOR UPDATE``, rooms
in id order so two batches never deadlock) before its next seqs are taken, so
seqs stay dense and strictly increasing across all writers, and the ack goes out
only after ``COMMIT`` returned (``synchronous_commit = on`` for ``full``).

One writer coroutine per process owns one connection: while a transaction is in
flight new operations queue up and share the next one. Each statement of a batch
is one round trip whatever the batch size (``unnest`` over arrays). Reads use a
small pool, so a history page never waits behind a commit.

Outages: a failed commit fails its whole batch (every request gets
``store_unavailable``, nothing was acked), logs one line when the store goes
down and one when it is back; while down, a reconnect is tried at most every
``RECONNECT_S``, and a background probe notices the return even when idle.
A commit whose connection broke during ``COMMIT`` has an unknown outcome: it is
reported as failed, and a client's retry of the same ``cid`` finds the stored
item (acked with ``duplicate: true``), so nothing acked is lost or stored twice.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from typing import Any, cast
from urllib.parse import parse_qs, urlsplit

import asyncpg

from reference_server.config import redact_url
from reference_server.store.base import (
    ITEM_COLUMNS,
    AppendItem,
    BatchDone,
    EnsureRoom,
    MarkRead,
    RemoveMember,
    RoomRecord,
    StoredItem,
    StoreError,
    UserRoom,
    WriteOp,
    row_item,
    to_json,
)
from reference_server.store.groupcommit import GroupCommitStore

log = logging.getLogger("rtbench.server.store")

RECONNECT_S = 0.5  # while down, a new connection is tried at most this often
CONNECT_TIMEOUT_S = 3.0
COMMAND_TIMEOUT_S = 10.0  # one batch's statement, or one read
READ_POOL_SIZE = 4
RETRYABLE = ("40P01", "40001")  # deadlock detected, serialization failure: rerun the batch
RETRIES = 3
# What a lost or refusing server raises (TimeoutError is an OSError).
_FAILURES = (OSError, asyncpg.PostgresError, asyncpg.InterfaceError)

# Versioned migrations: (version, SQL). Append new ones; never edit an applied one.
MIGRATIONS: list[tuple[int, str]] = [
    (
        1,
        """
        CREATE TABLE rooms (
            id TEXT PRIMARY KEY,
            private BOOLEAN NOT NULL,
            seq BIGINT NOT NULL DEFAULT 0,
            created_ts BIGINT NOT NULL
        );
        CREATE TABLE members (
            room TEXT NOT NULL,
            user_id TEXT NOT NULL,
            read BIGINT NOT NULL DEFAULT 0,
            PRIMARY KEY (room, user_id)
        );
        CREATE INDEX members_by_user ON members (user_id, room);
        CREATE TABLE items (
            room TEXT NOT NULL,
            seq BIGINT NOT NULL,
            sender TEXT NOT NULL,
            ts BIGINT NOT NULL,
            kind SMALLINT NOT NULL,
            cid TEXT,
            body TEXT,
            meta TEXT,
            event TEXT,
            data TEXT,
            PRIMARY KEY (room, seq)
        );
        CREATE UNIQUE INDEX items_by_cid ON items (room, sender, cid) WHERE cid IS NOT NULL;
        """,
    ),
]
SCHEMA_VERSION = MIGRATIONS[-1][0]


SQL_ENSURE_ROOMS = (
    "INSERT INTO rooms (id, private, seq, created_ts) "
    "SELECT r, p, 0, $3 FROM unnest($1::text[], $2::bool[]) AS t(r, p) ORDER BY r "
    "ON CONFLICT (id) DO NOTHING"
)
SQL_LOCK_ROOMS = "SELECT id, seq FROM rooms WHERE id = ANY($1::text[]) ORDER BY id FOR UPDATE"
SQL_FIND_CIDS = (
    "SELECT i.room, i.sender, i.cid, i.seq, i.ts FROM items i "
    "JOIN unnest($1::text[], $2::text[], $3::text[]) AS k(room, sender, cid) "
    "ON i.room = k.room AND i.sender = k.sender AND i.cid = k.cid"
)
SQL_INSERT_ITEMS = (
    f"INSERT INTO items ({ITEM_COLUMNS}) SELECT * FROM unnest("
    "$1::text[], $2::bigint[], $3::text[], $4::bigint[], $5::smallint[], "
    "$6::text[], $7::text[], $8::text[], $9::text[], $10::text[])"
)
SQL_SET_SEQS = (
    "UPDATE rooms r SET seq = v.seq FROM unnest($1::text[], $2::bigint[]) AS v(id, seq) "
    "WHERE r.id = v.id"
)
SQL_ADD_MEMBERS = (
    "INSERT INTO members (room, user_id) SELECT * FROM unnest($1::text[], $2::text[]) "
    "ON CONFLICT DO NOTHING"
)
SQL_REMOVE_MEMBERS = (
    "DELETE FROM members m USING unnest($1::text[], $2::text[]) AS v(room, user_id) "
    "WHERE m.room = v.room AND m.user_id = v.user_id"
)
SQL_MARK_READ = (
    "UPDATE members m SET read = GREATEST(m.read, v.seq) "
    "FROM unnest($1::text[], $2::text[], $3::bigint[]) AS v(room, user_id, seq) "
    "WHERE m.room = v.room AND m.user_id = v.user_id"
)


def schema_of(dsn: str) -> str | None:
    """The first schema of a ``?search_path=`` in the DSN, which the store creates if missing."""
    values = parse_qs(urlsplit(dsn).query).get("search_path")
    if not values:
        return None
    first = values[0].split(",")[0].strip().strip('"')
    return first if first and first != "$user" else None


def _connection_lost(exc: BaseException, conn: asyncpg.Connection | None) -> bool:
    """True when the error means the server is gone, not that this batch was refused."""
    if isinstance(exc, OSError | asyncpg.InterfaceError | StoreError):
        return True
    state = getattr(exc, "sqlstate", None) or ""
    return conn is None or conn.is_closed() or state.startswith(("08", "57P"))


def _describe(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


async def migrate(conn: asyncpg.Connection, schema: str | None) -> int:
    """Bring the schema to ``SCHEMA_VERSION``; concurrent starters wait on an advisory lock."""
    if schema is not None:
        await conn.execute(f'CREATE SCHEMA IF NOT EXISTS "{schema.replace(chr(34), "")}"')
    async with conn.transaction():
        await conn.execute(
            "SELECT pg_advisory_xact_lock(hashtext('rtbench-migrate:' || current_schema()))"
        )
        await conn.execute(
            "CREATE TABLE IF NOT EXISTS rtbench_schema ("
            "version INTEGER PRIMARY KEY, applied_at TIMESTAMPTZ NOT NULL DEFAULT now())"
        )
        current = await conn.fetchval("SELECT coalesce(max(version), 0) FROM rtbench_schema")
        if current > SCHEMA_VERSION:
            raise StoreError(
                f"the database schema is version {current}, newer than this server "
                f"knows ({SCHEMA_VERSION}): upgrade rtbench"
            )
        for version, sql in MIGRATIONS:
            if version > current:
                await conn.execute(sql)
                await conn.execute("INSERT INTO rtbench_schema (version) VALUES ($1)", version)
                log.info("rtbench: store schema migrated to version %d", version)
    return SCHEMA_VERSION


class PostgresStore(GroupCommitStore):
    def __init__(self, dsn: str, synchronous: str = "full", max_batch: int = 2048) -> None:
        super().__init__(redact_url(dsn), max_batch)
        self.dsn = dsn
        self._schema = schema_of(dsn)
        # "full": COMMIT returns once the WAL is flushed. "normal": PostgreSQL's
        # synchronous_commit=off (a PostgreSQL crash may lose the last ~0.6 s of acks).
        self._settings = {"synchronous_commit": "on" if synchronous == "full" else "off"}
        self._pending: deque[WriteOp] = deque()
        self._wakeup = asyncio.Event()
        self._conn: asyncpg.Connection | None = None
        self._pool: asyncpg.Pool | None = None
        self._writer: asyncio.Task[None] | None = None
        self._probe: asyncio.Task[None] | None = None
        self._closing = False
        self._last_attempt = 0.0

    # ------------------------------------------------------------------ lifecycle

    async def _connect(self) -> asyncpg.Connection:
        return await asyncpg.connect(
            self.dsn,
            timeout=CONNECT_TIMEOUT_S,
            command_timeout=COMMAND_TIMEOUT_S,
            server_settings=self._settings,
        )

    async def open(self, on_batch: BatchDone) -> None:
        self._on_batch = on_batch
        try:
            conn = await self._connect()
        except _FAILURES as exc:
            raise OSError(f"cannot connect to {self.url}: {_describe(exc)}") from None
        try:
            await migrate(conn, self._schema)
            self._pool = await asyncpg.create_pool(
                self.dsn,
                min_size=1,
                max_size=READ_POOL_SIZE,
                timeout=CONNECT_TIMEOUT_S,
                command_timeout=COMMAND_TIMEOUT_S,
            )
        except StoreError as exc:
            await conn.close()
            raise OSError(str(exc)) from None
        except _FAILURES as exc:
            await conn.close()
            raise OSError(f"cannot prepare {self.url}: {_describe(exc)}") from None
        self._conn = conn
        self._writer = asyncio.get_running_loop().create_task(
            self._write_forever(), name="rtbench-pg-writer"
        )

    async def close(self) -> None:
        self._closing = True
        self._wakeup.set()
        tasks = [t for t in (self._writer, self._probe) if t is not None]
        if self._writer is not None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(self._writer), COMMAND_TIMEOUT_S)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._writer = self._probe = None
        if self._conn is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._conn.close(), 2)
            self._conn = None
        if self._pool is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._pool.close(), 2)
            self._pool = None

    def health(self) -> dict[str, Any]:
        return {**super().health(), "schema_version": SCHEMA_VERSION}

    # ------------------------------------------------------------------ writes

    def _enqueue(self, op: WriteOp) -> None:
        self._pending.append(op)
        self._wakeup.set()

    async def _write_forever(self) -> None:
        while True:
            if not self._pending:
                if self._closing:
                    return
                self._wakeup.clear()
                await self._wakeup.wait()
                continue
            batch = [self._pending.popleft()]
            while self._pending and len(batch) < self._max_batch:
                batch.append(self._pending.popleft())
            started = time.perf_counter()
            error = await self._commit(batch)
            ended_ns = time.monotonic_ns()
            self._batch_done(batch, time.perf_counter() - started, ended_ns, error)

    async def _writer_conn(self) -> asyncpg.Connection:
        if self._conn is not None and not self._conn.is_closed():
            return self._conn
        self._conn = None
        now = time.monotonic()
        if now - self._last_attempt < RECONNECT_S:
            raise StoreError(f"store unavailable ({self._last_error})")
        self._last_attempt = now
        self._conn = await self._connect()
        return self._conn

    async def _commit(self, batch: list[WriteOp]) -> str | None:
        for attempt in range(RETRIES):
            for op in batch:  # a rerun starts from a clean slate
                op.error = None
                if isinstance(op, AppendItem):
                    op.seq, op.ts, op.duplicate = 0, 0, False
            conn: asyncpg.Connection | None = None
            try:
                conn = await self._writer_conn()
                async with conn.transaction():
                    await _apply(conn, batch)
            except (*_FAILURES, StoreError) as exc:
                lost = _connection_lost(exc, conn)
                retry = getattr(exc, "sqlstate", None) in RETRYABLE and attempt + 1 < RETRIES
                if retry and not lost:
                    continue
                return self._failed(exc, connection_lost=lost)
            self._up()
            return None
        return None  # pragma: no cover - the loop always returns

    def _failed(self, exc: BaseException, *, connection_lost: bool) -> str:
        reason = _describe(exc)
        if connection_lost:
            conn, self._conn = self._conn, None
            if conn is not None:
                conn.terminate()
            if self._status != "down":
                log.error(
                    "rtbench: store %s unavailable (%s): sends get store_unavailable until it "
                    "returns",
                    self.url,
                    reason,
                )
            self._status = "down"
            self._ensure_probe()
        else:
            log.error("rtbench: store commit failed: %s", reason)
        if not isinstance(exc, StoreError):
            self._last_error = reason
        return f"store unavailable: {reason}" if connection_lost else f"commit failed: {reason}"

    def _up(self) -> None:
        if self._status != "ok":
            log.warning("rtbench: store %s is back", self.url)
        self._status = "ok"

    def _ensure_probe(self) -> None:
        if self._probe is None or self._probe.done():
            self._probe = asyncio.get_running_loop().create_task(
                self._probe_until_up(), name="rtbench-pg-probe"
            )

    async def _probe_until_up(self) -> None:
        """While down and idle, keep trying so /healthz and the log see the store return."""
        while self._status == "down" and not self._closing:
            await asyncio.sleep(RECONNECT_S)
            if self._conn is not None or self._pending:
                continue  # the writer is trying anyway
            try:
                conn = await self._writer_conn()
                await conn.fetchval("SELECT 1")
            except (*_FAILURES, StoreError) as exc:
                if not isinstance(exc, StoreError):
                    self._last_error = _describe(exc)
                self._conn = None
                continue
            self._up()

    # ------------------------------------------------------------------ reads

    async def _fetch(self, query: str, *args: Any) -> list[Any]:
        if self._pool is None:
            raise StoreError("the store is closed")
        try:
            async with self._pool.acquire(timeout=CONNECT_TIMEOUT_S) as conn:
                return await conn.fetch(query, *args)
        except _FAILURES as exc:
            raise StoreError(f"store unavailable: {_describe(exc)}") from None

    async def load_room(self, room: str, ring: int) -> tuple[RoomRecord, list[StoredItem]] | None:
        if self._pool is None:
            raise StoreError("the store is closed")
        try:
            async with (
                self._pool.acquire(timeout=CONNECT_TIMEOUT_S) as conn,
                conn.transaction(isolation="repeatable_read", readonly=True),
            ):
                row = await conn.fetchrow("SELECT private, seq FROM rooms WHERE id = $1", room)
                if row is None:
                    return None
                members: dict[str, int] = {
                    user: read
                    for user, read in await conn.fetch(
                        "SELECT user_id, read FROM members WHERE room = $1", room
                    )
                }
                rows = await conn.fetch(
                    f"SELECT {ITEM_COLUMNS} FROM items WHERE room = $1 AND seq > $2 ORDER BY seq",
                    room,
                    row["seq"] - ring,
                )
        except _FAILURES as exc:
            raise StoreError(f"store unavailable: {_describe(exc)}") from None
        record = RoomRecord(room, row["private"], row["seq"], members)
        return record, [row_item(r) for r in rows]

    async def load_items(self, room: str, after: int, upto: int) -> list[StoredItem]:
        rows = await self._fetch(
            f"SELECT {ITEM_COLUMNS} FROM items WHERE room = $1 AND seq > $2 AND seq <= $3 "
            "ORDER BY seq",
            room,
            after,
            upto,
        )
        return [row_item(r) for r in rows]

    async def user_rooms(self, user: str) -> list[UserRoom]:
        rows = await self._fetch(
            "SELECT m.room, r.seq, m.read, r.private FROM members m JOIN rooms r ON r.id = m.room "
            "WHERE m.user_id = $1 ORDER BY m.room",
            user,
        )
        return [UserRoom(r[0], r[1], r[2], r[3]) for r in rows]

    async def find_cid(self, room: str, sender: str, cid: str) -> tuple[int, int] | None:
        rows = await self._fetch(
            "SELECT seq, ts FROM items WHERE room = $1 AND sender = $2 AND cid = $3",
            room,
            sender,
            cid,
        )
        return None if not rows else (rows[0][0], rows[0][1])

    async def max_seq(self, room: str) -> int:
        rows = await self._fetch("SELECT seq FROM rooms WHERE id = $1", room)
        return rows[0][0] if rows else 0

    async def room_seqs(self, rooms: list[str]) -> dict[str, int]:
        """Last seq of many rooms in one query (a worker catching up after an outage)."""
        rows = await self._fetch("SELECT id, seq FROM rooms WHERE id = ANY($1::text[])", rooms)
        return {r[0]: r[1] for r in rows}


async def _apply(conn: asyncpg.Connection, batch: list[WriteOp]) -> None:
    """Apply one batch inside the caller's transaction, filling in every op's result."""
    now = int(time.time() * 1000)
    appends = [op for op in batch if type(op) is AppendItem]
    ensure: dict[str, bool] = {}
    for op in batch:
        if type(op) is EnsureRoom and op.room not in ensure:
            ensure[op.room] = op.private
    if ensure:
        names = sorted(ensure)
        await conn.execute(SQL_ENSURE_ROOMS, names, [ensure[n] for n in names], now)
    seqs: dict[str, int] = {}
    if appends:
        rooms = sorted({op.room for op in appends})
        seqs = {r["id"]: r["seq"] for r in await conn.fetch(SQL_LOCK_ROOMS, rooms)}
    stored: dict[tuple[str, str, str], tuple[int, int]] = {}
    keyed = [op for op in appends if op.cid is not None]
    if keyed:
        rows = await conn.fetch(
            SQL_FIND_CIDS,
            [op.room for op in keyed],
            [op.sender for op in keyed],
            [op.cid for op in keyed],
        )
        stored = {(r[0], r[1], r[2]): (r[3], r[4]) for r in rows}
    columns: list[list[Any]] = [[] for _ in range(10)]
    touched: dict[str, int] = {}
    own: dict[tuple[str, str], int] = {}  # your own messages are not unread to you
    run: list[WriteOp] = []  # consecutive member operations of one kind, applied together
    for op in batch:
        kind = type(op)
        if type(op) is AppendItem:
            _take_seq(op, seqs, stored, now, columns, touched, own)
            continue
        if run and type(run[0]) is not kind:
            await _members(conn, run)
            run = []
        if kind in (EnsureRoom, RemoveMember, MarkRead):
            run.append(op)
        else:  # pragma: no cover - a programming error
            raise TypeError(f"unknown store operation {kind.__name__}")
    if run:
        await _members(conn, run)
    if columns[0]:
        await conn.execute(SQL_INSERT_ITEMS, *columns)
    if touched:
        await conn.execute(SQL_SET_SEQS, list(touched), list(touched.values()))
    if own:
        keys = list(own)
        await conn.execute(
            SQL_MARK_READ, [k[0] for k in keys], [k[1] for k in keys], list(own.values())
        )


def _take_seq(
    op: AppendItem,
    seqs: dict[str, int],
    stored: dict[tuple[str, str, str], tuple[int, int]],
    now: int,
    columns: list[list[Any]],
    touched: dict[str, int],
    own: dict[tuple[str, str], int],
) -> None:
    """Give an append the room's next seq (under the room's row lock), or its stored one."""
    last = seqs.get(op.room)
    if last is None:
        op.error = f"room {op.room!r} does not exist"
        return
    if op.cid is not None:
        key = (op.room, op.sender, op.cid)
        hit = stored.get(key)
        if hit is not None:  # an idempotent retry, already stored (maybe by another worker)
            op.seq, op.ts, op.duplicate = hit[0], hit[1], True
            return
        stored[key] = (last + 1, now)  # a second append of this cid in the batch is a retry
    seq = last + 1
    seqs[op.room] = touched[op.room] = op.seq = seq
    op.ts = now
    own[(op.room, op.sender)] = seq
    for column, value in zip(
        columns,
        (
            op.room,
            seq,
            op.sender,
            now,
            op.kind,
            op.cid,
            op.body,
            to_json(op.meta),
            op.event,
            to_json(op.data),
        ),
        strict=True,
    ):
        column.append(value)


async def _members(conn: asyncpg.Connection, run: list[WriteOp]) -> None:
    """Apply a run of same-kind member operations in one statement."""
    kind = type(run[0])  # a run holds operations of one kind (``_apply`` cuts it so)
    if kind is EnsureRoom:
        ensures = cast(list[EnsureRoom], run)
        pairs = sorted({(op.room, u) for op in ensures for u in op.members})
        if pairs:
            await conn.execute(SQL_ADD_MEMBERS, [p[0] for p in pairs], [p[1] for p in pairs])
    elif kind is RemoveMember:
        removes = cast(list[RemoveMember], run)
        pairs = sorted({(op.room, op.user) for op in removes})
        await conn.execute(SQL_REMOVE_MEMBERS, [p[0] for p in pairs], [p[1] for p in pairs])
    else:
        best: dict[tuple[str, str], int] = {}
        for op in cast(list[MarkRead], run):
            key = (op.room, op.user)
            best[key] = max(best.get(key, 0), op.seq)
        keys = sorted(best)
        await conn.execute(
            SQL_MARK_READ, [k[0] for k in keys], [k[1] for k in keys], [best[k] for k in keys]
        )
