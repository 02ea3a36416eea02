"""hello (who this connection is, the welcome, resume) and ping.

Identity comes from ``hello.token`` or the handshake's token (checked once at
accept, by ``Connections.open``), through ``auth.Authenticator``: the user id and
the token's room grants, which ``access`` applies. A refused hello is answered
``unauthorized`` and the client may try again (a refreshed token), up to
``MAX_HELLO_FAILURES``; then the connection is closed 4401. A user already holding
``max_connections_per_user`` connections is closed 4429.
"""

from __future__ import annotations

from collections.abc import Coroutine
from typing import Any

from reference_server.auth import Authenticator, AuthError, Identity
from reference_server.config import ServerConfig
from reference_server.connections import Connections
from reference_server.dispatch import Routes
from reference_server.errors import Refuse
from reference_server.fanout import Fanout
from reference_server.frames import framed
from reference_server.presence import Presence
from reference_server.resume import Subscriptions
from reference_server.session import Session
from rtbench import __version__
from rtbench.protocol import CloseCode, ErrorCode
from rtbench.protocol import messages as p

MAX_HELLO_FAILURES = 5  # refused hellos on one connection before it is closed 4401


class HelloHandlers:
    """Turns a connection into a user's session, and answers pings."""

    def __init__(
        self,
        config: ServerConfig,
        transport: str,
        auth: Authenticator,
        connections: Connections,
        presence: Presence,
        subscriptions: Subscriptions,
        fanout: Fanout,
    ) -> None:
        self.auth = auth
        self.connections = connections
        self.presence = presence
        self.subscriptions = subscriptions
        self.fanout = fanout
        self.server_name = f"rtbench-reference/{__version__} ({transport})"
        timing, limits = config.timing, config.limits
        self.heartbeat = p.HeartbeatInfo(
            interval_ms=timing.heartbeat_interval_ms, timeout_ms=timing.heartbeat_timeout_ms
        )
        self.limits_info = p.Limits(
            max_frame_bytes=limits.max_frame_bytes,
            max_body_chars=limits.max_body_chars,
            max_rooms=limits.max_rooms,
            max_history=limits.max_history,
        )

    def routes(self) -> Routes:
        return {p.Hello: self.on_hello, p.Ping: self.on_ping}

    def on_hello(self, s: Session, m: p.Hello) -> Coroutine[Any, Any, None] | None:
        if s.user is not None:
            raise Refuse(ErrorCode.ALREADY_HELLO, "this connection already said hello")
        identity = self._identify(s, m)
        user = identity.user
        if self.connections.user_full(user):
            self.connections.close(
                s, CloseCode.TOO_MANY_CONNECTIONS, f"too many connections for user {user}"
            )
            return None
        s.grants = identity.grants
        if self.connections.register(s, user):
            self.presence.arrived(user)
        welcome = framed(
            p.Welcome(
                id=m.id,
                session=s.sid,
                user=user,
                server=self.server_name,
                heartbeat=self.heartbeat,
                limits=self.limits_info,
            )
        )
        if not m.resume:
            self.fanout.write(s, [welcome])
            return None
        # the welcome leaves in the same write as the resumed rooms the ring serves
        return self.subscriptions.resume(s, m.id, m.resume, [welcome])

    def _identify(self, s: Session, m: p.Hello) -> Identity:
        """The hello's identity (hello.token wins over the handshake's), or refuse."""
        if m.token is None and s.handshake is not None:
            return s.handshake
        try:
            if m.token is None:
                raise AuthError("no token: send hello.token, Authorization: Bearer or ?token=")
            return self.auth.identify(m.token)
        except AuthError as exc:
            s.auth_failures += 1
            if s.auth_failures >= MAX_HELLO_FAILURES:
                self.connections.close(s, CloseCode.UNAUTHORIZED, f"{exc} (too many tries)")
            raise Refuse(ErrorCode.UNAUTHORIZED, str(exc)) from None

    def on_ping(self, s: Session, m: p.Ping) -> None:
        self.fanout.reply(s, p.Pong(id=m.id, ts=m.ts))
