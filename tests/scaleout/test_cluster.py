"""Several servers sharing the machine's real Redis and PostgreSQL: delivery, order,
presence, typing, receipts, leave and resume across workers.

Two single-worker servers on two ports sharing one broker and one store are the
multi-machine case, and the only way to know which worker a client is on
(SO_REUSEPORT picks by hash); ``test_workers.py`` covers ``--workers N``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import pytest

from tests.support import Client
from tests.support.server import ServerProcess

pytestmark = [pytest.mark.redis, pytest.mark.postgres]

FAST_PRESENCE = {"timing": {"presence_grace_ms": 300, "sweep_ms": 50}}


def start_node(
    start_server: Callable[..., ServerProcess],
    dsn: str,
    broker: str,
    prefix: str,
    config: dict[str, dict[str, Any]] | None = None,
    workers: int = 1,
) -> ServerProcess:
    """One server of the cluster: its own port, the shared broker and store."""
    sections = {key: dict(value) for key, value in (config or {}).items()}
    sections.setdefault("cluster", {})["prefix"] = prefix
    args = ("--broker", broker, *(("--workers", str(workers)) if workers > 1 else ()))
    return start_server(store=dsn, config=sections, extra_args=args)


@pytest.fixture
def two_nodes(start_server, pg_dsn, redis_url, redis_prefix) -> tuple[ServerProcess, ServerProcess]:
    a = start_node(start_server, pg_dsn, redis_url, redis_prefix, FAST_PRESENCE)
    b = start_node(start_server, pg_dsn, redis_url, redis_prefix, FAST_PRESENCE)
    return a, b


def seqs(client: Client, room: str) -> list[int]:
    return [m["seq"] for m in client.received("message", room=room)]


async def wait_seq(client: Client, room: str, seq: int) -> None:
    await client.wait(
        lambda f: f.get("type") == "message" and f.get("room") == room and f["seq"] == seq
    )


async def test_messages_reach_every_worker_once_and_in_order(two_nodes) -> None:
    a, b = two_nodes
    alice = await Client.connect(a.url, "alice")
    carol = await Client.connect(a.url, "carol")
    bob = await Client.connect(b.url, "bob")
    dave = await Client.connect(b.url, "dave")
    for client in (alice, carol, bob, dave):
        await client.join("lobby")

    # alice (on a) and bob (on b) send at once: seqs interleave across the two workers
    async def burst(client: Client, tag: str) -> list[dict[str, Any]]:
        for i in range(60):
            await client.send(
                {"type": "send", "room": "lobby", "cid": f"{tag}{i}", "body": f"{tag} {i}"}
            )
        return [await client.wait_type("ack", cid=f"{tag}{i}") for i in range(60)]

    acks_a, acks_b = await asyncio.gather(burst(alice, "a"), burst(bob, "b"))
    assert sorted(ack["seq"] for ack in acks_a + acks_b) == list(range(1, 121))
    for client in (carol, dave):  # members who sent nothing see all 120, in seq order, once
        await wait_seq(client, "lobby", 120)
        assert seqs(client, "lobby") == list(range(1, 121))
    await wait_seq(alice, "lobby", max(ack["seq"] for ack in acks_b))
    own = {ack["seq"] for ack in acks_a}
    assert seqs(alice, "lobby") == [s for s in range(1, 121) if s not in own]  # not her own
    bodies = {m["seq"]: m["body"] for m in dave.received("message", room="lobby")}
    assert all(bodies[ack["seq"]] == f"a {i}" for i, ack in enumerate(acks_a))
    for client in (alice, carol, bob, dave):
        await client.close()


async def test_dm_reaches_the_other_users_sessions_on_another_worker(two_nodes) -> None:
    a, b = two_nodes
    alice = await Client.connect(a.url, "alice")
    bob_b = await Client.connect(b.url, "bob")
    bob_a = await Client.connect(a.url, "bob")
    ack = await alice.request({"type": "dm", "to": "bob", "cid": "d1", "body": "psst"})
    assert ack["type"] == "ack" and ack["room"] == "dm:alice:bob" and ack["seq"] == 1
    for session in (bob_a, bob_b):  # bob's session on b never loaded the DM room: it must
        got = await session.wait_type("message", room="dm:alice:bob")
        assert (got["seq"], got["body"]) == (1, "psst")
    reply = await bob_b.request({"type": "dm", "to": "alice", "cid": "d2", "body": "hi"})
    assert reply["seq"] == 2
    assert (await alice.wait_type("message", room="dm:alice:bob"))["seq"] == 2
    for client in (alice, bob_a, bob_b):
        await client.close()


async def test_presence_typing_receipts_and_members_across_workers(two_nodes) -> None:
    a, b = two_nodes
    alice = await Client.connect(a.url, "alice")
    await alice.join("team")
    bob = await Client.connect(b.url, "bob")
    await bob.join("team")
    await alice.wait_type("presence", room="team", user="bob", state="joined")
    members = await alice.request({"type": "members", "room": "team"})
    assert members["members"] == [
        {"user": "alice", "online": True},
        {"user": "bob", "online": True},  # online on the other worker
    ]
    await bob.send({"type": "typing", "room": "team", "state": "start"})
    await alice.wait_type("typing", room="team", user="bob", state="start")
    sent = await alice.send_message("team", "read me", cid="r1")
    await wait_seq(bob, "team", sent["seq"])
    await bob.send({"type": "read", "room": "team", "seq": sent["seq"]})
    receipt = await alice.wait_type("receipt", room="team", user="bob")
    assert receipt["seq"] == sent["seq"]
    await alice.send({"type": "publish", "room": "team", "event": "poke", "data": {"n": 1}})
    event = await bob.wait_type("event", room="team", event="poke")
    assert event["data"] == {"n": 1} and "seq" not in event
    await bob.close()  # gone from b for longer than the grace: offline, announced on a
    offline = await alice.wait_type("presence", user="bob", state="offline")
    assert "room" not in offline
    members = await alice.request({"type": "members", "room": "team"})
    online = {m["user"]: m.get("online", False) for m in members["members"]}
    assert online == {"alice": True, "bob": False}
    await alice.close()


async def test_reconnecting_to_another_worker_within_the_grace_is_never_offline(two_nodes) -> None:
    a, b = two_nodes
    watcher = await Client.connect(a.url, "watcher")
    await watcher.join("hall")
    erin = await Client.connect(b.url, "erin")
    await erin.join("hall")
    await erin.close()
    erin = await Client.connect(a.url, "erin")  # back, elsewhere, well within 300 ms
    await asyncio.sleep(1.0)  # past the grace and the sweeps that would announce it
    assert watcher.received("presence", user="erin", state="offline") == []
    await erin.close()
    await watcher.wait_type("presence", user="erin", state="offline")
    await watcher.close()


async def test_leave_unsubscribes_the_users_sessions_on_every_worker(two_nodes) -> None:
    a, b = two_nodes
    frank_a = await Client.connect(a.url, "frank")
    frank_b = await Client.connect(b.url, "frank")
    gina = await Client.connect(b.url, "gina")
    for client in (frank_a, frank_b, gina):
        await client.join("club")
    left = await frank_a.request({"type": "leave", "room": "club"})
    assert left["type"] == "left"
    notice = await frank_b.wait_type("left", room="club")  # his session on the other worker
    assert "id" not in notice
    await gina.wait_type("presence", room="club", user="frank", state="left")
    await gina.send_message("club", "after", cid="g1")
    await asyncio.sleep(0.5)
    assert frank_b.received("message", room="club") == []
    members = await gina.request({"type": "members", "room": "club"})
    assert [m["user"] for m in members["members"]] == ["gina"]
    for client in (frank_a, frank_b, gina):
        await client.close()


async def test_resume_on_another_worker_replays_exactly_what_was_missed(
    start_server, pg_dsn, redis_url, redis_prefix
) -> None:
    a = start_node(start_server, pg_dsn, redis_url, redis_prefix, FAST_PRESENCE)
    b = start_node(start_server, pg_dsn, redis_url, redis_prefix, FAST_PRESENCE)
    alice = await Client.connect(a.url, "alice")
    bob = await Client.connect(b.url, "bob")
    await alice.join("news")
    await bob.join("news")
    for i in range(3):
        await alice.send_message("news", f"m{i}", cid=f"m{i}")
    await wait_seq(bob, "news", 3)
    await bob.close()  # bob saw seq 3, then lost his connection
    for i in range(3, 8):
        await alice.send_message("news", f"m{i}", cid=f"m{i}")
    # he lands on a (which has the room in memory) ...
    bob = await Client.connect(a.url, "bob", resume={"news": 3})
    joined = await bob.wait_type("joined", room="news")
    assert joined["resumed"] and joined["replayed"] == 5 and joined["seq"] == 8
    assert seqs(bob, "news") == [4, 5, 6, 7, 8]
    await alice.send_message("news", "live", cid="live")
    await wait_seq(bob, "news", 9)
    assert seqs(bob, "news") == [4, 5, 6, 7, 8, 9]
    await bob.close()
    # ... or on a server that never loaded it: replayed from PostgreSQL
    c = start_node(start_server, pg_dsn, redis_url, redis_prefix, FAST_PRESENCE)
    bob = await Client.connect(c.url, "bob", resume={"news": 6})
    joined = await bob.wait_type("joined", room="news")
    assert joined["resumed"] and joined["replayed"] == 3 and joined["seq"] == 9
    assert seqs(bob, "news") == [7, 8, 9]
    await alice.send_message("news", "more", cid="more")
    await wait_seq(bob, "news", 10)
    await bob.close()
    await alice.close()
