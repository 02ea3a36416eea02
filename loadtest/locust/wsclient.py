"""A WebSocket connection for Locust users: websocket-client on gevent's sockets.

Locust monkey-patches the standard library with gevent, so websocket-client's blocking
socket calls yield to other users instead of blocking the process (the way
locust-plugins' WebSocket users work). Each connection has one reader greenlet that
hands every received frame to a callback as raw bytes (adapters parse bytes); any
greenlet may send. Pings from the server are answered inside ``recv_data`` by
websocket-client itself, which is what keeps the reference server's heartbeat happy.
"""

from __future__ import annotations

import contextlib
import random
import socket
import ssl
import struct
from collections.abc import Callable
from typing import Any

import gevent
import websocket
from websocket import ABNF

from loadtest.run.failures import classify as classify_os

CLOSE_WAIT_S = 2.0
"""How long ``close`` waits for the server's close frame before cutting the socket."""
READ_CHUNK = 65_536


class _BufferedWebSocket(websocket.WebSocket):
    """websocket-client with reads buffered and cheap mask keys.

    websocket-client parses each frame with exact-size reads (the 2-byte header, then the
    payload): two or more system calls and gevent switches per frame. Reading whatever
    the socket has (up to 64 KB) and serving the parser from that buffer makes it one per
    burst. Mask keys come from ``random`` instead of ``os.urandom`` (a system call per
    frame): masking guards browsers against cache poisoning, not a load generator.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._rbuf = b""
        self._rpos = 0
        self.set_mask_key(random.randbytes)

    def _recv(self, bufsize: int) -> bytes:
        if self._rpos >= len(self._rbuf):
            self._rbuf = super()._recv(READ_CHUNK)
            self._rpos = 0
        start = self._rpos
        self._rpos = start + bufsize
        return self._rbuf[start : self._rpos]


def classify(exc: BaseException, secure: bool = False) -> str:
    """A stable failure cause (docs/LOADTEST.md) for an exception of websocket-client."""
    if isinstance(exc, websocket.WebSocketBadStatusException):
        return f"http_{exc.status_code}"
    if isinstance(exc, websocket.WebSocketTimeoutException | socket.timeout | TimeoutError):
        return "timeout"
    if isinstance(exc, websocket.WebSocketAddressException | socket.gaierror):
        return "dns"
    if isinstance(exc, ssl.SSLError | ssl.CertificateError):
        return "tls"
    if isinstance(exc, websocket.WebSocketException):
        return "handshake"
    return classify_os(exc, secure=secure)


class WsConnection:
    """One client WebSocket: ``connect``, ``send``, ``close``; frames go to ``on_payload``.

    ``on_closed(self, code)`` runs once, in the reader greenlet, when the connection ends
    for any reason: the server's close code, or 1006 when the socket just died.
    """

    __slots__ = ("_opcode", "closing", "code", "on_closed", "on_payload", "reader", "url", "ws")

    def __init__(
        self,
        url: str,
        on_payload: Callable[[bytes], None],
        on_closed: Callable[[WsConnection, int], None],
        *,
        binary: bool = False,
    ) -> None:
        self.url = url
        self.on_payload = on_payload
        self.on_closed = on_closed
        self._opcode = ABNF.OPCODE_BINARY if binary else ABNF.OPCODE_TEXT
        self.ws: websocket.WebSocket | None = None
        self.reader: gevent.Greenlet | None = None
        self.closing = False
        self.code: int | None = None

    @property
    def is_open(self) -> bool:
        return self.ws is not None and self.ws.connected and self.code is None

    def connect(
        self,
        timeout: float,
        headers: dict[str, str] | None = None,
        subprotocols: tuple[str, ...] = (),
    ) -> None:
        """Open the socket and do the WebSocket upgrade; raises on failure (see classify)."""
        self.ws = websocket.create_connection(
            self.url,
            timeout=timeout,
            header=headers or {},
            subprotocols=list(subprotocols) or None,
            enable_multithread=True,  # a sender greenlet and the reader share the socket
            skip_utf8_validation=True,  # adapters decode what they need
            class_=_BufferedWebSocket,
        )
        self.ws.settimeout(None)  # the reader waits as long as the connection lives
        self.reader = gevent.spawn(self._read)

    def send(self, payload: bytes) -> None:
        """Send one frame; raises websocket/OS errors when the connection is gone."""
        # (per message: no assert) users send only on a connected client
        self.ws.send(payload, self._opcode)  # type: ignore[union-attr]

    def _read(self) -> None:
        ws = self.ws
        code = 1006
        try:
            while True:
                # spawned by connect, after the socket is there
                opcode, data = ws.recv_data()  # type: ignore[union-attr]
                if opcode == ABNF.OPCODE_CLOSE:
                    code = struct.unpack("!H", data[:2])[0] if len(data) >= 2 else 1005
                    break
                self.on_payload(data)
        except (websocket.WebSocketException, OSError, ValueError):
            pass  # the socket died (reset, cut by us, protocol error): 1006
        finally:
            self.code = code
            if ws is not None:
                ws.shutdown()
            self.on_closed(self, code)

    def begin_close(self, code: int = 1000) -> None:
        """Send a close frame; the reader ends when the server's close frame comes back."""
        ws = self.ws
        if ws is None or self.code is not None or self.closing:
            return
        self.closing = True
        try:
            ws.send_close(code)
        except (websocket.WebSocketException, OSError):
            self.drop()

    def finish_close(self) -> None:
        """Cut the socket if the close handshake has not ended the reader by now."""
        if self.reader is not None and not self.reader.dead:
            self.reader.kill(block=False)
        if self.ws is not None:
            self.ws.shutdown()

    def close(self, code: int = 1000, wait_s: float = CLOSE_WAIT_S) -> None:
        """Close politely (close frame, wait for the server's), then cut the socket."""
        self.begin_close(code)
        if self.reader is not None:
            self.reader.join(wait_s)
        self.finish_close()

    def drop(self, quiet: bool = False) -> None:
        """Cut the connection without a close frame, as a network failure would.

        ``quiet``: we cut it on purpose (a failed setup), so it is not a close to count.
        """
        self.closing = self.closing or quiet
        ws = self.ws
        if ws is not None and ws.sock is not None:
            with contextlib.suppress(OSError):
                ws.sock.shutdown(socket.SHUT_RDWR)
