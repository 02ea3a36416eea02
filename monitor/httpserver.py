"""A tiny asyncio HTTP/1.1 server for the monitor's three pages.

/healthz, /metrics and the status page are GET-only, small, and rendered from an
in-memory snapshot, so a full web framework would add a dependency and nothing
else. Each connection serves one request and closes (``Connection: close``), which
Prometheus, Kubernetes probes, load balancers and browsers all accept. Reading the
request is bounded in size and time; handlers never block the loop.

A path may require a bearer token (``tokens``: path -> token, as for /metrics with
``--metrics-token``); it is compared in constant time and a request without it gets
401 with ``WWW-Authenticate: Bearer``.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import logging
from collections.abc import Awaitable, Callable

from msgspec import Struct

log = logging.getLogger("rtbench.monitor")

MAX_HEAD = 16 * 1024
READ_TIMEOUT = 10.0


class Response(Struct, kw_only=True):
    status: int
    body: bytes
    content_type: str = "text/plain; charset=utf-8"
    headers: dict[str, str] = {}


Handler = Callable[[], Response | Awaitable[Response]]
_REASONS = {
    200: "OK",
    401: "Unauthorized",
    404: "Not Found",
    405: "Method Not Allowed",
    500: "Internal Server Error",
    400: "Bad Request",
    503: "Service Unavailable",
}


class HttpServer:
    """Routes exact paths to handlers; owns its listening socket and connection tasks."""

    def __init__(self, routes: dict[str, Handler], tokens: dict[str, str] | None = None) -> None:
        self.routes = routes
        self.tokens = {path: token.encode() for path, token in (tokens or {}).items() if token}
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    async def start(self, host: str, port: int) -> tuple[str, int]:
        self._server = await asyncio.start_server(self._accept, host, port, limit=MAX_HEAD)
        sockname = self._server.sockets[0].getsockname()
        return sockname[0], sockname[1]

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._server is not None:
            await self._server.wait_closed()

    def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.get_running_loop().create_task(self._serve(reader, writer))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            async with asyncio.timeout(READ_TIMEOUT):
                head = await reader.readuntil(b"\r\n\r\n")
            method, path = _request_line(head)
            if path in self.tokens and not _bearer_ok(head, self.tokens[path]):
                response = Response(
                    status=401,
                    body=f"{path} needs Authorization: Bearer <token>\n".encode(),
                    headers={"WWW-Authenticate": "Bearer"},
                )
            else:
                response = await self._respond(method, path)
            head_only = method == "HEAD"
            writer.write(_encode(response, head_only))
            async with asyncio.timeout(READ_TIMEOUT):
                await writer.drain()
        except (TimeoutError, asyncio.IncompleteReadError, ConnectionError):
            pass  # a client that went away or sent nothing
        except asyncio.LimitOverrunError:
            writer.write(_encode(Response(status=400, body=b"request head too large\n"), False))
        except ValueError as exc:
            writer.write(_encode(Response(status=400, body=f"{exc}\n".encode()), False))
        finally:
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    async def _respond(self, method: str, path: str) -> Response:
        handler = self.routes.get(path)
        if handler is None:
            known = ", ".join(sorted(self.routes))
            return Response(status=404, body=f"not found; pages: {known}\n".encode())
        if method not in ("GET", "HEAD"):
            return Response(status=405, body=b"only GET and HEAD\n", headers={"Allow": "GET, HEAD"})
        try:
            result = handler()
            if not isinstance(result, Response):
                result = await result
            return result
        except Exception:
            log.exception("handler for %s failed", path)
            return Response(status=500, body=b"internal error; see the monitor's log\n")


def _request_line(head: bytes) -> tuple[str, str]:
    line = head.split(b"\r\n", 1)[0].decode("latin-1")
    parts = line.split(" ")
    if len(parts) != 3 or not parts[2].startswith("HTTP/"):
        raise ValueError(f"bad request line {line[:80]!r}")
    method, target = parts[0], parts[1]
    path = target.split("?", 1)[0] or "/"
    return method, path


def _bearer_ok(head: bytes, token: bytes) -> bool:
    """True when the request head carries ``Authorization: Bearer <token>``."""
    for line in head.split(b"\r\n")[1:]:
        name, sep, value = line.partition(b":")
        if sep and name.strip().lower() == b"authorization":
            scheme, _, given = value.strip().partition(b" ")
            return scheme.lower() == b"bearer" and hmac.compare_digest(given.strip(), token)
    return False


def _encode(response: Response, head_only: bool) -> bytes:
    reason = _REASONS.get(response.status, "Error")
    lines = [
        f"HTTP/1.1 {response.status} {reason}",
        f"Content-Type: {response.content_type}",
        f"Content-Length: {len(response.body)}",
        "Cache-Control: no-store",
        "Connection: close",
    ]
    lines += [f"{k}: {v}" for k, v in response.headers.items()]
    head = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
    return head if head_only else head + response.body
