"""Subscribing a connection to a room, with a replay of what it missed.

``join.since`` and ``hello.resume`` both end here. A gap inside the room's ring
(its newest frames, already encoded) is replayed synchronously in one write
with the ``joined`` frame; an older one (up to ``max_replay``) is read from the
store while the room's live frames for this connection are held back
(``Session.hold``), then sent after the replay minus any it covered: no gap, no
duplicate. A gap past ``max_replay`` is not replayed: ``recovered=false``.

Several workers: a replay reads the shared store the same way; live items from
other workers reach ``Fanout.batch_to_room`` in seq order (``cluster.sequencer``)
and are held like local ones.
"""

from __future__ import annotations

from collections.abc import Coroutine
from typing import Any

from reference_server.access import Access
from reference_server.config import ReplayConfig
from reference_server.errors import Refuse
from reference_server.fanout import Fanout
from reference_server.frames import encode_item, framed
from reference_server.metrics import Metrics
from reference_server.rooms import Room, RoomDirectory
from reference_server.session import Session
from reference_server.store.base import Store
from rtbench.protocol import ErrorCode
from rtbench.protocol import messages as p


class Subscriptions:
    """Attach sessions to rooms (join, resume) and detach them (leave)."""

    def __init__(
        self,
        store: Store,
        rooms: RoomDirectory,
        access: Access,
        fanout: Fanout,
        metrics: Metrics,
        replay: ReplayConfig,
    ) -> None:
        self.store = store
        self.rooms = rooms
        self.access = access
        self.fanout = fanout
        self.metrics = metrics
        self.max_replay = replay.max_replay

    def resume(
        self, s: Session, rid: Any, resume: dict[str, int], first: list[bytes]
    ) -> Coroutine[Any, Any, None] | None:
        """``hello.resume``: re-subscribe at once where the ring covers the gap.

        ``first`` (the ``welcome``) and the replays and ``joined`` frames of every room
        served from the ring leave in one write: in a reconnect storm the server's CPU per
        client is bound by syscalls, and one write instead of one per room plus one for
        the welcome is a syscall and a wakeup of the client fewer (reports/reconnect-cost.md).
        Nothing can come between the frames: all of it happens in this one callback.

        Returns a coroutine for the rooms that need the store (not loaded, a new
        member, or a gap older than the ring), or None when everything was served.
        """
        frames = first
        later: list[tuple[str, int]] = []
        for name, since in resume.items():
            room = self.rooms.cached(name)
            if (
                room is None
                or (room.dm is None and s.user not in room.members)
                or not self.replayable_from_ring(room, since)
            ):
                later.append((name, since))
                continue
            try:
                self.access.room_slot(s, name)
                self.access.check(s, room, name)
            except Refuse as exc:
                self.fanout.write(s, frames)  # what came before, in order
                frames = []
                self.fanout.error(s, exc.code, f"resume {name!r}: {exc.message}", rid, "hello")
                continue
            self.attach_frames(s, room, since, None, True, frames)
        if frames:
            self.fanout.write(s, frames)
        return self._resume_rest(s, rid, later) if later else None

    async def _resume_rest(self, s: Session, rid: Any, rooms: list[tuple[str, int]]) -> None:
        for name, since in rooms:
            if s.closed:
                return
            try:
                self.access.room_slot(s, name)
                room = await self.access.resumable(s, name)
                if room is None:  # your DM room, no message in it yet: nothing missed
                    self.fanout.write(s, [self._joined_empty(name)])
                    continue
                if room.dm is None and s.user not in room.members:
                    # s.user: a resume is a hello's, which has set it
                    await self.access.add_member(room, s.user)  # type: ignore[arg-type]
                await self.attach_async(s, room, since, None, True)
            except Refuse as exc:
                self.fanout.error(s, exc.code, f"resume {name!r}: {exc.message}", rid, "hello")

    def replayable_from_ring(self, room: Room, since: int | None) -> bool:
        """True if attaching needs no store read (nothing missed, in the ring, or too old)."""
        return (
            since is None
            or since >= room.seq
            or since + 1 >= room.ring_first
            or room.seq - since > self.max_replay
        )

    def attach(self, s: Session, room: Room, since: int | None, rid: Any, resumed: bool) -> None:
        """Subscribe and replay from the ring, synchronously (caller checked it can)."""
        frames: list[bytes] = []
        self.attach_frames(s, room, since, rid, resumed, frames)
        # the replay and its `joined` leave in one write: a reconnect storm is syscall-bound
        self.fanout.write(s, frames)

    def attach_frames(
        self,
        s: Session,
        room: Room,
        since: int | None,
        rid: Any,
        resumed: bool,
        frames: list[bytes],
    ) -> None:
        """Subscribe ``s`` and add the ring's replay and the ``joined`` to ``frames``, which
        the caller writes before it returns to the loop (no live frame can come between)."""
        s.rooms.add(room.name)
        room.subs.add(s)
        replayed = 0
        recovered = True
        if since is not None and since < room.seq:
            if room.seq - since > self.max_replay:
                recovered = False
            else:
                replay = room.frames(since + 1, room.seq)
                replayed = len(replay)
                frames += replay
        frames.append(self._joined(s, room, rid, replayed, resumed, recovered))

    async def attach_async(
        self, s: Session, room: Room, since: int | None, rid: Any, resumed: bool
    ) -> None:
        """Subscribe and replay, reading the store for a gap older than the ring.

        Live frames for the room are held for this connection while the replay is
        read and written, then sent if newer than the replay: no gap, no duplicate.
        """
        if self.replayable_from_ring(room, since):
            self.attach(s, room, since, rid, resumed)
            return
        assert since is not None
        name, upto = room.name, room.seq
        s.rooms.add(name)
        room.subs.add(s)
        s.hold(name)
        try:
            items = await self.store.load_items(name, since, upto)
        except Exception as exc:
            self.unsubscribe(s, room)
            raise Refuse(ErrorCode.STORE_UNAVAILABLE, f"cannot read history: {exc}") from None
        if s.closed:
            return
        frames = [encode_item(item) for item in items]
        frames += s.release(name, upto)
        frames.append(self._joined(s, room, rid, len(items), resumed, True))
        self.fanout.write(s, frames)

    def unsubscribe(self, s: Session, room: Room) -> None:
        """Stop a session's live traffic from ``room`` (and drop what it held for it)."""
        s.rooms.discard(room.name)
        room.subs.discard(s)
        if s.held is not None:
            s.held.pop(room.name, None)
            if not s.held:
                s.held = None

    def _joined_empty(self, name: str) -> bytes:
        """``joined`` of a resumed DM room that holds no message yet (seq 0, both users)."""
        self.metrics.resumes += 1
        joined = p.Joined(room=name, seq=0, private=True, members=2, replayed=0, resumed=True)
        return framed(joined)

    def _joined(
        self, s: Session, room: Room, rid: Any, replayed: int, resumed: bool, recovered: bool
    ) -> bytes:
        """The ``joined`` frame that ends a join or a resumed room."""
        self.metrics.replayed += replayed
        if resumed:
            self.metrics.resumes += 1
        return framed(
            p.Joined(
                id=rid,
                room=room.name,
                seq=room.seq,
                private=room.private,
                members=len(room.members),
                read=room.members.get(s.user or "", 0),
                replayed=replayed,
                resumed=resumed,
                recovered=recovered,
            ),
        )
