"""The Redis broker against a real Redis: envelopes between workers, cluster-wide
presence with leases, and an outage of a Redis instance of the test's own."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest
import redis.asyncio as aioredis

from reference_server.cluster.redis_broker import RedisBroker
from reference_server.config import redact_url as redact
from tests.scaleout.polling import until

pytestmark = pytest.mark.redis


class Sink:
    """A worker's side of the broker that records what it was told."""

    def __init__(self, held: list[str] | None = None) -> None:
        self.calls: list[tuple[Any, ...]] = []
        self.held = held or []
        self.reconnects = 0

    def items(self, room: str, items: list[tuple[int, bytes]], again: bool = False) -> None:
        self.calls.append(("items", room, items))
        if again:
            self.calls.append(("again", room, [seq for seq, _ in items]))

    def room_frame(self, room: str, frame: bytes, exclude_user: str | None, chatty: bool) -> None:
        self.calls.append(("frame", room, frame, exclude_user, chatty))

    def receipt(self, room: str, user: str, seq: int, frame: bytes) -> None:
        self.calls.append(("receipt", room, user, seq, frame))

    def presence(self, user: str, state: str) -> None:
        self.calls.append(("presence", user, state))

    def members(self, room: str, added: list[str]) -> None:
        self.calls.append(("members", room, added))

    def left(self, room: str, user: str) -> None:
        self.calls.append(("left", room, user))

    def reconnected(self) -> None:
        self.reconnects += 1

    def held_users(self) -> list[str]:
        return list(self.held)

    def of(self, kind: str) -> list[tuple[Any, ...]]:
        return [c for c in self.calls if c[0] == kind]


@pytest.fixture
async def pair(
    redis_url: str, redis_prefix: str
) -> AsyncIterator[tuple[RedisBroker, Sink, RedisBroker, Sink]]:
    a, b = RedisBroker(redis_url, redis_prefix), RedisBroker(redis_url, redis_prefix)
    sa, sb = Sink(), Sink()
    await a.start(sa)
    await b.start(sb)
    try:
        yield a, sa, b, sb
    finally:
        await a.close()
        await b.close()


async def test_envelopes_reach_the_other_worker_in_order_and_not_the_sender(pair) -> None:
    a, sa, b, sb = pair
    for n in range(50):
        a.publish("lobby", [(2 * n + 1, b"f%d" % (2 * n + 1)), (2 * n + 2, b"f%d" % (2 * n + 2))])
    a.share_frame("lobby", b"typing", exclude_user="alice", chatty=True)
    a.share_receipt("lobby", "alice", 7, b"receipt")
    a.share_members("team", ["bob", "carol"])
    a.share_left("team", "carol")
    a.publish("lobby", [(100, b"f100")], again=True)  # a resend the store had: flagged
    await until(lambda: sb.of("again"))
    assert sb.of("again") == [("again", "lobby", [100])]
    # the resent item, checked: the rest is the ordered stream
    sb.calls = [c for c in sb.calls if c[0] != "again" and c[2:] != ([(100, b"f100")],)]
    await until(lambda: sb.of("left"))
    seqs = [seq for _, _, items in sb.of("items") for seq, _ in items]
    assert seqs == list(range(1, 101))
    assert sb.of("items")[0] == ("items", "lobby", [(1, b"f1"), (2, b"f2")])
    assert sb.of("frame") == [("frame", "lobby", b"typing", "alice", True)]
    assert sb.of("receipt") == [("receipt", "lobby", "alice", 7, b"receipt")]
    assert sb.of("members") == [("members", "team", ["bob", "carol"])]
    assert sb.of("left") == [("left", "team", "carol")]
    assert sa.of("items") == []  # a worker never gets its own envelopes back
    assert a.health()["published"] >= 54 and b.health()["received"] >= 54


async def test_presence_counts_workers_not_announcements(pair, redis_url, redis_prefix) -> None:
    a, sa, b, sb = pair
    a.hold("alice")  # first anywhere: online, announced here and on b
    await until(lambda: sb.of("presence"))
    assert sa.of("presence") == sb.of("presence") == [("presence", "alice", "online")]
    b.hold("alice")  # alice also on b: nobody is told again
    redis = aioredis.Redis.from_url(redis_url)
    try:  # (in a server, b holds her before a's grace for her runs out)
        deadline = time.monotonic() + 10
        while await redis.hget(f"{redis_prefix}:online", "alice") != b"2":
            assert time.monotonic() < deadline
            await asyncio.sleep(0.02)
    finally:
        await redis.aclose()
    a.release("alice")  # gone from a, still on b: not offline
    assert await until(lambda: b.health()["outbox"] == 0 and a.health()["outbox"] == 0)
    assert await a.online(["alice", "bob"]) == {"alice"}
    await asyncio.sleep(0.2)
    assert len(sa.of("presence")) == len(sb.of("presence")) == 1
    b.release("alice")  # gone everywhere: offline, once
    await until(lambda: len(sa.of("presence")) == 2)
    assert sa.of("presence")[-1] == sb.of("presence")[-1] == ("presence", "alice", "offline")
    assert await b.online(["alice"]) == set()


async def test_a_dead_workers_users_are_reaped_after_its_lease(redis_url, redis_prefix) -> None:
    watcher, short = RedisBroker(redis_url, redis_prefix, lease_ms=600), None
    sw = Sink()
    await watcher.start(sw)
    try:
        short = RedisBroker(redis_url, redis_prefix, lease_ms=600)
        await short.start(Sink())
        short.hold("dora")
        await until(lambda: sw.of("presence"))
        await short.close()  # like a crash: the lease is left to expire
        started = time.monotonic()
        await until(lambda: len(sw.of("presence")) == 2, within=5)
        assert sw.of("presence")[-1] == ("presence", "dora", "offline")
        assert 0.3 < time.monotonic() - started < 3
        assert await watcher.online(["dora"]) == set()
    finally:
        await watcher.close()


async def test_unreachable_broker_is_one_clear_error() -> None:
    broker = RedisBroker("redis://127.0.0.1:1/0", "x")
    with pytest.raises(OSError, match=r"cannot connect to broker redis://127\.0\.0\.1:1/0"):
        await broker.start(Sink())
    assert redact("redis://:pw@h:6380/1") == "redis://:***@h:6380/1"


async def test_outage_refuses_then_recovers_by_itself(own_redis, caplog) -> None:
    caplog.set_level(logging.INFO, logger="rtbench.server.broker")
    a, b = RedisBroker(own_redis.url, "o"), RedisBroker(own_redis.url, "o")
    sa, sb = Sink(held=["erin"]), Sink(held=["erin"])
    await a.start(sa)
    await b.start(sb)
    try:
        a.publish("r", [(1, b"one")])
        await until(lambda: sb.of("items"))
        await asyncio.to_thread(own_redis.stop)
        await until(lambda: not a.available and not b.available)
        a.publish("r", [(2, b"two")])  # nowhere to go: dropped (the store has it)
        assert a.health()["status"] == "down" and a.health()["dropped"] >= 1
        published: list[str] = []  # a publish whose acks wait for it is kept, not dropped
        a.publish("k", [(1, b"kept")], published=lambda: published.append("k"))
        assert a.health()["unsent"] == 1 and published == []
        downs = [r for r in caplog.records if "unavailable" in r.getMessage()]
        assert len(downs) == 2  # one line per worker, not one per attempt
        await asyncio.sleep(1.0)  # a few reconnect attempts fail quietly
        assert len([r for r in caplog.records if "unavailable" in r.getMessage()]) == 2
        await asyncio.to_thread(own_redis.start)  # an empty Redis: everything was lost
        await until(lambda: a.available and b.available, within=15)
        assert sa.reconnects == sb.reconnects == 1  # each catches its rooms up from the store
        assert any("is back" in r.getMessage() for r in caplog.records)
        # presence was rebuilt from what each worker holds
        assert await a.online(["erin", "frank"]) == {"erin"}
        # the kept publish was sent once a was back, and only then confirmed (whether b was
        # already subscribed again is a race: b catches up from the store either way)
        await until(lambda: published == ["k"])
        assert a.health()["unsent"] == 0
        a.publish("r", [(3, b"three")])
        await until(lambda: sb.of("items")[-1] == ("items", "r", [(3, b"three")]))
    finally:
        await a.close()
        await b.close()
