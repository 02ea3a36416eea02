"""Isolation under abuse: do other clients keep their delivery latency while one floods?

One piece of code for the test (small, bounded) and for the figures in
docs/SECURITY.md (bigger, by hand, under the machine lock)::

    flock /tmp/rtbench-bench.lock .venv/bin/python -m tests.security.abuse \\
        --clients 40 --rate 5 --seconds 10

Against one reference server it runs two phases of the same open-loop chat (each
normal client sends at ``rate`` a second into its room; latency runs from the
*scheduled* send time to each recipient's receipt, on one clock):

- ``calm``: the chat alone;
- ``abuse``: the same chat, while a *flooder* sends into the first room at exactly
  its rate limit (legal, and amplified by the room's fan-out), and a *spammer*
  hammers the server with frames far past its limit, is warned, closed 1008,
  reconnects and does it again.

Deliveries are counted per recipient: every message must reach every other member
of its room exactly once.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import struct
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import psutil
import websockets
from hdrh.histogram import HdrHistogram

from tests.support.rawws import RawWebSocket

_clock = time.monotonic


@dataclass
class Phase:
    """What one phase measured."""

    name: str
    sent: int = 0
    expected: int = 0
    delivered: int = 0
    duplicates: int = 0
    latency: HdrHistogram = field(default_factory=lambda: HdrHistogram(1, 60_000_000, 3))
    flood_sent: int = 0
    flood_refused: int = 0
    spam_frames: int = 0
    spam_closes: list[int] = field(default_factory=list)
    client_cpu: float = 0.0  # % of one core, this process (all the clients)
    server_cpu: float = 0.0  # % of one core, the server process

    def ms(self, q: float) -> float:
        return self.latency.get_value_at_percentile(q) / 1000

    def summary(self) -> dict[str, Any]:
        return {
            "phase": self.name,
            "sent": self.sent,
            "expected": self.expected,
            "delivered": self.delivered,
            "lost": self.expected - self.delivered,
            "duplicates": self.duplicates,
            "p50_ms": round(self.ms(50), 2),
            "p99_ms": round(self.ms(99), 2),
            "max_ms": round(self.latency.get_max_value() / 1000, 2),
            "flood_sent": self.flood_sent,
            "flood_refused": self.flood_refused,
            "spam_frames": self.spam_frames,
            "spam_closes": self.spam_closes,
            "client_cpu_pct": self.client_cpu,
            "server_cpu_pct": self.server_cpu,
        }


class Member:
    """A normal chat client: sends on a schedule, timestamps every message it receives."""

    def __init__(self, ws: Any, user: str, room: str) -> None:
        self.ws, self.user, self.room = ws, user, room
        self.seen: dict[str, int] = {}  # cid -> times received
        self.phase: Phase | None = None
        self.errors: list[dict[str, Any]] = []
        self.reader = asyncio.get_running_loop().create_task(self._read())

    @classmethod
    async def join(cls, url: str, user: str, room: str) -> Member:
        ws = await websockets.connect(url, ping_interval=None, max_size=2**22, open_timeout=20)
        await ws.send(json.dumps({"type": "hello", "token": user}))
        assert json.loads(await ws.recv())["type"] == "welcome"
        await ws.send(json.dumps({"type": "join", "room": room, "id": 1}))
        while json.loads(await ws.recv()).get("type") != "joined":
            pass
        return cls(ws, user, room)

    async def _read(self) -> None:
        with contextlib.suppress(websockets.ConnectionClosed):
            async for raw in self.ws:
                now = _clock()
                frame = json.loads(raw)
                kind = frame.get("type")
                if kind == "message":
                    self._received(frame, now)
                elif kind == "error":
                    self.errors.append(frame)

    def _received(self, frame: dict[str, Any], now: float) -> None:
        meta = frame.get("meta") or {}
        phase = self.phase
        if phase is None or meta.get("phase") != phase.name or "at" not in meta:
            return  # the flooder's traffic, or a late one from another phase
        cid = frame["cid"]
        count = self.seen.get(cid, 0)
        self.seen[cid] = count + 1
        if count:
            phase.duplicates += 1
            return
        phase.delivered += 1
        phase.latency.record_value(max(1, int((now - meta["at"]) * 1_000_000)))

    async def send(self, phase: Phase, n: int, at: float) -> None:
        cid = f"{self.user}-{phase.name}-{n}"
        meta = {"phase": phase.name, "at": at}
        await self.ws.send(
            json.dumps(
                {"type": "send", "room": self.room, "cid": cid, "body": "x" * 80, "meta": meta}
            )
        )

    async def close(self) -> None:
        await self.ws.close()
        self.reader.cancel()
        await asyncio.gather(self.reader, return_exceptions=True)


async def _chat(members: list[Member], phase: Phase, rate: float, seconds: float) -> None:
    """Open loop: each member sends at its own scheduled times; lateness is latency."""
    room_size: dict[str, int] = {}
    for m in members:
        room_size[m.room] = room_size.get(m.room, 0) + 1
        m.phase = phase

    async def one(m: Member) -> None:
        start = _clock() + random.uniform(0, 1 / rate)
        n = 0
        while True:
            at = start + n / rate
            if at - start >= seconds:
                return
            delay = at - _clock()
            if delay > 0:
                await asyncio.sleep(delay)
            await m.send(phase, n, at)
            phase.sent += 1
            phase.expected += room_size[m.room] - 1
            n += 1

    await asyncio.gather(*(one(m) for m in members))


async def _flood(url: str, room: str, limit: float, seconds: float, phase: Phase) -> None:
    """Send into ``room`` at exactly the rate limit: legal, and never refused."""
    flooder = await Member.join(url, "flooder", room)
    try:
        start, n = _clock(), 0
        while (at := start + n / limit) - start < seconds:
            delay = at - _clock()
            if delay > 0:
                await asyncio.sleep(delay)
            cid = f"flood-{phase.name}-{n}"
            await flooder.ws.send(
                json.dumps({"type": "send", "room": room, "cid": cid, "body": "f" * 80})
            )
            n += 1
        phase.flood_sent = n
        await asyncio.sleep(0.5)
        phase.flood_refused = sum(e.get("code") == "rate_limited" for e in flooder.errors)
    finally:
        await flooder.close()


def _masked_frame(payload: bytes) -> bytes:
    mask = os.urandom(4)
    masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    return struct.pack("!BB", 0x81, 0x80 | len(payload)) + mask + masked


async def _spam(host: str, port: int, frames: int, rounds: int, phase: Phase) -> None:
    """Far past the limit: a burst of ``frames`` pings per connection, ``rounds`` times."""
    hello = _masked_frame(json.dumps({"type": "hello", "token": "spammer"}).encode())
    ping = _masked_frame(b'{"type":"ping"}')
    for _ in range(rounds):
        raw = await RawWebSocket.connect(host, port)
        raw.writer.write(hello + ping * frames)
        phase.spam_frames += frames
        with contextlib.suppress(ConnectionError):
            await raw.writer.drain()
        code, _ = await asyncio.wait_for(raw.read_until_close(), 30)
        phase.spam_closes.append(code or 0)
        raw.close()


def _server_process(url: str) -> psutil.Process | None:
    """The server's process (its pid from /healthz), to read its CPU time."""
    health = url.replace("ws://", "http://", 1).rsplit("/ws", 1)[0] + "/healthz"
    try:
        with urllib.request.urlopen(health, timeout=5) as response:
            return psutil.Process(json.loads(response.read())["pid"])
    except (OSError, ValueError, KeyError, psutil.Error):
        return None  # a server elsewhere: its CPU is not ours to read


@contextlib.contextmanager
def _cpu(phase: Phase, server: psutil.Process | None) -> Iterator[None]:
    """Share of a core this client process and the server used during the phase.

    The client watches itself (docs/DESIGN: a saturated generator makes its latency
    figures the generator's, not the server's).
    """
    wall, mine = time.perf_counter(), time.process_time()
    theirs = sum(server.cpu_times()[:2]) if server is not None else 0.0
    yield
    wall = time.perf_counter() - wall
    phase.client_cpu = round(100 * (time.process_time() - mine) / wall, 1)
    if server is not None:
        phase.server_cpu = round(100 * (sum(server.cpu_times()[:2]) - theirs) / wall, 1)


async def measure(
    url: str,
    *,
    clients: int = 20,
    room_size: int = 5,
    rate: float = 5.0,
    seconds: float = 4.0,
    limit: float = 200.0,
    spam_frames: int = 5000,
    spam_rounds: int = 3,
) -> tuple[Phase, Phase]:
    """Run the calm phase, then the abuse phase, against the server at ``url``."""
    host, port = url.split("//", 1)[1].split("/", 1)[0].rsplit(":", 1)
    tag = f"{random.randrange(16**6):06x}"
    members = [
        await Member.join(url, f"m{tag}-{i}", f"iso{tag}-{i // room_size}") for i in range(clients)
    ]
    server = _server_process(url)
    try:
        calm = Phase("calm")
        with _cpu(calm, server):
            await _chat(members, calm, rate, seconds)
        await asyncio.sleep(1.0)  # in-flight deliveries land
        abuse = Phase("abuse")
        jobs = [_chat(members, abuse, rate, seconds)]
        if limit > 0:
            jobs.append(_flood(url, members[0].room, limit, seconds, abuse))
        if spam_frames > 0:
            jobs.append(_spam(host, int(port), spam_frames, spam_rounds, abuse))
        with _cpu(abuse, server):
            await asyncio.gather(*jobs)
        await asyncio.sleep(1.0)
        return calm, abuse
    finally:
        for m in members:
            await m.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", help="a running server (default: start one, SQLite store)")
    parser.add_argument("--clients", type=int, default=40)
    parser.add_argument("--room-size", type=int, default=5)
    parser.add_argument("--rate", type=float, default=5.0, help="sends per second per client")
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--spam-frames", type=int, default=5000, help="0: no spammer")
    parser.add_argument("--flood-rate", type=float, default=200.0, help="0: no flooder")
    parser.add_argument("--runs", type=int, default=1)
    args = parser.parse_args()

    import tempfile
    from pathlib import Path

    from tests.support.server import ServerProcess

    for run in range(args.runs):
        with contextlib.ExitStack() as stack:
            url = args.url
            if url is None:
                workdir = Path(stack.enter_context(tempfile.TemporaryDirectory()))
                server = stack.enter_context(ServerProcess(workdir))
                url = server.url
            calm, abuse = asyncio.run(
                measure(
                    url,
                    clients=args.clients,
                    room_size=args.room_size,
                    rate=args.rate,
                    seconds=args.seconds,
                    spam_frames=args.spam_frames,
                    limit=args.flood_rate,
                )
            )
            for phase in (calm, abuse):
                print(json.dumps({"run": run + 1, **phase.summary()}))


if __name__ == "__main__":
    main()
