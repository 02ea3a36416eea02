"""A bare picows broadcast server: the ceiling the reference server is compared with.

It speaks just enough of the reference protocol for benchmarks/transport_choice.py
(hello -> welcome, join -> joined, send -> ack + the frame to everyone else) with
no store, no seq, no checks: what is left is the WebSocket library and the
kernel, so (reference server) / (bare) is the cost of the application itself.

    python -m benchmarks.bare_picows --port 0   # prints "listening on ws://127.0.0.1:PORT/ws"
"""

from __future__ import annotations

import argparse
import sys

import uvloop
from picows import WSListener, WSMsgType, WSTransport, ws_create_server

ROOM: set[WSTransport] = set()


class Bare(WSListener):
    def on_ws_connected(self, transport: WSTransport) -> None:
        self.transport = transport

    def on_ws_frame(self, transport: WSTransport, frame: object) -> None:
        payload = frame.get_payload_as_bytes()  # type: ignore[attr-defined]
        if payload.startswith(b'{"type":"send"'):
            for other in ROOM:
                if other is not transport:
                    other.send(WSMsgType.TEXT, payload)
            transport.send(WSMsgType.TEXT, b'{"type":"ack"}')
        elif payload.startswith(b'{"type":"join"'):
            ROOM.add(transport)
            transport.send(WSMsgType.TEXT, b'{"type":"joined"}')
        elif frame.msg_type is WSMsgType.TEXT:  # type: ignore[attr-defined]
            transport.send(WSMsgType.TEXT, b'{"type":"welcome"}')

    def on_ws_disconnected(self, transport: WSTransport) -> None:
        ROOM.discard(transport)


async def main(port: int) -> None:
    server = await ws_create_server(
        lambda _: Bare(), "127.0.0.1", port, read_buffer_init_size=2048, use_aiofastnet=False
    )
    print(f"listening on ws://127.0.0.1:{server.sockets[0].getsockname()[1]}/ws", file=sys.stderr)
    sys.stderr.flush()
    await server.serve_forever()


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, default=0)
    uvloop.run(main(parser.parse_args().port))
