"""One connection's state in the core, kept small: ten thousand of these sit idle.

No task, timer or queue per connection: the sweeper looks at ``last_rx`` and
``over_since`` for all of them, and the request backlog and replay hold buffers
exist only while they are in use.

Every frame passes the connection's rate limit in ``on_frame``, on arrival and
before it is decoded or queued (reference_server/limits.py): a flood is dropped for
the price of a few float operations a frame, and frames waiting in the backlog have
already paid. The identity (user and room grants) comes from the token only, at
hello or at the handshake (reference_server/auth.py).
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from reference_server.app import App
    from reference_server.auth import Identity, RoomGrants
    from reference_server.transport import Connection

_now = time.monotonic


class Session:
    __slots__ = (
        "allowance",
        "app",
        "auth_failures",
        "backlog",
        "busy",
        "closed",
        "closing_at",
        "conn",
        "data_at",
        "grants",
        "handshake",
        "held",
        "ip",
        "last_rx",
        "opened",
        "over_since",
        "pinged",
        "rooms",
        "send",
        "sid",
        "strikes",
        "user",
    )

    def __init__(self, app: App, conn: Connection) -> None:
        self.app = app
        self.conn = conn
        self.send: Callable[[bytes], None] = conn.sender()
        self.handshake: Identity | None = None  # from a handshake token, until hello
        self.user: str | None = None  # set by hello, from the token: never from a frame
        self.grants: RoomGrants | None = None  # the token's room grants (None: no ceiling)
        self.auth_failures = 0  # hellos refused on this connection
        self.ip: str | None = None  # the address the per-IP limit counted it under
        self.sid = ""
        self.rooms: set[str] = set()  # subscribed rooms
        self.opened = self.last_rx = self.data_at = _now()  # data_at: last data frame
        rate = app.rate
        self.allowance = rate.burst if rate is not None else 0.0  # rate-limit tokens: full
        self.strikes = 0  # frames dropped in this over-limit episode
        self.pinged = False  # a heartbeat ping is outstanding
        self.over_since: float | None = None  # outgoing buffer over its limit since
        self.closing_at: float | None = None  # close sent; cut if not gone by linger
        self.closed = False
        self.busy = False  # an asynchronous request is running; later frames wait
        self.backlog: deque[bytes] | None = None
        # room -> frames that arrived while that room's replay was being written
        self.held: dict[str, list[tuple[int, bytes]]] | None = None

    def __repr__(self) -> str:
        return f"<Session {self.sid or '-'} user={self.user} peer={self.conn.peer}>"

    # ---- called by the transport
    def on_frame(self, data: bytes) -> None:
        if self.closed:  # sent before the client saw our close frame: unacked, it retries
            return
        now = self.last_rx = _now()
        self.pinged = False
        rate = self.app.rate
        if rate is None:
            self.data_at = now
        elif verdict := rate.admit(self, now):  # also moves data_at
            self.app.rate_limited(self, verdict)
            return
        if self.busy:
            self.app.defer(self, data)
        else:
            self.app.handle(self, data)

    def on_activity(self) -> None:
        self.last_rx = _now()
        self.pinged = False

    def on_paused(self) -> None:
        if self.over_since is None:
            self.over_since = _now()

    def on_resumed(self) -> None:
        self.over_since = None

    def on_close(self) -> None:
        self.app.session_closed(self)

    def protocol_close(self, code: int, reason: str) -> None:
        self.app.close(self, code, reason)

    # ---- replay hold: live frames wait until the replay of their room is written
    def hold(self, room: str) -> None:
        if self.held is None:
            self.held = {}
        self.held[room] = []

    def release(self, room: str, after_seq: int) -> list[bytes]:
        """End the hold of ``room``: its held frames, minus stored ones the replay covered."""
        if self.held is None:
            return []
        frames = self.held.pop(room, [])
        if not self.held:
            self.held = None
        return [frame for seq, frame in frames if seq == 0 or seq > after_seq]
