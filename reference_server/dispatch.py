"""From a text frame to its handler: decode, the hello gate, errors, request order.

Handlers are plain callables ``handler(session, message)`` listed by message type
(each ``handlers/`` class gives its ``routes()``). One that can finish at once
returns None: the hot path (send, typing, read, publish, ping) never leaves the
transport's callback. One that must wait (for the store, a room load) returns a
coroutine, which runs as one owned task; the connection's later frames wait in a
bounded backlog behind it, so a client's frames are always handled in order.

A ``Refuse`` from a handler becomes an ``error`` frame answering the request;
any other exception is a bug: logged, answered with ``internal``, and the
connection and server go on. Invalid UTF-8 closes with 1007.

Rate limits: every frame passes the connection's token bucket on arrival
(``Session.on_frame``, before it is decoded or queued); a refused frame comes
here, to ``rate_limited``, which warns once per episode and closes persistent
abusers with 1008 (reference_server/limits.py).
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Callable, Coroutine, Mapping
from typing import Any

from reference_server.config import LimitsConfig
from reference_server.connections import Connections
from reference_server.errors import Refuse
from reference_server.fanout import Fanout
from reference_server.limits import RateLimiter, Verdict
from reference_server.metrics import Metrics
from reference_server.session import Session
from reference_server.store.base import StoreError
from rtbench.protocol import CloseCode, ErrorCode, FrameError, decode_client
from rtbench.protocol import messages as p

log = logging.getLogger("rtbench.server")

Handler = Callable[[Session, Any], Coroutine[Any, Any, None] | None]
Routes = Mapping[type, Handler]
CLIENT_MESSAGES: frozenset[type] = frozenset(p.ClientMessage.__args__)


def merge_routes(*tables: Routes) -> dict[type, Handler]:
    """One routing table from each handler group's; every client message has one handler."""
    routes: dict[type, Handler] = {}
    for table in tables:
        for kind, handler in table.items():
            if kind in routes:
                raise ValueError(f"two handlers for {kind.__name__}")
            routes[kind] = handler
    missing = CLIENT_MESSAGES - routes.keys()
    if missing:
        raise ValueError(f"no handler for {', '.join(sorted(k.__name__ for k in missing))}")
    return routes


class Dispatcher:
    """Runs each frame of a session through its handler, in order."""

    def __init__(
        self,
        routes: Routes,
        connections: Connections,
        fanout: Fanout,
        metrics: Metrics,
        limits: LimitsConfig,
        tasks: set[asyncio.Task[Any]],
    ) -> None:
        self.routes = dict(routes)
        self.connections = connections
        self.fanout = fanout
        self.metrics = metrics
        self.max_backlog = limits.max_backlog_frames
        rate = RateLimiter(limits.rate_per_s, limits.rate_burst, limits.rate_abuse_frames)
        self.rate_message = rate.describe()
        self.tasks = tasks  # owned by the App, cancelled by App.stop
        self._close = connections.close
        self._error = fanout.error

    def handle(self, s: Session, data: bytes) -> None:
        """One text frame from ``s`` (the transport's callback, or the backlog)."""
        self.metrics.frames_in += 1
        if self.connections.draining or s.closed:
            return  # unacked: the client retries the same cid after reconnecting
        try:
            msg = decode_client(data)
        except FrameError as exc:
            if exc.code is ErrorCode.BAD_JSON and not _is_utf8(data):
                self._close(s, CloseCode.INVALID_PAYLOAD, "text frame is not valid UTF-8")
                return
            self._error(s, exc.code, exc.message, exc.request_id, exc.ref)
            return
        except UnicodeDecodeError:  # msgspec checks UTF-8 inside strings as it decodes them
            self._close(s, CloseCode.INVALID_PAYLOAD, "text frame is not valid UTF-8")
            return
        kind = type(msg)
        if s.user is None and kind is not p.Hello:
            self._error(
                s, ErrorCode.HELLO_REQUIRED, "send hello first", msg.id, kind.__struct_config__.tag
            )
            return
        try:
            result = self.routes[kind](s, msg)
        except Refuse as exc:
            self._error(s, exc.code, exc.message, msg.id, kind.__struct_config__.tag)
            return
        except Exception:  # a bug: say so, keep the connection and the server going
            log.exception("internal error handling %s", kind.__struct_config__.tag)
            self._error(s, ErrorCode.INTERNAL, "internal server error", msg.id)
            return
        if result is not None:
            self._spawn(s, result, msg)

    def rate_limited(self, s: Session, verdict: Verdict) -> None:
        """A frame the rate limit dropped: warn once per episode, close persistent abuse."""
        self.metrics.rate_limited += 1
        if verdict is Verdict.WARN:
            self._error(s, ErrorCode.RATE_LIMITED, self.rate_message)
        elif verdict is Verdict.CLOSE:
            self._close(s, CloseCode.POLICY_VIOLATION, "rate limit exceeded persistently")

    def defer(self, s: Session, data: bytes) -> None:
        """A frame arrived while an earlier request of this connection is still running."""
        if s.backlog is None:
            s.backlog = deque()
        if len(s.backlog) >= self.max_backlog:
            self._close(s, CloseCode.POLICY_VIOLATION, "too many requests queued")
            return
        s.backlog.append(data)

    def _spawn(self, s: Session, coro: Coroutine[Any, Any, None], msg: Any) -> None:
        s.busy = True
        task = asyncio.get_running_loop().create_task(self._run(s, coro, msg))
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def _run(self, s: Session, coro: Coroutine[Any, Any, None], msg: Any) -> None:
        ref = type(msg).__struct_config__.tag
        try:
            await coro
        except Refuse as exc:
            self._error(s, exc.code, exc.message, msg.id, ref)
        except StoreError as exc:  # a read the store could not serve (PostgreSQL down)
            self._error(s, ErrorCode.STORE_UNAVAILABLE, str(exc), msg.id, ref)
        except Exception:
            log.exception("internal error handling %s", ref)
            self._error(s, ErrorCode.INTERNAL, "internal server error", msg.id, ref)
        finally:
            s.busy = False
        while s.backlog and not s.busy and not s.closed:
            self.handle(s, s.backlog.popleft())
        if not s.backlog:
            s.backlog = None


def _is_utf8(data: bytes) -> bool:
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True
