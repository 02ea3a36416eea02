"""The core behaves the same behind either transport (picows default, websockets)."""

from __future__ import annotations

import json

import pytest

from tests.support import Client, ServerProcess


@pytest.fixture(scope="module", params=["picows", "websockets"])
def server(request, tmp_path_factory) -> ServerProcess:
    proc = ServerProcess(
        tmp_path_factory.mktemp(request.param),
        transport=request.param,
        config={"limits": {"max_frame_bytes": 4096}},
    ).start()
    yield proc  # type: ignore[misc]
    proc.stop("kill")


async def test_chat_round_trip_and_resume(server: ServerProcess) -> None:
    assert f"transport {server.transport}" in next(x for x in server.lines if "listening on" in x)
    a = await Client.connect(server.url, "ta")
    b = await Client.connect(server.url, "tb")
    await a.join("tr")
    await b.join("tr")
    acks = [await a.send_message("tr", f"m{i}", f"c{i}") for i in range(3)]
    got = [await b.wait_type("message", room="tr") for _ in range(3)]
    assert [m["seq"] for m in got] == [x["seq"] for x in acks] == [1, 2, 3]
    await b.close()
    await a.send_message("tr", "missed", "c3")
    back = await Client.connect(server.url, "tb", resume={"tr": 3})
    assert (await back.wait_type("message", room="tr"))["body"] == "missed"
    assert (await back.wait_type("joined", room="tr"))["replayed"] == 1
    await a.close()
    await back.close()


async def test_violations_close_codes(server: ServerProcess) -> None:
    c = await Client.connect(server.url, "v")
    await c.send_raw(json.dumps({"type": "ping", "pad": "x" * 5000}))
    assert await c.closed() == 1009
    c = await Client.connect(server.url, "v")
    await c.send_raw(b"\x01binary")
    assert await c.closed() == 1003


def test_http_endpoints(server: ServerProcess) -> None:
    status, health = server.health()
    assert status == 200 and health["transport"] == server.transport
    status, body = server.get("/metrics")
    assert status == 200 and b"rtbench_server_connections" in body
