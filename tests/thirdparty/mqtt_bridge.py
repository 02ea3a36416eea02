"""MQTT over WebSocket in front of a plain-TCP broker: the smallest bridge that keeps the spec.

``python -m tests.thirdparty.mqtt_bridge --port 0 --upstream 127.0.0.1:PORT`` prints
``listening on 127.0.0.1:PORT`` and relays every WebSocket connection to a TCP connection of
its own to the broker, bytes as they come, both ways: binary frames in, one frame per TCP
read out (MQTT over WebSocket is a byte stream; the adapter keeps its own buffer). Either
side closing ends both. It accepts only clients that offer the ``mqtt`` subprotocol and
selects it, as MQTT 5.0 section 6 / 3.1.1 section 6 require ([MQTT-6.0.0-3]/[-4]).

Why written here rather than taken from PyPI: the tests need a real MQTT 5 broker over
WebSocket, and Mosquitto's own WebSocket listener fails on these machines (Debian's
libwebsockets build: "Unable to start any listening sockets"), so a bridge goes in front of
its TCP listener. websockify (0.13), the well-kept WebSocket-to-TCP bridge on PyPI, answers
a client that offers ``mqtt`` with HTTP 400 ("Invalid protocol selected": it selects only
``binary`` or nothing), so no MQTT client can connect through it. This is that relay with
the ``websockets`` library the project already depends on, and nothing else.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib

from websockets.asyncio.server import ServerConnection, serve
from websockets.exceptions import ConnectionClosed


async def relay(ws: ServerConnection, host: str, port: int) -> None:
    try:
        reader, writer = await asyncio.open_connection(host, port)
    except OSError:
        await ws.close(1011, "broker unreachable")
        return

    async def up() -> None:  # WebSocket -> broker
        with contextlib.suppress(ConnectionClosed, OSError):
            async for message in ws:
                writer.write(message if isinstance(message, bytes) else message.encode())
                await writer.drain()

    async def down() -> None:  # broker -> WebSocket
        with contextlib.suppress(ConnectionClosed, OSError):
            while data := await reader.read(65_536):
                await ws.send(data)

    tasks = [asyncio.create_task(up()), asyncio.create_task(down())]
    await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    writer.close()
    with contextlib.suppress(OSError):
        await writer.wait_closed()
    await ws.close()


async def main(port: int, upstream: str) -> None:
    host, _, broker_port = upstream.rpartition(":")

    async def handler(ws: ServerConnection) -> None:
        await relay(ws, host, int(broker_port))

    async with serve(
        handler, "127.0.0.1", port, subprotocols=["mqtt"],  # type: ignore[list-item]
        compression=None, max_size=None, ping_interval=None,
    ) as server:  # fmt: skip
        bound = next(iter(server.sockets)).getsockname()[1]
        print(f"listening on 127.0.0.1:{bound}", flush=True)
        await asyncio.Future()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--upstream", required=True, help="the broker's HOST:PORT (plain TCP)")
    args = parser.parse_args()
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(main(args.port, args.upstream))
