"""The store seam: what the server core needs from durable storage.

Writes are *operations* handed to ``Store.submit``; a store applies them in
submission order, many per transaction (group commit), assigns each stored item
its room ``seq`` inside that transaction, and calls the loop back once per batch
with every operation's outcome filled in. Because seqs are assigned where they
become durable, a seq is never skipped (a skipped seq would look like a loss to
every client) and never reused, even after kill -9.

Reads are plain coroutines. SQLite is the embedded default; PostgreSQL comes
with the multi-worker issue behind this same interface.
"""

from __future__ import annotations

import abc
from collections.abc import Callable, Sequence
from typing import Any

import msgspec

KIND_MESSAGE = 0
KIND_EVENT = 1


class StoreError(Exception):
    """The store could not carry out an operation (disk, lock, closed)."""


class StoredItem(msgspec.Struct, array_like=True, gc=False):
    """A message or stored event of a room, as kept in history."""

    room: str
    seq: int
    sender: str
    ts: int
    kind: int  # KIND_MESSAGE or KIND_EVENT
    cid: str | None
    body: str | None
    meta: Any  # decoded JSON object or None
    event: str | None
    data: Any


ITEM_COLUMNS = "room, seq, sender, ts, kind, cid, body, meta, event, data"
"""An item's columns in the SQL stores, in ``StoredItem`` order (meta, data: JSON text)."""
_json_encode = msgspec.json.Encoder().encode
_json_decode = msgspec.json.Decoder().decode


def to_json(value: Any) -> str | None:
    """``meta`` / ``data`` as stored: JSON text, or NULL."""
    return None if value is None else _json_encode(value).decode()


def row_item(row: Any) -> StoredItem:
    """A ``StoredItem`` from a row of ``ITEM_COLUMNS`` (SQLite tuple or asyncpg Record)."""
    room, seq, sender, ts, kind, cid, body, meta, event, data = row
    return StoredItem(
        room,
        seq,
        sender,
        ts,
        kind,
        cid,
        body,
        None if meta is None else _json_decode(meta),
        event,
        None if data is None else _json_decode(data),
    )


class RoomRecord(msgspec.Struct, gc=False):
    """What a room is on disk: enough to serve joins, presence and resumes."""

    room: str
    private: bool
    seq: int
    members: dict[str, int]  # user -> read-up-to seq


class UserRoom(msgspec.Struct, gc=False):
    room: str
    seq: int
    read: int
    private: bool


class WriteOp:
    """One write; the store fills ``error`` (and subclasses their results)."""

    __slots__ = ("error", "owner")

    def __init__(self, owner: Any = None) -> None:
        self.owner = owner  # whatever the caller needs to finish the request
        self.error: str | None = None


class AppendItem(WriteOp):
    """Store a message or event; result: ``seq``, ``ts`` and ``duplicate``."""

    __slots__ = (
        "body",
        "cid",
        "data",
        "duplicate",
        "event",
        "kind",
        "meta",
        "room",
        "sender",
        "seq",
        "ts",
    )

    def __init__(
        self,
        owner: Any,
        room: str,
        sender: str,
        kind: int,
        cid: str | None,
        body: str | None = None,
        meta: Any = None,
        event: str | None = None,
        data: Any = None,
    ) -> None:
        super().__init__(owner)
        self.room = room
        self.sender = sender
        self.kind = kind
        self.cid = cid
        self.body = body
        self.meta = meta
        self.event = event
        self.data = data
        self.seq = 0
        self.ts = 0
        self.duplicate = False

    def item(self) -> StoredItem:
        return StoredItem(
            self.room,
            self.seq,
            self.sender,
            self.ts,
            self.kind,
            self.cid,
            self.body,
            self.meta,
            self.event,
            self.data,
        )


class EnsureRoom(WriteOp):
    """Create the room if it does not exist, and add ``members`` to it."""

    __slots__ = ("members", "private", "room")

    def __init__(self, owner: Any, room: str, private: bool, members: Sequence[str]) -> None:
        super().__init__(owner)
        self.room = room
        self.private = private
        self.members = tuple(members)


class RemoveMember(WriteOp):
    __slots__ = ("room", "user")

    def __init__(self, owner: Any, room: str, user: str) -> None:
        super().__init__(owner)
        self.room = room
        self.user = user


class MarkRead(WriteOp):
    """Move a member's read marker forward (never back); result: the stored ``seq``."""

    __slots__ = ("room", "seq", "user")

    def __init__(self, owner: Any, room: str, user: str, seq: int) -> None:
        super().__init__(owner)
        self.room = room
        self.user = user
        self.seq = seq


BatchDone = Callable[[list[WriteOp], float, int], None]
"""Called on the loop with a committed (or failed) batch, its commit seconds, and the
``time.monotonic_ns()`` at which the commit ended, read where it ended (a writer thread's
clock is the loop's: one system-wide monotonic clock). With the send's handling time the
core splits every ack into its stages: waiting for the committer, the commit, and the
loop's delay in running this callback (``rtbench_server_store_*_seconds``)."""


class Store(abc.ABC):
    """Durable rooms, memberships, read markers and items."""

    url: str

    @abc.abstractmethod
    async def open(self, on_batch: BatchDone) -> None:
        """Open; every committed batch is then handed to ``on_batch`` on the loop."""

    @property
    @abc.abstractmethod
    def outstanding(self) -> int:
        """Writes submitted and not yet committed (bounded by the caller)."""

    @abc.abstractmethod
    def submit(self, op: WriteOp) -> None:
        """Queue a write for the next group commit (never blocks the loop)."""

    @abc.abstractmethod
    async def flush(self) -> None:
        """Wait until every submitted write is committed (callers bound the wait)."""

    @abc.abstractmethod
    async def close(self) -> None: ...

    @abc.abstractmethod
    async def load_room(self, room: str, ring: int) -> tuple[RoomRecord, list[StoredItem]] | None:
        """A room with its newest ``ring`` items (ascending), or None if it does not exist."""

    @abc.abstractmethod
    async def load_items(self, room: str, after: int, upto: int) -> list[StoredItem]:
        """Items with ``after < seq <= upto``, ascending."""

    @abc.abstractmethod
    async def user_rooms(self, user: str) -> list[UserRoom]:
        """Every room ``user`` is a member of."""

    @abc.abstractmethod
    async def find_cid(self, room: str, sender: str, cid: str) -> tuple[int, int] | None:
        """(seq, ts) of the item ``sender`` stored in ``room`` under ``cid``, if any."""

    @abc.abstractmethod
    async def max_seq(self, room: str) -> int:
        """The room's last seq (0 for a new or unknown room)."""

    @abc.abstractmethod
    def health(self) -> dict[str, Any]:
        """``{"status": "ok"|"down", ...}`` without touching the disk (read by /healthz)."""
