"""The server's limits, each against a live server: rate, connections, Origin, idle, /metrics.

Every limit here is set small in the server's config so the test is quick, and
each is checked from both sides: what is refused, and that what stays within it
is not.
"""

from __future__ import annotations

import asyncio
import json
import time
import urllib.error
import urllib.request

import pytest
import websockets

from monitor.httpclient import http_get
from monitor.httpserver import HttpServer, Response
from tests.support import Client
from tests.support.rawws import CLOSE, RawWebSocket

ORIGIN = "https://chat.example.com"


async def test_rate_limit_warns_once_drops_then_closes_1008(start_server) -> None:
    server = start_server(
        store="memory",
        config={"limits": {"rate_per_s": 5, "rate_burst": 10, "rate_abuse_frames": 40}},
    )
    raw = await RawWebSocket.connect("127.0.0.1", server.port)
    burst = [json.dumps({"type": "ping", "id": i}).encode() for i in range(25)]
    raw.send(json.dumps({"type": "hello", "token": "flood"}).encode())
    for frame in burst:  # one write: they arrive together, far faster than 5 a second
        raw.send(frame)
    got: list[dict] = []
    async with asyncio.timeout(10):
        while sum(f["type"] == "pong" for f in got) < 9:
            got.append(json.loads((await raw.read_frame())[1]))
    pongs = [f["id"] for f in got if f["type"] == "pong"]
    errors = [f for f in got if f["type"] == "error"]
    assert pongs == list(range(len(pongs))) and 9 <= len(pongs) <= 11  # the burst, in order
    assert len(errors) <= 1
    for frame in burst * 2:  # keep going: past 40 dropped frames the connection is closed
        raw.send(frame)
    code, frames = await asyncio.wait_for(raw.read_until_close(), 10)
    assert code == 1008
    rest = [json.loads(p) for op, p in frames if op != CLOSE]
    errors += [f for f in rest if f["type"] == "error"]
    assert [e["code"] for e in errors] == ["rate_limited"]  # one warning, not one per frame
    assert "frames/s" in errors[0]["message"]
    assert server.metric("rtbench_server_frames_rate_limited_total") >= 40
    raw.close()


async def test_a_client_at_its_rate_is_never_refused(start_server) -> None:
    server = start_server(
        store="memory",
        config={"limits": {"rate_per_s": 20, "rate_burst": 5, "rate_abuse_frames": 5}},
    )
    async with await Client.connect(server.url, "steady") as c:
        await c.join("r")
        for i in range(30):  # 15/s for 2 s: under 20/s, so the bucket never runs dry
            await c.send({"type": "send", "room": "r", "cid": f"c{i}", "body": "x", "id": i})
            await asyncio.sleep(1 / 15)
        acks = [await c.wait_type("ack", id=i) for i in range(30)]
        assert [a["seq"] for a in acks] == list(range(1, 31))
        assert c.received("error") == []
    assert server.metric("rtbench_server_frames_rate_limited_total") == 0


async def test_per_user_and_per_address_connection_limits_4429(start_server) -> None:
    server = start_server(
        store="memory",
        config={
            "limits": {
                "max_connections_per_user": 2,
                "max_connections_per_ip": 4,
                "connection_limit_exempt": [],  # count loopback too, for this test
            }
        },
    )
    first, second = [await Client.connect(server.url, "dup") for _ in range(2)]
    third = await Client.connect(server.url, hello=False)
    await third.send({"type": "hello", "token": "dup"})
    assert await third.closed() == 4429
    await first.close()
    await _until_connections(server, 1)
    again = await Client.connect(server.url, "dup")  # a slot came free
    others = [await Client.connect(server.url, "someone") for _ in range(2)]  # 4 from here now
    over = await Client.connect(server.url, hello=False)
    assert await over.closed() == 4429
    for c in (second, again, *others):
        await c.close()
    await _until_connections(server, 0)
    async with await Client.connect(server.url, "back") as c:  # counts are given back
        assert c.user == "back"


async def _until_connections(server, n: int) -> None:
    deadline = time.monotonic() + 10
    while (await asyncio.to_thread(server.health))[1]["connections"] != n:
        assert time.monotonic() < deadline, "connections never went down"
        await asyncio.sleep(0.05)


async def test_loopback_is_exempt_from_the_per_address_limit_by_default(start_server) -> None:
    server = start_server(store="memory", config={"limits": {"max_connections_per_ip": 2}})
    clients = [await Client.connect(server.url, f"u{i}") for i in range(4)]
    for c in clients:
        assert (await c.request({"type": "ping"}))["type"] == "pong"
        await c.close()


@pytest.mark.parametrize("transport", ["picows", "websockets"])
async def test_origin_allow_list_refuses_other_pages_403(start_server, transport: str) -> None:
    server = start_server(
        store="memory",
        transport=transport,
        config={"security": {"allowed_origins": [ORIGIN, "https://*.example.org"]}},
    )
    for origin in (ORIGIN, "https://app.example.org", None):  # None: not a browser
        async with await Client.connect(server.url, "ok", origin=origin) as c:
            assert c.user == "ok"
    for origin in ("https://evil.example.net", "http://chat.example.com", "null"):
        with pytest.raises(websockets.InvalidStatus) as refused:
            await Client.connect(server.url, "x", origin=origin)
        assert refused.value.response.status_code == 403
        assert b"not allowed" in refused.value.response.body


@pytest.mark.parametrize("transport", ["picows", "websockets"])
async def test_metrics_token_guards_metrics_not_healthz(start_server, transport: str) -> None:
    server = start_server(
        store="memory", transport=transport, extra_args=("--metrics-token", "m3tr1cs")
    )
    status, body = await http_get(f"{server.http}/metrics")
    assert status == 401 and b"Bearer" in body
    assert (await http_get(f"{server.http}/metrics", "wrong"))[0] == 401
    status, body = await http_get(f"{server.http}/metrics", "m3tr1cs")
    assert status == 200 and b"rtbench_server_connections" in body
    assert (await http_get(f"{server.http}/healthz"))[0] == 200
    request = urllib.request.Request(f"{server.http}/metrics")
    with pytest.raises(urllib.error.HTTPError) as refused:
        await asyncio.to_thread(urllib.request.urlopen, request, timeout=10)
    assert refused.value.headers["WWW-Authenticate"] == "Bearer"


async def test_monitor_http_metrics_token() -> None:
    server = HttpServer(
        {
            "/metrics": lambda: Response(status=200, body=b"up 1\n"),
            "/healthz": lambda: Response(status=200, body=b"{}"),
        },
        tokens={"/metrics": "mon-token"},
    )
    host, port = await server.start("127.0.0.1", 0)
    try:
        base = f"http://{host}:{port}"
        assert (await http_get(f"{base}/metrics"))[0] == 401
        assert (await http_get(f"{base}/metrics", "nope"))[0] == 401
        assert await http_get(f"{base}/metrics", "mon-token") == (200, b"up 1\n")
        assert (await http_get(f"{base}/healthz"))[0] == 200
    finally:
        await server.stop()


async def test_idle_timeout_closes_silent_clients_4408(start_server) -> None:
    server = start_server(
        store="memory",
        config={
            "timing": {
                "idle_timeout_ms": 600,
                "sweep_ms": 50,
                "heartbeat_interval_ms": 100,  # pings and pongs flow, but do not count
            }
        },
    )
    silent = await Client.connect(server.url, "silent", ping_interval=None)
    chatty = await Client.connect(server.url, "chatty")
    started = time.monotonic()
    closing = asyncio.create_task(silent.closed(timeout=10))
    while not closing.done():
        assert (await chatty.request({"type": "ping"}))["type"] == "pong"
        await asyncio.sleep(0.1)
    assert closing.result() == 4408 and time.monotonic() - started >= 0.5
    assert "idle" in silent.ws.protocol.close_rcvd.reason
    assert (await chatty.request({"type": "ping"}))["type"] == "pong"  # still here
    await chatty.close()
