"""Who may do what in which room: every handler's access decision is made here.

A connection acts in a room only after joining it (``joined_room``: send, typing,
read, publish, leave). Joining, creating, resuming and reading a room (``check``,
``readable``) follow one rule, ``authz.room_refusal``: DM rooms belong to their two
users; a token's room grants are a ceiling; a private room needs membership (or an
exact grant, the backend's invitation). Those checks see only the verified identity
(``Session.user``, ``Session.grants``), never a field of a frame. ``dm:`` names are
reserved for direct messages (``check_dm_name``); a connection holds at most
``max_rooms`` rooms (``room_slot``).
"""

from __future__ import annotations

from reference_server.authz import name_refusal, room_refusal
from reference_server.commits import Commits
from reference_server.config import LimitsConfig
from reference_server.errors import Refuse
from reference_server.rooms import Room, RoomDirectory, dm_users
from reference_server.session import Session
from reference_server.store.base import EnsureRoom
from rtbench.protocol import ErrorCode


class Access:
    """Room access checks, the per-connection room limit, and becoming a member."""

    def __init__(self, rooms: RoomDirectory, commits: Commits, limits: LimitsConfig) -> None:
        self.rooms = rooms
        self.commits = commits
        self.max_rooms = limits.max_rooms

    def joined_room(self, s: Session, name: str) -> Room:
        """The room ``s`` is subscribed to, or refuse: act only in rooms you joined."""
        room = self.rooms.cached(name) if name in s.rooms else None
        if room is None:
            raise Refuse(ErrorCode.NOT_MEMBER, f"join room {name!r} first")
        return room

    def check(self, s: Session, room: Room | None, name: str, create: bool = False) -> Room:
        """``room`` if ``s`` may join and read it; with ``create``, a missing room may be made."""
        refusal = room_refusal(s.user or "", s.grants, name, room, create=create)
        if refusal is not None:
            raise Refuse(*refusal)
        return room  # type: ignore[return-value]  # None only when create allowed it

    async def readable(self, s: Session, name: str) -> Room:
        """Load the room (from the store on first use) and ``check`` it.

        What the name alone refuses (others' DMs, rooms outside the grants) is refused
        before the load, so a stream of such requests costs no store reads.
        """
        refusal = name_refusal(s.user or "", s.grants, name)
        if refusal is not None:
            raise Refuse(*refusal)
        return self.check(s, await self.rooms.get(name), name)

    async def resumable(self, s: Session, name: str) -> Room | None:
        """``readable`` for ``hello.resume``; None: one of your own DM rooms that has no
        message yet. A client names every DM room it may get messages in, so that what
        arrives while it is away is replayed; an empty one is nothing to replay, not an
        error (docs/PROTOCOL.md, Resume)."""
        refusal = name_refusal(s.user or "", s.grants, name)
        if refusal is not None:
            raise Refuse(*refusal)
        room = await self.rooms.get(name)
        if room is None and dm_users(name) is not None:
            return None  # name_refusal passed: the user is one of the pair
        return self.check(s, room, name)

    def check_dm_name(self, user: str, name: str) -> tuple[str, str] | None:
        """A join of ``name``: its DM pair if it is one of ``user``'s DM rooms.

        Other ``dm:`` names are refused: a DM room is started by sending a dm.
        """
        pair = dm_users(name)
        if name.startswith("dm:") and (pair is None or user not in pair):
            raise Refuse(
                ErrorCode.FORBIDDEN,
                "rooms starting with dm: are direct-message rooms; send a dm to start one",
            )
        return pair

    def room_slot(self, s: Session, name: str) -> None:
        """Refuse a new room past ``max_rooms`` per connection."""
        if name not in s.rooms and len(s.rooms) >= self.max_rooms:
            raise Refuse(
                ErrorCode.TOO_MANY_ROOMS,
                f"a connection may join at most {self.max_rooms} rooms",
            )

    async def add_member(self, room: Room, user: str) -> None:
        """Make ``user`` a member of an open room, durably, before they are subscribed."""
        await self.commits.write(EnsureRoom(None, room.name, room.private, [user]))
        self.rooms.add_member(room, user)
        self.commits.broker.share_members(room.name, [user])  # other workers' cached rooms
