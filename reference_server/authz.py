"""Room access: the one rule that says who may join, read, or resume a room.

Every handler that touches a room on a user's behalf (join, resume, history,
members) asks ``room_refusal`` first; the frames that follow (messages, typing,
receipts, presence) go only to connections that passed it, so this function is
what keeps private rooms and direct messages private. It is pure: it sees the
verified identity (user and token grants) and the room as loaded, and returns
why not, or None.

The rules, in order:

1. ``dm:A:B`` rooms belong to A and B; nobody else, whatever their grants.
2. A token with ``rooms`` grants touches only rooms a grant matches (a ceiling).
3. A room that does not exist may be created by ``join`` (within the grants).
4. A private room needs membership: listed at its creation, or an exact grant of
   its name (the backend's invitation). A public room is open to everyone.
"""

from __future__ import annotations

from typing import Protocol

from reference_server.auth import RoomGrants
from reference_server.rooms import dm_users
from rtbench.protocol import ErrorCode

Refusal = tuple[ErrorCode, str]


class RoomView(Protocol):
    """What access control needs of a loaded room."""

    dm: tuple[str, str] | None
    private: bool
    members: dict[str, int]


def name_refusal(user: str, grants: RoomGrants | None, name: str) -> Refusal | None:
    """Rules 1 and 2: what can be refused from the room's name alone, before loading it."""
    if name.startswith("dm:"):
        pair = dm_users(name)
        if pair is None:
            return ErrorCode.UNKNOWN_ROOM, f"room {name!r} does not exist"
        if user not in pair:
            return ErrorCode.FORBIDDEN, f"{name!r} is a direct-message room of others"
        return None
    if grants is not None and not grants.allows(name):
        return ErrorCode.FORBIDDEN, f"your token does not grant room {name!r}"
    return None


def room_refusal(
    user: str,
    grants: RoomGrants | None,
    name: str,
    room: RoomView | None,
    *,
    create: bool = False,
) -> Refusal | None:
    """Why ``user`` may not touch room ``name`` (None: they may).

    ``room`` is None when it does not exist; ``create`` says the request may create
    it (a ``join``), otherwise a missing room is ``unknown_room``.
    """
    refusal = name_refusal(user, grants, name)
    if refusal is not None:
        return refusal
    if room is None:
        if name.startswith("dm:"):
            return ErrorCode.UNKNOWN_ROOM, f"no direct messages in {name!r} yet"
        return None if create else (ErrorCode.UNKNOWN_ROOM, f"room {name!r} does not exist")
    if room.private and user not in room.members and not invited(user, grants, name, room):
        return ErrorCode.FORBIDDEN, f"room {name!r} is private and you are not a member"
    return None


def invited(user: str, grants: RoomGrants | None, name: str, room: RoomView) -> bool:
    """True when the user gets into a private room by an exact grant, not by membership."""
    return room.private and user not in room.members and grants is not None and grants.invites(name)
