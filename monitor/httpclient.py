"""A minimal asyncio HTTP/1.1 GET for the targets' /healthz and /metrics.

The monitor needs one request per probe interval, cancellable by the probe's
deadline; a blocking client in a thread could not be cancelled, and a full client
library would be a dependency for one verb. Handles Content-Length, chunked and
close-delimited bodies, bounded in size.
"""

from __future__ import annotations

import asyncio
import ssl
from urllib.parse import urlsplit

MAX_BODY = 4 << 20


class HttpError(Exception):
    """The response could not be read (malformed, too large)."""


async def http_get(url: str, bearer: str | None = None) -> tuple[int, bytes]:
    """(status, body) of ``GET url`` (with ``Authorization: Bearer``); the caller bounds it."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise HttpError(f"not an http(s) URL: {url}")
    secure = parts.scheme == "https"
    port = parts.port or (443 if secure else 80)
    reader, writer = await asyncio.open_connection(
        parts.hostname, port, ssl=ssl.create_default_context() if secure else None
    )
    try:
        path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        host = parts.netloc.rpartition("@")[2]
        auth = f"Authorization: Bearer {bearer}\r\n" if bearer else ""
        writer.write(
            f"GET {path} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: rtbench-monitor\r\n"
            f"Accept: */*\r\n{auth}Connection: close\r\n\r\n".encode("latin-1")
        )
        await writer.drain()
        head = await reader.readuntil(b"\r\n\r\n")
        status_line, *header_lines = head.decode("latin-1").split("\r\n")
        try:
            status = int(status_line.split(" ", 2)[1])
        except (IndexError, ValueError):
            raise HttpError(f"bad status line {status_line[:80]!r}") from None
        headers = {}
        for line in header_lines:
            key, sep, value = line.partition(":")
            if sep:
                headers[key.strip().lower()] = value.strip()
        if "chunked" in headers.get("transfer-encoding", "").lower():
            body = await _read_chunked(reader)
        elif "content-length" in headers:
            length = int(headers["content-length"])
            if length > MAX_BODY:
                raise HttpError(f"body of {length} bytes is over {MAX_BODY}")
            body = await reader.readexactly(length)
        else:
            body = await reader.read(MAX_BODY + 1)
            if len(body) > MAX_BODY:
                raise HttpError(f"body over {MAX_BODY} bytes")
        return status, body
    except asyncio.IncompleteReadError as exc:
        raise HttpError("the server closed the connection mid-response") from exc
    except asyncio.LimitOverrunError as exc:
        raise HttpError("response headers too large") from exc
    finally:
        writer.close()


async def _read_chunked(reader: asyncio.StreamReader) -> bytes:
    body = bytearray()
    while True:
        size_line = await reader.readuntil(b"\r\n")
        size = int(size_line.split(b";", 1)[0].strip() or b"0", 16)
        if size == 0:
            return bytes(body)
        if len(body) + size > MAX_BODY:
            raise HttpError(f"body over {MAX_BODY} bytes")
        body += await reader.readexactly(size)
        await reader.readexactly(2)
