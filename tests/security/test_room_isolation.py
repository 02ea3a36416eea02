"""No user ever receives a frame from a room it is not in: a stateful property test.

Hypothesis drives random sequences of join / leave / send / dm / typing / read /
history / members / publish / reconnect-with-resume from five connections of four
users (one of them holding a token with room grants) against a live server, and
keeps its own model of who is a member of what and which connection is subscribed
where. After every step it waits until every connection has received everything
the step caused (a ping round trip on each: the server writes a step's frames
before it can answer a later ping), then checks each new frame:

- a frame that names a room reaches only a connection subscribed to that room
  (before or after the step), a user of that DM, or the requester of a reply the
  model allows; a private room's or DM's frames only reach its members;
- every reply (joined, left, ack, history, members, or the error code) is the one
  the model predicts, so access is refused exactly where the rules say;
- a sent message reaches exactly the connections the model expects, once each,
  with ``from`` = the sender's token identity, whatever ``from``/``user`` fields
  the frame tried to smuggle in.
"""

from __future__ import annotations

import asyncio
import itertools
import re
from collections.abc import Coroutine
from dataclasses import dataclass, field
from typing import Any, TypeVar

import jwt
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    rule,
    run_state_machine_as_test,
)

from tests.support import Client

T = TypeVar("T")
EXAMPLES = itertools.count(1)
STATS: dict[str, int] = {}  # rule -> times run; "frames" -> frames checked
CONNS = ("a1", "a2", "b1", "c1", "g1")  # a has two connections; g's token carries grants
ROOM_KEYS = ("pub0", "pub1", "priv0", "priv1", "dm-ab", "dm-bg", "dm-cc")
ROOM_FRAMES = {"message", "event", "typing", "receipt", "presence"}
REPLIES = {"joined", "left", "ack", "history", "members"}


@dataclass
class ModelRoom:
    private: bool
    members: set[str]
    dm: tuple[str, str] | None = None
    seq: int = 0


@dataclass
class Before:
    """The model as it was before a step: frames caused by the step may follow either."""

    subs: dict[str, set[str]]  # connection -> rooms subscribed
    members: dict[str, set[str]]  # room -> member users


@dataclass
class Conn:
    user: str
    client: Client
    subs: set[str] = field(default_factory=set)
    mark: int = 0  # frames before this index were checked already


def _receipt(frame: dict[str, Any], room: str) -> bool:
    return frame.get("type") == "receipt" and frame.get("room") == room


class RoomIsolation(RuleBasedStateMachine):
    url = ""  # set by the test

    def __init__(self) -> None:
        super().__init__()
        n = next(EXAMPLES)
        self.loop = asyncio.new_event_loop()
        self.tag = f"x{n}-"
        self.users = {u: f"{u}{n}u" for u in "abcg"}
        self.names = {
            "pub0": f"{self.tag}pub0",
            "pub1": f"{self.tag}pub1",
            "priv0": f"{self.tag}priv0",
            "priv1": f"{self.tag}priv1",
            "dm-ab": self._dm("a", "b"),
            "dm-bg": self._dm("b", "g"),
            "dm-cc": self._dm("c", "c"),
        }
        # g may touch the pub* rooms and is invited into priv0 by an exact grant
        self.grants_exact = {self.names["priv0"]}
        self.grants_wild = re.compile(re.escape(f"{self.tag}pub") + ".*")
        self.rooms: dict[str, ModelRoom] = {}
        self.conns: dict[str, Conn] = {}
        self.step = 0
        self.last: Any = None  # the request of the step, for failure messages
        for key in CONNS:
            user = self.users[key[0]]
            self.conns[key] = Conn(user, self.run(Client.connect(self.url, self._token(user))))
        self.sync()  # online presence of the hellos has landed; start checking from here

    # ------------------------------------------------------------------ plumbing

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        return self.loop.run_until_complete(asyncio.wait_for(coro, 30))

    def _dm(self, x: str, y: str) -> str:
        a, b = sorted((self.users[x], self.users[y]))
        return f"dm:{a}:{b}"

    def _token(self, user: str) -> str:
        if user != self.users["g"]:
            return user
        grants = [f"{self.tag}pub*", self.names["priv0"]]
        # --insecure-dev reads the claims of an unsigned JWT; signing is tested elsewhere
        return jwt.encode({"sub": user, "rooms": grants}, "k" * 32, algorithm="HS256")

    def _rid(self) -> str:
        self.step += 1
        return f"r{self.step}"

    def sync(self) -> dict[str, list[dict[str, Any]]]:
        """Wait until every connection has everything so far; return the new frames."""

        async def ping_all() -> None:
            for conn in self.conns.values():
                rid = self._rid()
                await conn.client.send({"type": "ping", "id": rid})
            for conn in self.conns.values():
                await conn.client.wait(lambda f: f.get("type") == "pong", 10)

        self.run(ping_all())
        fresh = {}
        for key, conn in self.conns.items():
            fresh[key] = conn.client.frames[conn.mark :]
            conn.mark = len(conn.client.frames)
        return fresh

    # ------------------------------------------------------------------ the model

    def granted(self, user: str, name: str) -> bool:
        if user != self.users["g"] or name.startswith("dm:"):
            return True
        return name in self.grants_exact or self.grants_wild.fullmatch(name) is not None

    def refusal(self, user: str, name: str, create: bool) -> str | None:
        """The error code the rules give, or None (mirrors docs/SECURITY.md, not the code)."""
        room = self.rooms.get(name)
        if name.startswith("dm:"):
            pair = tuple(name[3:].split(":"))
            if user not in pair:
                return "forbidden"
            return None if room is not None else "unknown_room"
        if not self.granted(user, name):
            return "forbidden"
        if room is None:
            return None if create else "unknown_room"
        invited = user == self.users["g"] and name in self.grants_exact
        if room.private and user not in room.members and not invited:
            return "forbidden"
        return None

    def audience(self, name: str, sender: str | None) -> set[str]:
        """Connections that get a room's live frames (all of a DM's users' connections)."""
        room = self.rooms[name]
        if room.dm is not None:
            keys = {k for k, c in self.conns.items() if c.user in room.dm}
        else:
            keys = {k for k, c in self.conns.items() if name in c.subs}
        return keys - {sender} if sender else keys

    # ------------------------------------------------------------------ checks

    def check(
        self,
        fresh: dict[str, list[dict[str, Any]]],
        before: Before,
        asker: str | None = None,
        allowed_reply: set[str] = frozenset(),  # type: ignore[assignment]
    ) -> None:
        members_before = before.members
        STATS["frames"] = STATS.get("frames", 0) + sum(map(len, fresh.values()))
        for key, frames in fresh.items():
            conn = self.conns[key]
            may = before.subs.get(key, set()) | conn.subs
            may |= {n for n, r in self.rooms.items() if r.dm and conn.user in r.dm}
            for f in frames:
                kind = f.get("type")
                if kind == "presence" and "room" not in f:
                    shared = [
                        n
                        for n, r in self.rooms.items()
                        if conn.user in r.members and f["user"] in r.members
                    ]
                    assert shared, f"{key} got presence of a user it shares no room with: {f}"
                    continue
                room = f.get("room")
                if room is None:
                    continue
                assert kind in ROOM_FRAMES | REPLIES, f
                if kind in REPLIES and key == asker and room in allowed_reply:
                    continue
                assert room in may, f"{key} ({conn.user}) got a frame of {room}: {f}; in {may}"
                model = self.rooms.get(room)
                if model is not None and (model.private or model.dm):
                    was = members_before.get(room, set()) | model.members
                    assert conn.user in was, f"{conn.user} is no member of {room} but got {f}"

    def snapshot(self) -> Before:
        return Before(
            {k: set(c.subs) for k, c in self.conns.items()},
            {n: set(r.members) for n, r in self.rooms.items()},
        )

    def error_of(self, frames: list[dict[str, Any]], rid: str) -> str | None:
        for f in frames:
            if f.get("type") == "error" and f.get("id") == rid:
                return f["code"]
        return None

    def reply_of(self, frames: list[dict[str, Any]], rid: str) -> dict[str, Any]:
        found = [f for f in frames if f.get("id") == rid]
        assert len(found) == 1, (rid, self.last, frames)
        return found[0]

    def act(
        self, key: str, frame: dict[str, Any]
    ) -> tuple[dict[str, list[dict[str, Any]]], Before, str]:
        """Send one request, wait for everything it causes, and check room isolation."""
        before = self.snapshot()
        rid = self._rid()
        STATS[frame["type"]] = STATS.get(frame["type"], 0) + 1
        self.last = (key, frame)
        client = self.conns[key].client
        seen = {id(f) for f in client.frames}  # wait only for frames that come after the send
        self.run(client.send({**frame, "id": rid}))
        # A reply that waits for a commit (ack, receipt) may come after a later pong:
        # wait for it first; everything the commit fanned out was written with it.
        if frame["type"] == "read":
            room = frame["room"]
            fresh_receipt = lambda f: id(f) not in seen and _receipt(f, room)  # noqa: E731
            self.run(client.wait(lambda f: f.get("id") == rid or fresh_receipt(f), 10))
        elif frame["type"] != "typing":  # typing has no reply; its ping is enough
            self.run(client.wait(lambda f: f.get("id") == rid, 10))
        fresh = self.sync()
        return fresh, before, rid

    # ------------------------------------------------------------------ rules

    @initialize(
        joins=st.lists(
            st.tuples(
                st.sampled_from(CONNS),
                st.sampled_from(ROOM_KEYS),
                st.lists(st.sampled_from("abcg"), max_size=3),
            ),
            min_size=2,
            max_size=8,
        )
    )
    def populate(self, joins: list[tuple[str, str, list[str]]]) -> None:
        """Start each example with some rooms made and joined (the rules then mix it up)."""
        for key, room, invite in joins:
            self.join(key, room, invite)

    @rule(
        key=st.sampled_from(CONNS),
        room=st.sampled_from(ROOM_KEYS),
        invite=st.lists(st.sampled_from("abcg"), max_size=3),
    )
    def join(self, key: str, room: str, invite: list[str]) -> None:
        conn, name = self.conns[key], self.names[room]
        private = room.startswith("priv")
        members = sorted({self.users[u] for u in invite})
        want = self.refusal(conn.user, name, create=True)
        fresh, before, rid = self.act(
            key, {"type": "join", "room": name, "private": private, "members": members}
        )
        reply = self.reply_of(fresh[key], rid)
        if want is not None:
            assert reply["type"] == "error" and reply["code"] == want, (want, reply)
        else:
            assert reply["type"] == "joined" and reply["room"] == name, reply
            model = self.rooms.get(name)
            if model is None:
                who = {conn.user, *members} if private else {conn.user}
                model = self.rooms[name] = ModelRoom(private, who)
            elif model.dm is None:
                model.members.add(conn.user)
            conn.subs.add(name)
        self.check(fresh, before, key, {name} if want is None else set())

    @rule(key=st.sampled_from(CONNS), room=st.sampled_from(ROOM_KEYS))
    def leave(self, key: str, room: str) -> None:
        conn, name = self.conns[key], self.names[room]
        subscribed = name in conn.subs
        fresh, before, rid = self.act(key, {"type": "leave", "room": name})
        reply = self.reply_of(fresh[key], rid)
        if not subscribed:
            assert reply["code"] == "not_member", reply
        else:
            assert reply["type"] == "left", reply
            model = self.rooms[name]
            if model.dm is not None:
                conn.subs.discard(name)
            else:
                model.members.discard(conn.user)
                for other in self.conns.values():
                    if other.user == conn.user:
                        other.subs.discard(name)
        self.check(fresh, before, key, {name})

    def _deliveries(self, fresh: dict[str, list[dict[str, Any]]], cid: str) -> dict[str, int]:
        return {
            k: sum(1 for f in fr if f.get("cid") == cid and f["type"] == "message")
            for k, fr in fresh.items()
        }

    @rule(
        key=st.sampled_from(CONNS),
        room=st.sampled_from(ROOM_KEYS),
        spoof=st.sampled_from("abcg"),
    )
    def send(self, key: str, room: str, spoof: str) -> None:
        conn, name = self.conns[key], self.names[room]
        cid = f"c{self.step}"
        fake = self.users[spoof]
        frame = {"type": "send", "room": name, "cid": cid, "body": "hi", "from": fake, "user": fake}
        subscribed = name in conn.subs
        fresh, before, rid = self.act(key, frame)
        reply = self.reply_of(fresh[key], rid)
        delivered = self._deliveries(fresh, cid)
        if not subscribed:
            assert reply["code"] == "not_member", reply
            assert not any(delivered.values()), delivered
        else:
            model = self.rooms[name]
            model.seq += 1
            assert reply["type"] == "ack" and reply["seq"] == model.seq, reply
            expected = self.audience(name, key)
            assert {k for k, n in delivered.items() if n} == expected, (delivered, expected)
            assert set(delivered.values()) <= {0, 1}, delivered
            for k in expected:
                msg = next(f for f in fresh[k] if f.get("cid") == cid)
                assert msg["from"] == conn.user, msg  # identity from the token, never the frame
        self.check(fresh, before, key, {name})

    @rule(key=st.sampled_from(CONNS), to=st.sampled_from("abcg"))
    def dm(self, key: str, to: str) -> None:
        conn = self.conns[key]
        pair = sorted((conn.user, self.users[to]))
        name = f"dm:{pair[0]}:{pair[1]}"
        cid = f"d{self.step}"
        frame = {"type": "dm", "to": self.users[to], "cid": cid, "body": "psst", "from": "x"}
        model = self.rooms.setdefault(name, ModelRoom(True, set(pair), (pair[0], pair[1])))
        fresh, before, rid = self.act(key, frame)
        reply = self.reply_of(fresh[key], rid)
        model.seq += 1
        assert reply["type"] == "ack" and reply["room"] == name and reply["seq"] == model.seq
        delivered = self._deliveries(fresh, cid)
        assert {k for k, n in delivered.items() if n} == self.audience(name, key), delivered
        self.check(fresh, before, key, {name})

    @rule(
        key=st.sampled_from(CONNS),
        room=st.sampled_from(ROOM_KEYS),
        state=st.sampled_from(["start", "stop"]),
    )
    def typing(self, key: str, room: str, state: str) -> None:
        conn, name = self.conns[key], self.names[room]
        subscribed = name in conn.subs
        fresh, before, rid = self.act(key, {"type": "typing", "room": name, "state": state})
        assert self.error_of(fresh[key], rid) == (None if subscribed else "not_member")
        self.check(fresh, before, key)

    @rule(key=st.sampled_from(CONNS), room=st.sampled_from(ROOM_KEYS))
    def read(self, key: str, room: str) -> None:
        conn, name = self.conns[key], self.names[room]
        subscribed = name in conn.subs
        seq = self.rooms[name].seq if subscribed else 0
        fresh, before, rid = self.act(key, {"type": "read", "room": name, "seq": seq})
        if subscribed:
            assert any(f["type"] == "receipt" and f["room"] == name for f in fresh[key])
        else:
            assert self.error_of(fresh[key], rid) == "not_member"
        self.check(fresh, before, key)

    @rule(
        key=st.sampled_from(CONNS),
        room=st.sampled_from(ROOM_KEYS),
        kind=st.sampled_from(["history", "members"]),
    )
    def look(self, key: str, room: str, kind: str) -> None:
        conn, name = self.conns[key], self.names[room]
        want = self.refusal(conn.user, name, create=False)
        fresh, before, rid = self.act(key, {"type": kind, "room": name})
        reply = self.reply_of(fresh[key], rid)
        if want is None:
            assert reply["type"] == kind and reply["room"] == name, reply
            if kind == "history":
                assert [m["seq"] for m in reply["messages"]] == list(
                    range(1, self.rooms[name].seq + 1)
                )
        else:
            assert reply["type"] == "error" and reply["code"] == want, (want, reply)
        self.check(fresh, before, key, {name} if want is None else set())

    @rule(key=st.sampled_from(CONNS), room=st.sampled_from(ROOM_KEYS), store=st.booleans())
    def publish(self, key: str, room: str, store: bool) -> None:
        conn, name = self.conns[key], self.names[room]
        subscribed = name in conn.subs
        frame = {"type": "publish", "room": name, "event": "e", "data": {"k": 1}, "store": store}
        fresh, before, rid = self.act(key, frame)
        reply = self.reply_of(fresh[key], rid)
        if not subscribed:
            assert reply["code"] == "not_member", reply
        else:
            assert reply["type"] == "ack", reply
            if store:
                self.rooms[name].seq += 1
            got = {k for k, fr in fresh.items() if any(f["type"] == "event" for f in fr)}
            assert got == self.audience(name, key), got
            for k in got:
                event = next(f for f in fresh[k] if f["type"] == "event")
                assert event["from"] == conn.user
        self.check(fresh, before, key, {name})

    @rule(key=st.sampled_from(CONNS), extra=st.sampled_from(ROOM_KEYS))
    def reconnect(self, key: str, extra: str) -> None:
        """Drop the connection and come back with hello.resume (plus one more room)."""
        conn = self.conns[key]
        before = self.snapshot()
        STATS["reconnect"] = STATS.get("reconnect", 0) + 1
        ask = {n: 0 for n in conn.subs} | {self.names[extra]: 0}
        self.run(conn.client.close())
        rid = self._rid()
        client = self.run(Client.connect(self.url, hello=False))
        conn.client, conn.mark, conn.subs = client, 0, set()
        self.run(
            client.send(
                {"type": "hello", "token": self._token(conn.user), "id": rid, "resume": ask}
            )
        )
        expected: dict[str, str | None] = {n: self.refusal(conn.user, n, False) for n in ask}
        # your own DM room with no message yet resumes at seq 0 rather than an error
        # (docs/PROTOCOL.md, Resume): nothing to replay, and no room to subscribe to
        empty = {
            n for n, want in expected.items() if want == "unknown_room" and n.startswith("dm:")
        }
        self.run(client.wait(lambda f: f.get("type") == "welcome", 10))
        fresh = self.sync()
        for name, want in expected.items():
            if name in empty:
                STATS["empty dm resumed"] = STATS.get("empty dm resumed", 0) + 1
                joined = [f for f in fresh[key] if f["type"] == "joined" and f["room"] == name]
                assert len(joined) == 1 and joined[0]["resumed"], (name, fresh[key])
                assert joined[0]["seq"] == 0 and not joined[0].get("replayed"), joined[0]
                assert not [f for f in fresh[key] if f["type"] == "error"], fresh[key]
            elif want is None:
                joined = [f for f in fresh[key] if f["type"] == "joined" and f["room"] == name]
                assert len(joined) == 1 and joined[0]["resumed"], (name, fresh[key])
                conn.subs.add(name)
                model = self.rooms[name]
                if model.dm is None:
                    model.members.add(conn.user)  # resuming a room makes you a member again
            else:
                errors = [
                    f for f in fresh[key] if f["type"] == "error" and repr(name) in f["message"]
                ]
                assert [e["code"] for e in errors] == [want], (name, want, fresh[key])
        self.check(fresh, before, key, set(ask))

    def teardown(self) -> None:
        async def close_all() -> None:
            for conn in self.conns.values():
                await conn.client.close()

        try:
            self.run(close_all())
        finally:
            self.loop.close()


def test_no_frame_ever_reaches_a_connection_outside_its_rooms(start_server, capsys) -> None:
    server = start_server(store="memory", config={"timing": {"presence_grace_ms": 60000}})
    RoomIsolation.url = server.url
    run_state_machine_as_test(
        RoomIsolation,
        settings=settings(
            max_examples=40,
            stateful_step_count=40,
            deadline=None,
            suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
        ),
    )
    with capsys.disabled():
        steps = ", ".join(f"{k} {v}" for k, v in sorted(STATS.items()) if k != "frames")
        print(f"\nroom isolation: {STATS.get('frames', 0):,} frames checked after {steps}")
