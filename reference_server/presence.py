"""Presence: who is online, and the joined / left / online / offline frames.

``online`` goes out when a user's first session says hello, ``offline`` only
after their last one has been gone for ``presence_grace_ms`` (a user back within
the grace, as in a reconnect storm, was never offline: neither frame is sent).
Rooms with more than ``presence_max_room`` subscribers get none of these frames
(``small``): in a room of 5,000 each would cost 5,000 writes.

Several workers: whether a user is online *anywhere* is the broker's to say
(``hold`` / ``release``; ``RedisBroker`` counts, per user, the workers holding
them). The broker calls ``announce`` back when the cluster-wide state changes;
with one process (``LocalBroker``) that happens at once, as it always did.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Set

from reference_server.broker.base import Broker
from reference_server.config import ReplayConfig, TimingConfig
from reference_server.connections import Connections
from reference_server.fanout import Fanout
from reference_server.frames import framed
from reference_server.rooms import Room, RoomDirectory
from reference_server.session import Session
from rtbench.protocol import messages as p

_now = time.monotonic


class Presence:
    """Online state with a grace period, and presence frames to small rooms."""

    def __init__(
        self,
        connections: Connections,
        rooms: RoomDirectory,
        fanout: Fanout,
        replay: ReplayConfig,
        timing: TimingConfig,
        broker: Broker,
    ) -> None:
        self.broker = broker
        self.connections = connections
        self.rooms = rooms
        self.fanout = fanout
        self.max_room = replay.presence_max_room
        self.grace = timing.presence_grace_ms / 1000
        self.leaving: dict[str, float] = {}  # user -> when to announce them offline

    def small(self, room: Room) -> bool:
        """Few enough subscribers for per-member chatter (presence, everyone's receipts)."""
        return 0 < len(room.subs) <= self.max_room

    def online(self) -> Set[str]:
        """Users shown online: connected, or gone for less than the grace."""
        return self.connections.users.keys() | self.leaving.keys()

    async def online_among(self, users: Iterable[str]) -> Set[str]:
        """Which of ``users`` are online on any worker (``members``)."""
        wanted = list(users)
        here = self.online()
        anywhere = await self.broker.online(wanted)
        if anywhere is None:
            return here
        return anywhere | {user for user in wanted if user in here}

    def arrived(self, user: str) -> None:
        """The user's first session here said hello."""
        if self.leaving.pop(user, None) is None:  # back within the grace: never went offline
            self.broker.hold(user)  # announced back through ``announce`` if new anywhere

    def departed(self, user: str) -> None:
        """The user's last session here is gone: let go of them only if they stay away."""
        if self.grace > 0:
            # (re)inserted at the end: ``leaving`` stays in deadline order (see expire)
            self.leaving.pop(user, None)
            self.leaving[user] = _now() + self.grace
        else:
            self.broker.release(user)

    def expire(self, now: float) -> None:
        """Called by the sweeper: users gone longer than the grace are let go of.

        Every deadline is its insertion time plus the same grace, so ``leaving`` is in
        deadline order and the walk stops at the first user still within it: after a
        storm of closes, thousands wait out the grace, and the sweeper runs 4 times a
        second.
        """
        gone: list[str] = []
        for user, deadline in self.leaving.items():
            if deadline > now:
                break
            gone.append(user)
        for user in gone:
            del self.leaving[user]
            self.broker.release(user)  # announced back through ``announce`` if gone everywhere

    def announce(self, user: str, state: str) -> None:
        """online/offline to the subscribers of the user's loaded rooms (small rooms only)."""
        frame = None
        for name in self.rooms.by_user.get(user, ()):
            room = self.rooms.cached(name)
            if room is None or room.dm is not None or not self.small(room):
                continue
            # state: "online" or "offline" from every caller (the protocol's Literal)
            frame = frame or framed(p.Presence(user=user, state=state))  # type: ignore[arg-type]
            self.fanout.to_room(room, frame, exclude_user=user)

    def joined(self, room: Room, user: str, exclude: Session) -> None:
        """A user entered a group room (from no other session of theirs)."""
        if room.dm is None:
            self._chatter(room, p.Presence(room=room.name, user=user, state="joined"), exclude)

    def left(self, room: Room, user: str) -> None:
        """A user left a group room (all their sessions have been unsubscribed)."""
        self._chatter(room, p.Presence(room=room.name, user=user, state="left"), None)

    def _chatter(self, room: Room, msg: p.Presence, exclude: Session | None) -> None:
        """To the room here if it is small here; other workers judge their own share."""
        here = self.small(room)
        if not here and not self.broker.shared:
            return
        frame = framed(msg)
        if here:
            self.fanout.to_room(room, frame, exclude=exclude)
        self.broker.share_frame(room.name, frame, None, True)
