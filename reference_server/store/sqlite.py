"""SQLite store: WAL, one writer thread with group commit, one reader thread.

SQLite serialises writers anyway, so one dedicated writer thread owns the write
connection: the event loop never waits on the disk. While one transaction is
being committed (its fsync is the expensive part), new operations queue up and all
go into the next transaction together, so the number of fsyncs per second stays
bounded while sends per second grow. Results come back to the loop once per
batch. History and room loads run on a separate read connection in their own
thread, so a slow history page never delays a commit.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import queue
import sqlite3
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from reference_server.store.base import ITEM_COLUMNS as _ITEM_COLUMNS
from reference_server.store.base import (
    AppendItem,
    BatchDone,
    EnsureRoom,
    MarkRead,
    RemoveMember,
    RoomRecord,
    StoredItem,
    UserRoom,
    WriteOp,
)
from reference_server.store.base import row_item as _row_item
from reference_server.store.base import to_json as _to_json
from reference_server.store.groupcommit import GroupCommitStore

log = logging.getLogger("rtbench.server.store")

SCHEMA = """
CREATE TABLE IF NOT EXISTS rooms (
    id TEXT PRIMARY KEY,
    private INTEGER NOT NULL,
    seq INTEGER NOT NULL DEFAULT 0,
    created_ts INTEGER NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS members (
    room TEXT NOT NULL,
    user TEXT NOT NULL,
    read INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (room, user)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS members_by_user ON members (user, room);
CREATE TABLE IF NOT EXISTS items (
    room TEXT NOT NULL,
    seq INTEGER NOT NULL,
    sender TEXT NOT NULL,
    ts INTEGER NOT NULL,
    kind INTEGER NOT NULL,
    cid TEXT,
    body TEXT,
    meta TEXT,
    event TEXT,
    data TEXT,
    PRIMARY KEY (room, seq)
) WITHOUT ROWID;
CREATE UNIQUE INDEX IF NOT EXISTS items_by_cid ON items (room, sender, cid) WHERE cid IS NOT NULL;
"""

_STOP = object()

CHECKPOINT_EVERY_S = 0.25
"""How often the checkpointer copies committed WAL pages back into the database.

SQLite's default checkpoints inside the commit that takes the WAL past 1,000 pages, on
the writer's thread: with chat in 1,000 rooms every batch touches a leaf page per room in
``items`` and in ``items_by_cid``, so nearly every commit crossed that line and paid for
a checkpoint (writing those pages again and an fsync of the database) before its acks
went out. Measured with 20,000 sends over 1,000 rooms, 500 in flight, synchronous=FULL:
18,800 durable sends/s and commit p50 25.7 ms with checkpoints in the commit; see
reports/BENCHMARKS.md for the figures with the checkpointer. A commit's durability is
unchanged: it is durable once its WAL frames are synced (synchronous=FULL), whenever the
checkpoint runs; an interrupted checkpoint is redone from the WAL at the next open.
"""


WAL_RESTART_FRAMES = 8192
"""WAL frames (pages: 32 MB at 4 KB) past which the writer finishes the checkpoint itself,
between two batches, so the WAL starts over.

SQLite writes the WAL from its start again only once every frame in it was copied back
(and truncates it to ``WAL_SIZE_LIMIT`` then). The checkpointer's PASSIVE rounds copy what
was committed when each began, and under steady writes commits land meanwhile, so a round
never caught up: the WAL grew for as long as the load lasted (1.3 GB after 20 s at 4,000
msgs/s, 160 MB at 1,000; 2026-12-07), and every commit appended to an ever longer file.
The writer's own PASSIVE round runs while no commit can land, so it copies the rest (what
the checkpointer had not yet copied) and the next commit starts the WAL over. An ack waits
for it only if its send arrived during that round.
"""

WAL_SIZE_LIMIT = 64 * 1024 * 1024
"""Bytes the WAL file is cut back to when it starts over (``journal_size_limit``)."""


def _connect(path: str, synchronous: str) -> sqlite3.Connection:
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=5.0)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute(f"PRAGMA synchronous={synchronous.upper()}")
    conn.execute("PRAGMA busy_timeout=5000")
    return conn


class SqliteStore(GroupCommitStore):
    def __init__(self, path: str, synchronous: str = "full", max_batch: int = 2048) -> None:
        super().__init__(f"sqlite:///{path}", max_batch)
        self.path = path
        self._synchronous = synchronous
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._reader: ThreadPoolExecutor | None = None
        self._read_conn: sqlite3.Connection | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._checkpointer: threading.Thread | None = None
        self._checkpoints_stop = threading.Event()
        # set by the checkpointer when the WAL holds WAL_RESTART_FRAMES; the writer acts on
        # it between batches (a bool: one thread sets it, one clears it)
        self._wal_long = False

    # ------------------------------------------------------------------ lifecycle

    async def open(self, on_batch: BatchDone) -> None:
        self._loop = asyncio.get_running_loop()
        self._on_batch = on_batch
        self._idle.set()
        parent = Path(self.path).parent
        if not parent.is_dir():
            raise OSError(f"directory {parent} does not exist")
        ready: asyncio.Future[None] = self._loop.create_future()
        self._thread = threading.Thread(
            target=self._writer_main, args=(ready,), name="rtbench-store-writer", daemon=True
        )
        self._thread.start()
        await ready
        self._checkpoints_stop.clear()
        self._checkpointer = threading.Thread(
            target=self._checkpoint_main, name="rtbench-store-checkpointer", daemon=True
        )
        self._checkpointer.start()
        self._reader = ThreadPoolExecutor(1, thread_name_prefix="rtbench-store-reader")
        self._read_conn = await self._loop.run_in_executor(
            self._reader, _connect, self.path, self._synchronous
        )

    async def close(self) -> None:
        if self._checkpointer is not None:
            self._checkpoints_stop.set()
            await asyncio.to_thread(self._checkpointer.join, 10)
            self._checkpointer = None
        if self._thread is not None:
            self._queue.put(_STOP)
            await asyncio.to_thread(self._thread.join, 10)
            self._thread = None
        if self._reader is not None:
            if self._read_conn is not None:
                assert self._loop is not None  # set by open(), before the reader
                await self._loop.run_in_executor(self._reader, self._read_conn.close)
            self._reader.shutdown(wait=True)
            self._reader = None

    # ------------------------------------------------------------------ writes

    def _enqueue(self, op: WriteOp) -> None:
        self._queue.put(op)

    def _settle(self, error: str | None) -> None:
        if error is None:
            self._status = "ok"
        else:
            self._status = "down"
            self._last_error = error

    def _writer_main(self, ready: asyncio.Future[None]) -> None:
        loop = self._loop
        assert loop is not None
        try:
            conn = _connect(self.path, self._synchronous)
            conn.executescript(SCHEMA)
            conn.execute("PRAGMA wal_autocheckpoint=0")  # the checkpointer's job (above)
            conn.execute(f"PRAGMA journal_size_limit={WAL_SIZE_LIMIT}")
        except (sqlite3.Error, OSError) as exc:
            err = exc

            def refuse() -> None:
                if not ready.done():
                    ready.set_exception(OSError(f"cannot open {self.url}: {err}"))

            loop.call_soon_threadsafe(refuse)
            return

        def opened() -> None:
            if not ready.done():
                ready.set_result(None)

        loop.call_soon_threadsafe(opened)
        writer = _Writer(conn)
        stop = False
        while not stop:
            first = self._queue.get()
            if first is _STOP:
                break
            batch: list[WriteOp] = [first]
            while len(batch) < self._max_batch:
                try:
                    op = self._queue.get_nowait()
                except queue.Empty:
                    break
                if op is _STOP:
                    stop = True
                    break
                batch.append(op)
            started = time.perf_counter()
            error = writer.commit(batch)
            ended_ns = time.monotonic_ns()
            seconds = time.perf_counter() - started
            try:
                loop.call_soon_threadsafe(self._batch_done, batch, seconds, ended_ns, error)
            except RuntimeError:  # the loop is gone: nobody is waiting any more
                break
            if self._wal_long:  # after this batch's acks are on their way
                self._wal_long = False
                writer.restart_wal()
        conn.close()

    def _checkpoint_main(self) -> None:
        """Copy committed WAL pages into the database every CHECKPOINT_EVERY_S, on a
        connection of its own, so no commit waits for it. PASSIVE: it never blocks the
        writer or a reader, and copies what no reader still needs (the rest next time)."""
        try:
            conn = _connect(self.path, self._synchronous)
        except sqlite3.Error as exc:
            log.error("store checkpointer cannot open %s: %s", self.path, exc)
            return
        failing = False
        try:
            while not self._checkpoints_stop.wait(CHECKPOINT_EVERY_S):
                try:
                    _, frames, _ = conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
                except sqlite3.Error as exc:  # the next round tries again; say so once
                    if not failing:
                        log.warning("store checkpoint failed (will retry): %s", exc)
                    failing = True
                else:
                    failing = False
                    if frames >= WAL_RESTART_FRAMES:
                        self._wal_long = True
        finally:
            conn.close()

    # ------------------------------------------------------------------ reads

    async def _read(self, fn: Any, *args: Any) -> Any:
        assert self._loop is not None and self._reader is not None
        return await self._loop.run_in_executor(self._reader, fn, *args)

    async def load_room(self, room: str, ring: int) -> tuple[RoomRecord, list[StoredItem]] | None:
        return await self._read(self._load_room, room, ring)

    def _load_room(self, room: str, ring: int) -> tuple[RoomRecord, list[StoredItem]] | None:
        conn = self._read_conn
        assert conn is not None
        conn.execute("BEGIN")
        try:
            row = conn.execute("SELECT private, seq FROM rooms WHERE id = ?", (room,)).fetchone()
            if row is None:
                return None
            members = dict(conn.execute("SELECT user, read FROM members WHERE room = ?", (room,)))
            items = [
                _row_item(r)
                for r in conn.execute(
                    f"SELECT {_ITEM_COLUMNS} FROM items WHERE room = ? AND seq > ? ORDER BY seq",
                    (room, row[1] - ring),
                )
            ]
        finally:
            conn.execute("COMMIT")
        return RoomRecord(room, bool(row[0]), row[1], members), items

    async def load_items(self, room: str, after: int, upto: int) -> list[StoredItem]:
        return await self._read(self._load_items, room, after, upto)

    def _load_items(self, room: str, after: int, upto: int) -> list[StoredItem]:
        assert self._read_conn is not None
        rows = self._read_conn.execute(
            f"SELECT {_ITEM_COLUMNS} FROM items WHERE room = ? AND seq > ? AND seq <= ? "
            "ORDER BY seq",
            (room, after, upto),
        )
        return [_row_item(r) for r in rows]

    async def user_rooms(self, user: str) -> list[UserRoom]:
        return await self._read(self._user_rooms, user)

    def _user_rooms(self, user: str) -> list[UserRoom]:
        assert self._read_conn is not None
        rows = self._read_conn.execute(
            "SELECT m.room, r.seq, m.read, r.private FROM members m JOIN rooms r ON r.id = m.room "
            "WHERE m.user = ? ORDER BY m.room",
            (user,),
        )
        return [UserRoom(room, seq, read, bool(private)) for room, seq, read, private in rows]

    async def find_cid(self, room: str, sender: str, cid: str) -> tuple[int, int] | None:
        return await self._read(self._find_cid, room, sender, cid)

    def _find_cid(self, room: str, sender: str, cid: str) -> tuple[int, int] | None:
        assert self._read_conn is not None
        row = self._read_conn.execute(
            "SELECT seq, ts FROM items WHERE room = ? AND sender = ? AND cid = ?",
            (room, sender, cid),
        ).fetchone()
        return None if row is None else (row[0], row[1])

    async def max_seq(self, room: str) -> int:
        return await self._read(self._max_seq, room)

    def _max_seq(self, room: str) -> int:
        assert self._read_conn is not None
        row = self._read_conn.execute("SELECT seq FROM rooms WHERE id = ?", (room,)).fetchone()
        return 0 if row is None else row[0]


class _Writer:
    """Applies batches of operations in one transaction each (writer thread only)."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn
        self.seqs: dict[str, int] = {}  # room -> last seq, valid only while no commit failed

    def restart_wal(self) -> None:
        """Copy back what the checkpointer has not, while no commit can land, so the next
        commit writes the WAL from its start (``WAL_RESTART_FRAMES``)."""
        try:
            self.conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
        except sqlite3.Error as exc:  # the checkpointer asks again once it is long again
            log.warning("store WAL restart checkpoint failed: %s", exc)

    def commit(self, batch: list[WriteOp]) -> str | None:
        conn = self.conn
        touched: dict[str, int] = {}
        own: dict[tuple[str, str], int] = {}  # (room, sender) -> their newest item: read
        try:
            conn.execute("BEGIN IMMEDIATE")
            now = int(time.time() * 1000)
            for op in batch:
                if isinstance(op, AppendItem):
                    self._append(op, now, touched)
                    if op.error is None and not op.duplicate:
                        own[(op.room, op.sender)] = op.seq
                elif isinstance(op, EnsureRoom):
                    conn.execute(
                        "INSERT OR IGNORE INTO rooms (id, private, seq, created_ts) "
                        "VALUES (?, ?, 0, ?)",
                        (op.room, int(op.private), now),
                    )
                    conn.executemany(
                        "INSERT OR IGNORE INTO members (room, user) VALUES (?, ?)",
                        [(op.room, user) for user in op.members],
                    )
                elif isinstance(op, RemoveMember):
                    conn.execute(
                        "DELETE FROM members WHERE room = ? AND user = ?", (op.room, op.user)
                    )
                elif isinstance(op, MarkRead):
                    conn.execute(
                        "UPDATE members SET read = MAX(read, ?) WHERE room = ? AND user = ?",
                        (op.seq, op.room, op.user),
                    )
                else:  # pragma: no cover - a programming error
                    raise TypeError(f"unknown store operation {type(op).__name__}")
            conn.executemany(
                "UPDATE rooms SET seq = ? WHERE id = ?", [(s, r) for r, s in touched.items()]
            )
            conn.executemany(  # your own messages are not unread to you
                "UPDATE members SET read = MAX(read, ?) WHERE room = ? AND user = ?",
                [(seq, room, user) for (room, user), seq in own.items()],
            )
            conn.execute("COMMIT")
        except (sqlite3.Error, TypeError) as exc:
            log.error("store commit failed: %s", exc)
            if conn.in_transaction:
                with contextlib.suppress(sqlite3.Error):
                    conn.execute("ROLLBACK")
            self.seqs.clear()  # the counters may have moved past what was stored
            message = f"store commit failed: {exc}"
            for op in batch:
                op.error = message
            return message
        for room, seq in touched.items():
            self.seqs[room] = seq
        return None

    def _append(self, op: AppendItem, now: int, touched: dict[str, int]) -> None:
        conn = self.conn
        room = op.room
        last = touched.get(room)
        if last is None:
            last = self.seqs.get(room)
            if last is None:
                row = conn.execute("SELECT seq FROM rooms WHERE id = ?", (room,)).fetchone()
                if row is None:
                    op.error = f"room {room!r} does not exist"
                    return
                last = row[0]
        seq = last + 1
        cur = conn.execute(
            f"INSERT INTO items ({_ITEM_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?) "
            "ON CONFLICT (room, sender, cid) WHERE cid IS NOT NULL DO NOTHING",
            (
                room,
                seq,
                op.sender,
                now,
                op.kind,
                op.cid,
                op.body,
                _to_json(op.meta),
                op.event,
                _to_json(op.data),
            ),
        )
        if cur.rowcount == 0:  # (room, sender, cid) already stored: an idempotent retry
            row = conn.execute(
                "SELECT seq, ts FROM items WHERE room = ? AND sender = ? AND cid = ?",
                (room, op.sender, op.cid),
            ).fetchone()
            op.seq, op.ts, op.duplicate = row[0], row[1], True
            touched[room] = last
            return
        op.seq, op.ts = seq, now
        touched[room] = seq
