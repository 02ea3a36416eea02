"""A chat truth probe: what one light client sees while the load generator runs beside it.

The generator states a bound on its own delay (its send lag and timer lateness,
``loadtest.judge``), but that bound is sampled by time while deliveries arrive in bursts,
so on a loaded generator core it can fall short of what the generator added. This probe
checks the server directly: two connections in a room of their own, one ``send`` every
20 ms, each timed from the send to its ack and to its delivery to the other member. It
runs on the generator's core as its own process, so whatever it measures includes its own
share of that core's waiting: its figures are an upper bound on what the server took for
one message, and a step whose probe stayed under the limit was not the server's crossing.

It speaks the minimal subset of the reference protocol (hello, join, send; docs/PROTOCOL.md)
that the Node ws peer also speaks, with picows on uvloop (the generator's own stack).

    python -m benchmarks.truth_chat URL DELAY_S SECONDS OUT.json
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from pathlib import Path
from typing import Any

import uvloop
from picows import WSFrame, WSListener, WSMsgType, WSTransport, ws_connect

from rtbench.histogram import LatencyHistogram
from rtbench.protocol import decode_server, encode
from rtbench.protocol import messages as m

PERIOD_S = 0.02
"""One probe message every 20 ms: 50 a second, nothing beside a load of thousands."""
WAIT_S = 5.0
"""A message not acked and delivered within this is counted as missed (and the probe goes on)."""


class _Member(WSListener):
    """One probe connection: hands each decoded server frame to whoever waits for it."""

    def __init__(self) -> None:
        self.waiting: dict[Any, asyncio.Future[float]] = {}

    def on_ws_frame(self, transport: WSTransport, frame: WSFrame) -> None:
        if frame.msg_type is not WSMsgType.TEXT:
            return
        now = time.monotonic_ns()
        msg = decode_server(frame.get_payload_as_bytes())
        key: Any = None
        if isinstance(msg, m.Message):
            key = ("message", msg.body)
        elif isinstance(msg, (m.Ack, m.Welcome, m.Joined, m.Error)):
            key = ("reply", msg.id)
        waiter = self.waiting.pop(key, None)
        if waiter is None or waiter.done():
            return
        if isinstance(msg, m.Error):  # refused: the probe counts it missed, never fast
            waiter.set_exception(RuntimeError(f"{msg.code}: {msg.message}"))
        else:
            waiter.set_result(now)


async def _open(url: str, user: str, room: str) -> tuple[WSTransport, _Member]:
    transport, member = await ws_connect(_Member, url)
    loop = asyncio.get_running_loop()
    for request in (m.Hello(token=user, id=1, client="truth_chat"), m.Join(room=room, id=2)):
        reply: asyncio.Future[float] = loop.create_future()
        member.waiting[("reply", request.id)] = reply
        transport.send(WSMsgType.TEXT, encode(request))
        await asyncio.wait_for(reply, WAIT_S)
    return transport, member


async def probe(url: str, delay_s: float, seconds: float) -> dict[str, Any]:
    """Send one message every PERIOD_S for ``seconds`` after ``delay_s``; time each."""
    await asyncio.sleep(delay_s)
    room = f"truth-{time.time_ns()}"
    sender, a = await _open(url, "truth-a", room)
    receiver, b = await _open(url, "truth-b", room)
    ack, delivery = LatencyHistogram(), LatencyHistogram()
    missed = 0
    loop = asyncio.get_running_loop()
    end = time.monotonic() + seconds
    n = 0
    try:
        while time.monotonic() < end:
            n += 1
            body = f"truth {n}"
            acked: asyncio.Future[float] = loop.create_future()
            arrived: asyncio.Future[float] = loop.create_future()
            a.waiting[("reply", 100 + n)] = acked
            b.waiting[("message", body)] = arrived
            sent = time.monotonic_ns()
            sender.send(
                WSMsgType.TEXT, encode(m.Send(room=room, cid=f"t{n}", body=body, id=100 + n))
            )
            try:
                await asyncio.wait_for(asyncio.gather(acked, arrived), WAIT_S)
            except (TimeoutError, RuntimeError):
                missed += 1
                a.waiting.clear()
                b.waiting.clear()
                continue
            ack.record_us((acked.result() - sent) // 1000)
            delivery.record_us((arrived.result() - sent) // 1000)
            await asyncio.sleep(PERIOD_S)
    finally:
        sender.disconnect()
        receiver.disconnect()
    return {"sent": n, "missed": missed, "ack": ack.summary(), "delivery": delivery.summary()}


def main() -> None:
    url, delay_s, seconds, out = sys.argv[1], float(sys.argv[2]), float(sys.argv[3]), sys.argv[4]
    result = uvloop.run(probe(url, delay_s, seconds))
    Path(out).write_text(json.dumps(result))


if __name__ == "__main__":
    main()
