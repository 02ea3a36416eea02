"""join, leave, members, rooms: becoming part of a room, and what you belong to.

A join creates an unknown room (private rooms with their member list), makes a
new member of an open room durable first, then subscribes and replays what the
connection missed (``resume.Subscriptions``). Leaving a group room removes the
membership durably and unsubscribes every session of that user; a DM room can
only be unsubscribed from.

Who may join, create or read a room is decided in ``access`` (``check``).
"""

from __future__ import annotations

from reference_server.access import Access
from reference_server.commits import Commits
from reference_server.connections import Connections
from reference_server.dispatch import Routes
from reference_server.errors import Refuse
from reference_server.fanout import Fanout
from reference_server.presence import Presence
from reference_server.resume import Subscriptions
from reference_server.rooms import RoomDirectory
from reference_server.session import Session
from reference_server.store.base import EnsureRoom, RemoveMember, Store
from rtbench.protocol import ErrorCode
from rtbench.protocol import messages as p


class Membership:
    """Room membership and subscription requests."""

    def __init__(
        self,
        store: Store,
        rooms: RoomDirectory,
        access: Access,
        commits: Commits,
        subscriptions: Subscriptions,
        presence: Presence,
        connections: Connections,
        fanout: Fanout,
    ) -> None:
        self.store = store
        self.rooms = rooms
        self.access = access
        self.commits = commits
        self.subscriptions = subscriptions
        self.presence = presence
        self.connections = connections
        self.fanout = fanout

    def routes(self) -> Routes:
        return {
            p.Join: self.on_join,
            p.Leave: self.on_leave,
            p.Members: self.on_members,
            p.Rooms: self.on_rooms,
        }

    async def on_join(self, s: Session, m: p.Join) -> None:
        name, user = m.room, s.user
        assert user is not None
        pair = self.access.check_dm_name(user, name)
        self.access.room_slot(s, name)
        room = await self.rooms.get(name)
        if room is None:
            if pair is not None:
                raise Refuse(ErrorCode.UNKNOWN_ROOM, f"no direct messages in {name!r} yet")
            room = self.rooms.cached(name)
        if room is None:
            self.access.check(s, None, name, create=True)  # within the token's grants
            members = sorted({user, *(m.members or ())}) if m.private else [user]
            room = self.rooms.create(name, m.private, members)
            await self.commits.write(EnsureRoom(None, name, m.private, members))
            self.commits.broker.share_members(name, members)  # a worker that raced us to it
        else:
            self.access.check(s, room, name)
            if room.dm is None and user not in room.members:
                await self.access.add_member(room, user)
        entering = name not in s.rooms and not any(
            name in other.rooms for other in self.connections.users.get(user, ()) if other is not s
        )
        await self.subscriptions.attach_async(s, room, m.since, m.id, False)
        if entering:
            self.presence.joined(room, user, exclude=s)

    async def on_leave(self, s: Session, m: p.Leave) -> None:
        name, user = m.room, s.user
        assert user is not None
        room = self.access.joined_room(s, name)
        if room.dm is not None:  # a DM cannot be left, only unsubscribed from
            self.subscriptions.unsubscribe(s, room)
        else:
            await self.commits.write(RemoveMember(None, name, user))
            self.rooms.remove_member(room, user)
            self.commits.broker.share_left(name, user)  # their sessions on other workers too
            for other in list(self.connections.users.get(user, ())):
                if name in other.rooms:
                    self.subscriptions.unsubscribe(other, room)
                    if other is not s:
                        self.fanout.reply(other, p.Left(room=name))
            self.presence.left(room, user)
        self.fanout.reply(s, p.Left(id=m.id, room=name))

    async def on_members(self, s: Session, m: p.Members) -> None:
        room = await self.access.readable(s, m.room)
        online = await self.presence.online_among(room.members)
        members = [p.Member(user=u, online=u in online) for u in sorted(room.members)]
        self.fanout.reply(s, p.MemberList(id=m.id, room=room.name, members=members))

    async def on_rooms(self, s: Session, m: p.Rooms) -> None:
        user = s.user
        assert user is not None
        infos = []
        for row in await self.store.user_rooms(user):
            seq, read = row.seq, row.read
            room = self.rooms.cached(row.room)
            if room is not None:
                seq, read = max(seq, room.seq), max(read, room.members.get(user, 0))
            infos.append(
                p.RoomInfo(
                    room=row.room,
                    seq=seq,
                    read=read,
                    unread=max(seq - read, 0),
                    private=row.private,
                )
            )
        self.fanout.reply(s, p.RoomList(id=m.id, rooms=infos))
