"""What a target says of itself: ``/healthz`` (JSON) and ``/metrics`` (Prometheus text).

The connect scenario reports the server's memory per held connection when the target
exposes its RSS (the reference server does; Prometheus' process collector calls it
``process_resident_memory_bytes``). Plain HTTP GETs on the WebSocket's host and port,
short timeouts, bounded reads: a target without these endpoints costs nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import ssl
from typing import Any
from urllib.parse import urlparse

MAX_BODY = 1 << 20
TIMEOUT_S = 2.0
_RSS_METRIC = re.compile(
    r"^process_resident_memory_bytes(?:\{[^}]*\})?\s+([0-9.eE+]+)\s*$", re.MULTILINE
)


async def http_get(url: str, path: str) -> tuple[int, bytes] | None:
    """(status, body) of GET ``path`` on the WebSocket URL's host, or None."""
    parsed = urlparse(url)
    secure = parsed.scheme == "wss"
    host = parsed.hostname or "127.0.0.1"
    port = parsed.port or (443 if secure else 80)
    context = ssl.create_default_context() if secure else None
    try:
        reader, writer = await asyncio.wait_for(
            asyncio.open_connection(host, port, ssl=context), TIMEOUT_S
        )
    except (OSError, TimeoutError):
        return None
    try:
        request = f"GET {path} HTTP/1.1\r\nHost: {parsed.netloc}\r\nConnection: close\r\n\r\n"
        writer.write(request.encode())
        raw = await asyncio.wait_for(reader.read(MAX_BODY), TIMEOUT_S)
        while len(raw) < MAX_BODY:
            more = await asyncio.wait_for(reader.read(MAX_BODY - len(raw)), TIMEOUT_S)
            if not more:
                break
            raw += more
    except (OSError, TimeoutError):
        return None
    finally:
        writer.close()
        with contextlib.suppress(Exception):
            await writer.wait_closed()
    head, _, body = raw.partition(b"\r\n\r\n")
    try:
        status = int(head.split(b" ", 2)[1])
    except (IndexError, ValueError):
        return None
    if b"transfer-encoding: chunked" in head.lower():
        body = _dechunk(body)
    return status, body


def _dechunk(body: bytes) -> bytes:
    out = bytearray()
    while body:
        size_line, _, rest = body.partition(b"\r\n")
        try:
            size = int(size_line.split(b";")[0], 16)
        except ValueError:
            break
        if size == 0:
            break
        out += rest[:size]
        body = rest[size + 2 :]
    return bytes(out)


def _find_rss(value: Any) -> int | None:
    """The first number under a key that mentions rss, anywhere in a JSON document."""
    if isinstance(value, dict):
        for key, item in value.items():
            if "rss" in str(key).lower() and isinstance(item, int | float):
                return int(item)
        for item in value.values():
            found = _find_rss(item)
            if found is not None:
                return found
    return None


async def probe(url: str) -> dict[str, Any]:
    """{'healthz': {...}, 'rss_bytes': N} with whatever the target exposes ({} if nothing)."""
    out: dict[str, Any] = {}
    health = await http_get(url, "/healthz")
    if health and health[0] == 200:
        try:
            out["healthz"] = json.loads(health[1])
        except ValueError:
            pass
        else:
            rss = _find_rss(out["healthz"])
            if rss is not None:
                out["rss_bytes"] = rss
    if "rss_bytes" not in out:
        metrics = await http_get(url, "/metrics")
        if metrics and metrics[0] == 200:
            values = _RSS_METRIC.findall(metrics[1].decode("utf-8", "replace"))
            if values:
                out["rss_bytes"] = int(sum(float(v) for v in values))
    return out
