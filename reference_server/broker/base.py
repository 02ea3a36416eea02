"""The cross-worker seam: what one worker must tell the others, and who is online.

One process delivers a committed item to its own subscribers itself
(``Commits.deliver``). With several workers (docs/SCALING.md), each committed
batch must also reach the subscribers held by the other workers, and so must
the frames that are never stored (typing, presence, receipts, live events),
membership changes and ``leave``; and "online" means online on any worker.

The core talks to a ``Broker``; a broker hands what other workers sent to a
``Sink`` on this worker (``cluster.link.Link``). The single-process server uses
``LocalBroker``: nobody to forward to, and presence decided on the spot, exactly
as before there were workers. ``cluster.redis_broker.RedisBroker`` is the real one;
``reference_server.broker.make_broker`` picks one from the configuration.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any, Protocol

Items = list[tuple[int, bytes]]  # (seq, framed item) in seq order


class BrokerError(OSError):
    """The broker cannot be reached at start; one line for the user."""


class Sink(Protocol):
    """This worker's side: where envelopes from other workers are applied."""

    def items(self, room: str, items: Items, again: bool = False) -> None: ...

    def room_frame(
        self, room: str, frame: bytes, exclude_user: str | None, chatty: bool
    ) -> None: ...

    def receipt(self, room: str, user: str, seq: int, frame: bytes) -> None: ...

    def presence(self, user: str, state: str) -> None:
        """Announce online/offline to this worker's sessions (the cluster decided)."""

    def members(self, room: str, added: list[str]) -> None: ...

    def left(self, room: str, user: str) -> None: ...

    def reconnected(self) -> None:
        """The broker is back after an outage: catch loaded rooms up from the store."""

    def held_users(self) -> list[str]:
        """Users with a session here, or gone for less than the presence grace."""


class Broker(Protocol):
    name: str
    available: bool  # False: sends are refused with broker_unavailable
    shared: bool  # other workers exist: worth framing what only they would get

    async def start(self, sink: Sink) -> None:
        """Begin exchanging with the other workers (OSError, one line, if it cannot)."""

    def publish(
        self,
        room: str,
        items: Items,
        published: Callable[[], None] | None = None,
        again: bool = False,
    ) -> None:
        """A room's newly durable items, to the other workers (never blocks).

        ``published`` is called once the items are on their way to every other worker
        (Redis took the PUBLISH); until then they are kept, and sent again after an
        outage. The acks wait for it: an acked item is never one that only a worker
        which died between its commit and its publish knew of (a room's next item would
        reveal the gap, but a DM room's last message has no next).

        ``again``: the items are a resend the store already had, whose ack never came.
        Their worker may have died before publishing them, and a worker that loaded the
        room from the store since holds their seqs without its audience ever having got
        them; so they go out again to the room's audience wherever it is loaded (clients
        drop a seq they have)."""

    def share_frame(
        self, room: str, frame: bytes, exclude_user: str | None = None, chatty: bool = False
    ) -> None:
        """A room frame that is not stored; ``chatty``: only where the room is small."""

    def share_receipt(self, room: str, user: str, seq: int, frame: bytes) -> None: ...

    def share_members(self, room: str, added: list[str]) -> None: ...

    def share_left(self, room: str, user: str) -> None: ...

    def hold(self, user: str) -> None:
        """The user's first session here said hello (online, if they were nowhere)."""

    def release(self, user: str) -> None:
        """The user left this worker past the presence grace (offline, if gone everywhere)."""

    async def online(self, users: Iterable[str]) -> set[str] | None:
        """Which of ``users`` are online anywhere; None: ask this worker only."""

    async def close(self) -> None: ...

    def health(self) -> dict[str, Any]: ...


class LocalBroker:
    """One process: every subscriber is local, so there is nothing to forward."""

    name = "local"
    available = True
    shared = False

    def __init__(self) -> None:
        self._sink: Sink | None = None

    async def start(self, sink: Sink) -> None:
        self._sink = sink

    def publish(
        self,
        room: str,
        items: Items,
        published: Callable[[], None] | None = None,
        again: bool = False,
    ) -> None:
        if published is not None:
            published()  # nobody else to tell

    def share_frame(
        self, room: str, frame: bytes, exclude_user: str | None = None, chatty: bool = False
    ) -> None:
        return None

    def share_receipt(self, room: str, user: str, seq: int, frame: bytes) -> None:
        return None

    def share_members(self, room: str, added: list[str]) -> None:
        return None

    def share_left(self, room: str, user: str) -> None:
        return None

    def hold(self, user: str) -> None:
        if self._sink is not None:
            self._sink.presence(user, "online")

    def release(self, user: str) -> None:
        if self._sink is not None:
            self._sink.presence(user, "offline")

    async def online(self, users: Iterable[str]) -> set[str] | None:
        return None

    async def close(self) -> None:
        return None

    def health(self) -> dict[str, Any]:
        return {"status": "ok", "kind": self.name}
