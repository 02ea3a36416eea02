"""Fan-out to N connections: the reference server's broadcast path over real sockets.

An in-process reference server core (``App`` behind its picows transport, memory
store) holds N real loopback WebSocket subscribers plus one publisher, each of which
said hello and joined one room. One round is what a ``publish`` frame costs the
server, from its bytes as the transport hands them over: decode, build and frame the
event once, ack the publisher and write the same bytes to every subscriber's socket.
Between rounds the clients read everything (untimed), so each round starts with
empty socket buffers.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import pytest
import uvloop
from picows import WSListener, WSMsgType, ws_connect

from reference_server.app import App
from reference_server.auth import make_authenticator
from reference_server.config import ServerConfig
from reference_server.store.memory import MemoryStore
from reference_server.transport import TransportOptions, make_transport
from rtbench.protocol import encode
from rtbench.protocol import messages as p

PUBLISH = encode(p.Publish(room="fan", event="bench", data="x" * 100, id=1))


ROOM = "fan"
DRAIN_TIMEOUT_S = 10.0


class Client(WSListener):
    """Counts text frames; answers pings (picows' auto-pong)."""

    def __init__(self, tally: Tally) -> None:
        self.tally = tally

    def on_ws_frame(self, transport: Any, frame: Any) -> None:
        if frame.msg_type is WSMsgType.TEXT:
            self.tally.frames += 1
            waiter = self.tally.waiter
            if waiter and self.tally.frames >= self.tally.target and not waiter.done():
                waiter.set_result(None)


class Tally:
    def __init__(self) -> None:
        self.frames = 0
        self.target = 0
        self.waiter: asyncio.Future[None] | None = None

    async def until(self, target: int) -> None:
        self.target = target
        if self.frames >= target:
            return
        self.waiter = asyncio.get_running_loop().create_future()
        try:
            await asyncio.wait_for(self.waiter, DRAIN_TIMEOUT_S)
        finally:
            self.waiter = None


class Harness:
    """The server core and its N subscribers, on one uvloop loop owned by the fixture."""

    def __init__(self, n: int) -> None:
        self.n = n
        self.loop = uvloop.new_event_loop()
        self.tally = Tally()
        config = ServerConfig()
        self.app = App(config, MemoryStore(), make_authenticator(True, None), "picows")
        options = TransportOptions(
            max_frame_bytes=config.limits.max_frame_bytes,
            read_buffer_bytes=config.listen.read_buffer_bytes,
            send_buffer_bytes=config.limits.send_buffer_bytes,
            backlog=config.listen.backlog,
        )
        self.transport = make_transport("picows", self.app, options)
        self.clients: list[Any] = []
        self.loop.run_until_complete(self._start())

    async def _start(self) -> None:
        await self.app.start()
        port = await self.transport.start("127.0.0.1", 0)
        url = f"ws://127.0.0.1:{port}/ws"
        gate = asyncio.Semaphore(100)

        async def one(i: int) -> None:
            async with gate:
                transport, _ = await ws_connect(lambda: Client(self.tally), url)
                self.clients.append(transport)
                transport.send(WSMsgType.TEXT, encode(p.Hello(token=f"u{i}")))
                transport.send(WSMsgType.TEXT, encode(p.Join(room=ROOM)))

        await asyncio.gather(*(one(i) for i in range(self.n + 1)))  # the last publishes
        room = None
        for _ in range(int(DRAIN_TIMEOUT_S / 0.01)):  # joins are asynchronous (store)
            room = self.app.rooms.cached(ROOM)
            if room is not None and len(room.subs) == self.n + 1:
                break
            await asyncio.sleep(0.01)
        assert room is not None and len(room.subs) == self.n + 1, "not every client joined"
        self.publisher = next(s for s in room.subs if s.user == f"u{self.n}")
        await asyncio.sleep(0.2)  # welcome, joined and presence frames arrive
        self.tally.frames = 0
        self.expected = 0

    def publish(self) -> None:
        """The timed part: one publish frame, as the transport hands it to the core."""
        self.app.handle(self.publisher, PUBLISH)
        self.expected += self.n + 1  # a delivery per subscriber, an ack to the publisher

    def drain(self) -> None:
        """Untimed: let every client read what was sent so far."""
        self.loop.run_until_complete(self.tally.until(self.expected))

    def close(self) -> None:
        for transport in self.clients:
            transport.disconnect(graceful=False)
        self.loop.run_until_complete(self.app.stop())
        self.transport.stop_accepting()
        self.loop.run_until_complete(asyncio.sleep(0.05))
        self.loop.close()


@pytest.fixture(params=[100, 1000], ids=lambda n: f"room{n}")
def harness(request: pytest.FixtureRequest) -> Iterator[Harness]:
    h = Harness(request.param)
    try:
        yield h
    finally:
        h.close()


def test_fanout(benchmark, harness: Harness) -> None:  # type: ignore[no-untyped-def]
    before = harness.app.metrics.fanout_deliveries
    rounds = 30 if harness.n >= 1000 else 100
    benchmark.pedantic(harness.publish, setup=harness.drain, rounds=rounds, iterations=1)
    harness.drain()
    published = harness.expected // (harness.n + 1)
    assert harness.app.metrics.fanout_deliveries - before == harness.n * published
    # Every delivery (and ack) reached a real socket and was read by its client.
    assert harness.tally.frames == harness.expected
    benchmark.extra_info["recipients"] = harness.n
