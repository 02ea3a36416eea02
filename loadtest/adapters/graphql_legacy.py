"""Adapter for the legacy GraphQL-over-WebSocket protocol: subscriptions-transport-ws.

Apollo's older protocol (https://github.com/apollographql/subscriptions-transport-ws/
blob/master/PROTOCOL.md), still spoken by many servers. Mind the name: its subprotocol
is ``graphql-ws``, the same word as the newer library's package but not its protocol
(that one is ``graphql-transport-ws``: :mod:`loadtest.adapters.graphql_ws`). The flow is
the same with other message names: ``connection_init`` / ``connection_ack``, ``start``
an operation, ``data`` carries its results, ``stop`` / ``complete`` end it, ``error``
and ``connection_error`` refuse. There is no ping: the server's ``ka`` (keep-alive) is
a one-way heartbeat the client only counts (``events_by_type.ka``), so the adapter has
no round trip. Options, defaults and accounting are the graphql-ws adapter's.
"""

from __future__ import annotations

from typing import Any

from loadtest.adapters.base import Event, Notice, Rejected
from loadtest.adapters.graphql_ws import GraphQLWSAdapter, _error_message


class GraphQLLegacyAdapter(GraphQLWSAdapter):
    """subscriptions-transport-ws: connection_init/ack, start/data/error/complete, ka."""

    name = "graphql-legacy"
    subprotocols = ("graphql-ws",)
    START = "start"
    DATA = "data"
    has_ping = False

    def _control(self, kind: Any, op_id: Any, frame: dict[str, Any]) -> Event | None:
        if kind == "ka":
            return Notice("ka")
        if kind == "connection_error":
            return Rejected(None, "connection_error", _error_message(frame.get("payload")))
        if kind in ("ping", "pong"):  # not in this protocol: never answer or take them
            return Notice(str(kind))
        return super()._control(kind, op_id, frame)
