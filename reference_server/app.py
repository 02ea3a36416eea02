"""The application core's wiring and lifecycle: one ``App`` per process, on one loop.

Transport-independent: the transports hand it connections and bytes
(``open_session``, ``http``), and each ``Session`` calls back into it
(``handle``, ``defer``, ``close``, ``session_closed``). Everything else lives in
modules with one job each:

| module | its job |
|---|---|
| ``connections`` | sessions from accept to close; the user -> sessions index |
| ``dispatch`` | frame -> handler: decode, hello gate, errors, per-connection order |
| ``handlers/`` | one class per family of client messages, with its ``routes()`` |
| ``access`` | who may do what in which room (the rule itself: ``authz``) |
| ``limits`` | rate limit per connection, connection limits per user and address |
| ``auth_http`` | the upgrade's Origin allow-list and the /metrics bearer token |
| ``commits`` | group-commit submission, acks and fan-out after each commit, broker publish |
| ``fanout`` | every write to a connection: replies, rooms, batches, slow consumers, remote items |
| ``resume`` | subscribe with a replay (join.since, hello.resume) from the ring or the store |
| ``presence`` | online/offline with a grace period; joined/left |
| ``health`` | ``/healthz`` and ``/metrics`` |
| ``admin`` | ``/admin/drain``: clients asked to reconnect, in batches |
| ``frames`` | encode-once framing of server messages and stored items |
| ``broker`` | what other workers must learn (``LocalBroker``: nobody; ``cluster/``: Redis) |
| ``cluster.sequencer`` | every room's items in seq order, whoever committed them |
| ``cluster.link`` | what other workers announce, applied here |

Construction order follows the dependencies; the one cycle (a user's last
session closing announces presence, which writes through fan-out, which can
close sessions) is closed by ``connections.on_user_gone``.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Callable, Coroutine
from typing import Any
from urllib.parse import urlsplit

from reference_server.access import Access
from reference_server.admin import Admin
from reference_server.auth import Authenticator
from reference_server.auth_http import HttpGuard
from reference_server.broker.base import Broker, LocalBroker
from reference_server.cluster.link import Link
from reference_server.cluster.sequencer import Sequencer
from reference_server.commits import Commits
from reference_server.config import ServerConfig
from reference_server.connections import Connections
from reference_server.dispatch import Dispatcher, merge_routes
from reference_server.fanout import Fanout
from reference_server.frames import encode_item
from reference_server.handlers.hello import HelloHandlers
from reference_server.handlers.history import HistoryPages
from reference_server.handlers.membership import Membership
from reference_server.handlers.messaging import Messaging
from reference_server.handlers.receipts import Receipts
from reference_server.handlers.typing_notices import TypingNotices
from reference_server.health import Health
from reference_server.limits import Admission, ConnectionLimits, RateLimiter, Verdict
from reference_server.metrics import Metrics
from reference_server.presence import Presence
from reference_server.resume import Subscriptions
from reference_server.rooms import RoomDirectory
from reference_server.session import Session
from reference_server.store.base import Store
from reference_server.transport import Connection, Refusal
from rtbench.protocol import ADMIN_DRAIN_PATH

DRAIN_LINGER = 1.0  # seconds the 1012 close frames get to reach the clients


class App:
    """The server core: its parts, wired; and start, drain, stop."""

    # Entry points for the transports and sessions: the parts' bound methods, set
    # once in __init__ so a frame costs no extra call on its way in.
    open_session: Callable[[Connection, str | None], Session]
    http: Callable[[str, str | None], tuple[int, bytes, str]]
    rate_limited: Callable[[Session, Verdict], None]
    handle: Callable[[Session, bytes], None]
    defer: Callable[[Session, bytes], None]
    close: Callable[[Session, int, str], None]
    session_closed: Callable[[Session], None]

    def __init__(
        self,
        config: ServerConfig,
        store: Store,
        auth: Authenticator,
        transport: str,
        broker: Broker | None = None,
        worker: str = "",
    ) -> None:
        """``worker``: "I/N" in a worker of ``rtbench serve --workers N`` (shown in welcome)."""
        self.config = config
        self.limits = limits = config.limits
        timing, replay = config.timing, config.replay
        self.store = store
        self.auth = auth
        self.broker: Broker = broker or LocalBroker()
        self.transport = transport
        self.metrics = metrics = Metrics()
        self.tasks: set[asyncio.Task[Any]] = set()  # every task of the core; stop() ends them
        self.rooms = rooms = RoomDirectory(store, replay.ring_size, encode_item)

        self.rate = RateLimiter.from_config(
            limits.rate_per_s, limits.rate_burst, limits.rate_abuse_frames
        )  # read by every Session.on_frame; None: no rate limit
        per_conn = ConnectionLimits(
            limits.max_connections_per_user,
            limits.max_connections_per_ip,
            limits.connection_limit_exempt,
        )
        self.connections = connections = Connections(self, auth, rooms, metrics, per_conn)
        self.fanout = fanout = Fanout(connections, rooms, metrics, limits, self.broker)
        self.presence = presence = Presence(connections, rooms, fanout, replay, timing, self.broker)
        connections.on_user_gone = presence.departed
        self.commits = commits = Commits(store, rooms, fanout, self.broker, metrics, limits)
        self.access = access = Access(rooms, commits, limits)
        self.subscriptions = subs = Subscriptions(store, rooms, access, fanout, metrics, replay)
        self.sequencer = Sequencer(
            rooms,
            store,
            commits.deliver,
            self.spawn,
            gap_timeout_s=config.cluster.gap_repair_ms / 1000,
            max_replay=replay.max_replay,
            metrics=metrics,
        )
        commits.sequencer = self.sequencer
        rooms.on_cached = self.sequencer.room_cached
        self.link = Link(rooms, connections, fanout, presence, subs, self.sequencer, self.spawn)
        self.sequencer.too_far_behind = self.link.too_far_behind

        self.typing = TypingNotices(access, commits, fanout, timing)
        self.hello = HelloHandlers(config, transport, auth, connections, presence, subs, fanout)
        if worker:
            self.hello.server_name = self.hello.server_name[:-1] + f", worker {worker})"
        handlers = (
            self.hello,
            Messaging(access, commits, fanout, rooms, metrics, limits),
            Membership(store, rooms, access, commits, subs, presence, connections, fanout),
            Receipts(rooms, access, commits, presence, connections, fanout),
            self.typing,
            HistoryPages(store, access, fanout, limits),
        )
        routes = merge_routes(*(h.routes() for h in handlers))
        self.dispatcher = Dispatcher(routes, connections, fanout, metrics, limits, self.tasks)
        security = config.security
        guard = HttpGuard(security.allowed_origins, security.metrics_token)
        self.health = Health(metrics, store, self.broker, connections, rooms, transport)
        self.admin = Admin(connections, self.spawn, security.admin_token, config.insecure_dev)
        self._health_http = guard.wrap(self.health.http)  # /metrics behind its token, if set

        self.open_session = connections.open
        self.session_closed = connections.closed
        self.close = connections.close
        self.handle = self.dispatcher.handle
        self.defer = self.dispatcher.defer
        self.http = self._http
        self.origin_refusal = guard.origin_refusal
        self.admission = Admission.from_config(
            limits.admit_rate, limits.admit_burst, time.monotonic()
        )  # None: every upgrade admitted (the default)
        self.rate_limited = self.dispatcher.rate_limited

    def upgrade_refusal(self, origin: str | None) -> Refusal | None:
        """Refuse an upgrade before a socket exists: a browser Origin not allowed (403),
        or past the admission bucket (503 with Retry-After, whole seconds as HTTP has
        them). Decided here for every transport."""
        refusal = self.origin_refusal(origin)
        if refusal is not None:
            return Refusal(403, refusal.encode())
        if self.admission is None:
            return None
        wait = self.admission.admit(time.monotonic())
        if not wait:
            return None
        self.metrics.admission_refused += 1
        return Refusal(
            503,
            b"too many connections being accepted: try again later\n",
            (("Retry-After", str(max(1, math.ceil(wait)))),),
        )

    def _http(self, target: str, authorization: str | None = None) -> tuple[int, bytes, str]:
        """A plain GET: the admin endpoint, or /healthz and /metrics."""
        if urlsplit(target).path == ADMIN_DRAIN_PATH:
            self.metrics.handshakes += 1
            return self.admin.http(target, authorization)
        return self._health_http(target, authorization)

    async def start(self) -> None:
        """Open the store (its batches come back to ``commits``) and the broker."""
        await self.store.open(self.commits.on_batch)
        await self.broker.start(self.link)

    def spawn(self, coro: Coroutine[Any, Any, None], name: str) -> None:
        """Run a background job of the core (gap repair, catch-up); ``stop`` cancels it."""
        task = asyncio.get_running_loop().create_task(coro, name=name)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    def expire(self, now: float) -> None:
        """Called by the sweeper: end stale typing, announce users gone past the grace."""
        self.typing.expire(now)
        self.presence.expire(now)

    async def drain(self) -> bool:
        """Graceful shutdown: finish in-flight commits (acks go out), close all with 1012.

        False if the store did not finish within ``drain_timeout_ms``.
        """
        self.connections.draining = True
        flushed = True
        try:
            async with asyncio.timeout(self.config.timing.drain_timeout_ms / 1000):
                await self.store.flush()
        except TimeoutError:
            flushed = False
        await self.connections.close_all(DRAIN_LINGER)
        return flushed

    async def stop(self) -> None:
        """Cancel every task of the core, then close the store and the broker."""
        for task in list(self.tasks):
            task.cancel()
        if self.tasks:
            await asyncio.gather(*self.tasks, return_exceptions=True)
        await self.store.close()
        await self.broker.close()
