"""Probe I/O: a WebSocket connection driven by a loadtest protocol adapter.

The adapters (``loadtest.adapters``) are sans-IO: they turn "say hello", "join",
"send" into frames and frames into events. This module is the only place the monitor
touches a socket, so every adapter the load engine has (reference, echo, and any
user adapter file) works in the monitor unchanged. The client is ``websockets``: a
probe opens a handful of connections per interval, where its simplicity matters
more than the raw speed the load engine needs from picows.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import ssl
import time
from collections import deque
from collections.abc import Callable
from typing import Any, cast
from urllib.parse import urlsplit

import websockets
from websockets.asyncio.client import ClientConnection
from websockets.exceptions import ConnectionClosed, InvalidStatus

from loadtest.adapters import Adapter, Event, Ready, Rejected, Reply
from loadtest.run.failures import classify, describe

MAX_FRAME = 1 << 20

# Request ids double as client message ids (``cid``), and the reference protocol acks a
# repeated cid of the same user as a duplicate without delivering it again. Ids are
# therefore unique per process and, seeded with the clock in microseconds and used far
# slower than one per microsecond, across monitor restarts too.
_request_ids = itertools.count(time.time_ns() // 1000)


class ProbeFailure(Exception):
    """A probe step failed; ``cause`` is short and stable (it names the incident)."""

    def __init__(self, cause: str, detail: str = "") -> None:
        super().__init__(f"{cause}: {detail}" if detail else cause)
        self.cause = cause
        self.detail = detail


def failure_text(exc: BaseException, step: str) -> str:
    """One line for an exception raised during ``step`` (stored as the probe's error)."""
    if isinstance(exc, ProbeFailure):
        return f"{step}: {exc}"
    if isinstance(exc, InvalidStatus):
        return f"{step}: {describe(f'http_{exc.response.status_code}')}"
    if isinstance(exc, ConnectionClosed):
        code = exc.rcvd.code if exc.rcvd is not None else 1006
        return f"{step}: {describe(f'closed_{code}')}"
    if isinstance(exc, TimeoutError):
        return f"{step}: timed out"
    return f"{step}: {describe(classify(exc))}"


class ProbeConnection:
    """One client connection of a probe: adapter frames out, adapter events in.

    ``adapter`` is this connection's own (``Adapter.connection()``): a protocol with
    per-connection state keeps it there. The protocol's keepalive, when it has one
    (``Adapter.heartbeat_interval_s``), is a task of this connection, ended by ``close``.
    """

    def __init__(self, ws: ClientConnection, adapter: Adapter) -> None:
        self.ws = ws
        self.adapter = adapter
        self.pending: deque[Event] = deque()  # the rest of a frame that carried several
        self.welcome_id: str | None = None  # the server's name for this connection (Ready)
        self.beat: asyncio.Task[None] | None = None
        if adapter.heartbeat_interval_s:
            self.beat = asyncio.get_running_loop().create_task(
                self._heartbeat(adapter.heartbeat_interval_s)
            )

    async def _heartbeat(self, interval_s: float) -> None:
        with contextlib.suppress(ConnectionClosed):  # the reader reports the close
            while True:
                await asyncio.sleep(interval_s)
                payload = self.adapter.heartbeat()
                if payload is not None:
                    await self.send(payload)

    @classmethod
    async def open(
        cls,
        adapter: Adapter,
        url: str,
        user: str,
        token: str | None,
        headers: dict[str, str] | None = None,
        ping_interval: float | None = None,
        ping_timeout: float | None = None,
        hello: list[bytes] | None = None,
        welcome: bool = True,
    ) -> ProbeConnection:
        """Upgrade, send the adapter's opening frames (or ``hello``), await its welcome
        (``welcome`` False: the caller's setup machine reads it, ``loadtest.client.setup``)."""
        if adapter.transport == "http":  # no WebSocket: an event stream (SSE)
            return await HttpProbeConnection.open_lanes(adapter, url, user, token, hello)
        extra = dict(headers or {})
        extra.update(adapter.headers(user, token) or {})
        ws = await websockets.connect(
            adapter.url(url),
            additional_headers=extra or None,
            subprotocols=list(adapter.subprotocols) or None,  # type: ignore[arg-type]
            open_timeout=None,  # the caller's deadline bounds the whole probe
            ping_interval=ping_interval,
            ping_timeout=ping_timeout,
            close_timeout=1,
            max_size=MAX_FRAME,
            proxy=None,
            compression=None,
            user_agent_header="rtbench-monitor",
        )
        conn = cls(ws, adapter)
        try:
            for frame in hello if hello is not None else adapter.open(user, token):
                await conn.send(frame)
            if adapter.expects_welcome and welcome:
                welcomed = await conn.expect(
                    lambda e: isinstance(e, Ready) and e.room is None, "hello"
                )
                conn.welcome_id = welcomed.session  # type: ignore[union-attr]
        except BaseException:
            await conn.close()
            raise
        return conn

    def next_id(self) -> int:
        return next(_request_ids)

    async def send(self, frame: bytes) -> None:
        await self.ws.send(frame, text=not self.adapter.binary)

    async def receive(self) -> Event | None:
        event: Event | None
        if self.pending:
            event = self.pending.popleft()
        else:
            payload = await self.ws.recv(decode=False)
            parsed = self.adapter.parse(payload)
            if isinstance(parsed, list):  # a frame that carried several packets (MQTT)
                if not parsed:
                    return None
                self.pending.extend(parsed[1:])
                parsed = parsed[0]
            if parsed is None:
                return None
            event = parsed
        if type(event) is Reply:  # e.g. an Engine.IO pong: answer, and it means nothing more
            await self.send(event.payload)
            return None
        return event

    async def expect(self, match: Callable[[Event], bool], step: str, req_id: Any = None) -> Event:
        """Read until an event matches; an error answering ``req_id`` (or ours) fails."""
        while True:
            event = await self.receive()
            if event is None:
                continue
            if match(event):
                return event
            if isinstance(event, Rejected) and (event.req_id is None or event.req_id == req_id):
                raise ProbeFailure(f"rejected_{event.code}", f"{step}: {event.message}")

    async def join(self, room: str) -> Ready:
        req = self.next_id()
        await self.send(self.adapter.join_in(self.welcome_id, room, req))
        if not self.adapter.confirms_join:  # the server answers a join with nothing
            return Ready(room, 0)
        event = await self.expect(
            lambda e: isinstance(e, Ready) and e.room == room, f"join {room}", req
        )
        assert isinstance(event, Ready)
        return event

    async def close(self) -> None:
        if self.beat is not None:
            self.beat.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self.beat
        with contextlib.suppress(Exception):  # a broken connection has nothing left to say
            await self.ws.close()


INBOX_LIMIT = 64
"""Reads from an HTTP probe connection's two lanes held for the probe to parse. At the
limit both lanes stop reading (``pause_reading``: TCP flow control, so the server sees a
slow reader, as it would a WebSocket client that does not read) until the probe has
taken half of them; nothing read is dropped. A read is what one ``recv`` returned (at
most 256 KiB), so the inbox holds 16 MiB at the very worst."""


class _Lane(asyncio.Protocol):
    """One TCP connection of an ``HttpProbeConnection``; what it reads goes to the owner's
    inbox, in order, with which lane it came from."""

    def __init__(self, owner: HttpProbeConnection, stream: bool) -> None:
        self.owner = owner
        self.stream = stream
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # a stream's transport: uvloop's has asyncio.Transport's methods without being a
        # subclass of it, so a cast and not an isinstance check
        stream = cast(asyncio.Transport, transport)
        self.transport = stream
        if self.owner.paused:  # a lane (re)opened while the inbox is full
            stream.pause_reading()

    def data_received(self, data: bytes) -> None:
        self.owner.arrived(self.stream, data)

    def connection_lost(self, exc: Exception | None) -> None:
        self.owner.arrived(self.stream, None)


class HttpProbeConnection(ProbeConnection):
    """A probe connection of an ``Adapter.transport == "http"`` protocol (Server-Sent
    Events): a stream lane (the event stream, to ``parse``) and a keep-alive request
    lane (sends, to ``parse_reply``) on plain asyncio TCP; the adapter does the HTTP."""

    def __init__(self, adapter: Adapter, host: str, port: int, secure: bool) -> None:
        self.adapter = adapter
        self.pending = deque()
        self.welcome_id = None
        self.beat = None
        self.host, self.port, self.secure = host, port, secure
        # past INBOX_LIMIT: the one read that may land before a lane's pause takes hold,
        # and each lane's end (connection_lost always finds room)
        self.inbox: asyncio.Queue[tuple[bool, bytes | None]] = asyncio.Queue(INBOX_LIMIT + 4)
        self.paused = False  # both lanes stopped reading: the inbox is full
        self.stream: _Lane | None = None
        self.requests: _Lane | None = None

    def arrived(self, stream: bool, payload: bytes | None) -> None:
        """A lane read ``payload`` (None: it closed): queue it; stop reading at the limit."""
        self.inbox.put_nowait((stream, payload))
        if not self.paused and self.inbox.qsize() >= INBOX_LIMIT:
            self.paused = True
            self._reading(False)

    def _reading(self, on: bool) -> None:
        for lane in (self.stream, self.requests):
            if lane is not None and lane.transport is not None and not lane.transport.is_closing():
                if on:
                    lane.transport.resume_reading()
                else:
                    lane.transport.pause_reading()

    @classmethod
    async def open_lanes(
        cls, adapter: Adapter, url: str, user: str, token: str | None, hello: list[bytes] | None
    ) -> HttpProbeConnection:
        full = adapter.url(url)
        adapter.bind(full)
        parts = urlsplit(full)
        secure = parts.scheme == "https"
        conn = cls(
            adapter, parts.hostname or "127.0.0.1", parts.port or (443 if secure else 80), secure
        )
        try:
            conn.stream = await conn._lane(True)
            conn.requests = await conn._lane(False)
            for frame in hello if hello is not None else adapter.open(user, token):
                await conn.send(frame)
        except BaseException:
            await conn.close()
            raise
        return conn

    async def _lane(self, stream: bool) -> _Lane:
        loop = asyncio.get_running_loop()
        context = ssl.create_default_context() if self.secure else None
        _, lane = await loop.create_connection(
            lambda: _Lane(self, stream), self.host, self.port, ssl=context
        )
        return lane

    async def send(self, frame: bytes) -> None:
        if self.adapter.opens_stream(frame):
            lane = self.stream
        else:
            if self.requests is None:  # the server closed an idle one
                self.requests = await self._lane(False)
            lane = self.requests
        if lane is None or lane.transport is None or lane.transport.is_closing():
            raise ProbeFailure("closed_1006", "the event stream is closed")
        lane.transport.write(frame)

    async def receive(self) -> Event | None:
        if self.pending:
            return self.pending.popleft()
        stream, payload = await self.inbox.get()
        if self.paused and self.inbox.qsize() <= INBOX_LIMIT // 2:
            self.paused = False
            self._reading(True)
        if payload is None:
            if stream:
                raise ProbeFailure("closed_1006", "the event stream ended")
            self.requests = None
            self.adapter.reply_lane_closed()
            return None
        parsed = self.adapter.parse(payload) if stream else self.adapter.parse_reply(payload)
        if type(parsed) is list:
            if not parsed:
                return None
            self.pending.extend(parsed[1:])
            return parsed[0]
        return parsed  # type: ignore[return-value]

    async def close(self) -> None:
        for lane in (self.stream, self.requests):
            if lane is not None and lane.transport is not None:
                lane.transport.close()
        if self.stream is not None:
            self.adapter.reply_lane_closed()
        self.stream = self.requests = None


def now_ns() -> int:
    """The clock of markers: the adapters' ``sched_ns`` is ``time.monotonic_ns()``."""
    return time.monotonic_ns()


async def together(*aws: Any) -> list[Any]:
    """Await all; on the first failure (or our own cancellation) cancel the rest, then raise."""
    tasks = [asyncio.ensure_future(aw) for aw in aws]
    try:
        return await asyncio.gather(*tasks)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
