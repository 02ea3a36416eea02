"""The core behaves the same behind either transport (picows default, websockets)."""

from __future__ import annotations

import asyncio
import json

import pytest

from tests.support import Client, ServerProcess
from tests.support.rawws import BINARY, RawWebSocket


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


@pytest.mark.parametrize("backlog_frames", [0, 64, 2048])
async def test_a_close_reaches_a_client_that_is_still_sending(
    server: ServerProcess, backlog_frames: int
) -> None:
    """The server's close frame is read by a client that keeps sending past it.

    The client sends a frame the server closes it for (binary: 1003), then
    ``backlog_frames`` more frames of 1 KB, waits without reading, and sends once
    more, as a chatting client does when a drain's 1012 is on its way. A server
    that closed its socket over those unread frames made the kernel reset the
    connection, and this client (as any asyncio or picows one) then lost the close
    frame to "connection reset": it saw 1006, and a drain's 1012 was counted as a
    dropped connection. The server must read on until the client's close frame.
    """
    ws = await RawWebSocket.connect(server.host, server.port)
    ws.send(b"\x01binary", opcode=BINARY)
    for i in range(backlog_frames):
        ws.send(json.dumps({"type": "ping", "pad": "x" * 1000, "n": i}).encode())
    await asyncio.sleep(0.3)  # not reading: the close (or a reset) lands meanwhile
    ws.send(b'{"type":"ping"}')  # a client that has not read yet is still chatting
    code, _ = await asyncio.wait_for(ws.read_until_close(), 10)
    ws.close()
    assert code == 1003


def test_http_endpoints(server: ServerProcess) -> None:
    status, health = server.health()
    assert status == 200 and health["transport"] == server.transport
    status, body = server.get("/metrics")
    assert status == 200 and b"rtbench_server_connections" in body
