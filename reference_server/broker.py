"""The cross-worker fan-out seam.

One process delivers a committed item to its own subscribers itself
(``Fanout.batch_to_room``). With several worker processes (the multi-worker issue),
each committed batch must also reach the subscribers held by the other workers:
``Commits.on_batch`` hands every batch's framed items to ``Broker.publish``, and a
broker that receives items from another worker hands them to ``deliver``
(``Fanout.deliver_remote``) on this one. The single-process server uses
``LocalBroker``, which has nobody to forward to.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

Items = list[tuple[int, bytes]]  # (seq, framed item) in seq order
Deliver = Callable[[str, Items], None]  # room, items: fan out locally


class Broker(Protocol):
    name: str

    async def start(self, deliver: Deliver) -> None:
        """Begin receiving other workers' items; ``deliver`` fans them out here."""

    def publish(self, room: str, items: Items) -> None:
        """Forward a room's newly durable items to the other workers (never blocks)."""

    async def close(self) -> None: ...

    def health(self) -> dict[str, Any]: ...


class LocalBroker:
    """One process: every subscriber is local, so there is nothing to forward."""

    name = "local"

    async def start(self, deliver: Deliver) -> None:
        return None

    def publish(self, room: str, items: Items) -> None:
        return None

    async def close(self) -> None:
        return None

    def health(self) -> dict[str, Any]:
        return {"status": "ok", "kind": self.name}
