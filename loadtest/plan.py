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

from loadtest.adapters.base import Feature
from loadtest.scenarios import Kind, Scenario

PROBE_STREAM = -1
"""Stream id of heartbeat probes (connect scenario): not part of delivery accounting."""


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
        if self.kind in (Kind.CHAT, Kind.SOAK):
            return [i // self.room_size]
        if self.kind is Kind.FANOUT:
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


def bitmap_or(into: bytearray, other: bytes) -> None:
    for k, byte in enumerate(other):
        into[k] |= byte


def bitmap_count(bits: bytes) -> int:
    return sum(byte.bit_count() for byte in bits)
