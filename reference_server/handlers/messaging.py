"""send, dm and publish: the hot path of a chat server.

``send`` and ``dm`` (and ``publish`` with ``store: true``) are appended through
the group commit (``commits.Commits.append``): acked and fanned out once
durable. A plain ``publish`` is not stored: it is acked and fanned out at once,
without a seq. A first ``dm`` between two users creates their ``dm:A:B`` room
in the same commit, ahead of the message.

Issue 9: a per-room "may post" grant is checked in ``access`` (``joined_room``),
and a body or rate limit before ``commits.append``.
"""

from __future__ import annotations

import time
from collections.abc import Coroutine
from typing import Any

from reference_server.access import Access
from reference_server.commits import Commits
from reference_server.config import LimitsConfig
from reference_server.dispatch import Routes
from reference_server.errors import Refuse
from reference_server.fanout import Fanout
from reference_server.frames import framed
from reference_server.metrics import Metrics
from reference_server.rooms import RoomDirectory
from reference_server.session import Session
from reference_server.store.base import KIND_EVENT, KIND_MESSAGE, EnsureRoom
from rtbench.protocol import ErrorCode, dm_room
from rtbench.protocol import messages as p


def _ms() -> int:
    return int(time.time() * 1000)


class Messaging:
    """Messages to rooms and users, and events to rooms."""

    def __init__(
        self,
        access: Access,
        commits: Commits,
        fanout: Fanout,
        rooms: RoomDirectory,
        metrics: Metrics,
        limits: LimitsConfig,
    ) -> None:
        self.access = access
        self.commits = commits
        self.fanout = fanout
        self.rooms = rooms
        self.metrics = metrics
        self.max_body = limits.max_body_chars

    def routes(self) -> Routes:
        return {p.Send: self.on_send, p.Direct: self.on_dm, p.Publish: self.on_publish}

    def on_send(self, s: Session, m: p.Send) -> None:
        self.access.joined_room(s, m.room)
        self._check_body(m.body)
        self.commits.append(s, m.id, m.room, m.cid, KIND_MESSAGE, body=m.body, meta=m.meta)

    def _check_body(self, body: str) -> None:
        if len(body) > self.max_body:
            raise Refuse(
                ErrorCode.BODY_TOO_LONG,
                f"body has {len(body)} characters; the limit is {self.max_body}",
            )

    def on_dm(self, s: Session, m: p.Direct) -> Coroutine[Any, Any, None] | None:
        self._check_body(m.body)
        assert s.user is not None
        name = dm_room(s.user, m.to)
        if self.rooms.cached(name) is not None:
            self.commits.append(s, m.id, name, m.cid, KIND_MESSAGE, body=m.body, meta=m.meta)
            return None
        return self._first_dm(s, m, name)

    async def _first_dm(self, s: Session, m: p.Direct, name: str) -> None:
        room = await self.rooms.get(name)
        if room is None and self.rooms.cached(name) is None:
            assert s.user is not None  # on_dm checked it: a session past hello
            members = sorted({s.user, m.to})
            self.rooms.create(name, True, members)
            self.commits.submit(EnsureRoom(None, name, True, members))  # committed before it
        self.commits.append(s, m.id, name, m.cid, KIND_MESSAGE, body=m.body, meta=m.meta)

    def on_publish(self, s: Session, m: p.Publish) -> None:
        room = self.access.joined_room(s, m.room)
        self.metrics.events_published += 1
        if m.store:
            self.commits.append(s, m.id, m.room, m.cid, KIND_EVENT, event=m.event, data=m.data)
            return
        self.commits.require_broker()
        ts = _ms()
        # s.user: set by hello, which the dispatcher requires before any publish
        frame = framed(p.Event(room=room.name, event=m.event, data=m.data, sender=s.user, ts=ts))  # type: ignore[arg-type]
        self.fanout.reply(s, p.Ack(id=m.id, cid=m.cid, room=room.name, ts=ts))
        self.fanout.to_cluster(room, frame, exclude=s)
