"""A bare WebSocket client on asyncio streams, for tests a real library won't do.

Real libraries answer pings and keep reading; tests of heartbeats and slow
consumers need a peer that does neither, and a byte-level view of the frames
(including the close code) that the server sent.
"""

from __future__ import annotations

import asyncio
import base64
import os
import socket
import struct

TEXT, BINARY, CLOSE, PING, PONG = 0x1, 0x2, 0x8, 0x9, 0xA


class RawWebSocket:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    @classmethod
    async def connect(
        cls, host: str, port: int, path: str = "/ws", rcvbuf: int | None = None
    ) -> RawWebSocket:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        if rcvbuf is not None:  # before connect, so the TCP window stays small
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        sock.setblocking(False)
        await asyncio.get_running_loop().sock_connect(sock, (host, port))
        reader, writer = await asyncio.open_connection(sock=sock, limit=2**22)
        key = base64.b64encode(os.urandom(16)).decode()
        writer.write(
            (
                f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nUpgrade: websocket\r\n"
                f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
                "Sec-WebSocket-Version: 13\r\n\r\n"
            ).encode()
        )
        status = await reader.readuntil(b"\r\n\r\n")
        if not status.startswith(b"HTTP/1.1 101"):
            raise ConnectionError(status.decode(errors="replace"))
        return cls(reader, writer)

    def send(self, payload: bytes, opcode: int = TEXT) -> None:
        mask = os.urandom(4)
        n = len(payload)
        if n < 126:
            header = struct.pack("!BB", 0x80 | opcode, 0x80 | n)
        elif n < 65536:
            header = struct.pack("!BBH", 0x80 | opcode, 0x80 | 126, n)
        else:
            header = struct.pack("!BBQ", 0x80 | opcode, 0x80 | 127, n)
        masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
        self.writer.write(header + mask + masked)

    async def read_frame(self) -> tuple[int, bytes]:
        """(opcode, payload) of the next frame; raises IncompleteReadError at EOF."""
        first, second = await self.reader.readexactly(2)
        n = second & 0x7F
        if n == 126:
            (n,) = struct.unpack("!H", await self.reader.readexactly(2))
        elif n == 127:
            (n,) = struct.unpack("!Q", await self.reader.readexactly(8))
        return first & 0x0F, await self.reader.readexactly(n)

    async def read_until_close(self) -> tuple[int | None, list[tuple[int, bytes]]]:
        """Read to the end: the close code sent (None if the socket just ended) and all frames."""
        frames: list[tuple[int, bytes]] = []
        try:
            while True:
                opcode, payload = await self.read_frame()
                frames.append((opcode, payload))
                if opcode == CLOSE:
                    return (struct.unpack("!H", payload[:2])[0] if payload else None), frames
        except (asyncio.IncompleteReadError, ConnectionError):
            return None, frames

    def close(self) -> None:
        self.writer.transport.abort()
