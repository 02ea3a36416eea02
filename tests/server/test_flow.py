"""Flow control and liveness: slow consumers (1013) and heartbeats.

Both use a bare WebSocket peer (tests/support/rawws.py) that does what real
libraries won't: stop reading, or never answer a ping.
"""

from __future__ import annotations

import asyncio
import json
import time

import pytest

from tests.support import Client
from tests.support.rawws import CLOSE, PING, RawWebSocket


@pytest.mark.parametrize("transport", ["picows", "websockets"])
async def test_slow_consumer_is_closed_1013_and_others_keep_up(start_server, transport) -> None:
    server = start_server(
        store="memory",
        transport=transport,
        config={
            "limits": {
                "send_buffer_bytes": 65536,
                "slow_consumer_grace_ms": 300,
                "slow_consumer_hard_bytes": 64 * 1024 * 1024,
                "close_linger_ms": 60000,  # keep the socket so the test can read the 1013
                "rate_per_s": 0,  # a deliberate firehose from one sender (no rate limit)
            },
            "timing": {"sweep_ms": 50},
        },
    )
    slow = await RawWebSocket.connect("127.0.0.1", server.port, rcvbuf=4096)
    slow.send(json.dumps({"type": "hello", "token": "slow"}).encode())
    slow.send(json.dumps({"type": "join", "room": "firehose", "id": 1}).encode())
    fast = await Client.connect(server.url, "fast")
    await fast.join("firehose")
    sender = await Client.connect(server.url, "sender")
    await sender.join("firehose")
    body = "x" * 4000
    sent = 0
    deadline = time.monotonic() + 60
    while server.metric("rtbench_server_slow_consumers_total") < 1:
        assert time.monotonic() < deadline, "slow consumer never detected"
        for _ in range(100):  # bounded bursts until the server gives up on the slow reader
            sent += 1
            await sender.send({"type": "send", "room": "firehose", "cid": f"m{sent}", "body": body})
        await sender.wait_type("ack", cid=f"m{sent}", timeout=30)
    # the fast reader got every message, in order, while the slow one was stuck
    await fast.wait(lambda f: f.get("type") == "message" and f["seq"] == sent, timeout=30)
    seqs = [m["seq"] for m in fast.received("message", room="firehose")]
    assert seqs == list(range(1, sent + 1))
    code, frames = await asyncio.wait_for(slow.read_until_close(), 60)
    assert code == 1013
    got = [json.loads(p) for op, p in frames if op != CLOSE]
    slow_seqs = [f["seq"] for f in got if f["type"] == "message"]
    assert slow_seqs == list(range(1, len(slow_seqs) + 1))  # what it got was a clean prefix
    assert server.metric("rtbench_server_closes_total", 'code="1013"') == 1
    _, health = server.health()
    assert health["connections"] == 2
    slow.close()
    await fast.close()
    await sender.close()


async def test_heartbeat_closes_a_peer_that_stops_answering(start_server) -> None:
    server = start_server(
        store="memory",
        config={
            "timing": {"heartbeat_interval_ms": 300, "heartbeat_timeout_ms": 400, "sweep_ms": 50}
        },
    )
    mute = await RawWebSocket.connect("127.0.0.1", server.port)
    started = time.monotonic()  # before the hello: the server counts silence from it
    mute.send(json.dumps({"type": "hello", "token": "mute"}).encode())
    lively = await Client.connect(server.url, "lively", ping_interval=None)  # answers pings
    code, frames = await asyncio.wait_for(mute.read_until_close(), 20)
    assert any(op == PING for op, _ in frames), "the server never pinged"
    assert code == 1011 or frames[-1][0] != CLOSE  # closed: with 1011, or cut
    assert time.monotonic() - started >= 0.7  # not before interval + timeout
    await asyncio.sleep(1.0)  # several intervals: the answering client stays
    assert (await lively.request({"type": "ping"}))["type"] == "pong"
    _, health = server.health()
    assert health["connections"] == 1
    assert server.metric("rtbench_server_heartbeat_pings_total") >= 1
    mute.close()
    await lively.close()
