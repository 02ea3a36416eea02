"""Rooms, messages, DMs, history, receipts, typing, presence and events, end to end."""

from __future__ import annotations

import asyncio
import uuid

import pytest

from tests.support import Client, ServerProcess


@pytest.fixture
def room() -> str:
    return f"room-{uuid.uuid4().hex[:10]}"


def user(name: str) -> str:
    return f"{name}-{uuid.uuid4().hex[:6]}"


async def test_hello_welcome_and_ping(shared_server: ServerProcess) -> None:
    async with await Client.connect(shared_server.url, "alice") as c:
        w = c.welcome
        assert w is not None and w["user"] == "alice" and w["session"]
        assert w["heartbeat"]["interval_ms"] > 0 and w["limits"]["max_history"] > 0
        pong = await c.request({"type": "ping", "ts": 12345})
        assert pong == {"type": "pong", "id": pong["id"], "ts": 12345}


async def test_token_from_query_or_bearer_header(shared_server: ServerProcess) -> None:
    async with await Client.connect(shared_server.url + "?token=qq") as c:
        assert c.user == "qq"
    headers = {"Authorization": "Bearer hh"}
    async with await Client.connect(shared_server.url, additional_headers=headers) as c:
        assert c.user == "hh"


async def test_send_is_acked_and_broadcast_in_seq_order(
    shared_server: ServerProcess, room: str
) -> None:
    a, b, c = [await Client.connect(shared_server.url, user(n)) for n in "abc"]
    for client in (a, b, c):
        await client.join(room)
    for i in range(20):
        await a.send(
            {"type": "send", "room": room, "cid": f"m{i}", "body": f"hello {i}", "id": f"s{i}"}
        )
    acks = [await a.wait_type("ack", id=f"s{i}") for i in range(20)]
    assert [ack["seq"] for ack in acks] == list(range(1, 21))
    for receiver in (b, c):
        got = [await receiver.wait_type("message", room=room) for _ in range(20)]
        assert [m["seq"] for m in got] == list(range(1, 21))
        assert got[3]["body"] == "hello 3" and got[3]["from"] == a.user and got[3]["cid"] == "m3"
    await asyncio.sleep(0.2)
    assert a.received("message") == []  # the sender gets acks, not its own messages
    for client in (a, b, c):
        await client.close()


async def test_sender_other_connections_get_the_message(
    shared_server: ServerProcess, room: str
) -> None:
    name = user("multi")
    phone, laptop = [await Client.connect(shared_server.url, name) for _ in range(2)]
    await phone.join(room)
    await laptop.join(room)
    ack = await phone.send_message(room, "from phone", "p1")
    msg = await laptop.wait_type("message", room=room)
    assert msg["seq"] == ack["seq"] and msg["body"] == "from phone"
    await phone.close()
    await laptop.close()


async def test_idempotent_retry_returns_original_seq(
    shared_server: ServerProcess, room: str
) -> None:
    a = await Client.connect(shared_server.url, user("a"))
    b = await Client.connect(shared_server.url, user("b"))
    await a.join(room)
    await b.join(room)
    first = await a.send_message(room, "once", "same-cid")
    again = await a.send_message(room, "once", "same-cid")
    assert first["type"] == again["type"] == "ack"
    assert again["seq"] == first["seq"] and again["duplicate"] is True
    assert "duplicate" not in first
    # two sends of one cid in flight at once: one stored, both acked with its seq
    await a.send({"type": "send", "room": room, "cid": "burst", "body": "x", "id": "x1"})
    await a.send({"type": "send", "room": room, "cid": "burst", "body": "x", "id": "x2"})
    x1, x2 = await a.wait_type("ack", id="x1"), await a.wait_type("ack", id="x2")
    assert x1["seq"] == x2["seq"] and x2["duplicate"] is True
    history = await a.request({"type": "history", "room": room})
    assert [m["cid"] for m in history["messages"]] == ["same-cid", "burst"]
    await asyncio.sleep(0.2)
    assert len(b.received("message", room=room)) == 2  # each broadcast once
    await a.close()
    await b.close()


async def test_direct_messages(shared_server: ServerProcess) -> None:
    ann, ben = user("ann"), user("ben")
    a1 = await Client.connect(shared_server.url, ann)
    a2 = await Client.connect(shared_server.url, ann)
    b1 = await Client.connect(shared_server.url, ben)
    ack = await a1.request({"type": "dm", "to": ben, "cid": "d1", "body": "psst"})
    dm = f"dm:{min(ann, ben)}:{max(ann, ben)}"
    assert ack["type"] == "ack" and ack["room"] == dm and ack["seq"] == 1
    for other in (a2, b1):  # every connection of both users but the sender's
        got = await other.wait_type("message", room=dm)
        assert got["body"] == "psst" and got["from"] == ann
    reply = await b1.request({"type": "dm", "to": ann, "cid": "d2", "body": "hi back"})
    assert reply["seq"] == 2
    assert (await a1.wait_type("message", room=dm))["seq"] == 2
    # a third user can neither join nor read the DM
    eve = await Client.connect(shared_server.url, user("eve"))
    assert (await eve.request({"type": "join", "room": dm}))["code"] == "forbidden"
    assert (await eve.request({"type": "history", "room": dm}))["code"] == "forbidden"
    page = await b1.request({"type": "history", "room": dm})
    assert [m["body"] for m in page["messages"]] == ["psst", "hi back"]
    for c in (a1, a2, b1, eve):
        await c.close()


async def test_join_leave_members_and_presence(shared_server: ServerProcess, room: str) -> None:
    a = await Client.connect(shared_server.url, user("a"))
    b = await Client.connect(shared_server.url, user("b"))
    joined = await a.join(room)
    assert joined["seq"] == 0 and joined["members"] == 1
    await b.join(room)
    pres = await a.wait_type("presence", room=room, user=b.user)
    assert pres["state"] == "joined"
    members = await a.request({"type": "members", "room": room})
    assert members["members"] == sorted(
        [{"user": a.user, "online": True}, {"user": b.user, "online": True}],
        key=lambda m: m["user"],
    )
    left = await b.request({"type": "leave", "room": room})
    assert left == {"type": "left", "id": left["id"], "room": room}
    assert (await a.wait_type("presence", room=room, user=b.user))["state"] == "left"
    again = await b.request({"type": "send", "room": room, "cid": "z", "body": "z"})
    assert again["code"] == "not_member"
    members = await a.request({"type": "members", "room": room})
    assert [m["user"] for m in members["members"]] == [a.user]
    await a.close()
    await b.close()


async def test_online_offline_presence(start_server) -> None:
    server = start_server(config={"timing": {"presence_grace_ms": 100, "sweep_ms": 50}})
    watcher = await Client.connect(server.url, "w")
    await watcher.join("p")
    bob = await Client.connect(server.url, "bob")
    await bob.join("p")
    await bob.close()
    assert (await watcher.wait_type("presence", user="bob", state="offline"))["user"] == "bob"
    bob = await Client.connect(server.url, "bob")
    assert (await watcher.wait_type("presence", user="bob", state="online"))["user"] == "bob"
    members = await watcher.request({"type": "members", "room": "p"})
    assert {"user": "bob", "online": True} in members["members"]
    await bob.close()
    await watcher.close()


async def test_a_quick_reconnect_is_never_offline(start_server) -> None:
    server = start_server(config={"timing": {"presence_grace_ms": 1500, "sweep_ms": 50}})
    watcher = await Client.connect(server.url, "w")
    await watcher.join("p")
    flaky = await Client.connect(server.url, "flaky")
    await flaky.join("p")
    flaky.ws.transport.abort()  # a network cut
    await flaky.close()
    await asyncio.sleep(0.2)
    members = await watcher.request({"type": "members", "room": "p"})
    assert {"user": "flaky", "online": True} in members["members"]  # within the grace
    flaky = await Client.connect(server.url, "flaky", resume={"p": 0})
    await asyncio.sleep(2.0)  # past the grace
    await watcher.request({"type": "ping"})
    assert watcher.received("presence", user="flaky", state="offline") == []
    assert watcher.received("presence", user="flaky", state="online") == []
    await flaky.close()
    await watcher.wait_type("presence", user="flaky", state="offline", timeout=10)
    await watcher.close()


async def test_private_group(shared_server: ServerProcess, room: str) -> None:
    owner, friend, stranger = user("own"), user("fr"), user("st")
    a = await Client.connect(shared_server.url, owner)
    joined = await a.join(room, private=True, members=[friend])
    assert joined["private"] is True and joined["members"] == 2
    f = await Client.connect(shared_server.url, friend)
    assert (await f.join(room))["private"] is True
    s = await Client.connect(shared_server.url, stranger)
    for frame in ({"type": "join", "room": room}, {"type": "members", "room": room}):
        assert (await s.request(frame))["code"] == "forbidden"
    for c in (a, f, s):
        await c.close()


async def test_history_paging_and_bounds(shared_server: ServerProcess, room: str) -> None:
    a = await Client.connect(shared_server.url, user("h"))
    await a.join(room)
    for i in range(1, 31):
        await a.send({"type": "send", "room": room, "cid": f"c{i}", "body": str(i), "id": f"s{i}"})
    await a.wait_type("ack", id="s30")

    async def page(**bounds: int) -> tuple[list[int], bool]:
        reply = await a.request({"type": "history", "room": room, **bounds})
        assert reply["type"] == "history", reply
        return [m["seq"] for m in reply["messages"]], reply.get("has_more", False)

    assert await page(limit=10) == (list(range(21, 31)), True)
    assert await page(before=21, limit=10) == (list(range(11, 21)), True)
    assert await page(before=11, limit=10) == (list(range(1, 11)), False)
    assert await page(after=25, limit=10) == (list(range(26, 31)), False)
    assert await page(after=5, limit=3) == ([6, 7, 8], True)
    assert await page(after=5, before=9, limit=10) == ([6, 7, 8], False)
    assert await page(after=30) == ([], False)
    assert await page() == (list(range(1, 31)), False)
    big = await a.request({"type": "history", "room": room, "limit": 10_000})
    assert len(big["messages"]) == 30  # clamped to the server's max page, not an error
    bad = await a.request({"type": "history", "room": room, "after": 9, "before": 9})
    assert bad["type"] == "error" and bad["code"] == "bad_range"
    zero = await a.request({"type": "history", "room": room, "limit": 0})
    assert zero["code"] == "bad_field"
    items = (await a.request({"type": "history", "room": room, "after": 0, "limit": 1}))["messages"]
    assert items[0]["body"] == "1" and items[0]["from"] == a.user and items[0]["ts"] > 0
    await a.close()


async def test_typing_start_stop_and_expiry(start_server) -> None:
    server = start_server(config={"timing": {"typing_timeout_ms": 600, "sweep_ms": 50}})
    a = await Client.connect(server.url, "typer")
    b = await Client.connect(server.url, "reader")
    await a.join("t")
    await b.join("t")
    await a.send({"type": "typing", "room": "t", "state": "start"})
    assert (await b.wait_type("typing", user="typer"))["state"] == "start"
    await a.send({"type": "typing", "room": "t", "state": "stop"})
    assert (await b.wait_type("typing", user="typer"))["state"] == "stop"
    await a.send({"type": "typing", "room": "t", "state": "start"})
    await b.wait_type("typing", user="typer", state="start")
    # no stop from the client: it ends by itself after the typing timeout
    assert (await b.wait_type("typing", user="typer", timeout=5))["state"] == "stop"
    assert a.received("typing") == []  # typing goes to others only
    history = await a.request({"type": "history", "room": "t"})
    assert history["messages"] == []  # never stored
    await a.close()
    await b.close()


async def test_receipts_and_unread_survive_restart(reference_server: ServerProcess) -> None:
    a = await Client.connect(reference_server.url, "ra")
    b = await Client.connect(reference_server.url, "rb")
    await a.join("news")
    await b.join("news")
    for i in range(5):
        await a.send_message("news", f"n{i}", f"n{i}")
    rooms = await b.request({"type": "rooms"})
    assert rooms["rooms"] == [{"room": "news", "seq": 5, "unread": 5}]
    await b.send({"type": "read", "room": "news", "seq": 3})
    receipt = await a.wait_type("receipt", room="news")
    assert receipt == {"type": "receipt", "room": "news", "user": "rb", "seq": 3}
    await b.wait_type("receipt", room="news")  # the reader's own connection too
    past = await b.request({"type": "read", "room": "news", "seq": 99})
    assert past["code"] == "bad_range"
    await a.close()
    await b.close()
    reference_server.restart("kill")
    b = await Client.connect(reference_server.url, "rb")
    rooms = await b.request({"type": "rooms"})
    assert rooms["rooms"] == [{"room": "news", "seq": 5, "read": 3, "unread": 2}]
    assert (await b.join("news"))["read"] == 3
    a = await Client.connect(reference_server.url, "ra")  # your own messages are read
    assert (await a.request({"type": "rooms"}))["rooms"] == [{"room": "news", "seq": 5, "read": 5}]
    await a.close()
    await b.close()


async def test_events_stored_and_not_stored(shared_server: ServerProcess, room: str) -> None:
    a = await Client.connect(shared_server.url, user("pub"))
    b = await Client.connect(shared_server.url, user("sub"))
    await a.join(room)
    await b.join(room)
    live = await a.request(
        {"type": "publish", "room": room, "event": "reaction", "data": {"emoji": "+1"}}
    )
    assert live["type"] == "ack" and "seq" not in live
    got = await b.wait_type("event", event="reaction")
    assert got["data"] == {"emoji": "+1"} and got["from"] == a.user and "seq" not in got
    kept = await a.request(
        {"type": "publish", "room": room, "event": "rsvp", "data": {"n": 3}, "store": True}
    )
    assert kept["seq"] == 1
    got = await b.wait_type("event", event="rsvp")
    assert got["seq"] == 1 and got["data"] == {"n": 3}
    history = await b.request({"type": "history", "room": room})
    assert history["messages"] == [
        {
            "seq": 1,
            "from": a.user,
            "ts": got["ts"],
            "kind": "event",
            "event": "rsvp",
            "data": {"n": 3},
        }
    ]
    await a.close()
    await b.close()


async def test_big_rooms_get_no_presence_or_receipt_fan_out(start_server) -> None:
    server = start_server(
        store="memory",
        config={"replay": {"presence_max_room": 1}, "timing": {"presence_grace_ms": 0}},
    )
    a = await Client.connect(server.url, "big-a")
    b = await Client.connect(server.url, "big-b")
    await a.join("big")
    await b.join("big")
    await a.send_message("big", "m", "m1")
    await b.wait_type("message", room="big")
    await b.send({"type": "read", "room": "big", "seq": 1})
    assert (await b.wait_type("receipt", room="big"))["seq"] == 1  # the reader's own
    await b.close()
    pong = await a.request({"type": "ping"})  # a's frames so far are all in
    assert pong["type"] == "pong"
    assert a.received("presence", state="joined") == [] and a.received("receipt") == []
    members = await a.request({"type": "members", "room": "big"})
    assert {m["user"]: m.get("online", False) for m in members["members"]} == {
        "big-a": True,
        "big-b": False,
    }
    await a.close()
