"""Adapter for any WebSocket echo server: every frame comes back to its sender unchanged.

There are no rooms, so it serves the ``rtt`` and ``connect`` scenarios: the measured
round trip is a delivery to oneself through the server.
"""

from __future__ import annotations

from loadtest.adapters.base import Adapter, Delivery, Event, Feature, Notice, parse_marker_bytes


class EchoAdapter(Adapter):
    """Plain echo: a ping is the marker text itself, and its echo is the delivery."""

    name = "echo"
    features = frozenset({Feature.PING})

    def ping(self, text: str, req_id: int) -> bytes:
        return text.encode()

    def parse(self, payload: bytes) -> Event | None:
        found = parse_marker_bytes(payload)
        if found is None:
            return Notice("unmarked")
        return Delivery(*found)
