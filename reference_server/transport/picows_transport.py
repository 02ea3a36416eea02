"""picows transport (the default): a Cython WebSocket protocol on uvloop.

One small listener object per connection and no task: frames arrive as
callbacks. The same listener factory answers plain HTTP GETs for /healthz and
/metrics, since picows hands it every request before the upgrade.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Callable
from http import HTTPStatus

from picows import (
    WSCloseCode,
    WSFrame,
    WSListener,
    WSMsgType,
    WSTransport,
    WSUpgradeRequest,
    WSUpgradeResponse,
    WSUpgradeResponseWithListener,
    ws_create_server,
)

from reference_server.transport import Core, Session, TransportOptions, bearer_token, route
from rtbench.protocol import CloseCode

log = logging.getLogger("rtbench.server")
_TEXT = WSMsgType.TEXT
_BINARY = WSMsgType.BINARY
_CONT = WSMsgType.CONTINUATION
_CLOSE = WSMsgType.CLOSE


class PicowsConnection(WSListener):
    """Listener and Connection in one object, to keep per-connection memory small."""

    __slots__ = ("_frag", "peer", "server", "session", "token", "transport")

    def __init__(self, server: PicowsServer, token: str | None) -> None:
        self.server = server
        self.token = token
        self.peer = ""
        self.session: Session | None = None
        self.transport: WSTransport | None = None
        self._frag: bytearray | None = None

    def on_ws_connected(self, transport: WSTransport) -> None:
        self.transport = transport
        under = transport.underlying_transport
        under.set_write_buffer_limits(high=self.server.send_buffer_bytes)
        peer = under.get_extra_info("peername")
        self.peer = f"{peer[0]}:{peer[1]}" if peer else ""
        self.session = self.server.core.open_session(self, self.token)
        self.token = None
        # The parsed handshake (header multidicts, ~3 KB) stays referenced by the
        # transport for the connection's life; nothing reads it after the upgrade.
        for message in (transport.request, transport.response):
            if message is not None:
                message.headers = None  # type: ignore[assignment]  # dropped on purpose

    def on_ws_frame(self, transport: WSTransport, frame: WSFrame) -> None:
        session = self.session
        if session is None:
            return
        msg_type = frame.msg_type
        if msg_type is _TEXT:
            if frame.fin and self._frag is None:
                session.on_frame(frame.get_payload_as_bytes())
            else:
                self._fragment(session, frame, start=True)
        elif msg_type is _CONT:
            self._fragment(session, frame, start=False)
        elif msg_type is _CLOSE:
            self.session = None
            session.on_close()  # before the socket goes: nothing may be written after this
            if not transport.is_close_frame_sent:
                transport.send_close(frame.get_close_code())
            transport.disconnect()
        elif msg_type is _BINARY:
            session.protocol_close(CloseCode.UNSUPPORTED_DATA, "binary frames are not supported")
        else:  # PONG (PINGs are answered by picows itself)
            session.on_activity()

    def _fragment(self, session: Session, frame: WSFrame, start: bool) -> None:
        if start:
            if self._frag is not None:
                session.protocol_close(1002, "new message before the fragmented one ended")
                return
            self._frag = bytearray()
        elif self._frag is None:
            session.protocol_close(1002, "continuation frame without a message")
            return
        self._frag += frame.get_payload_as_memoryview()
        if len(self._frag) > self.server.max_frame_bytes:
            self._frag = None
            session.protocol_close(CloseCode.MESSAGE_TOO_BIG, "message over the size limit")
            return
        session.on_activity()
        if frame.fin:
            data, self._frag = bytes(self._frag), None
            session.on_frame(data)

    def on_ws_disconnected(self, transport: WSTransport) -> None:
        if self.session is not None:
            self.session.on_close()
            self.session = None

    def pause_writing(self) -> None:
        if self.session is not None:
            self.session.on_paused()

    def resume_writing(self) -> None:
        if self.session is not None:
            self.session.on_resumed()

    # ---- Connection
    def send(self, data: bytes) -> None:
        if self.transport is not None:
            self.transport.underlying_transport.write(data)

    def close(self, code: int, reason: str) -> None:
        """Send the close frame and keep reading until the client's close frame answers it.

        The socket is not closed here (RFC 6455 7.1.1: the server closes TCP after the
        closing handshake). A client still sending when our close goes out leaves
        frames in our receive buffer; closing the socket over unread data makes the
        kernel send a reset, and a client that writes once more before reading is
        told "connection reset" and never reads our close frame (a drain's 1012
        became a 1006 that way). The frames read meanwhile are dropped by the closed
        session; the client's close frame (``on_ws_frame``) or, past
        ``limits.close_linger_ms``, the sweeper's ``abort`` ends the socket.
        """
        t = self.transport
        if t is None or t.is_disconnected or t.is_close_frame_sent:
            return
        # picows takes any int; its stub names only its enum (4xxx codes are ours)
        t.send_close(_close_code(code), reason.encode()[:120])  # type: ignore[arg-type]

    def abort(self) -> None:
        if self.transport is not None:
            self.transport.disconnect(graceful=False)

    def write_buffer_size(self) -> int:
        t = self.transport
        return 0 if t is None else t.underlying_transport.get_write_buffer_size()

    def ping(self) -> None:
        if self.transport is not None:
            self.transport.send_ping()

    def sender(self) -> Callable[[bytes], None]:
        """The socket transport's own ``write``: frames are pre-built by the core, and
        picows writes its frames to the same transport, so order is kept."""
        assert self.transport is not None
        return self.transport.underlying_transport.write


def _close_code(code: int) -> WSCloseCode | int:
    try:
        return WSCloseCode(code)
    except ValueError:
        return code  # application codes (4xxx) are not in picows' enum


class PicowsServer:
    """Accepts WebSocket connections and plain HTTP GETs on one port."""

    name = "picows"

    def __init__(self, core: Core, options: TransportOptions) -> None:
        self.core = core
        self.options = options
        self.max_frame_bytes = options.max_frame_bytes  # read by every connection: keep it flat
        self.send_buffer_bytes = options.send_buffer_bytes
        # aiofastnet (picows' default when installed) keeps ~6 KB more per connection
        # than uvloop's own transport; reports/transport-choice.md has the figures.
        self.use_aiofastnet = os.environ.get("RTBENCH_PICOWS_AIOFASTNET") == "1"
        self._server: asyncio.Server | None = None

    def _factory(
        self, request: WSUpgradeRequest
    ) -> WSListener | WSUpgradeResponseWithListener | None:
        core = self.core
        target = request.path.decode("latin-1")
        kind, token = route(target)
        headers_in = request.headers
        if kind == "ws":
            refusal = core.upgrade_refusal(headers_in.get("Origin"))
            if refusal is not None:  # another origin's page, or past admission: no socket
                response = WSUpgradeResponse.create_error_response(
                    HTTPStatus(refusal.status),
                    refusal.body,
                    {"Content-Type": "text/plain", **dict(refusal.headers)},
                )
                return WSUpgradeResponseWithListener(response, None)
            header = bearer_token(headers_in.get("Authorization"))
            return PicowsConnection(self, header or token)
        if kind == "http":
            status, body, content_type = core.http(target, headers_in.get("Authorization"))
            headers = {"Content-Type": content_type, "Cache-Control": "no-store"}
            if status == 401:
                headers["WWW-Authenticate"] = "Bearer"
            if status == 200:
                response = WSUpgradeResponse.create_ok_response(body, headers)
            else:
                response = WSUpgradeResponse.create_error_response(
                    HTTPStatus(status), body, headers
                )
            return WSUpgradeResponseWithListener(response, None)
        return None  # 404

    async def start(self, host: str, port: int) -> int:
        self._server = await ws_create_server(
            self._factory,
            **self.options.address(host, port),
            max_frame_size=self.options.max_frame_bytes,
            read_buffer_init_size=self.options.read_buffer_bytes,
            websocket_handshake_timeout=10,
            enable_auto_ping=False,  # one sweeper pings for all (no timer per connection)
            enable_auto_pong=True,
            backlog=self.options.backlog,
            reuse_address=True,
            use_aiofastnet=self.use_aiofastnet,
            # Given a Logger, picows builds a child Logger for every accepted connection
            # (whose first level check takes logging's lock, and again at disconnect):
            # ~2 us of each reconnect (reports/reconnect-cost.md). An adapter is used as
            # it is; its records go to the same "picows.server" logger.
            logger_name=logging.LoggerAdapter(logging.getLogger("picows.server"), {}),
        )
        return self._server.sockets[0].getsockname()[1]

    def stop_accepting(self) -> None:
        if self._server is not None:
            self._server.close()

    async def wait_closed(self) -> None:
        return None  # asyncio.Server.wait_closed waits for every client; the core closes them
