"""Checks on the HTTP side of the port: the upgrade's Origin, and who may read /metrics.

**Origin.** A browser lets any web page open a WebSocket to any server and sends the
page's origin with it; the server is the only one that can refuse (cross-site
WebSocket hijacking). With an allow-list, an upgrade whose ``Origin`` is not on it is
refused with HTTP 403 before a socket is handed to the core. A request without
``Origin`` comes from a program, not a browser page, and is let through: its token
is what identifies it. Entries are exact origins (``https://chat.example.com``) or
``*`` patterns (``https://*.example.com``), compared case-insensitively.

**/metrics.** With a metrics token, ``GET /metrics`` needs
``Authorization: Bearer TOKEN`` (compared in constant time) and answers 401
otherwise; ``/healthz`` stays open for load balancers and probes.
"""

from __future__ import annotations

import hmac
import re
from collections.abc import Callable
from urllib.parse import urlsplit

from reference_server.transport import bearer_token

HttpAnswer = tuple[int, bytes, str]  # status, body, content type
METRICS_UNAUTHORIZED: HttpAnswer = (
    401,
    b"/metrics needs Authorization: Bearer <metrics token>\n",
    "text/plain; charset=utf-8",
)


class HttpGuard:
    """The Origin allow-list and the /metrics token of one server."""

    def __init__(self, allowed_origins: list[str], metrics_token: str) -> None:
        self.origins = [o.lower().rstrip("/") for o in allowed_origins]
        exact = {o for o in self.origins if "*" not in o}
        wild = [o for o in self.origins if "*" in o]
        self._exact = frozenset(exact)
        self._wild = (
            re.compile("|".join(".*".join(map(re.escape, w.split("*"))) for w in wild))
            if wild
            else None
        )
        self._metrics_token = metrics_token.encode() if metrics_token else None

    def origin_refusal(self, origin: str | None) -> str | None:
        """Why an upgrade with this ``Origin`` header is refused (None: it is not)."""
        if not self.origins or origin is None:
            return None
        value = origin.strip().lower().rstrip("/")
        if value in self._exact or (self._wild is not None and self._wild.fullmatch(value)):
            return None
        return f"origin {origin[:200]!r} is not allowed to open a WebSocket here\n"

    def metrics_allowed(self, authorization: str | None) -> bool:
        """True when /metrics may be answered to a request with this Authorization header."""
        if self._metrics_token is None:
            return True
        given = bearer_token(authorization)
        return given is not None and hmac.compare_digest(given.encode(), self._metrics_token)

    def wrap(self, http: Callable[[str], HttpAnswer]) -> Callable[[str, str | None], HttpAnswer]:
        """The listener's HTTP answer, with /metrics refused (401) without the token."""
        if self._metrics_token is None:

            def answer(target: str, authorization: str | None = None) -> HttpAnswer:
                return http(target)

            return answer

        def guarded(target: str, authorization: str | None = None) -> HttpAnswer:
            if urlsplit(target).path == "/metrics" and not self.metrics_allowed(authorization):
                return METRICS_UNAUTHORIZED
            return http(target)

        return guarded
