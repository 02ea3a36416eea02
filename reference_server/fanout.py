"""The way out: every frame the server writes to a connection leaves through here.

Replies go to one session; room traffic goes to a room's audience (its
subscribers, or both users' sessions for a direct-message room). A frame is
encoded once (``frames.framed``) and the same bytes go to every recipient; the
items of one group commit go to each recipient in one write. A connection that
is replaying a room holds that room's live frames instead (``Session.held``),
and one already over its buffer limit is checked on every write, so a far-behind
reader is closed 1013 at once (the sweeper handles the grace period).

Several workers (docs/SCALING.md): frames that are not stored and must reach
the room on every worker go through ``to_cluster`` (here, then the broker);
stored items are published by ``commits`` and arrive from other workers through
``cluster.link`` and ``cluster.sequencer``, which end in ``batch_to_room``.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from reference_server.broker.base import Broker
from reference_server.config import LimitsConfig
from reference_server.connections import Connections
from reference_server.frames import framed
from reference_server.metrics import Metrics
from reference_server.rooms import Room, RoomDirectory
from reference_server.session import Session
from rtbench.protocol import CloseCode, ErrorCode
from rtbench.protocol import messages as p

Item = tuple[int, bytes, Session | None]  # (seq, frame, sender: who does not get it back)


class Fanout:
    """Writes replies, room frames and batches; watches each writer's buffer."""

    def __init__(
        self,
        connections: Connections,
        rooms: RoomDirectory,
        metrics: Metrics,
        limits: LimitsConfig,
        broker: Broker,
    ) -> None:
        self.connections = connections
        self.rooms = rooms
        self.metrics = metrics
        self.broker = broker
        self.hard_bytes = limits.slow_consumer_hard_bytes
        self._close = connections.close

    # ------------------------------------------------------------------ one session

    def reply(self, s: Session, frame: Any) -> None:
        """Encode and send one server message to one session."""
        if not s.closed:
            s.send(framed(frame))
            self.metrics.frames_out += 1

    def error(
        self, s: Session, code: ErrorCode, message: str, request_id: Any = None, ref: Any = None
    ) -> None:
        self.metrics.errors[code.value] += 1
        self.reply(s, p.Error(id=request_id, code=code.value, message=message, ref=ref))

    def write(self, s: Session, frames: list[bytes]) -> None:
        """Several ready frames to one session in one write (a replay and its ``joined``)."""
        if not s.closed:
            s.send(b"".join(frames))
            self.metrics.frames_out += len(frames)

    # ------------------------------------------------------------------ rooms

    def audience(self, room: Room) -> Iterable[Session]:
        """Who receives a room's live frames (a snapshot: sending may close some)."""
        if room.dm is None:
            return tuple(room.subs)
        a, b = room.dm
        users = self.connections.users
        first = users.get(a, [])
        return tuple(first) if a == b else (*first, *users.get(b, ()))

    def to_room(
        self,
        room: Room,
        frame: bytes,
        seq: int = 0,
        exclude: Session | None = None,
        exclude_user: str | None = None,
    ) -> None:
        """Send one encoded frame to a room's audience (held during a replay of that room)."""
        name = room.name
        sent = 0
        for s in self.audience(room):
            if s is exclude or s.closed or (exclude_user is not None and s.user == exclude_user):
                continue
            held = s.held
            if held is not None and name in held:
                held[name].append((seq, frame))
                continue
            try:
                s.send(frame)
            except RuntimeError:  # the socket went away under us: its close is on its way
                self._close(s, CloseCode.GOING_AWAY, "connection lost")
                continue
            sent += 1
            if s.over_since is not None:
                self.check_buffer(s)
        self.metrics.fanout_deliveries += sent
        self.metrics.frames_out += sent

    def batch_to_room(self, room: Room, items: list[Item]) -> None:
        """Fan out several stored items of one group commit: one write per recipient.

        Each recipient gets the frames of the batch joined into one buffer, so a
        commit of k messages costs one socket write per subscriber instead of k.
        A sender never gets its own item; a connection replaying the room holds them.
        """
        if len(items) == 1:
            seq, frame, sender = items[0]
            self.to_room(room, frame, seq, exclude=sender)
            return
        name = room.name
        senders = {sender for _, _, sender in items}
        everything = b"".join(frame for _, frame, _ in items)
        sent = 0
        for s in self.audience(room):
            if s.closed:
                continue
            held = s.held
            if held is not None and name in held:
                held[name].extend((seq, f) for seq, f, sender in items if sender is not s)
                continue
            if s in senders:
                own = [f for _, f, sender in items if sender is not s]
                data, count = b"".join(own), len(own)
            else:
                data, count = everything, len(items)
            if not count:
                continue
            try:
                s.send(data)
            except RuntimeError:
                self._close(s, CloseCode.GOING_AWAY, "connection lost")
                continue
            sent += count
            if s.over_since is not None:
                self.check_buffer(s)
        self.metrics.fanout_deliveries += sent
        self.metrics.frames_out += sent

    def to_cluster(
        self,
        room: Room,
        frame: bytes,
        exclude: Session | None = None,
        exclude_user: str | None = None,
        chatty: bool = False,
    ) -> None:
        """A frame that is not stored, to the room's audience on every worker.

        ``chatty`` (presence): other workers send it only where the room is small.
        """
        self.to_room(room, frame, exclude=exclude, exclude_user=exclude_user)
        self.broker.share_frame(room.name, frame, exclude_user, chatty)

    # ------------------------------------------------------------------ slow consumers

    def check_buffer(self, s: Session) -> None:
        """Called for connections already over their buffer limit: far over means 1013 now."""
        size = s.conn.write_buffer_size()
        if size > self.metrics.queue_high_water:
            self.metrics.queue_high_water = size
        if size > self.hard_bytes:
            self.slow_consumer(s)

    def slow_consumer(self, s: Session) -> None:
        """Close a reader too far behind (1013): it reconnects and resumes from its last seq."""
        self.metrics.slow_consumers += 1
        self._close(s, CloseCode.TRY_AGAIN_LATER, "slow consumer: reconnect and resume")
