"""The admin side of the port: ask every client to reconnect, in batches (``/admin/drain``).

A deploy, a rebalance or a node leaving a pool closes its clients on purpose, and how
it does so decides the storm that follows: all at once, every client is back at the
same moment; in batches, the storm is spread over time. Phoenix's socket drainer does
the second on shutdown (``Phoenix.Endpoint``'s ``drainer``: ``batch_size`` clients
at a time, ``batch_interval`` ms apart, within ``shutdown`` ms). ``GET
/admin/drain?batch=N&interval_ms=MS`` does the same here without stopping: every
connection open at the request is closed with 1012 ("reconnect and resume"), N at a
time, one batch every MS, and their clients come back to this same server, which keeps
accepting. ``rtbench run --fault drain:N/MS@T`` calls it (docs/RECOVERY.md).

The answer comes at once (the transports answer HTTP synchronously): how many clients
will be asked and in how many batches. One drain at a time (409 while one runs).

**Who may ask.** Off (404) unless the server has an admin token (``--admin-token``,
``RTBENCH_ADMIN_TOKEN``), then with ``Authorization: Bearer TOKEN`` only (401
otherwise, compared in constant time), or runs ``--insecure-dev`` without one (a
development server already trusts whoever connects). With ``--workers N`` the request
reaches one worker, which drains its own clients.
"""

from __future__ import annotations

import asyncio
import hmac
import math
from collections.abc import Callable, Coroutine
from typing import Any
from urllib.parse import parse_qs, urlsplit

from reference_server.connections import Connections
from reference_server.transport import bearer_token
from rtbench.protocol import CloseCode, encode

HttpAnswer = tuple[int, bytes, str]
DRAIN_REASON = "server asks clients to reconnect: reconnect and resume"
_TEXT = "text/plain; charset=utf-8"
MAX_INTERVAL_MS = 60_000.0


def _text(status: int, message: str) -> HttpAnswer:
    return status, message.encode() + b"\n", _TEXT


class Admin:
    """``/admin/drain`` of one server process."""

    def __init__(
        self,
        connections: Connections,
        spawn: Callable[[Coroutine[Any, Any, None], str], None],
        token: str,
        insecure_dev: bool,
    ) -> None:
        self.connections = connections
        self.spawn = spawn  # the App's: its stop() cancels a drain in progress
        self._token = token.encode() if token else None
        self.enabled = bool(token) or insecure_dev
        self.running = False
        self.drained = 0  # clients asked to reconnect, over the process's life

    def http(self, target: str, authorization: str | None) -> HttpAnswer:
        """Answer ``GET /admin/drain?batch=N&interval_ms=MS``."""
        if not self.enabled:
            return _text(404, "not found (the admin endpoint needs --admin-token)")
        if self._token is not None:
            given = bearer_token(authorization)
            if given is None or not hmac.compare_digest(given.encode(), self._token):
                return _text(401, "/admin/drain needs Authorization: Bearer <admin token>")
        query = parse_qs(urlsplit(target).query)
        try:
            batch = int(query.get("batch", ["0"])[0])
            interval_ms = float(query.get("interval_ms", ["0"])[0])
        except ValueError:
            batch, interval_ms = 0, -1.0
        if batch < 1 or not 0 <= interval_ms <= MAX_INTERVAL_MS:
            return _text(
                400,
                "use /admin/drain?batch=N&interval_ms=MS (N >= 1 clients per batch, "
                f"MS from 0 to {MAX_INTERVAL_MS:.0f} between batches)",
            )
        if self.running:
            return _text(409, "a drain is already in progress")
        if self.connections.draining:
            return _text(409, "the server is shutting down")
        sessions = [s for s in self.connections.sessions if not s.closed]
        batches = math.ceil(len(sessions) / batch)
        self.running = True
        self.spawn(self._drain(sessions, batch, interval_ms / 1000), "rtbench-admin-drain")
        body = {"clients": len(sessions), "batch": batch, "interval_ms": interval_ms}
        body["batches"] = batches
        return 200, encode(body) + b"\n", "application/json"

    async def _drain(self, sessions: list[Any], batch: int, interval_s: float) -> None:
        """Close ``sessions`` with 1012, ``batch`` at a time, ``interval_s`` apart.

        A session that has gone meanwhile is skipped; the batch is not refilled from
        later ones, so the schedule the answer announced is the one that runs.
        """
        close = self.connections.close
        try:
            for start in range(0, len(sessions), batch):
                if start:
                    await asyncio.sleep(interval_s)
                for s in sessions[start : start + batch]:
                    if not s.closed:
                        close(s, CloseCode.SERVICE_RESTART, DRAIN_REASON)
                        self.drained += 1
        finally:
            self.running = False
