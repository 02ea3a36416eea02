"""The fault proxy: a TCP relay between clients and server that can cut or blackhole.

rtbench puts it in front of the server for ``cut`` and ``blackhole`` faults. It relays
bytes untouched (WebSocket, TLS, HTTP alike), so it works for any server, and on
command it

- **cuts**: resets a share of the connections it carries, both ways (``SO_LINGER`` 0,
  so each peer sees a TCP RST, never a close frame), as a crashed load balancer or a
  flapping network path would;
- **blackholes**: stops reading from every socket, old and new, for N seconds without
  closing anything. Bytes wait in the kernel buffers as they would in a dead network
  path, peers see silence, and only heartbeats can tell a connection is gone; when the
  blackhole lifts, whatever is still open carries on.

It is asyncio on uvloop with ``Protocol`` callbacks (no task per connection): a relay
is one ``write`` per ``data_received``, and flow control pauses the reading side when
the other side's buffer is full, so a slow peer never grows memory without bound.
One process holds two sockets per connection, so past ~9,000 connections (20,000 open
files per process here) or one core of relaying it runs as several processes on one
port (``SO_REUSEPORT``); ``ProxyFleet`` starts and commands them.

Run by hand: ``python -m loadtest.faults.proxy --upstream 127.0.0.1:8765 --listen
127.0.0.1:0``; commands are JSON lines on stdin (``{"cut": 0.3}``, ``{"blackhole": 1}``,
``{"blackhole": 0}``, ``{"stats": 1}``), answers JSON lines on stdout.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import random
import resource
import socket
import struct
import sys
from typing import Any, cast

LINGER_RESET = struct.pack("ii", 1, 0)
WRITE_HIGH_WATER = 256 * 1024
PAIRS_PER_PROCESS = 8_000
"""Relayed connections per proxy process: two sockets each, under 20,000 open files."""


class _Side(asyncio.Protocol):
    """One socket of a relayed connection; ``peer`` is the other one."""

    __slots__ = ("flow_paused", "held", "link", "peer", "reading", "transport")

    def __init__(self, link: _Link) -> None:
        self.link = link
        self.transport: asyncio.Transport | None = None
        self.peer: _Side | None = None
        self.flow_paused = False  # the peer's write buffer is full
        self.reading = True
        self.held: list[bytes] = []  # read before it could be passed on (at most one read)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # a stream protocol's transport
        self.transport.set_write_buffer_limits(WRITE_HIGH_WATER)
        self.sync()  # no reading before the other side is connected (nor while blackholed)

    def data_received(self, data: bytes) -> None:
        peer = self.peer
        if peer is None or peer.transport is None or self.link.proxy.blackholed:
            # the loop may read once before a pause takes effect (uvloop starts reading
            # after connection_made): keep it for later and make sure reading stops
            self.held.append(data)
            self.reading = True
            self.sync()
            return
        peer.transport.write(data)
        self.link.proxy.bytes += len(data)

    def eof_received(self) -> bool:
        return False  # close this side; connection_lost closes the other

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None
        self.link.closed(self)

    # the *peer's* buffer filled or drained: stop or restart reading this side's source
    def pause_writing(self) -> None:
        if self.peer is not None:
            self.peer.flow_paused = True
            self.peer.sync()

    def resume_writing(self) -> None:
        if self.peer is not None:
            self.peer.flow_paused = False
            self.peer.sync()

    def sync(self) -> None:
        """Read or not, as flow control, the blackhole and the upstream's state say."""
        want = (
            not self.flow_paused
            and not self.link.proxy.blackholed
            and self.peer is not None
            and self.peer.transport is not None
        )
        transport = self.transport
        if transport is None or want == self.reading:
            return
        self.reading = want
        if want:
            if self.held:
                held, self.held = self.held, []
                assert self.peer is not None and self.peer.transport is not None  # want says so
                for data in held:
                    self.peer.transport.write(data)
            transport.resume_reading()
        else:
            transport.pause_reading()

    def reset(self) -> None:
        """Abort with a TCP RST (no FIN, no close frame)."""
        transport = self.transport
        if transport is None:
            return
        sock = transport.get_extra_info("socket")
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, LINGER_RESET)
        transport.abort()


class _Link:
    """A client connection and its upstream connection."""

    __slots__ = ("client", "proxy", "task", "upstream")

    def __init__(self, proxy: FaultProxy) -> None:
        self.proxy = proxy
        self.client = _Side(self)
        self.upstream: _Side | None = None
        self.task: asyncio.Task[None] | None = None

    async def open_upstream(self) -> None:
        proxy = self.proxy
        side = _Side(self)
        try:
            await asyncio.get_running_loop().create_connection(
                lambda: side, proxy.upstream_host, proxy.upstream_port
            )
        except OSError:
            proxy.upstream_failures += 1
            self.client.reset()  # what a client of a dead server sees: a reset
            return
        finally:
            self.task = None
        if self.client.transport is None:  # the client left while we connected
            if side.transport is not None:
                side.transport.close()
            return
        self.upstream = side
        side.peer, self.client.peer = self.client, side
        self.client.sync()
        side.sync()

    def closed(self, side: _Side) -> None:
        other = side.peer
        if other is not None and other.transport is not None:
            other.transport.close()  # flushes what was already relayed, then FIN
        if self.task is not None:
            self.task.cancel()
        if side is self.client or other is None:
            self.proxy.links.discard(self)

    def reset(self) -> None:
        self.client.reset()
        if self.upstream is not None:
            self.upstream.reset()


class FaultProxy:
    """The relay of one process: ``start``, then ``cut`` / ``blackhole`` on command."""

    def __init__(self, upstream_host: str, upstream_port: int, seed: int | None = None) -> None:
        self.upstream_host = upstream_host
        self.upstream_port = upstream_port
        self.links: set[_Link] = set()
        self.blackholed = False
        self.server: asyncio.AbstractServer | None = None
        self.rng = random.Random(seed)
        self.accepted = 0
        self.cuts = 0
        self.upstream_failures = 0
        self.bytes = 0

    async def start(self, host: str = "127.0.0.1", port: int = 0, reuse_port: bool = False) -> int:
        loop = asyncio.get_running_loop()
        self.server = await loop.create_server(
            self._accept, host, port, backlog=4096, reuse_port=reuse_port or None
        )
        return self.server.sockets[0].getsockname()[1]

    def _accept(self) -> _Side:
        link = _Link(self)
        self.links.add(link)
        self.accepted += 1
        link.task = asyncio.get_running_loop().create_task(link.open_upstream())
        return link.client

    def cut(self, share: float = 1.0) -> int:
        """Reset ``share`` of the open connections (both ways); returns how many."""
        links = list(self.links)
        if share < 1.0:
            links = self.rng.sample(links, round(share * len(links)))
        for link in links:
            link.reset()
            self.links.discard(link)
        self.cuts += len(links)
        return len(links)

    def blackhole(self, on: bool) -> int:
        """Stop (or restart) passing bytes on every connection; returns how many are open."""
        self.blackholed = on
        for link in self.links:
            link.client.sync()
            if link.upstream is not None:
                link.upstream.sync()
        return len(self.links)

    def stats(self) -> dict[str, Any]:
        return {
            "open": len(self.links),
            "accepted": self.accepted,
            "cut": self.cuts,
            "upstream_failures": self.upstream_failures,
            "bytes": self.bytes,
            "blackholed": self.blackholed,
        }

    async def close(self) -> None:
        if self.server is not None:
            self.server.close()
        for link in list(self.links):
            if link.task is not None:
                link.task.cancel()
            link.reset()
        self.links.clear()
        if self.server is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.server.wait_closed(), 2.0)


# -- the proxy as a process (one shard of a fleet) ---------------------------------------------


async def _serve(args: argparse.Namespace) -> None:
    host, _, port = args.upstream.rpartition(":")
    listen_host, _, listen_port = args.listen.rpartition(":")
    proxy = FaultProxy(host or "127.0.0.1", int(port), seed=args.seed)
    bound = await proxy.start(listen_host or "127.0.0.1", int(listen_port), reuse_port=True)
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)

    def answer(payload: dict[str, Any]) -> None:
        sys.stdout.write(json.dumps(payload) + "\n")
        sys.stdout.flush()

    answer({"ready": bound})
    try:
        while line := await reader.readline():
            try:
                command = json.loads(line)
            except ValueError:
                answer({"error": f"not JSON: {line[:80]!r}"})
                continue
            if "cut" in command:
                answer({"cut": proxy.cut(float(command["cut"]))})
            elif "blackhole" in command:
                answer({"blackhole": proxy.blackhole(bool(command["blackhole"]))})
            elif "stats" in command:
                answer({"stats": proxy.stats()})
            else:
                answer({"error": f"unknown command {command!r}"})
    finally:
        await proxy.close()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--upstream", required=True, help="HOST:PORT of the server")
    parser.add_argument("--listen", default="127.0.0.1:0", help="HOST:PORT to listen on")
    parser.add_argument("--seed", type=int, default=None, help="seed of the cut sampling")
    args = parser.parse_args(argv)
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    try:
        import uvloop

        uvloop.run(_serve(args))
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
