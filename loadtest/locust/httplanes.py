"""The Locust users' transport for ``Adapter.transport == "http"`` (Server-Sent Events).

Two gevent sockets per client stand in for its WebSocket (``WsConnection``'s face:
``connect``, ``send``, ``begin_close``, ``finish_close``, ``close``, ``drop``, ``reader``,
``code``): the *stream* lane, whose bytes go to ``on_payload``, and the keep-alive
*request* lane, whose bytes go to ``on_reply``. Which lane a payload takes is the
adapter's (``opens_stream``); everything HTTP is the adapter's too, so this only moves
bytes. A request lane the server closed is opened again for the next payload.
"""

from __future__ import annotations

import contextlib
import socket
import ssl
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

import gevent

from loadtest.adapters import Adapter

READ_CHUNK = 65_536


class HttpLanesConnection:
    """One client's stream and request lanes; ``on_closed(self, 1006)`` once, when the
    stream ends (a one-way stream has no close code)."""

    def __init__(
        self,
        url: str,
        adapter: Adapter,
        on_payload: Callable[[bytes], None],
        on_reply: Callable[[bytes], None],
        on_closed: Callable[[Any, int], None],
    ) -> None:
        parts = urlsplit(url)
        self.secure = parts.scheme == "https"
        self.host = parts.hostname or "127.0.0.1"
        self.port = parts.port or (443 if self.secure else 80)
        self.adapter = adapter
        self.on_payload = on_payload
        self.on_reply = on_reply
        self.on_closed = on_closed
        self.stream: socket.socket | None = None
        self.requests: socket.socket | None = None
        self.reader: gevent.Greenlet | None = None
        self.replies: gevent.Greenlet | None = None
        self.closing = False
        self.code: int | None = None

    @property
    def is_open(self) -> bool:
        return self.stream is not None and self.code is None

    def _socket(self, timeout: float | None) -> socket.socket:
        sock = socket.create_connection((self.host, self.port), timeout=timeout)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if self.secure:
            sock = ssl.create_default_context().wrap_socket(sock, server_hostname=self.host)
        sock.settimeout(None)
        return sock

    def connect(
        self, timeout: float, headers: dict[str, str] | None = None, subprotocols: Any = ()
    ) -> None:
        """Both lanes up; raises OSError on failure. (Headers are the adapter's own.)"""
        self.stream = self._socket(timeout)
        try:
            self._open_requests(timeout)
        except BaseException:
            self.stream.close()
            raise
        self.reader = gevent.spawn(self._read)

    def _open_requests(self, timeout: float | None) -> socket.socket:
        sock = self._socket(timeout)
        self.requests = sock
        self.replies = gevent.spawn(self._read_replies, sock)
        return sock

    def send(self, payload: bytes) -> None:
        """Write one payload on its lane; raises OSError when the connection is gone."""
        if self.code is not None or self.stream is None:
            raise OSError("connection closed")
        if self.adapter.opens_stream(payload):
            self.stream.sendall(payload)
            return
        sock = self.requests
        if sock is None:
            sock = self._open_requests(10.0)
        sock.sendall(payload)

    def _read(self) -> None:
        sock = self.stream
        try:
            while True:
                # the reader starts once the stream is open and ends before it is dropped
                data = sock.recv(READ_CHUNK)  # type: ignore[union-attr]
                if not data:
                    break
                self.on_payload(data)
        except (OSError, ValueError):
            pass  # reset, or cut by us
        finally:
            self.code = 1006
            requests, self.requests = self.requests, None  # (its reader: not current now)
            self._shut(self.stream)
            self._shut(requests)
            self.adapter.reply_lane_closed()
            self.on_closed(self, 1006)

    def _read_replies(self, sock: socket.socket) -> None:
        try:
            while True:
                data = sock.recv(READ_CHUNK)
                if not data:
                    break
                self.on_reply(data)
        except (OSError, ValueError):
            pass
        finally:
            if self.requests is sock:
                self.requests = None
                self.adapter.reply_lane_closed()
            with contextlib.suppress(OSError):
                sock.close()

    @staticmethod
    def _shut(sock: socket.socket | None) -> None:
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)

    def begin_close(self, code: int = 1000) -> None:
        """Close both lanes (HTTP has no close handshake)."""
        self.closing = True
        self._shut(self.stream)
        self._shut(self.requests)

    def finish_close(self) -> None:
        for greenlet in (self.reader, self.replies):
            if greenlet is not None and not greenlet.dead:
                greenlet.kill(block=False)
        for sock in (self.stream, self.requests):
            if sock is not None:
                with contextlib.suppress(OSError):
                    sock.close()

    def close(self, code: int = 1000, wait_s: float = 2.0) -> None:
        self.begin_close(code)
        if self.reader is not None:
            self.reader.join(wait_s)
        self.finish_close()

    def drop(self, quiet: bool = False) -> None:
        """Cut both lanes, as a network failure would (``quiet``: on purpose)."""
        self.closing = self.closing or quiet
        self._shut(self.stream)
        self._shut(self.requests)
