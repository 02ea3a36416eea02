"""typing: start/stop notices to a room, ended by a stop, a message, or a timeout.

Nothing is stored. A start is announced once (repeats only extend it); it ends
with a stop, with the user's next message in that room (an ``on_delivered``
hook of ``commits``), or by itself after ``typing_timeout_ms`` (``expire``,
called by the sweeper). Only rooms with someone typing are looked at.
"""

from __future__ import annotations

import time

from reference_server.access import Access
from reference_server.commits import Commits
from reference_server.config import TimingConfig
from reference_server.dispatch import Routes
from reference_server.fanout import Fanout, Item
from reference_server.frames import framed
from reference_server.rooms import Room
from reference_server.session import Session
from rtbench.protocol import messages as p

_now = time.monotonic


class TypingNotices:
    """Who is typing where, until when."""

    def __init__(
        self, access: Access, commits: Commits, fanout: Fanout, timing: TimingConfig
    ) -> None:
        self.access = access
        self.fanout = fanout
        self.timeout = timing.typing_timeout_ms / 1000
        self.rooms: set[Room] = set()  # rooms with someone typing
        commits.on_delivered(self.messages_sent)

    def routes(self) -> Routes:
        return {p.Typing: self.on_typing}

    def on_typing(self, s: Session, m: p.Typing) -> None:
        room = self.access.joined_room(s, m.room)
        user = s.user
        assert user is not None
        typing = room.typing
        if m.state == "start":
            if typing is None:
                room.typing = typing = {}
                self.rooms.add(room)
            already = user in typing
            typing[user] = _now() + self.timeout
            if already:
                return
            frame = framed(p.TypingNotice(room=room.name, user=user, state="start"))
            self.fanout.to_cluster(room, frame, exclude_user=user)
        elif typing and user in typing:
            self.stopped(room, user)

    def stopped(self, room: Room, user: str) -> None:
        if room.typing is not None:
            room.typing.pop(user, None)
        frame = framed(p.TypingNotice(room=room.name, user=user, state="stop"))
        self.fanout.to_cluster(room, frame, exclude_user=user)

    def messages_sent(self, room: Room, items: list[Item]) -> None:
        """A message ends its sender's typing."""
        if room.typing:
            for _, _, sender in items:
                if sender is not None and sender.user in room.typing:
                    self.stopped(room, sender.user)

    def expire(self, now: float) -> None:
        """Called by the sweeper: a start without a stop ends by itself."""
        for room in list(self.rooms):
            typing = room.typing or {}
            for user in [u for u, until in typing.items() if until <= now]:
                self.stopped(room, user)
            if not room.typing:
                room.typing = None
                self.rooms.discard(room)
