"""The topology of a run, derived from a resolved scenario: engine-neutral and sans-IO.

Every process of a run (and every Locust user) computes the same plan from the same
scenario and run tag, so nobody ships membership lists around:

- connection ``i`` has user id ``{tag}u{i}`` and lives in worker ``i % procs``;
- chat/soak: user ``i`` is in room ``i // room_size``; users ``2p`` and ``2p + 1`` form
  direct-message pair ``p``; everyone sends;
- fanout: ``users`` subscribers in rooms of ``room_size``, then ``publishers`` per room,
  who publish events; everyone in a room (publishers too) receives them;
- rtt: every connection round-trips to itself; connect: nobody sends.

A *stream* is where a message goes: room ``r`` is stream ``r``, DM pair ``p`` is stream
``rooms + p``, and an rtt connection ``i`` is stream ``i``. Its expected recipients are
its live members minus the sender.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING, NamedTuple

from loadtest.adapters.base import Feature, marker
from loadtest.scenarios import Kind, Scenario

if TYPE_CHECKING:
    import random

    from loadtest.adapters.base import Adapter

PROBE_STREAM = -1
"""Stream id of heartbeat probes (connect scenario): not part of delivery accounting."""
PROBE_TICK_NS = 10_000_000
"""Heartbeat probes and keepalives go out in batches this far apart over their interval."""
# The kinds the per-message code (``compose``, ``receipt``, ``Plan.rooms_of``) tests, as
# plain names: on Python 3.11 each ``Kind.RTT`` is an enum class lookup of about 100 ns,
# and a chat send made five of them (half a microsecond of a ~5 us send)
_RTT = Kind.RTT
_FANOUT = Kind.FANOUT
_CHATS = (Kind.CHAT, Kind.SOAK)


def spread(count: int, start_ns: int, span_ns: int) -> Iterator[tuple[int, slice]]:
    """When each batch of ``count`` connections is due, spread evenly over ``span_ns``:
    (due time, which connections). Every driver paces its probes and keepalives so: a
    burst of thousands at once would measure the generator's own queueing, not the server.
    """
    batches = max(1, min(count, span_ns // PROBE_TICK_NS))
    size = math.ceil(count / batches)
    for k in range(batches):
        yield start_ns + span_ns * k // batches, slice(k * size, (k + 1) * size)


class Plan:
    """Who is who, where they are and where they send, for one run."""

    def __init__(self, scenario: Scenario, tag: str) -> None:
        self.scenario = scenario
        self.kind = scenario.scenario
        self.tag = tag
        self.procs = scenario.procs
        users = scenario.users or 0
        self.subscribers = users
        self.room_size = scenario.room_size or users or 1
        if self.kind in (Kind.CHAT, Kind.SOAK, Kind.FANOUT):
            self.rooms = math.ceil(users / self.room_size)
        else:
            self.rooms = 0
        self.publishers_per_room = (scenario.publishers or 1) if self.kind is Kind.FANOUT else 0
        self.connections = users + self.rooms * self.publishers_per_room
        self.dm_pairs = users // 2 if self.kind in (Kind.CHAT, Kind.SOAK) else 0

    # -- identities --------------------------------------------------------------------

    def user(self, i: int) -> str:
        return f"{self.tag}u{i}"

    def room_name(self, room: int) -> str:
        return f"{self.tag}room{room}"

    def worker_of(self, i: int) -> int:
        return i % self.procs

    def local(self, worker: int) -> range:
        """Connection indices held by one worker."""
        return range(worker, self.connections, self.procs)

    def token(self, i: int) -> str:
        user = self.user(i)
        secret = self.scenario.jwt_secret
        if secret:
            import jwt  # PyJWT; only runs that sign tokens pay for the import

            claims = {"sub": user, "exp": int(time.time()) + 86_400}
            return jwt.encode(claims, secret, algorithm="HS256")
        return self.scenario.token.format(user=user)

    # -- membership --------------------------------------------------------------------

    def rooms_of(self, i: int) -> list[int]:
        if self.kind in _CHATS:
            return [i // self.room_size]
        if self.kind is _FANOUT:
            if i < self.subscribers:
                return [i // self.room_size]
            return [(i - self.subscribers) // self.publishers_per_room]
        return []

    def members(self, room: int) -> list[int]:
        first = room * self.room_size
        members = list(range(first, min(first + self.room_size, self.subscribers)))
        if self.kind is Kind.FANOUT:
            start = self.subscribers + room * self.publishers_per_room
            members.extend(range(start, start + self.publishers_per_room))
        return members

    def partner(self, i: int) -> int | None:
        """The DM partner of user ``i`` (chat), or None."""
        if self.dm_pairs == 0:
            return None
        j = i ^ 1
        return j if j < 2 * self.dm_pairs and i < 2 * self.dm_pairs else None

    def dm_stream(self, i: int) -> int:
        return self.rooms + i // 2

    def is_sender(self, i: int) -> bool:
        if self.kind in (Kind.CHAT, Kind.SOAK, Kind.RTT):
            return True
        if self.kind is Kind.FANOUT:
            return i >= self.subscribers
        return False

    def features(self) -> set[str]:
        """What the scenario needs of the protocol adapter."""
        if self.kind in (Kind.CHAT, Kind.SOAK):
            needed = {Feature.ROOMS}
            if self.scenario.dm_share:
                needed.add(Feature.DM)
            if self.scenario.typing_share:
                needed.add(Feature.TYPING)
            if self.scenario.receipt_share:
                needed.add(Feature.RECEIPTS)
            return needed
        if self.kind is Kind.FANOUT:
            return {Feature.ROOMS, Feature.PUBLISH}
        return {Feature.PING}

    # -- expected recipients ----------------------------------------------------------------

    def recipients(self, live: bytes) -> dict[int, int]:
        """Expected recipients per stream, given a bitmap of connections that are up."""

        def up(i: int) -> bool:
            return bool(live[i >> 3] & (1 << (i & 7)))

        out: dict[int, int] = {}
        for room in range(self.rooms):
            out[room] = max(0, sum(1 for i in self.members(room) if up(i)) - 1)
        for pair in range(self.dm_pairs):
            out[self.rooms + pair] = int(up(2 * pair) and up(2 * pair + 1)) * 1
        if self.kind is Kind.RTT:
            for i in range(self.connections):
                out[i] = 1
        return out


def bitmap(size: int, members: list[int] | range) -> bytearray:
    """A bitmap of ``size`` bits with ``members`` set."""
    out = bytearray((size + 7) // 8)
    for i in members:
        out[i >> 3] |= 1 << (i & 7)
    return out


def bitmap_or(into: bytearray, other: bytes | bytearray) -> None:
    for k, byte in enumerate(other):
        into[k] |= byte


def bitmap_count(bits: bytes | bytearray) -> int:
    return sum(byte.bit_count() for byte in bits)


# -- composing a scheduled message (shared by the native engine and the Locust users) ---------


class Outgoing(NamedTuple):
    """One scheduled message, composed: where it goes and the frames that carry it."""

    stream: int
    payload: bytes
    typing: bytes | None  # chat: a typing indicator to send just before the message
    read: bytes | None = None  # chat: a read receipt to send after it (``receipt``)


def compose(
    plan: Plan,
    adapter: Adapter,
    rng: random.Random,
    index: int,
    counters: dict[int, int],
    when_ns: int,
    req_id: int,
) -> Outgoing:
    """The message connection ``index`` sends at ``when_ns``, the same in every engine.

    It picks the stream (rtt: itself; fanout: its room; chat: its room, or with
    ``dm_share`` its DM partner), advances that stream's counter in ``counters``, writes
    the marker and builds the frames. The ``rng`` draws come in a fixed order (DM, then
    typing), so a seeded run sends the same messages.
    """
    sc = plan.scenario
    kind = plan.kind
    partner = None
    if kind is _RTT:
        stream = index
    elif kind is _FANOUT:
        stream = plan.rooms_of(index)[0]
    else:
        partner = plan.partner(index)
        if partner is not None and sc.dm_share and rng.random() < sc.dm_share:
            stream = plan.dm_stream(index)
        else:
            stream = plan.rooms_of(index)[0]
            partner = None
    counter = counters.get(stream, 0) + 1
    counters[stream] = counter
    text = marker(index, stream, counter, when_ns, sc.message_bytes)
    typing = None
    if kind is _RTT:
        payload = adapter.ping(text, req_id)
    elif kind is _FANOUT:
        payload = adapter.publish(plan.room_name(stream), "rtbench", text, req_id)
    elif partner is not None:
        payload = adapter.dm(plan.user(partner), text, req_id)
    else:
        room = plan.room_name(stream)
        if sc.typing_share and rng.random() < sc.typing_share:
            typing = adapter.typing(room, True)
        payload = adapter.send(room, text, req_id)
    return Outgoing(stream, payload, typing)


def receipt(
    plan: Plan, adapter: Adapter, rng: random.Random, index: int, last_seq: Mapping[str, int]
) -> bytes | None:
    """chat: with ``receipt_share``, after a send, a read receipt up to the last seq seen
    in the sender's room (None: no receipt this time, or nothing seen yet)."""
    sc = plan.scenario
    if not sc.receipt_share or plan.kind not in _CHATS:
        return None
    if rng.random() >= sc.receipt_share:
        return None
    room = plan.room_name(plan.rooms_of(index)[0])
    seq = last_seq.get(room, 0)
    return adapter.read(room, seq) if seq > 0 else None
