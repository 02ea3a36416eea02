"""The transport seam: WebSocket libraries on one side, the application core on the other.

Like the ``websockets`` library's sans-I/O split, the core never imports a
WebSocket library. A transport accepts connections and hands the core a
``Connection`` (send bytes, close, write-buffer size, ping, peer), then feeds it
frames; the core answers through the connection. Swapping picows for websockets
(``--transport``) changes nothing above this line.
"""

from __future__ import annotations

import socket
import struct
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol
from urllib.parse import parse_qs, urlsplit

from rtbench.protocol import ADMIN_DRAIN_PATH, WS_PATHS


class Connection(Protocol):
    """One open WebSocket, as the core sees it."""

    @property
    def peer(self) -> str:
        """``host:port`` of the client (an attribute or a property)."""

    def send(self, data: bytes) -> None:
        """Queue bytes made by ``text_frame`` (one or more frames); never blocks."""

    def close(self, code: int, reason: str) -> None:
        """Send a close frame; the socket ends when the peer's close frame answers it.

        That is RFC 6455's closing handshake: frames the peer sent before it saw ours
        are read (and dropped by the closed session) rather than left unread, which
        would make the kernel reset the connection over our close frame. A peer that
        never answers is cut by ``abort`` after ``limits.close_linger_ms``.
        """

    def abort(self) -> None:
        """Drop the socket now, discarding whatever is still buffered."""

    def write_buffer_size(self) -> int: ...

    def ping(self) -> None: ...

    def sender(self) -> Callable[[bytes], None]:
        """The fastest callable that writes pre-framed bytes (the fan-out hot path)."""


class Session(Protocol):
    """What a transport calls on the core's per-connection object."""

    def on_frame(self, data: bytes) -> None: ...

    def on_activity(self) -> None:
        """Anything arrived (a pong, a fragment): the peer is alive."""

    def on_paused(self) -> None:
        """The outgoing buffer crossed its high-water mark."""

    def on_resumed(self) -> None: ...

    def on_close(self) -> None: ...

    def protocol_close(self, code: int, reason: str) -> None:
        """The transport saw a protocol violation (binary frame, bad UTF-8, too big)."""


class Core(Protocol):
    """The application core, as the transports see it."""

    def open_session(self, conn: Connection, token: str | None) -> Session: ...

    def http(self, path: str, authorization: str | None) -> tuple[int, bytes, str]:
        """Answer a plain HTTP GET (``/healthz``, ``/metrics``, ``/admin/drain``): status,
        body, content type.

        ``authorization`` is the request's Authorization header (/metrics may need it).
        """

    def upgrade_refusal(self, origin: str | None) -> Refusal | None:
        """The HTTP answer that refuses this upgrade (a browser Origin not allowed: 403;
        past the admission rate: 503 with Retry-After), or None to go ahead."""


@dataclass(frozen=True, slots=True)
class Refusal:
    """An upgrade refused before a socket exists: the HTTP answer, as the core decided it."""

    status: int
    body: bytes
    headers: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True, slots=True)
class TransportOptions:
    """What every transport needs to know; the limits come from the server config."""

    max_frame_bytes: int  # larger frames (or fragmented messages): close 1009
    read_buffer_bytes: int  # initial per-connection read buffer (picows)
    send_buffer_bytes: int  # high-water mark of the outgoing buffer: pause_writing()
    backlog: int = 4096  # listen(2) backlog
    # A worker of ``--workers N`` accepts on the socket its supervisor made (SO_REUSEPORT).
    sock: socket.socket | None = None

    def address(self, host: str, port: int) -> dict[str, Any]:
        """``create_server``'s address arguments: the given socket, or host and port."""
        return {"sock": self.sock} if self.sock is not None else {"host": host, "port": port}


class TransportServer(Protocol):
    name: str

    async def start(self, host: str, port: int) -> int:
        """Listen; returns the bound port (port 0 picks a free one)."""

    def stop_accepting(self) -> None: ...

    async def wait_closed(self) -> None: ...


_LEN16 = struct.Struct("!BBH")
_LEN64 = struct.Struct("!BBQ")


def text_frame(payload: bytes) -> bytes:
    """A complete server-to-client WebSocket text frame (unmasked, FIN) around ``payload``.

    The core frames each message once and hands the same bytes to every recipient's
    socket: no per-recipient header building or copying in the WebSocket library.
    """
    n = len(payload)
    if n < 126:
        return bytes((0x81, n)) + payload
    if n < 65536:
        return _LEN16.pack(0x81, 126, n) + payload
    return _LEN64.pack(0x81, 127, n) + payload


def frame_payload(frame: bytes) -> memoryview:
    """The payload of a frame built by ``text_frame``."""
    n = frame[1] & 0x7F
    return memoryview(frame)[2 if n < 126 else 4 if n == 126 else 10 :]


def route(target: str) -> tuple[str, str | None]:
    """Split a request target into ("ws" | "http" | "missing", token from ``?token=``)."""
    if target in WS_PATHS:  # every upgrade without a query: no URL parse per connection
        return "ws", None
    parts = urlsplit(target)
    if parts.path in WS_PATHS:
        tokens = parse_qs(parts.query).get("token")
        return "ws", tokens[0] if tokens else None
    if parts.path in ("/healthz", "/metrics", ADMIN_DRAIN_PATH):
        return "http", None
    return "missing", None


def bearer_token(authorization: str | None) -> str | None:
    """The token of an ``Authorization: Bearer TOKEN`` header, if that is what it is."""
    if authorization and authorization[:7].lower() == "bearer ":
        return authorization[7:].strip() or None
    return None


def make_transport(name: str, core: Core, options: TransportOptions) -> TransportServer:
    if name == "picows":
        from reference_server.transport.picows_transport import PicowsServer

        return PicowsServer(core, options)
    if name == "websockets":
        from reference_server.transport.websockets_transport import WebsocketsServer

        return WebsocketsServer(core, options)
    raise ValueError(f"unknown transport {name!r}: use picows or websockets")
