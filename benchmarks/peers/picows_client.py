"""A bare picows client: no markers, no accounting, no self-watch: the floor for the engine.

The generator-efficiency benchmark runs it at the same loads as ``rtbench run`` in the
same session, so the report can state what rtbench's measuring costs over the raw client
(ANCHORS.md's "picows + uvloop client" column). Round trips are timed per connection
(an echo server answers in order), on the same monotonic clock.

    python -m benchmarks.peers.picows_client hold URL USERS SECONDS OUT.json
    python -m benchmarks.peers.picows_client open URL USERS RATE SECONDS OUT.json
    python -m benchmarks.peers.picows_client closed URL USERS SECONDS OUT.json
"""

from __future__ import annotations

import asyncio
import collections
import json
import random
import sys
import time

import psutil
import uvloop
from picows import WSListener, WSMsgType, ws_connect

from rtbench.histogram import LatencyHistogram

PAYLOAD = b"x" * 100
CONNECT_CONCURRENCY = 256


class Client(WSListener):
    def __init__(self, state: State) -> None:
        self.state = state
        self.sent: collections.deque[int] = collections.deque()
        self.transport = None

    def on_ws_connected(self, transport) -> None:  # type: ignore[no-untyped-def]
        self.transport = transport

    def on_ws_frame(self, transport, frame) -> None:  # type: ignore[no-untyped-def]
        if frame.msg_type is not WSMsgType.TEXT:
            return
        now = time.monotonic_ns()
        state = self.state
        state.trips += 1
        state.hist.record_us((now - self.sent.popleft()) // 1000)
        if state.closed and now < state.end_ns:
            self.sent.append(now)
            transport.send(WSMsgType.TEXT, PAYLOAD)

    def send(self) -> None:
        self.sent.append(time.monotonic_ns())
        self.transport.send(WSMsgType.TEXT, PAYLOAD)  # type: ignore[union-attr]


class State:
    def __init__(self, closed: bool) -> None:
        self.closed = closed
        self.trips = 0
        self.end_ns = 0
        self.hist = LatencyHistogram()


async def connect_all(url: str, users: int, state: State) -> list[Client]:
    gate = asyncio.Semaphore(CONNECT_CONCURRENCY)

    async def one() -> Client:
        async with gate:
            _, client = await ws_connect(lambda: Client(state), url)
            return client  # type: ignore[return-value]

    return list(await asyncio.gather(*(one() for _ in range(users))))


async def main(mode: str, url: str, users: int, rate: float, seconds: float) -> dict:
    state = State(closed=mode == "closed")
    proc = psutil.Process()
    clients = await connect_all(url, users, state)
    await asyncio.sleep(0.5)
    cpu0 = sum(proc.cpu_times()[:2])
    start = time.monotonic_ns()
    state.end_ns = start + int(seconds * 1e9)
    if mode == "closed":
        for client in clients:
            client.send()
        await asyncio.sleep(seconds)
    elif mode == "open":
        loop = asyncio.get_running_loop()
        rng = random.Random(1)
        total = rate * users
        when = loop.time()
        end = when + seconds
        while True:  # merged Poisson schedule on loop timers
            when += rng.expovariate(total)
            if when >= end:
                break
            delay = when - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            clients[rng.randrange(users)].send()
    else:
        await asyncio.sleep(seconds)
    cpu_s = sum(proc.cpu_times()[:2]) - cpu0
    await asyncio.sleep(0.5)  # late replies
    return {
        "users": len(clients),
        "cpu_s": cpu_s,
        "seconds": seconds,
        "trips": state.trips,
        "rss_bytes": proc.memory_info().rss,
        "p50": state.hist.percentile_ms(50),
        "p99": state.hist.percentile_ms(99),
    }


if __name__ == "__main__":
    args = sys.argv[1:]
    mode, url = args[0], args[1]
    users = int(args[2])
    rate = float(args[3]) if mode == "open" else 0.0
    seconds = float(args[4] if mode == "open" else args[3])
    out = args[-1]
    result = uvloop.run(main(mode, url, users, rate, seconds))
    with open(out, "w") as handle:
        json.dump(result, handle)
