"""The application core: sessions, rooms, fan-out, durability, presence, typing.

Transport-independent: it sees ``Connection`` objects and bytes. Frames are
handled synchronously where they can be (send, typing, read, publish, ping: the
hot path); requests that must wait for the store (join, history, ...) run as one
owned task per request, and the connection's later frames wait behind it so a
client's frames are always handled in order.

Every stored item goes through the store's group commit; the ack to the sender
and the fan-out to the room both happen in the commit callback, so a seq anyone
has seen is durable. Each outgoing frame is encoded once and the same bytes go to
every recipient.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import os
import secrets
import time
from collections import deque
from collections.abc import Coroutine, Iterable
from typing import Any
from urllib.parse import urlsplit

import msgspec
import psutil
from prometheus_client import CONTENT_TYPE_LATEST

from reference_server.auth import Authenticator, AuthError
from reference_server.broker import Broker, LocalBroker
from reference_server.config import ServerConfig
from reference_server.history import BadRange, page_bounds
from reference_server.metrics import Metrics, MetricsCollector, render
from reference_server.rooms import Room, RoomDirectory, dm_users
from reference_server.session import Session
from reference_server.store.base import (
    KIND_EVENT,
    KIND_MESSAGE,
    AppendItem,
    EnsureRoom,
    MarkRead,
    RemoveMember,
    Store,
    StoredItem,
    WriteOp,
)
from reference_server.transport import Connection, frame_payload, text_frame
from rtbench import __version__
from rtbench.protocol import CloseCode, ErrorCode, FrameError, decode_client, dm_room, encode
from rtbench.protocol import messages as p

log = logging.getLogger("rtbench.server")
_now = time.monotonic
RECENT_CIDS = 65536  # (room, sender, cid) -> (seq, ts) kept in memory for cheap retries
LOOP_LAG_UNHEALTHY = 1.0  # seconds; past this /healthz answers 503


class Refuse(Exception):
    """A request that cannot be carried out; becomes an ``error`` frame."""

    def __init__(self, code: ErrorCode, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def _ms() -> int:
    return int(time.time() * 1000)


def framed(msg: Any) -> bytes:
    """Encode a server message and wrap it in its WebSocket frame, once for all recipients."""
    return text_frame(encode(msg))


def encode_item(item: StoredItem) -> bytes:
    """The live frame of a stored item (also what replay sends and the ring keeps)."""
    if item.kind == KIND_MESSAGE:
        return framed(
            p.Message(
                room=item.room,
                seq=item.seq,
                sender=item.sender,
                body=item.body or "",
                ts=item.ts,
                cid=item.cid,
                meta=item.meta,
            )
        )
    return framed(
        p.Event(
            room=item.room,
            event=item.event or "",
            data=item.data,
            sender=item.sender,
            ts=item.ts,
            seq=item.seq,
        )
    )


def history_item(item: StoredItem) -> p.HistoryItem:
    if item.kind == KIND_MESSAGE:
        return p.HistoryItem(
            seq=item.seq,
            sender=item.sender,
            ts=item.ts,
            body=item.body,
            cid=item.cid,
            meta=item.meta,
        )
    return p.HistoryItem(
        seq=item.seq, sender=item.sender, ts=item.ts, kind="event", event=item.event, data=item.data
    )


_frame_decoder = msgspec.json.Decoder(p.Message | p.Event)


def history_item_from_frame(frame: bytes) -> p.HistoryItem:
    msg = _frame_decoder.decode(frame_payload(frame))
    if isinstance(msg, p.Message):
        return p.HistoryItem(
            seq=msg.seq, sender=msg.sender, ts=msg.ts, body=msg.body, cid=msg.cid, meta=msg.meta
        )
    return p.HistoryItem(
        seq=msg.seq or 0, sender=msg.sender, ts=msg.ts, kind="event", event=msg.event, data=msg.data
    )


class App:
    """The server's state and request handlers (one per process, on one event loop)."""

    def __init__(
        self,
        config: ServerConfig,
        store: Store,
        auth: Authenticator,
        transport: str,
        broker: Broker | None = None,
    ) -> None:
        self.config = config
        self.broker: Broker = broker or LocalBroker()
        self.limits = config.limits
        self.store = store
        self.auth = auth
        self.metrics = Metrics()
        self.rooms = RoomDirectory(store, config.replay.ring_size, encode_item)
        self.sessions: set[Session] = set()
        self.users: dict[str, list[Session]] = {}  # user -> sessions that said hello
        self.closing: set[Session] = set()  # close sent, socket not gone yet
        self.typing_rooms: set[Room] = set()
        self.tasks: set[asyncio.Task[Any]] = set()
        self.recent_cids: dict[tuple[str, str, str], tuple[int, int]] = {}
        self.inflight: dict[tuple[str, str, str], list[tuple[Session, Any]]] = {}
        self.draining = False
        self._all_closed = asyncio.Event()
        self.started = time.time()
        self.transport = transport
        self._boot = secrets.token_hex(3)
        self._session_ids = itertools.count(1)
        self._process = psutil.Process()
        self.collector = MetricsCollector(self.metrics, self._gauges)
        self.server_name = f"rtbench-reference/{__version__} ({transport})"
        timing = config.timing
        self.heartbeat = p.HeartbeatInfo(
            interval_ms=timing.heartbeat_interval_ms, timeout_ms=timing.heartbeat_timeout_ms
        )
        self.limits_info = p.Limits(
            max_frame_bytes=self.limits.max_frame_bytes,
            max_body_chars=self.limits.max_body_chars,
            max_rooms=self.limits.max_rooms,
            max_history=self.limits.max_history,
        )
        self.presence_max = config.replay.presence_max_room
        self.max_replay = config.replay.max_replay
        self.typing_timeout = timing.typing_timeout_ms / 1000
        self.presence_grace = timing.presence_grace_ms / 1000
        self.leaving: dict[str, float] = {}  # user -> when to announce them offline
        self._sync = {
            p.Hello: self.on_hello,
            p.Send: self.on_send,
            p.Direct: self.on_dm,
            p.Typing: self.on_typing,
            p.Read: self.on_read,
            p.Publish: self.on_publish,
            p.Ping: self.on_ping,
            p.Join: self.on_join,
            p.Leave: self.on_leave,
            p.History: self.on_history,
            p.Members: self.on_members,
            p.Rooms: self.on_rooms,
        }

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        await self.store.open(self._on_batch)
        await self.broker.start(self._deliver_remote)

    def _deliver_remote(self, room_name: str, items: list[tuple[int, bytes]]) -> None:
        """Items another worker made durable: fan out to this worker's subscribers."""
        room = self.rooms.cached(room_name)
        if room is None:
            return
        fresh = [(seq, frame, None) for seq, frame in items if room.push(seq, frame)]
        if fresh:
            self.fanout_items(room, fresh)  # type: ignore[arg-type]

    def open_session(self, conn: Connection, token: str | None) -> Session:
        m = self.metrics
        m.connections_opened += 1
        m.handshakes += 1
        s = Session(self, conn)
        self.sessions.add(s)
        if self.draining:
            self.close(s, CloseCode.SERVICE_RESTART, "server restarting: reconnect and resume")
        elif token is not None:
            try:
                s.handshake_user = self.auth.authenticate(token)  # checked once, used at hello
            except AuthError as exc:
                self.close(s, CloseCode.UNAUTHORIZED, str(exc))
        return s

    def session_closed(self, s: Session) -> None:
        """The transport says the socket is gone (peer closed, error, or our close)."""
        s.closed = True
        self.closing.discard(s)
        if not self.closing:
            self._all_closed.set()
        self._detach(s)

    def close(self, s: Session, code: int, reason: str) -> None:
        """Close a session with ``code``; it leaves every room at once."""
        if s.closed:
            return
        s.closed = True
        s.closing_at = _now()
        self.metrics.closes[int(code)] += 1
        self.closing.add(s)
        s.conn.close(int(code), reason)
        self._detach(s)

    def slow_consumer(self, s: Session) -> None:
        self.metrics.slow_consumers += 1
        self.close(s, CloseCode.TRY_AGAIN_LATER, "slow consumer: reconnect and resume")

    def _detach(self, s: Session) -> None:
        if s not in self.sessions:
            return
        self.sessions.discard(s)
        for name in s.rooms:
            room = self.rooms.cached(name)
            if room is not None:
                room.subs.discard(s)
        s.held = None
        s.backlog = None
        user = s.user
        if user is None:
            return
        others = self.users.get(user)
        if others is not None and s in others:
            others.remove(s)
            if not others:
                del self.users[user]
                if self.presence_grace > 0:  # announce it only if they stay away
                    self.leaving[user] = _now() + self.presence_grace
                else:
                    self._presence(user, "offline")

    async def drain(self) -> bool:
        """Graceful shutdown: finish in-flight commits (acks go out), close all with 1012."""
        self.draining = True
        flushed = True
        try:
            async with asyncio.timeout(self.config.timing.drain_timeout_ms / 1000):
                await self.store.flush()
        except TimeoutError:
            flushed = False
        for s in list(self.sessions):
            self.close(s, CloseCode.SERVICE_RESTART, "server restarting: reconnect and resume")
        if self.closing:
            self._all_closed.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(1.0):  # let the close frames reach the clients
                    await self._all_closed.wait()
        for s in list(self.closing):
            s.conn.abort()
        return flushed

    async def stop(self) -> None:
        for task in list(self.tasks):
            task.cancel()
        if self.tasks:
            await asyncio.gather(*self.tasks, return_exceptions=True)
        await self.store.close()
        await self.broker.close()

    # ------------------------------------------------------------------ dispatch

    def handle(self, s: Session, data: bytes) -> None:
        self.metrics.frames_in += 1
        if self.draining or s.closed:
            return  # unacked: the client retries the same cid after reconnecting
        try:
            msg = decode_client(data)
        except FrameError as exc:
            if exc.code is ErrorCode.BAD_JSON and not _is_utf8(data):
                self.close(s, CloseCode.INVALID_PAYLOAD, "text frame is not valid UTF-8")
                return
            self.error(s, exc.code, exc.message, exc.request_id, exc.ref)
            return
        except UnicodeDecodeError:  # msgspec checks UTF-8 inside strings as it decodes them
            self.close(s, CloseCode.INVALID_PAYLOAD, "text frame is not valid UTF-8")
            return
        kind = type(msg)
        if s.user is None and kind is not p.Hello:
            self.error(
                s, ErrorCode.HELLO_REQUIRED, "send hello first", msg.id, kind.__struct_config__.tag
            )
            return
        try:
            result = self._sync[kind](s, msg)
        except Refuse as exc:
            self.error(s, exc.code, exc.message, msg.id, kind.__struct_config__.tag)
            return
        except Exception:  # a bug: say so, keep the connection and the server going
            log.exception("internal error handling %s", kind.__struct_config__.tag)
            self.error(s, ErrorCode.INTERNAL, "internal server error", msg.id)
            return
        if result is not None:
            self._spawn(s, result, msg)

    def _spawn(self, s: Session, coro: Coroutine[Any, Any, None], msg: Any) -> None:
        s.busy = True
        task = asyncio.get_running_loop().create_task(self._run(s, coro, msg))
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def _run(self, s: Session, coro: Coroutine[Any, Any, None], msg: Any) -> None:
        ref = type(msg).__struct_config__.tag
        try:
            await coro
        except Refuse as exc:
            self.error(s, exc.code, exc.message, msg.id, ref)
        except Exception:
            log.exception("internal error handling %s", ref)
            self.error(s, ErrorCode.INTERNAL, "internal server error", msg.id, ref)
        finally:
            s.busy = False
        while s.backlog and not s.busy and not s.closed:
            self.handle(s, s.backlog.popleft())
        if not s.backlog:
            s.backlog = None

    def defer(self, s: Session, data: bytes) -> None:
        """A frame arrived while an earlier request of this connection is still running."""
        if s.backlog is None:
            s.backlog = deque()
        if len(s.backlog) >= self.limits.max_backlog_frames:
            self.close(s, CloseCode.POLICY_VIOLATION, "too many requests queued")
            return
        s.backlog.append(data)

    def reply(self, s: Session, frame: Any) -> None:
        if not s.closed:
            s.send(framed(frame))
            self.metrics.frames_out += 1

    def error(
        self, s: Session, code: ErrorCode, message: str, request_id: Any = None, ref: Any = None
    ) -> None:
        self.metrics.errors[code.value] += 1
        self.reply(s, p.Error(id=request_id, code=code.value, message=message, ref=ref))

    # ------------------------------------------------------------------ fan-out

    def _audience(self, room: Room) -> Iterable[Session]:
        if room.dm is None:
            return tuple(room.subs)
        a, b = room.dm
        first = self.users.get(a, [])
        return tuple(first) if a == b else (*first, *self.users.get(b, ()))

    def fanout(
        self,
        room: Room,
        frame: bytes,
        seq: int = 0,
        exclude: Session | None = None,
        exclude_user: str | None = None,
    ) -> None:
        """Send one encoded frame to a room's audience (held during a replay of that room)."""
        name = room.name
        sent = 0
        for s in self._audience(room):
            if s is exclude or s.closed or (exclude_user is not None and s.user == exclude_user):
                continue
            held = s.held
            if held is not None and name in held:
                held[name].append((seq, frame))
                continue
            try:
                s.send(frame)
            except RuntimeError:  # the socket went away under us: its close is on its way
                self.close(s, CloseCode.GOING_AWAY, "connection lost")
                continue
            sent += 1
            if s.over_since is not None:
                self.check_buffer(s)
        self.metrics.fanout_deliveries += sent
        self.metrics.frames_out += sent

    def fanout_items(self, room: Room, items: list[tuple[int, bytes, Session]]) -> None:
        """Fan out several stored items of one group commit: one write per recipient.

        Each recipient gets the frames of the batch joined into one buffer, so a
        commit of k messages costs one socket write per subscriber instead of k.
        A sender never gets its own item; a connection replaying the room holds them.
        """
        if len(items) == 1:
            seq, frame, sender = items[0]
            self.fanout(room, frame, seq, exclude=sender)
            return
        name = room.name
        senders = {sender for _, _, sender in items}
        everything = b"".join(frame for _, frame, _ in items)
        sent = 0
        for s in self._audience(room):
            if s.closed:
                continue
            held = s.held
            if held is not None and name in held:
                held[name].extend((seq, f) for seq, f, sender in items if sender is not s)
                continue
            if s in senders:
                own = [f for _, f, sender in items if sender is not s]
                data, count = b"".join(own), len(own)
            else:
                data, count = everything, len(items)
            if not count:
                continue
            try:
                s.send(data)
            except RuntimeError:
                self.close(s, CloseCode.GOING_AWAY, "connection lost")
                continue
            sent += count
            if s.over_since is not None:
                self.check_buffer(s)
        self.metrics.fanout_deliveries += sent
        self.metrics.frames_out += sent

    def check_buffer(self, s: Session) -> None:
        """Called for connections already over their buffer limit: far over means 1013 now."""
        size = s.conn.write_buffer_size()
        if size > self.metrics.queue_high_water:
            self.metrics.queue_high_water = size
        if size > self.limits.slow_consumer_hard_bytes:
            self.slow_consumer(s)

    def _presence(self, user: str, state: str) -> None:
        """online/offline to the subscribers of the user's loaded rooms (small rooms only)."""
        frame = None
        for name in self.rooms.by_user.get(user, ()):
            room = self.rooms.cached(name)
            if room is None or room.dm is not None or not self._small(room):
                continue
            frame = frame or framed(p.Presence(user=user, state=state))  # type: ignore[arg-type]
            self.fanout(room, frame, exclude_user=user)

    def _small(self, room: Room) -> bool:
        return 0 < len(room.subs) <= self.presence_max

    # ------------------------------------------------------------------ store plumbing

    def _submit(self, op: WriteOp) -> None:
        if self.store.outstanding >= self.limits.max_pending_writes:
            raise Refuse(
                ErrorCode.STORE_UNAVAILABLE,
                f"the store is behind ({self.store.outstanding} writes queued); try again",
            )
        self.store.submit(op)

    async def _write(self, op: WriteOp) -> None:
        """Submit and wait until durable."""
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        op.owner = future
        self._submit(op)
        await future
        if op.error is not None:
            raise Refuse(ErrorCode.STORE_UNAVAILABLE, op.error)

    def _on_batch(self, batch: list[WriteOp], seconds: float) -> None:
        m = self.metrics
        m.commit_seconds.observe(seconds)
        m.batch_sizes.observe(len(batch))
        fan: dict[Room, list[tuple[int, bytes, Session]]] = {}
        for op in batch:
            owner = op.owner
            if type(op) is AppendItem:
                self._appended(op, fan)  # type: ignore[arg-type]
            elif isinstance(owner, asyncio.Future):
                if not owner.done():
                    owner.set_result(None)
            elif type(op) is MarkRead:
                self._read_done(op)  # type: ignore[arg-type]
            elif type(op) is EnsureRoom and op.error is not None:
                self.rooms.forget(op.room)  # type: ignore[attr-defined]
        for room, items in fan.items():
            self.fanout_items(room, items)
            self.broker.publish(room.name, [(seq, frame) for seq, frame, _ in items])
            if room.typing:  # a message ends its sender's typing
                for _, _, sender in items:
                    if sender.user in room.typing:
                        self._typing_stopped(room, sender.user)  # type: ignore[arg-type]

    def _append(
        self, s: Session, rid: Any, room: str, cid: str | None, kind: int, **kw: Any
    ) -> None:
        assert s.user is not None
        key = None
        if cid is not None:
            key = (room, s.user, cid)
            hit = self.recent_cids.get(key)
            if hit is not None:
                ack = p.Ack(id=rid, cid=cid, room=room, seq=hit[0], ts=hit[1], duplicate=True)
                self.reply(s, ack)
                return
            waiters = self.inflight.get(key)
            if waiters is not None:
                waiters.append((s, rid))
                return
        self._submit(AppendItem((s, rid), room, s.user, kind, cid, **kw))
        if key is not None:
            self.inflight[key] = []

    def _appended(self, op: AppendItem, fan: dict[Room, list[tuple[int, bytes, Session]]]) -> None:
        """Ack a committed append and queue its fan-out (sent per room after the batch)."""
        s, rid = op.owner
        waiters = self.inflight.pop((op.room, op.sender, op.cid), ()) if op.cid else ()
        if op.error is not None:
            message = f"not stored: {op.error}"
            for who, wrid in ((s, rid), *waiters):
                self.error(who, ErrorCode.STORE_UNAVAILABLE, message, wrid)
            return
        if op.cid is not None:
            recent = self.recent_cids
            recent[(op.room, op.sender, op.cid)] = (op.seq, op.ts)
            if len(recent) > RECENT_CIDS:
                del recent[next(iter(recent))]
        self.reply(
            s,
            p.Ack(id=rid, cid=op.cid, room=op.room, seq=op.seq, ts=op.ts, duplicate=op.duplicate),
        )
        for who, wrid in waiters:
            self.reply(
                who, p.Ack(id=wrid, cid=op.cid, room=op.room, seq=op.seq, ts=op.ts, duplicate=True)
            )
        if op.duplicate:
            return
        self.metrics.messages_stored += 1
        room = self.rooms.cached(op.room)
        if room is None:
            return  # evicted while the commit was in flight: nobody is subscribed
        if op.sender in room.members:  # the store marked it read for its sender too
            room.members[op.sender] = max(room.members[op.sender], op.seq)
        frame = encode_item(op.item())
        if room.push(op.seq, frame):
            fan.setdefault(room, []).append((op.seq, frame, s))

    # ------------------------------------------------------------------ access

    def _joined_room(self, s: Session, name: str) -> Room:
        room = self.rooms.cached(name) if name in s.rooms else None
        if room is None:
            raise Refuse(ErrorCode.NOT_MEMBER, f"join room {name!r} first")
        return room

    def _check_access(self, s: Session, room: Room | None, name: str) -> Room:
        if room is None:
            raise Refuse(ErrorCode.UNKNOWN_ROOM, f"room {name!r} does not exist")
        if room.dm is not None:
            if s.user not in room.dm:
                raise Refuse(ErrorCode.FORBIDDEN, f"{name!r} is a direct-message room of others")
        elif room.private and s.user not in room.members:
            raise Refuse(ErrorCode.FORBIDDEN, f"room {name!r} is private and you are not a member")
        return room

    async def _readable(self, s: Session, name: str) -> Room:
        if name.startswith("dm:") and dm_users(name) is None:
            raise Refuse(ErrorCode.UNKNOWN_ROOM, f"room {name!r} does not exist")
        return self._check_access(s, await self.rooms.get(name), name)

    # ------------------------------------------------------------------ subscribe and replay

    def _replayable_from_ring(self, room: Room, since: int | None) -> bool:
        return (
            since is None
            or since >= room.seq
            or since + 1 >= room.ring_first
            or room.seq - since > self.max_replay
        )

    def _attach(self, s: Session, room: Room, since: int | None, rid: Any, resumed: bool) -> None:
        """Subscribe and replay from the ring, synchronously (caller checked it can)."""
        s.rooms.add(room.name)
        room.subs.add(s)
        frames: list[bytes] = []
        recovered = True
        if since is not None and since < room.seq:
            if room.seq - since > self.max_replay:
                recovered = False
            else:
                frames = room.frames(since + 1, room.seq)
        # the replay and its `joined` leave in one write: a reconnect storm is syscall-bound
        frames.append(self._joined(s, room, rid, len(frames), resumed, recovered))
        self._write_all(s, frames)

    def _write_all(self, s: Session, frames: list[bytes]) -> None:
        if not s.closed:
            s.send(b"".join(frames))
            self.metrics.frames_out += len(frames)

    async def _attach_async(
        self, s: Session, room: Room, since: int | None, rid: Any, resumed: bool
    ) -> None:
        """Subscribe and replay, reading the store for a gap older than the ring.

        Live frames for the room are held for this connection while the replay is
        read and written, then sent if newer than the replay: no gap, no duplicate.
        """
        if self._replayable_from_ring(room, since):
            self._attach(s, room, since, rid, resumed)
            return
        assert since is not None
        name, upto = room.name, room.seq
        s.rooms.add(name)
        room.subs.add(s)
        s.hold(name)
        try:
            items = await self.store.load_items(name, since, upto)
        except Exception as exc:
            self._unsubscribe(s, room)
            raise Refuse(ErrorCode.STORE_UNAVAILABLE, f"cannot read history: {exc}") from None
        if s.closed:
            return
        frames = [encode_item(item) for item in items]
        frames += s.release(name, upto)
        frames.append(self._joined(s, room, rid, len(items), resumed, True))
        self._write_all(s, frames)

    def _joined(
        self, s: Session, room: Room, rid: Any, replayed: int, resumed: bool, recovered: bool
    ) -> bytes:
        """The ``joined`` frame that ends a join or a resumed room."""
        self.metrics.replayed += replayed
        if resumed:
            self.metrics.resumes += 1
        return framed(
            p.Joined(
                id=rid,
                room=room.name,
                seq=room.seq,
                private=room.private,
                members=len(room.members),
                read=room.members.get(s.user or "", 0),
                replayed=replayed,
                resumed=resumed,
                recovered=recovered,
            ),
        )

    def _unsubscribe(self, s: Session, room: Room) -> None:
        s.rooms.discard(room.name)
        room.subs.discard(s)
        if s.held is not None:
            s.held.pop(room.name, None)
            if not s.held:
                s.held = None

    def _room_slot(self, s: Session, name: str) -> None:
        if name not in s.rooms and len(s.rooms) >= self.limits.max_rooms:
            raise Refuse(
                ErrorCode.TOO_MANY_ROOMS,
                f"a connection may join at most {self.limits.max_rooms} rooms",
            )

    async def _add_member(self, room: Room, user: str) -> None:
        await self._write(EnsureRoom(None, room.name, room.private, [user]))
        self.rooms.add_member(room, user)

    # ------------------------------------------------------------------ handlers

    def on_hello(self, s: Session, m: p.Hello) -> Coroutine[Any, Any, None] | None:
        if s.user is not None:
            raise Refuse(ErrorCode.ALREADY_HELLO, "this connection already said hello")
        if m.token is not None:
            try:
                user = self.auth.authenticate(m.token)
            except AuthError as exc:
                raise Refuse(ErrorCode.UNAUTHORIZED, str(exc)) from None
        elif s.handshake_user is not None:
            user = s.handshake_user
        else:
            raise Refuse(
                ErrorCode.UNAUTHORIZED,
                "no token: send hello.token, Authorization: Bearer or ?token=",
            )
        s.user = user
        s.handshake_user = None
        s.sid = f"{self._boot}-{next(self._session_ids)}"
        self.metrics.hellos += 1
        sessions = self.users.get(user)
        if sessions is None:
            self.users[user] = [s]
            if self.leaving.pop(user, None) is None:  # back within the grace: never went offline
                self._presence(user, "online")
        else:
            sessions.append(s)
        self.reply(
            s,
            p.Welcome(
                id=m.id,
                session=s.sid,
                user=user,
                server=self.server_name,
                heartbeat=self.heartbeat,
                limits=self.limits_info,
            ),
        )
        if not m.resume:
            return None
        later: list[tuple[str, int]] = []
        for name, since in m.resume.items():
            room = self.rooms.cached(name)
            if (
                room is None
                or (room.dm is None and user not in room.members)
                or not self._replayable_from_ring(room, since)
            ):
                later.append((name, since))
                continue
            try:
                self._room_slot(s, name)
                self._check_access(s, room, name)
            except Refuse as exc:
                self.error(s, exc.code, f"resume {name!r}: {exc.message}", m.id, "hello")
                continue
            self._attach(s, room, since, None, True)
        return self._resume_rest(s, m.id, later) if later else None

    async def _resume_rest(self, s: Session, rid: Any, rooms: list[tuple[str, int]]) -> None:
        for name, since in rooms:
            if s.closed:
                return
            try:
                self._room_slot(s, name)
                room = await self._readable(s, name)
                if room.dm is None and s.user not in room.members:
                    await self._add_member(room, s.user)  # type: ignore[arg-type]
                await self._attach_async(s, room, since, None, True)
            except Refuse as exc:
                self.error(s, exc.code, f"resume {name!r}: {exc.message}", rid, "hello")

    async def on_join(self, s: Session, m: p.Join) -> None:
        name, user = m.room, s.user
        assert user is not None
        pair = dm_users(name)
        if name.startswith("dm:") and (pair is None or user not in pair):
            raise Refuse(
                ErrorCode.FORBIDDEN,
                "rooms starting with dm: are direct-message rooms; send a dm to start one",
            )
        self._room_slot(s, name)
        room = await self.rooms.get(name)
        if room is None:
            if pair is not None:
                raise Refuse(ErrorCode.UNKNOWN_ROOM, f"no direct messages in {name!r} yet")
            room = self.rooms.cached(name)
        if room is None:
            members = sorted({user, *(m.members or ())}) if m.private else [user]
            room = self.rooms.create(name, m.private, members)
            await self._write(EnsureRoom(None, name, m.private, members))
        else:
            self._check_access(s, room, name)
            if room.dm is None and user not in room.members:
                await self._add_member(room, user)
        entering = name not in s.rooms and not any(
            name in other.rooms for other in self.users.get(user, ()) if other is not s
        )
        await self._attach_async(s, room, m.since, m.id, False)
        if entering and room.dm is None and self._small(room):
            self.fanout(room, framed(p.Presence(room=name, user=user, state="joined")), exclude=s)

    async def on_leave(self, s: Session, m: p.Leave) -> None:
        name, user = m.room, s.user
        assert user is not None
        room = self._joined_room(s, name)
        if room.dm is not None:  # a DM cannot be left, only unsubscribed from
            self._unsubscribe(s, room)
        else:
            await self._write(RemoveMember(None, name, user))
            self.rooms.remove_member(room, user)
            for other in list(self.users.get(user, ())):
                if name in other.rooms:
                    self._unsubscribe(other, room)
                    if other is not s:
                        self.reply(other, p.Left(room=name))
            if self._small(room):
                self.fanout(room, framed(p.Presence(room=name, user=user, state="left")))
        self.reply(s, p.Left(id=m.id, room=name))

    def on_send(self, s: Session, m: p.Send) -> None:
        self._joined_room(s, m.room)
        self._check_body(m.body)
        self._append(s, m.id, m.room, m.cid, KIND_MESSAGE, body=m.body, meta=m.meta)

    def _check_body(self, body: str) -> None:
        if len(body) > self.limits.max_body_chars:
            raise Refuse(
                ErrorCode.BODY_TOO_LONG,
                f"body has {len(body)} characters; the limit is {self.limits.max_body_chars}",
            )

    def on_dm(self, s: Session, m: p.Direct) -> Coroutine[Any, Any, None] | None:
        self._check_body(m.body)
        assert s.user is not None
        name = dm_room(s.user, m.to)
        if self.rooms.cached(name) is not None:
            self._append(s, m.id, name, m.cid, KIND_MESSAGE, body=m.body, meta=m.meta)
            return None
        return self._first_dm(s, m, name)

    async def _first_dm(self, s: Session, m: p.Direct, name: str) -> None:
        room = await self.rooms.get(name)
        if room is None and self.rooms.cached(name) is None:
            members = sorted({s.user, m.to})  # type: ignore[type-var]
            self.rooms.create(name, True, members)
            self._submit(EnsureRoom(None, name, True, members))  # committed before the append
        self._append(s, m.id, name, m.cid, KIND_MESSAGE, body=m.body, meta=m.meta)

    def on_typing(self, s: Session, m: p.Typing) -> None:
        room = self._joined_room(s, m.room)
        user = s.user
        assert user is not None
        typing = room.typing
        if m.state == "start":
            if typing is None:
                room.typing = typing = {}
                self.typing_rooms.add(room)
            already = user in typing
            typing[user] = _now() + self.typing_timeout
            if already:
                return
            frame = framed(p.TypingNotice(room=room.name, user=user, state="start"))
            self.fanout(room, frame, exclude_user=user)
        elif typing and user in typing:
            self._typing_stopped(room, user)

    def _typing_stopped(self, room: Room, user: str) -> None:
        if room.typing is not None:
            room.typing.pop(user, None)
        frame = framed(p.TypingNotice(room=room.name, user=user, state="stop"))
        self.fanout(room, frame, exclude_user=user)

    def expire_presence(self, now: float) -> None:
        """Called by the sweeper: users gone longer than the grace are announced offline."""
        gone = [user for user, deadline in self.leaving.items() if deadline <= now]
        for user in gone:
            del self.leaving[user]
            self._presence(user, "offline")

    def expire_typing(self, now: float) -> None:
        """Called by the sweeper: a start without a stop ends by itself."""
        for room in list(self.typing_rooms):
            typing = room.typing or {}
            for user in [u for u, until in typing.items() if until <= now]:
                self._typing_stopped(room, user)
            if not room.typing:
                room.typing = None
                self.typing_rooms.discard(room)

    def on_read(self, s: Session, m: p.Read) -> None:
        room = self._joined_room(s, m.room)
        if m.seq > room.seq:
            raise Refuse(
                ErrorCode.BAD_RANGE, f"read seq {m.seq} is past room {room.name!r}'s seq {room.seq}"
            )
        self._submit(MarkRead((s, m.id), room.name, s.user, m.seq))  # type: ignore[arg-type]

    def _read_done(self, op: MarkRead) -> None:
        s, rid = op.owner
        if op.error is not None:
            self.error(s, ErrorCode.STORE_UNAVAILABLE, f"not stored: {op.error}", rid, "read")
            return
        room = self.rooms.cached(op.room)
        if room is None:
            return
        read = max(room.members.get(op.user, 0), op.seq)
        if op.user in room.members:
            room.members[op.user] = read
        frame = framed(p.Receipt(room=op.room, user=op.user, seq=read))
        if room.dm is not None or self._small(room):
            self.fanout(room, frame)
        else:  # big room: only the reader's own connections learn of it
            for other in self.users.get(op.user, ()):
                if op.room in other.rooms and not other.closed:
                    other.send(frame)

    def on_publish(self, s: Session, m: p.Publish) -> None:
        room = self._joined_room(s, m.room)
        self.metrics.events_published += 1
        if m.store:
            self._append(s, m.id, m.room, m.cid, KIND_EVENT, event=m.event, data=m.data)
            return
        ts = _ms()
        frame = framed(p.Event(room=room.name, event=m.event, data=m.data, sender=s.user, ts=ts))  # type: ignore[arg-type]
        self.reply(s, p.Ack(id=m.id, cid=m.cid, room=room.name, ts=ts))
        self.fanout(room, frame, exclude=s)

    async def on_history(self, s: Session, m: p.History) -> None:
        room = await self._readable(s, m.room)
        limit = min(m.limit, self.limits.max_history)
        try:
            page = page_bounds(room.seq, limit, m.before, m.after)
        except BadRange as exc:
            raise Refuse(ErrorCode.BAD_RANGE, str(exc)) from None
        if page.first > page.last:
            items: list[p.HistoryItem] = []
        elif page.first >= room.ring_first:
            items = [history_item_from_frame(f) for f in room.frames(page.first, page.last)]
        else:
            stored = await self.store.load_items(room.name, page.first - 1, page.last)
            items = [history_item(item) for item in stored]
        self.reply(
            s, p.HistoryPage(id=m.id, room=room.name, messages=items, has_more=page.has_more)
        )

    async def on_members(self, s: Session, m: p.Members) -> None:
        room = await self._readable(s, m.room)
        online = self.users.keys() | self.leaving.keys()
        members = [p.Member(user=u, online=u in online) for u in sorted(room.members)]
        self.reply(s, p.MemberList(id=m.id, room=room.name, members=members))

    async def on_rooms(self, s: Session, m: p.Rooms) -> None:
        infos = []
        for row in await self.store.user_rooms(s.user):  # type: ignore[arg-type]
            seq, read = row.seq, row.read
            room = self.rooms.cached(row.room)
            if room is not None:
                seq, read = max(seq, room.seq), max(read, room.members.get(s.user, 0))  # type: ignore[arg-type]
            infos.append(
                p.RoomInfo(
                    room=row.room,
                    seq=seq,
                    read=read,
                    unread=max(seq - read, 0),
                    private=row.private,
                )
            )
        self.reply(s, p.RoomList(id=m.id, rooms=infos))

    def on_ping(self, s: Session, m: p.Ping) -> None:
        self.reply(s, p.Pong(id=m.id, ts=m.ts))

    # ------------------------------------------------------------------ HTTP

    def http(self, target: str) -> tuple[int, bytes, str]:
        self.metrics.handshakes += 1
        path = urlsplit(target).path
        if path == "/metrics":
            return 200, render(self.collector), CONTENT_TYPE_LATEST
        body, healthy = self.health()
        return (200 if healthy else 503), encode(body) + b"\n", "application/json"

    def health(self) -> tuple[dict[str, Any], bool]:
        store = self.store.health()
        lag = self.metrics.loop_lag
        if self.draining:
            status = "draining"
        elif store.get("status") != "ok":
            status = "store_down"
        elif lag > LOOP_LAG_UNHEALTHY:
            status = "overloaded"
        else:
            status = "ok"
        return {
            "status": status,
            "connections": len(self.sessions),
            "users": len(self.users),
            "rooms": len(self.rooms),
            "uptime_s": round(time.time() - self.started, 3),
            "loop_lag_ms": round(lag * 1000, 3),
            "store": store,
            "broker": self.broker.health(),
            "rss_bytes": self._process.memory_info().rss,
            "pid": os.getpid(),
            "transport": self.transport,
        }, status == "ok"

    def _gauges(self) -> dict[str, float]:
        return {
            "connections": len(self.sessions),
            "users_online": len(self.users),
            "rooms_loaded": len(self.rooms),
            "store_pending_writes": self.store.outstanding,
            "rss_bytes": self._process.memory_info().rss,
        }


def _is_utf8(data: bytes) -> bool:
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True
