"""Nothing acked is lost: kill -9 right after acked sends, and SIGTERM drains."""

from __future__ import annotations

import asyncio
import sqlite3

from tests.support import Client, ServerProcess

CLIENTS = 6
SENDS_PER_CLIENT = 60  # 360 acked sends in all


async def _fire(client: Client, room: str, n: int) -> None:
    for i in range(n):
        cid = f"{client.user}-{i}"
        await client.send({"type": "send", "room": room, "cid": cid, "body": cid, "id": cid})


async def test_kill_9_loses_no_acked_message_and_reuses_no_seq(
    reference_server: ServerProcess,
) -> None:
    url = reference_server.url
    clients = [await Client.connect(url, f"k{i}") for i in range(CLIENTS)]
    rooms = ["alpha", "beta"]
    for i, c in enumerate(clients):
        await c.join(rooms[i % 2])
    await asyncio.gather(*(_fire(c, rooms[i % 2], SENDS_PER_CLIENT) for i, c in enumerate(clients)))
    acked: dict[str, tuple[str, int]] = {}  # cid -> (room, seq)
    for i, c in enumerate(clients):
        for n in range(SENDS_PER_CLIENT):
            ack = await c.wait_type("ack", id=f"{c.user}-{n}", timeout=30)
            acked[ack["cid"]] = (rooms[i % 2], ack["seq"])
    assert len(acked) == CLIENTS * SENDS_PER_CLIENT
    # more sends in flight at the moment of the kill: these may or may not survive
    await asyncio.gather(*(_fire(c, rooms[i % 2], 5) for i, c in enumerate(clients[:2])))
    reference_server.stop("kill")
    for c in clients:
        await c.close()

    reference_server.restart()
    reader = await Client.connect(reference_server.url, "auditor")
    stored: dict[str, tuple[str, int]] = {}
    for room in rooms:
        await reader.join(room)
        after = 0
        while True:
            page = await reader.request(
                {"type": "history", "room": room, "after": after, "limit": 200}
            )
            for m in page["messages"]:
                stored[m["cid"]] = (room, m["seq"])
            if not page.get("has_more"):
                break
            after = page["messages"][-1]["seq"]
        seqs = sorted(seq for r, seq in stored.values() if r == room)
        assert seqs == list(range(1, len(seqs) + 1)), f"gap or reuse in {room}"
    for cid, where in acked.items():
        assert stored.get(cid) == where, f"acked {cid} at {where}, stored as {stored.get(cid)}"
    # new sends continue the sequence: no seq is handed out twice
    last = max(seq for r, seq in stored.values() if r == "alpha")
    ack = await reader.send_message("alpha", "after restart", "fresh")
    assert ack["seq"] == last + 1
    await reader.close()


async def test_sigterm_drains_acks_in_flight_and_closes_1012(
    reference_server: ServerProcess,
) -> None:
    url = reference_server.url
    clients = [await Client.connect(url, f"d{i}") for i in range(4)]
    for c in clients:
        await c.join("drain")
    await asyncio.gather(*(_fire(c, "drain", 50) for c in clients))
    await clients[0].wait_type("ack", id="d0-0")  # traffic is flowing
    code = reference_server.stop("term", timeout=10)
    assert code == 0
    acked = set()
    for c in clients:
        assert await c.closed() == 1012
        acked |= {f["cid"] for f in c.received("ack")}
        await c.close()
    assert any("draining" in line for line in reference_server.lines)
    reference_server.start(reference_server.port)
    reader = await Client.connect(reference_server.url, "auditor")
    await reader.join("drain")
    page = await reader.request({"type": "history", "room": "drain", "limit": 200})
    stored = {m["cid"] for m in page["messages"]}
    assert acked <= stored  # every ack the clients saw is durable
    await reader.close()


async def test_store_down_refuses_sends_and_healthz_says_503(
    reference_server: ServerProcess,
) -> None:
    a = await Client.connect(reference_server.url, "sd")
    await a.join("sd-room")
    assert (await a.send_message("sd-room", "before", "c1"))["seq"] == 1
    db = reference_server.store.removeprefix("sqlite:///")
    blocker = sqlite3.connect(db, isolation_level=None, timeout=0)
    blocker.execute("BEGIN EXCLUSIVE")  # another process holds the write lock
    try:
        refused = await a.send_message("sd-room", "while down", "c2", id="down")
        assert refused["type"] == "error" and refused["code"] == "store_unavailable"
        status, health = reference_server.health()
        assert status == 503 and health["status"] == "store_down"
    finally:
        blocker.rollback()
        blocker.close()
    retried = await a.send_message("sd-room", "while down", "c2")
    assert retried["type"] == "ack" and retried["seq"] == 2  # nothing skipped, nothing lost
    assert reference_server.health()[0] == 200
    page = await a.request({"type": "history", "room": "sd-room"})
    assert [m["cid"] for m in page["messages"]] == ["c1", "c2"]
    await a.close()
