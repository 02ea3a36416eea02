"""The monitor's HTTP server: routes, methods, HEAD, malformed requests (real sockets)."""

from __future__ import annotations

import asyncio

from monitor.httpserver import HttpServer, Response


async def _raw(port: int, request: bytes) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(request)
    await writer.drain()
    data = await asyncio.wait_for(reader.read(), 10)
    writer.close()
    return data


async def test_routes_methods_and_bad_requests():
    async def later() -> Response:
        return Response(status=503, body=b'{"status":"fail"}', content_type="application/json")

    server = HttpServer({"/": lambda: Response(status=200, body=b"page"), "/healthz": later})
    _, port = await server.start("127.0.0.1", 0)
    try:
        got = await _raw(port, b"GET /healthz?verbose=1 HTTP/1.1\r\nHost: x\r\n\r\n")
        assert got.startswith(b"HTTP/1.1 503 Service Unavailable\r\n")
        assert b"Content-Type: application/json\r\n" in got and got.endswith(b'{"status":"fail"}')

        head = await _raw(port, b"HEAD / HTTP/1.1\r\nHost: x\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 200 OK\r\n") and b"Content-Length: 4\r\n" in head
        assert head.endswith(b"\r\n\r\n")  # headers only

        missing = await _raw(port, b"GET /nope HTTP/1.1\r\n\r\n")
        assert missing.startswith(b"HTTP/1.1 404") and b"/healthz" in missing

        post = await _raw(port, b"POST /healthz HTTP/1.1\r\nContent-Length: 0\r\n\r\n")
        assert post.startswith(b"HTTP/1.1 405") and b"Allow: GET, HEAD" in post

        bad = await _raw(port, b"garbage\r\n\r\n")
        assert bad.startswith(b"HTTP/1.1 400")

        huge = await _raw(port, b"GET / HTTP/1.1\r\nX: " + b"a" * 40_000 + b"\r\n\r\n")
        assert huge.startswith(b"HTTP/1.1 400") and b"too large" in huge
    finally:
        await server.stop()
