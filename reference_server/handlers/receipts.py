"""read: move a member's read marker, durably, and tell the room.

The marker is stored through the group commit (unawaited, so a read costs no
task); when it commits, the ``receipt`` goes to the room, or in a room too big
for per-member chatter only to the reader's own sessions.
"""

from __future__ import annotations

from reference_server.access import Access
from reference_server.commits import Commits
from reference_server.connections import Connections
from reference_server.dispatch import Routes
from reference_server.errors import Refuse
from reference_server.fanout import Fanout
from reference_server.frames import framed
from reference_server.presence import Presence
from reference_server.rooms import RoomDirectory
from reference_server.session import Session
from reference_server.store.base import MarkRead
from rtbench.protocol import ErrorCode
from rtbench.protocol import messages as p


class Receipts:
    """Read markers and receipt frames."""

    def __init__(
        self,
        rooms: RoomDirectory,
        access: Access,
        commits: Commits,
        presence: Presence,
        connections: Connections,
        fanout: Fanout,
    ) -> None:
        self.rooms = rooms
        self.access = access
        self.commits = commits
        self.presence = presence
        self.connections = connections
        self.fanout = fanout
        commits.on_commit(MarkRead, self.read_done)

    def routes(self) -> Routes:
        return {p.Read: self.on_read}

    def on_read(self, s: Session, m: p.Read) -> None:
        room = self.access.joined_room(s, m.room)
        if m.seq > room.seq:
            raise Refuse(
                ErrorCode.BAD_RANGE, f"read seq {m.seq} is past room {room.name!r}'s seq {room.seq}"
            )
        # s.user: set by hello, which the dispatcher requires before any read
        self.commits.submit(MarkRead((s, m.id), room.name, s.user, m.seq))  # type: ignore[arg-type]

    def read_done(self, op: MarkRead) -> None:
        """The marker committed (or failed): answer the reader, or tell the room."""
        s, rid = op.owner
        if op.error is not None:
            message = f"not stored: {op.error}"
            self.fanout.error(s, ErrorCode.STORE_UNAVAILABLE, message, rid, "read")
            return
        room = self.rooms.cached(op.room)
        if room is None:
            return
        read = max(room.members.get(op.user, 0), op.seq)
        if op.user in room.members:
            room.members[op.user] = read
        frame = framed(p.Receipt(room=op.room, user=op.user, seq=read))
        self.commits.broker.share_receipt(op.room, op.user, read, frame)
        if room.dm is not None or self.presence.small(room):
            self.fanout.to_room(room, frame)
        else:  # big room: only the reader's own connections learn of it
            for other in self.connections.users.get(op.user, ()):
                if op.room in other.rooms and not other.closed:
                    other.send(frame)
