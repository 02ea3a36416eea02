"""The native engine's transport for ``Adapter.transport == "http"`` (Server-Sent Events).

Two plain asyncio TCP (or TLS) connections per client stand in for its WebSocket: the
*stream* lane (the event stream's request and its endless response) and the *request*
lane (sends, kept alive). ``HttpLanes`` looks to the worker like a picows transport
(``send``, ``send_ping``, ``send_close``, ``disconnect``, ``wait_disconnected``), so the
worker's connection, reconnect and close paths stay as they are. Everything HTTP is the
adapter's (sans-IO); this only moves bytes: which lane a payload takes is
``Adapter.opens_stream``, stream bytes go to ``Worker.on_payload``, request-lane bytes
to ``Worker.on_reply``.
"""

from __future__ import annotations

import asyncio
import ssl
import time
from typing import TYPE_CHECKING, Any, cast
from urllib.parse import urlsplit

if TYPE_CHECKING:
    from picows import WSTransport

    from loadtest.engine.worker import Conn, Worker


class _Lane(asyncio.Protocol):
    def __init__(self, lanes: HttpLanes, stream: bool) -> None:
        self.lanes = lanes
        self.stream = stream
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # a stream's transport: uvloop's has asyncio.Transport's methods without being a
        # subclass of it, so a cast and not an isinstance check
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        lanes = self.lanes
        if self.stream:
            lanes.worker.on_payload(lanes.conn, data)
        else:
            lanes.worker.on_reply(lanes.conn, data)

    def connection_lost(self, exc: Exception | None) -> None:
        self.lanes.lane_lost(self)


class HttpLanes:
    """One client's stream and request lanes, behind a picows-transport face."""

    def __init__(self, worker: Worker, conn: Conn, url: str, local: Any) -> None:
        self.worker = worker
        self.conn = conn
        parts = urlsplit(url)
        self.secure = parts.scheme == "https"
        self.host = parts.hostname or "127.0.0.1"
        self.port = parts.port or (443 if self.secure else 80)
        self.local = local
        self.stream: _Lane | None = None
        self.requests: _Lane | None = None
        self.opening: asyncio.Task[None] | None = None  # a request lane being opened again
        self.queued: list[bytes] = []  # payloads waiting for it
        self.closed = asyncio.get_running_loop().create_future()
        self.up = False  # both lanes were connected (the worker was told)

    async def _lane(self, stream: bool) -> _Lane:
        loop = asyncio.get_running_loop()
        context = ssl.create_default_context() if self.secure else None
        kwargs: dict[str, Any] = {"ssl": context}
        if self.local is not None:
            kwargs["local_addr"] = self.local
        _, lane = await loop.create_connection(
            lambda: _Lane(self, stream), self.host, self.port, **kwargs
        )
        return lane

    async def connect(self) -> None:
        """Both lanes up, or an exception (the worker counts it by cause)."""
        self.stream = await self._lane(True)
        try:
            self.requests = await self._lane(False)
        except BaseException:
            # create_connection returned, so connection_made has set the transport
            self.stream.transport.abort()  # type: ignore[union-attr]
            raise
        self.up = True
        # the lanes stand in for the picows transport (the face below), duck-typed
        self.conn.on_ws_connected(cast("WSTransport", self))

    # -- the picows face ---------------------------------------------------------------------

    def send(self, _msg_type: object, payload: bytes) -> None:
        if self.closed.done():
            return
        # (per message: no assert) both lanes were connected before the worker sends
        if self.conn.adapter.opens_stream(payload):
            self.stream.transport.write(payload)  # type: ignore[union-attr]
        elif self.requests is not None:
            self.requests.transport.write(payload)  # type: ignore[union-attr]
        else:
            self.queued.append(payload)
            if self.opening is None:
                self.opening = asyncio.get_running_loop().create_task(self._reopen())

    async def _reopen(self) -> None:
        try:
            lane = await self._lane(False)
        except OSError:
            self.queued.clear()  # never written: unacked, as on a lost connection
            self.opening = None
            return
        self.opening = None
        # create_connection returned, so connection_made has set the transport
        if self.closed.done():
            lane.transport.close()  # type: ignore[union-attr]
            return
        self.requests = lane
        queued, self.queued = self.queued, []
        for payload in queued:
            lane.transport.write(payload)  # type: ignore[union-attr]

    def send_ping(self) -> None:
        """A one-way stream has no ping: only its close tells a loss (not a silence)."""
        self.conn.liveness.last_rx_ns = time.monotonic_ns()

    def send_close(self, _code: object = None) -> None:
        pass

    def disconnect(self, graceful: bool = True) -> None:
        for lane in (self.stream, self.requests):
            if lane is not None and lane.transport is not None:
                if graceful:
                    lane.transport.close()
                else:
                    lane.transport.abort()

    async def wait_disconnected(self) -> None:
        await asyncio.shield(self.closed)

    def lane_lost(self, lane: _Lane) -> None:
        if lane is self.stream:
            self.stream = None
            requests, self.requests = self.requests, None
            if requests is not None and requests.transport is not None:
                requests.transport.abort()
            if not self.closed.done():
                self.closed.set_result(None)
                if self.up:
                    self.conn.adapter.reply_lane_closed()
                    self.conn.on_ws_disconnected(cast("WSTransport", self))
        elif lane is self.requests:  # the server closed an idle keep-alive connection
            self.requests = None
            self.conn.adapter.reply_lane_closed()
