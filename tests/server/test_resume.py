"""Resume after a dropped connection or a restart: every missed item, no gap, no duplicate."""

from __future__ import annotations

import asyncio

from tests.support import Client


async def _send_many(client: Client, room: str, n: int, prefix: str) -> list[int]:
    for i in range(n):
        await client.send(
            {
                "type": "send",
                "room": room,
                "cid": f"{prefix}{i}",
                "body": f"{prefix}{i}",
                "id": f"{prefix}{i}",
            }
        )
    return [(await client.wait_type("ack", id=f"{prefix}{i}"))["seq"] for i in range(n)]


async def test_resume_after_dropped_connection(reference_server) -> None:
    url = reference_server.url
    sender = await Client.connect(url, "s")
    await sender.join("r")
    reader = await Client.connect(url, "r")
    await reader.join("r")
    await _send_many(sender, "r", 5, "a")
    seen = [(await reader.wait_type("message", room="r"))["seq"] for _ in range(5)]
    reader.ws.transport.abort()  # a network cut: no close handshake
    await reader.close()
    await _send_many(sender, "r", 7, "b")  # missed while away
    back = await Client.connect(url, "r", resume={"r": seen[-1]})
    replay = [await back.wait_type("message", room="r") for _ in range(7)]
    assert [m["seq"] for m in replay] == list(range(6, 13))
    joined = await back.wait_type("joined", room="r")
    assert joined["resumed"] is True and joined["replayed"] == 7 and joined["seq"] == 12
    assert joined.get("recovered", True) is True
    await _send_many(sender, "r", 2, "c")  # live traffic follows
    live = [(await back.wait_type("message", room="r"))["seq"] for _ in range(2)]
    assert live == [13, 14]
    await sender.close()
    await back.close()


async def test_resume_after_restart_reads_the_store_without_gap_or_duplicate(
    start_server,
) -> None:
    # a tiny ring forces the store fallback; live sends race the replay
    server = start_server(config={"replay": {"ring_size": 4}})
    sender = await Client.connect(server.url, "s")
    await sender.join("big")
    await _send_many(sender, "big", 40, "a")
    await sender.close()
    server.restart("kill")
    sender = await Client.connect(server.url, "s")
    await sender.join("big")
    resumers = [await Client.connect(server.url, f"u{i}", hello=False) for i in range(5)]
    for i, c in enumerate(resumers):
        await c.send({"type": "hello", "token": f"u{i}", "resume": {"big": 10}})
    live = asyncio.create_task(_send_many(sender, "big", 20, "b"))
    for c in resumers:
        joined = await c.wait_type("joined", room="big", timeout=20)
        assert joined["resumed"] is True
    await live
    for c in resumers:
        await asyncio.wait_for(_until_seq(c, "big", 60), 20)
        seqs = [m["seq"] for m in c.received("message", room="big")]
        assert seqs == list(range(11, 61)), seqs  # in order, nothing missing, nothing twice
        await c.close()
    await sender.close()


async def _until_seq(client: Client, room: str, seq: int) -> None:
    while not any(m["seq"] == seq for m in client.received("message", room=room)):
        await client.wait(lambda f: f.get("type") == "message", 20)


async def test_join_since_replays_and_gap_past_limit_is_not_recovered(
    start_server,
) -> None:
    server = start_server(config={"replay": {"ring_size": 5, "max_replay": 10}})
    a = await Client.connect(server.url, "a")
    await a.join("j")
    await _send_many(a, "j", 30, "m")
    b = await Client.connect(server.url, "b")
    joined = await b.join("j", since=22)  # inside the ring (26..30) and the store (23..25)
    assert joined["replayed"] == 8 and joined["seq"] == 30
    assert [m["seq"] for m in b.received("message", room="j")] == list(range(23, 31))
    c = await Client.connect(server.url, "c")
    far = await c.join("j", since=2)  # 28 missing: more than max_replay
    assert far["recovered"] is False and far.get("replayed", 0) == 0 and far["seq"] == 30
    assert c.received("message") == []
    page = await c.request({"type": "history", "room": "j", "after": 2, "limit": 100})
    assert [m["seq"] for m in page["messages"]] == list(range(3, 31))  # what the client pages
    for client in (a, b, c):
        await client.close()


async def test_resume_of_unknown_or_forbidden_room_is_an_error_not_a_close(
    reference_server,
) -> None:
    owner = await Client.connect(reference_server.url, "owner")
    await owner.join("secret", private=True)
    c = await Client.connect(reference_server.url, "intruder", resume={"secret": 0, "nowhere": 0})
    errors = {(await c.wait_type("error"))["code"] for _ in range(2)}
    assert errors == {"forbidden", "unknown_room"}
    pong = await c.request({"type": "ping"})
    assert pong["type"] == "pong"
    await c.close()
    await owner.close()


async def test_resume_of_an_own_dm_room_with_no_message_yet_is_joined_at_0(
    reference_server,
) -> None:
    """A client names every DM room it may be written in; an empty one resumes at seq 0
    (nothing missed), where it used to be an ``unknown_room`` error frame. Someone else's
    DM room is still refused, and the first DM afterwards arrives as usual."""
    url = reference_server.url
    ann = await Client.connect(url, "ann", resume={"dm:ann:bob": 0, "dm:bob:cid": 0})
    joined = await ann.wait_type("joined", room="dm:ann:bob")
    assert (joined["seq"], joined.get("replayed", 0), joined["resumed"]) == (0, 0, True)
    refused = await ann.wait_type("error")
    assert refused["code"] == "forbidden" and "dm:bob:cid" in refused["message"]
    bob = await Client.connect(url, "bob")
    await bob.send({"type": "dm", "to": "ann", "body": "first", "cid": "d1", "id": "d1"})
    assert (await bob.wait_type("ack", id="d1"))["seq"] == 1
    first = await ann.wait_type("message", room="dm:ann:bob")
    assert (first["seq"], first["body"]) == (1, "first")
    assert not [f for f in ann.frames if f.get("type") == "error" and f is not refused]
    await ann.close()
    await bob.close()
