"""websockets transport (``--transport websockets``): the library the project started from.

Kept so the two can be measured against each other (benchmarks/transport_choice.py)
and for platforms picows does not build on. Sends go through the sans-I/O protocol
object synchronously, like picows, so fan-out never awaits a slow reader; the
core's buffer limit decides when a reader is too slow.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from http import HTTPStatus
from typing import Any

from websockets.asyncio.server import ServerConnection, serve
from websockets.datastructures import Headers
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response
from websockets.protocol import State

from reference_server.transport import Core, Session, TransportOptions, bearer_token, route
from rtbench.protocol import CloseCode

log = logging.getLogger("rtbench.server")


class WsConnection(ServerConnection):
    """A websockets connection that tells the core about activity and back-pressure."""

    session: Session | None = None
    token: str | None = None

    # ---- asyncio.Protocol hooks
    def data_received(self, data: bytes) -> None:
        if self.session is not None:
            self.session.on_activity()  # pongs included: websockets consumes them itself
        super().data_received(data)

    def pause_writing(self) -> None:
        super().pause_writing()
        if self.session is not None:
            self.session.on_paused()

    def resume_writing(self) -> None:
        super().resume_writing()
        if self.session is not None:
            self.session.on_resumed()

    # ---- Connection (the core's side)
    @property
    def peer(self) -> str:
        addr = self.remote_address
        return f"{addr[0]}:{addr[1]}" if addr else ""

    def send_frame(self, data: bytes) -> None:
        """Write pre-framed bytes (``text_frame``) straight to the socket transport."""
        if self.protocol.state is State.OPEN:
            self.transport.write(data)

    def sender(self) -> Callable[[bytes], None]:
        return self.send_frame

    def close_now(self, code: int, reason: str) -> None:
        if self.protocol.state is State.OPEN:
            self.protocol.send_close(code, reason)
            self.send_data()

    def abort(self) -> None:
        self.transport.abort()

    def write_buffer_size(self) -> int:
        return self.transport.get_write_buffer_size()

    # the core's Connection.ping; websockets' own keepalive, the only caller of the
    # coroutine it replaces, is off (ping_interval=None in start)
    def ping(self) -> None:  # type: ignore[override]
        if self.protocol.state is State.OPEN:
            self.protocol.send_ping(b"")
            self.send_data()


class _CoreView:
    """Adapts WsConnection's method names to the core's Connection protocol."""

    __slots__ = ("ws",)

    def __init__(self, ws: WsConnection) -> None:
        self.ws = ws

    @property
    def peer(self) -> str:
        return self.ws.peer

    def send(self, data: bytes) -> None:
        self.ws.send_frame(data)

    def sender(self) -> Callable[[bytes], None]:
        return self.ws.send_frame

    def close(self, code: int, reason: str) -> None:
        self.ws.close_now(code, reason)

    def abort(self) -> None:
        self.ws.abort()

    def write_buffer_size(self) -> int:
        return self.ws.write_buffer_size()

    def ping(self) -> None:
        self.ws.ping()


class WebsocketsServer:
    name = "websockets"

    def __init__(self, core: Core, options: TransportOptions) -> None:
        self.core = core
        self.options = options
        self._server: Any = None

    def _process_request(self, connection: WsConnection, request: Request) -> Response | None:
        kind, token = route(request.path)
        if kind == "ws":
            refusal = self.core.upgrade_refusal(request.headers.get("Origin"))
            if refusal is not None:  # another origin's page, or past admission: no socket
                response = connection.respond(
                    HTTPStatus(refusal.status), refusal.body.decode(errors="replace")
                )
                for name, value in refusal.headers:
                    response.headers[name] = value
                return response
            connection.token = bearer_token(request.headers.get("Authorization")) or token
            return None
        if kind == "http":
            auth = request.headers.get("Authorization")
            status, body, content_type = self.core.http(request.path, auth)
            headers = Headers(
                [
                    ("Content-Type", content_type),
                    ("Content-Length", str(len(body))),
                    ("Cache-Control", "no-store"),
                    ("Connection", "close"),
                ]
            )
            if status == 401:
                headers["WWW-Authenticate"] = "Bearer"
            return Response(status, HTTPStatus(status).phrase, headers, body)
        return connection.respond(HTTPStatus.NOT_FOUND, "not found\n")

    async def _handler(self, ws: WsConnection) -> None:
        session = self.core.open_session(_CoreView(ws), ws.token)
        ws.session = session
        try:
            async for message in ws:
                if isinstance(message, str):
                    session.on_frame(message.encode())
                else:
                    session.protocol_close(
                        CloseCode.UNSUPPORTED_DATA, "binary frames are not supported"
                    )
        except ConnectionClosed:
            pass
        finally:
            ws.session = None
            session.on_close()

    async def start(self, host: str, port: int) -> int:
        self._server = await serve(
            self._handler,  # type: ignore[arg-type]  # create_connection: a WsConnection
            **self.options.address(host, port),
            create_connection=WsConnection,
            process_request=self._process_request,  # type: ignore[arg-type]  # as _handler
            max_size=self.options.max_frame_bytes,
            write_limit=self.options.send_buffer_bytes,
            ping_interval=None,  # the core's sweeper pings silent connections
            compression=None,
            backlog=self.options.backlog,
        )
        return self._server.sockets[0].getsockname()[1]

    def stop_accepting(self) -> None:
        if self._server is not None:
            self._server.close(close_connections=False)

    async def wait_closed(self) -> None:
        return None
