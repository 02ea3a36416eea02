"""Who is connected: sessions from accept to close, and the user -> sessions index.

A connection is admitted here (a handshake token is checked once, a draining
server turns it away with 1012), becomes a user's session at hello, and is
detached here when it closes: it leaves every room's subscribers at once, and
when a user's last session goes, presence learns of it (``on_user_gone``).

Connection limits (reference_server/limits.py) are checked where a connection
becomes countable: its source address in ``open``, its user in ``user_full``
(asked by hello before ``register``); past either it is closed with 4429, and
``_detach`` gives the address's count back.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import secrets
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from reference_server.auth import Authenticator, AuthError
from reference_server.limits import ConnectionLimits
from reference_server.metrics import Metrics
from reference_server.rooms import RoomDirectory
from reference_server.session import Session
from rtbench.protocol import CloseCode

if TYPE_CHECKING:
    from reference_server.app import App
    from reference_server.transport import Connection

_now = time.monotonic
RESTART_REASON = "server restarting: reconnect and resume"


def _nobody(user: str) -> None:
    return None


class Connections:
    """Every session of this process, and the sessions of each user who said hello."""

    def __init__(
        self,
        owner: App,
        auth: Authenticator,
        rooms: RoomDirectory,
        metrics: Metrics,
        limits: ConnectionLimits | None = None,
    ) -> None:
        self.owner = owner  # what each Session calls back (frames, closes)
        self.auth = auth
        self.limits = limits or ConnectionLimits(0, 0, [])
        self.rooms = rooms
        self.metrics = metrics
        self.sessions: set[Session] = set()
        self.users: dict[str, list[Session]] = {}  # user -> sessions that said hello
        self.closing: set[Session] = set()  # close sent, socket not gone yet
        self.draining = False  # set by App.drain: refuse new connections and frames
        self.on_user_gone: Callable[[str], None] = _nobody  # wired to presence
        self._all_closed = asyncio.Event()
        self._boot = secrets.token_hex(3)
        self._session_ids = itertools.count(1)

    def open(self, conn: Connection, token: str | None) -> Session:
        """A transport accepted a WebSocket: its session, already closed if turned away."""
        m = self.metrics
        m.connections_opened += 1
        m.handshakes += 1
        s = Session(self.owner, conn)
        self.sessions.add(s)
        if self.draining:
            self.close(s, CloseCode.SERVICE_RESTART, RESTART_REASON)
            return s
        allowed, s.ip = self.limits.open(conn.peer)
        if not allowed:
            limit = self.limits.per_ip
            self.close(
                s, CloseCode.TOO_MANY_CONNECTIONS, f"more than {limit} connections from here"
            )
        elif token is not None:
            try:
                s.handshake = self.auth.identify(token)  # checked once, used at hello
            except AuthError as exc:
                self.close(s, CloseCode.UNAUTHORIZED, str(exc))
        return s

    def user_full(self, user: str) -> bool:
        """True when ``user`` already holds as many connections as one user may."""
        return self.limits.user_full(len(self.users.get(user, ())))

    def register(self, s: Session, user: str) -> bool:
        """Hello succeeded: ``s`` is now ``user``'s. True if it is their only session."""
        s.user = user
        s.handshake = None
        s.sid = f"{self._boot}-{next(self._session_ids)}"
        self.metrics.hellos += 1
        sessions = self.users.get(user)
        if sessions is None:
            self.users[user] = [s]
            return True
        sessions.append(s)
        return False

    def closed(self, s: Session) -> None:
        """The transport says the socket is gone (peer closed, error, or our close)."""
        s.closed = True
        self.closing.discard(s)
        if not self.closing:
            self._all_closed.set()
        self._detach(s)

    def close(self, s: Session, code: int, reason: str) -> None:
        """Close a session with ``code``; it leaves every room at once."""
        if s.closed:
            return
        s.closed = True
        s.closing_at = _now()
        self.metrics.closes[int(code)] += 1
        self.closing.add(s)
        s.conn.close(int(code), reason)
        self._detach(s)

    def _detach(self, s: Session) -> None:
        if s not in self.sessions:
            return
        self.sessions.discard(s)
        if s.ip is not None:
            self.limits.close(s.ip)
            s.ip = None
        for name in s.rooms:
            room = self.rooms.cached(name)
            if room is not None:
                room.subs.discard(s)
        s.held = None
        s.backlog = None
        user = s.user
        if user is None:
            return
        others = self.users.get(user)
        if others is not None and s in others:
            others.remove(s)
            if not others:
                del self.users[user]
                self.on_user_gone(user)

    async def close_all(self, linger: float) -> None:
        """Drain: close everyone with 1012, give the close frames ``linger`` s, cut the rest."""
        for s in list(self.sessions):
            self.close(s, CloseCode.SERVICE_RESTART, RESTART_REASON)
        if self.closing:
            self._all_closed.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(linger):  # let the close frames reach the clients
                    await self._all_closed.wait()
        for s in list(self.closing):
            s.conn.abort()
