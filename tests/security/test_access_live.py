"""Room grants and private rooms with signed tokens, against the live server.

A token's ``rooms`` claim is a ceiling on everything room-shaped (join, create,
history, members, resume); an exact grant of a private room is an invitation into
it, a ``*`` pattern never is; DMs belong to their two users whatever the grants.
"""

from __future__ import annotations

from tests.security.conftest import SECRET, hs256
from tests.support import Client


async def _code(c: Client, frame: dict) -> str:
    reply = await c.request(frame)
    return reply["code"] if reply["type"] == "error" else reply["type"]


async def test_grants_are_a_ceiling_and_an_exact_grant_invites(start_server) -> None:
    server = start_server(store="memory", auth=("--jwt-secret", SECRET))
    gus_token = hs256("gus", rooms=["team-*", "secret"])
    async with (
        await Client.connect(server.url, hs256("alice")) as alice,
        await Client.connect(server.url, gus_token) as gus,
        await Client.connect(server.url, hs256("eve")) as eve,
    ):
        await alice.join("lobby")
        await alice.join("secret", private=True)
        await alice.join("team-hidden", private=True)
        assert (await alice.send_message("secret", "for members", cid="s1"))["seq"] == 1

        for frame in (
            {"type": "join", "room": "lobby"},
            {"type": "history", "room": "lobby"},
            {"type": "members", "room": "lobby"},
            {"type": "join", "room": "elsewhere"},  # may not even create it
            {"type": "join", "room": "team-hidden"},  # a pattern is no invitation
        ):
            assert await _code(gus, frame) == "forbidden", frame
        assert await _code(gus, {"type": "join", "room": "team-new"}) == "joined"
        joined = await gus.request({"type": "join", "room": "secret", "since": 0})
        assert joined["type"] == "joined" and joined["replayed"] == 1
        assert (await gus.wait_type("message", room="secret"))["body"] == "for members"
        page = await gus.request({"type": "history", "room": "secret"})
        assert [m["body"] for m in page["messages"]] == ["for members"]
        ack = await gus.request({"type": "dm", "to": "alice", "cid": "d1", "body": "hi"})
        assert ack["room"] == "dm:alice:gus"  # grants do not govern direct messages

        for frame in (
            {"type": "join", "room": "secret"},
            {"type": "history", "room": "secret"},
            {"type": "members", "room": "secret"},
            {"type": "join", "room": "dm:alice:gus"},
            {"type": "history", "room": "dm:alice:gus"},
        ):
            assert await _code(eve, frame) == "forbidden", frame
        await alice.send_message("secret", "still private", cid="s2")
        await gus.wait_type("message", room="secret")
        await eve.request({"type": "ping"})
        assert eve.received("message") == [] and eve.received("typing") == []

    # resume asks for a room outside the grants: refused, the others still resume
    gus = await Client.connect(server.url, hello=False)
    await gus.send({"type": "hello", "token": gus_token, "resume": {"lobby": 0, "secret": 1}})
    error = await gus.wait_type("error", ref="hello")
    assert error["code"] == "forbidden" and "lobby" in error["message"]
    resumed = await gus.wait_type("joined", room="secret")
    assert resumed["resumed"] and resumed["replayed"] == 1
    await gus.close()


async def test_an_expired_grant_token_gets_nothing(start_server) -> None:
    server = start_server(store="memory", auth=("--jwt-secret", SECRET))
    c = await Client.connect(server.url, hello=False)
    err = await c.request({"type": "hello", "token": hs256("gus", ttl=-1, rooms=["*"])})
    assert err["code"] == "unauthorized" and "expired" in err["message"]
    assert (await c.request({"type": "join", "room": "x"}))["code"] == "hello_required"
    await c.close()
