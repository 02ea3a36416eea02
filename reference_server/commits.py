"""Durability: writes go to the store's group commit; acks and fan-out follow the commit.

Every write is an operation handed to ``Store.submit`` (bounded by
``max_pending_writes``). The store assigns each appended item its room ``seq``
inside the transaction that makes it durable, so a seq is never skipped or
reused; this module never invents one. When a batch commits, ``on_batch`` runs
on the loop: it hands each room's new items to the broker, acks each append
(and any retries of the same ``cid`` waiting on it) once the broker took them,
pushes the items into the room's ring and fans them out in one write per
recipient. A seq anyone has seen is on disk, and an acked item has reached the
other workers' way (with one process, at once): a worker killed between its
commit and its publish acked nothing of what it had not published, so the
sender's retry after its reconnect, which the store answers as a duplicate, is
fanned out again.

Idempotent sends: ``(room, sender, cid)`` is checked against a bounded map of
recent cids, then against appends in flight (a retry waits for the original),
then by the store inside the same transaction.

Several workers (docs/SCALING.md): each committed room batch goes to
``Broker.publish``, and then through the ``Sequencer``, which pushes items into
the room's ring in seq order (another worker may have committed the seq before
ours, and its item may not have arrived yet) and hands them to ``deliver``. A
send is refused with ``broker_unavailable`` while the broker is down, before
anything is stored.

Handlers that submit their own kind of operation register what to do when it
commits with ``on_commit`` (receipts: ``MarkRead``); ``on_delivered`` hooks run
after a room's new items went out (typing: a message ends its sender's typing).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from functools import partial
from typing import Any

from reference_server.broker.base import Broker
from reference_server.cluster.sequencer import Sequencer
from reference_server.config import LimitsConfig
from reference_server.errors import Refuse
from reference_server.fanout import Fanout, Item
from reference_server.frames import encode_item
from reference_server.metrics import Metrics
from reference_server.rooms import Room, RoomDirectory
from reference_server.session import Session
from reference_server.store.base import AppendItem, EnsureRoom, Store, WriteOp
from rtbench.bounded import BoundedDict
from rtbench.protocol import ErrorCode
from rtbench.protocol import messages as p

# a room's items, and their acks with when each send was handled (0: a waiter's copy)
_RoomBatch = tuple[list[Item], list[tuple[Session, p.Ack, int]]]

RECENT_CIDS = 65536  # (room, sender, cid) -> (seq, ts) kept in memory for cheap retries

Delivered = Callable[[Room, list[Item]], None]


class Commits:
    """Submits writes, and finishes every request whose write a batch committed."""

    def __init__(
        self,
        store: Store,
        rooms: RoomDirectory,
        fanout: Fanout,
        broker: Broker,
        metrics: Metrics,
        limits: LimitsConfig,
    ) -> None:
        self.store = store
        self.rooms = rooms
        self.fanout = fanout
        self.broker = broker
        self.metrics = metrics
        self.max_pending = limits.max_pending_writes
        self.recent_cids: BoundedDict[tuple[str, str, str], tuple[int, int]] = BoundedDict(
            RECENT_CIDS
        )
        self.inflight: dict[tuple[str, str, str], list[tuple[Session, Any]]] = {}
        self._on_commit: dict[type[WriteOp], Callable[[Any], None]] = {
            EnsureRoom: self._room_ensured
        }
        self._delivered: list[Delivered] = []
        self.sequencer: Sequencer  # set by App: it orders items before ``deliver``

    def on_commit(self, kind: type[WriteOp], done: Callable[[Any], None]) -> None:
        """Call ``done(op)`` for each committed (or failed) ``kind`` op submitted unawaited."""
        self._on_commit[kind] = done

    def on_delivered(self, hook: Delivered) -> None:
        """Call ``hook(room, items)`` after a batch's new items of a room were fanned out."""
        self._delivered.append(hook)

    # ------------------------------------------------------------------ submit

    def submit(self, op: WriteOp) -> None:
        """Queue a write for the next group commit, or refuse when the store is behind."""
        if self.store.outstanding >= self.max_pending:
            raise Refuse(
                ErrorCode.STORE_UNAVAILABLE,
                f"the store is behind ({self.store.outstanding} writes queued); try again",
            )
        self.store.submit(op)

    async def write(self, op: WriteOp) -> None:
        """Submit and wait until durable."""
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        op.owner = future
        self.submit(op)
        await future
        if op.error is not None:
            raise Refuse(ErrorCode.STORE_UNAVAILABLE, op.error)

    def append(
        self, s: Session, rid: Any, room: str, cid: str | None, kind: int, **kw: Any
    ) -> None:
        """Store a message or event for ``s``; it is acked and fanned out once committed."""
        assert s.user is not None
        self.require_broker()
        key = None
        if cid is not None:
            key = (room, s.user, cid)
            hit = self.recent_cids.get(key)
            if hit is not None:
                ack = p.Ack(id=rid, cid=cid, room=room, seq=hit[0], ts=hit[1], duplicate=True)
                self.fanout.reply(s, ack)
                return
            waiters = self.inflight.get(key)
            if waiters is not None:
                waiters.append((s, rid))
                return
        # the owner carries when the send was handled: its ack is timed from there (ack_seconds)
        self.submit(AppendItem((s, rid, time.monotonic_ns()), room, s.user, kind, cid, **kw))
        if key is not None:
            self.inflight[key] = []

    def require_broker(self) -> None:
        """Refuse a send while other workers cannot be told of it: nothing is stored."""
        if not self.broker.available:
            raise Refuse(
                ErrorCode.BROKER_UNAVAILABLE,
                f"cross-worker fan-out is down ({self.broker.name}): not stored, try again",
            )

    # ------------------------------------------------------------------ batch completion

    def on_batch(self, batch: list[WriteOp], seconds: float, ended_ns: int) -> None:
        """The store committed (or failed) ``batch``: finish its requests, then fan out."""
        m = self.metrics
        m.commit_seconds.observe(seconds)
        m.batch_sizes.observe(len(batch))
        m.callback_seconds.observe(max(0, time.monotonic_ns() - ended_ns) / 1e9)
        began_ns = ended_ns - int(seconds * 1e9)
        wait = m.store_wait_seconds.observe
        # (room, resent) -> its items in seq order and their acks, which await the publish;
        # resent: retries the store already had (Broker.publish's ``again``)
        fan: dict[tuple[str, bool], _RoomBatch] = {}
        for op in batch:
            owner = op.owner
            if type(op) is AppendItem:
                wait(max(0, began_ns - owner[2]) / 1e9)
                self._appended(op, fan)
            elif isinstance(owner, asyncio.Future):
                if not owner.done():
                    owner.set_result(None)
            else:
                done = self._on_commit.get(type(op))
                if done is not None:
                    done(op)
        accept, cached = self.sequencer.accept, self.rooms.cached
        for (name, again), (items, replies) in fan.items():
            # the acks go once the other workers can have the items (Broker.publish)
            frames = [(seq, frame) for seq, frame, _ in items]
            self.broker.publish(name, frames, partial(self._ack, replies), again)
            room = cached(name)
            if room is not None:  # else evicted while the commit was in flight: nobody here
                ready = accept(room, items, again)
                if ready:
                    self.deliver(room, ready)

    def deliver(self, room: Room, items: list[Item]) -> None:
        """Items in seq order, pushed into the ring: out to the room, then the hooks."""
        self.fanout.batch_to_room(room, items)
        for hook in self._delivered:
            hook(room, items)

    def _ack(self, replies: list[tuple[Session, p.Ack, int]]) -> None:
        """Send a room batch's acks; time each from its send's handling (the server's own
        part of the sender's ack latency: store queue, group commit, publish)."""
        reply, observe = self.fanout.reply, self.metrics.ack_seconds.observe
        now = time.monotonic_ns()
        for s, ack, handled in replies:
            reply(s, ack)
            if handled:
                observe((now - handled) / 1e9)

    def _appended(
        self,
        op: AppendItem,
        fan: dict[tuple[str, bool], _RoomBatch],
    ) -> None:
        """Queue a committed append's acks and fan-out (both go per room after the batch)."""
        s, rid, handled = op.owner
        waiters = self.inflight.pop((op.room, op.sender, op.cid), ()) if op.cid else ()
        if op.error is not None:
            message = f"not stored: {op.error}"
            for who, wrid in ((s, rid), *waiters):
                self.fanout.error(who, ErrorCode.STORE_UNAVAILABLE, message, wrid)
            return
        if op.cid is not None:
            self.recent_cids.put((op.room, op.sender, op.cid), (op.seq, op.ts))
        # a resend goes out again only where other workers exist: one process that crashed
        # restarted with every client resuming from the store, and nobody missed it
        key = (op.room, op.duplicate and self.broker.shared)
        items, replies = fan.setdefault(key, ([], []))
        replies.append(
            (
                s,
                p.Ack(
                    id=rid, cid=op.cid, room=op.room, seq=op.seq, ts=op.ts, duplicate=op.duplicate
                ),
                handled,
            )
        )
        for who, wrid in waiters:
            replies.append(
                (
                    who,
                    p.Ack(id=wrid, cid=op.cid, room=op.room, seq=op.seq, ts=op.ts, duplicate=True),
                    0,
                )
            )
        if not op.duplicate:
            self.metrics.messages_stored += 1
            room = self.rooms.cached(op.room)
            if room is not None and op.sender in room.members:  # the store marked it read too
                room.members[op.sender] = max(room.members[op.sender], op.seq)
        # A retry the store already had is fanned out again, to the room's whole audience
        # on every worker (``again``): the worker that stored it may have died between
        # its commit and its publish, before the ack (the client's retry is the only
        # sign), and a worker that loaded the room since holds the seq without its
        # audience having got it. Clients drop a seq they have.
        items.append((op.seq, encode_item(op.item()), s))

    def _room_ensured(self, op: EnsureRoom) -> None:
        """An unawaited room creation (a first DM) failed: forget the room made for it."""
        if op.error is not None:
            self.rooms.forget(op.room)
