"""This worker's side of the broker: what other workers announce, applied here.

The broker calls these methods (``redis_broker.Sink``) for every envelope from
another worker. Each one does on this worker what the originating worker did
on its own: stored items go through the ``Sequencer`` (seq order, gap repair),
room frames to the local audience, membership and read markers into the cached
rooms, a ``leave`` unsubscribes the user's sessions here too. Rooms this worker
has not loaded are skipped (nobody here is subscribed), except direct-message
rooms, whose audience is every session of its two users.
"""

from __future__ import annotations

import logging
from typing import Any

from reference_server.cluster.sequencer import Sequencer
from reference_server.connections import Connections
from reference_server.fanout import Fanout
from reference_server.presence import Presence
from reference_server.resume import Subscriptions
from reference_server.rooms import Room, RoomDirectory, dm_users
from reference_server.store.base import StoreError
from rtbench.protocol import CloseCode
from rtbench.protocol import messages as p

log = logging.getLogger("rtbench.server.broker")


class Link:
    """Applies other workers' envelopes to this worker's rooms and sessions."""

    def __init__(
        self,
        rooms: RoomDirectory,
        connections: Connections,
        fanout: Fanout,
        presence: Presence,
        subscriptions: Subscriptions,
        sequencer: Sequencer,
        spawn: Any,
    ) -> None:
        self.rooms = rooms
        self.connections = connections
        self.fanout = fanout
        self.presence_ = presence
        self.subscriptions = subscriptions
        self.sequencer = sequencer
        self.spawn = spawn

    # ------------------------------------------------------------------ rooms

    def items(self, room: str, items: list[tuple[int, bytes]], again: bool = False) -> None:
        if self.rooms.cached(room) is None and self._local_dm(room):
            self.sequencer.expect(room, items[0][0] - 1)  # its users get these once loaded
            self._load(room)
        self.sequencer.remote(room, items, again)

    def room_frame(self, room: str, frame: bytes, exclude_user: str | None, chatty: bool) -> None:
        cached = self.rooms.cached(room)
        if cached is None:
            self._to_dm_users(room, frame, exclude_user)
            return
        if chatty and not self.presence_.small(cached):
            return  # presence chatter: not in rooms that are big on this worker
        self.fanout.to_room(cached, frame, exclude_user=exclude_user)

    def receipt(self, room: str, user: str, seq: int, frame: bytes) -> None:
        cached = self.rooms.cached(room)
        if cached is None:
            self._to_dm_users(room, frame, None)
            return
        if user in cached.members:
            cached.members[user] = max(cached.members[user], seq)
        if cached.dm is not None or self.presence_.small(cached):
            self.fanout.to_room(cached, frame)
            return
        for s in self.connections.users.get(user, ()):  # big room: the reader's own sessions
            if room in s.rooms and not s.closed:
                s.send(frame)

    def members(self, room: str, added: list[str]) -> None:
        cached = self.rooms.cached(room)
        if cached is not None:
            for user in added:
                self.rooms.add_member(cached, user)

    def left(self, room: str, user: str) -> None:
        cached = self.rooms.cached(room)
        if cached is None:
            return
        self.rooms.remove_member(cached, user)
        for s in list(self.connections.users.get(user, ())):
            if room in s.rooms:
                self.subscriptions.unsubscribe(s, cached)
                self.fanout.reply(s, p.Left(room=room))

    # ------------------------------------------------------------------ presence

    def presence(self, user: str, state: str) -> None:
        self.presence_.announce(user, state)

    def held_users(self) -> list[str]:
        return list(self.connections.users.keys() | self.presence_.leaving.keys())

    # ------------------------------------------------------------------ outages

    def reconnected(self) -> None:
        """The broker is back: whatever it dropped meanwhile is read from the store."""
        rooms = [
            room
            for room in self.rooms.cache.values()
            if room.subs or (room.dm is not None and self._local_dm(room.name))
        ]
        if rooms:
            self.spawn(self.sequencer.catch_up(rooms), "rtbench-catch-up")

    def too_far_behind(self, room: Room) -> None:
        """A gap longer than max_replay: its subscribers reconnect and resume properly."""
        for s in list(room.subs):
            self.connections.close(s, CloseCode.SERVICE_RESTART, "missed too much: resume")
        self.rooms.forget(room.name)

    # ------------------------------------------------------------------ helpers

    def _local_dm(self, room: str) -> bool:
        pair = dm_users(room)
        users = self.connections.users
        return pair is not None and (pair[0] in users or pair[1] in users)

    def _to_dm_users(self, room: str, frame: bytes, exclude_user: str | None) -> None:
        pair = dm_users(room)
        if pair is None:
            return
        users = self.connections.users
        for user in {pair[0], pair[1]}:
            if user == exclude_user:
                continue
            for s in users.get(user, ()):
                if not s.closed:
                    s.send(frame)

    def _load(self, room: str) -> None:
        async def load() -> None:
            try:
                loaded = await self.rooms.get(room)
            except StoreError as exc:
                loaded = None
                log.warning("rtbench: cannot load DM room %r: %s", room, exc)
            if loaded is None:
                self.sequencer.forget(room)

        self.spawn(load(), f"rtbench-load-{room[:32]}")
