"""``/admin/drain`` on a real server (both transports), and the ``drain`` fault's spec.

The server closes every client open at the request with 1012, ``batch`` at a time,
``interval_ms`` apart, and keeps accepting; only a server with an admin token (then
with that token) or in ``--insecure-dev`` does it. The fault run through the engine is
in test_faults.py.
"""

from __future__ import annotations

import json
import time

import pytest

from loadtest.faults.schedule import FaultError, FaultKind, parse_fault
from loadtest.faults.server import admin_get
from tests.support import Client


def test_drain_spec() -> None:
    fault = parse_fault("drain:1000/100ms@8s")
    assert fault.kind is FaultKind.DRAIN and (fault.count, fault.interval_s) == (1000, 0.1)
    assert fault.at_s == 8.0 and fault.end_s == 8.0
    default = parse_fault("drain@2s")  # Phoenix's drainer: 10,000 every 2 s
    assert (default.count, default.interval_s) == (10_000, 2.0)
    assert parse_fault("drain:50/0@1s").interval_s == 0.0  # every batch at once
    for bad in ("drain:1000@1s", "drain:x/1s@1s", "drain:0/1s@1s", "drain:5/2m@1s"):
        with pytest.raises(FaultError, match=r"BATCH/INTERVAL|60 s apart"):
            parse_fault(bad)


@pytest.mark.parametrize("transport", ["picows", "websockets"])
async def test_drain_closes_clients_1012_in_batches_and_keeps_serving(
    start_server, transport: str
) -> None:
    server = start_server(store="memory", transport=transport)
    clients = [await Client.connect(server.url, f"u{i}") for i in range(5)]
    asked = time.monotonic()
    status, body = await admin_get(
        "127.0.0.1", server.port, "/admin/drain?batch=2&interval_ms=300", None
    )
    assert status == 200, body
    answer = json.loads(body)
    assert answer == {"clients": 5, "batch": 2, "interval_ms": 300.0, "batches": 3}
    # a second drain while this one runs is refused
    assert (await admin_get("127.0.0.1", server.port, "/admin/drain?batch=1", None))[0] == 409
    codes = []
    for c in clients:
        codes.append(await c.closed(timeout=10))
    # the third batch goes two intervals after the request at the earliest (the server
    # sleeps between batches; nothing can make it early)
    assert time.monotonic() - asked >= 0.6
    assert codes == [1012] * 5
    # the server kept running: a client connects again, and a new drain is accepted
    async with await Client.connect(server.url, "u0") as again:
        assert again.user == "u0"
        status, body = await admin_get(
            "127.0.0.1", server.port, "/admin/drain?batch=10&interval_ms=0", None
        )
        assert status == 200 and json.loads(body)["clients"] == 1
        assert await again.closed(timeout=10) == 1012
    assert server.metric("rtbench_server_connections") == 0


async def test_drain_needs_the_admin_token_or_a_dev_server(start_server) -> None:
    guarded = start_server(store="memory", extra_args=("--admin-token", "4dm1n"))
    drain = "/admin/drain?batch=1&interval_ms=0"
    status, body = await admin_get("127.0.0.1", guarded.port, drain, None)
    assert status == 401 and b"Bearer" in body
    assert (await admin_get("127.0.0.1", guarded.port, drain, "wrong"))[0] == 401
    status, body = await admin_get("127.0.0.1", guarded.port, drain, "4dm1n")
    assert status == 200 and json.loads(body)["clients"] == 0
    for bad in ("/admin/drain", "/admin/drain?batch=0", "/admin/drain?batch=2&interval_ms=-1"):
        status, body = await admin_get("127.0.0.1", guarded.port, bad, "4dm1n")
        assert status == 400 and b"batch=N" in body, bad
    # no token and not a dev server: the endpoint does not exist
    closed = start_server(store="memory", auth=("--jwt-secret", "s" * 32))
    assert (await admin_get("127.0.0.1", closed.port, drain, None))[0] == 404
