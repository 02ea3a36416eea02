"""A WebSocket echo server with a /healthz, run as its own process so a test can stop it.

``python tests/monitor/echo_target.py PORT`` prints ``ready`` once it listens. Its
/healthz answers JSON with the number of open WebSocket connections, as the reference
server's does, so the monitor's connection reading is exercised against real HTTP.
"""

from __future__ import annotations

import asyncio
import json
import signal
import sys
from http import HTTPStatus

from websockets.asyncio.server import ServerConnection, serve
from websockets.datastructures import Headers
from websockets.http11 import Request, Response

OPEN: set[ServerConnection] = set()


async def echo(ws: ServerConnection) -> None:
    OPEN.add(ws)
    try:
        async for message in ws:
            await ws.send(message)
    finally:
        OPEN.discard(ws)


def health(connection: ServerConnection, request: Request) -> Response | None:
    if request.path != "/healthz":
        return None
    body = json.dumps({"status": "ok", "connections": len(OPEN)}).encode()
    headers = Headers([("Content-Type", "application/json"), ("Content-Length", str(len(body)))])
    return Response(HTTPStatus.OK.value, "OK", headers, body)


async def main(port: int) -> None:
    stop = asyncio.get_running_loop().create_future()
    for sig in (signal.SIGTERM, signal.SIGINT):
        asyncio.get_running_loop().add_signal_handler(sig, stop.set_result, None)
    async with serve(echo, "127.0.0.1", port, process_request=health, ping_interval=None):
        print("ready", flush=True)
        await stop


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1])))
