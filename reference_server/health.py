"""The plain HTTP side of the listener: ``/healthz`` and ``/metrics``.

Both are answered from memory (no store round trip, no disk), so a scrape or a
load balancer's probe costs microseconds even when the store is down; that is
exactly when ``/healthz`` must still answer (``store_down``, 503).
"""

from __future__ import annotations

import os
import time
from typing import Any
from urllib.parse import urlsplit

import psutil
from prometheus_client import CONTENT_TYPE_LATEST

from reference_server.broker import Broker
from reference_server.connections import Connections
from reference_server.metrics import Metrics, MetricsCollector, render
from reference_server.rooms import RoomDirectory
from reference_server.store.base import Store
from rtbench.protocol import encode

LOOP_LAG_UNHEALTHY = 1.0  # seconds; past this /healthz answers 503


class Health:
    """Status and metrics of this server process."""

    def __init__(
        self,
        metrics: Metrics,
        store: Store,
        broker: Broker,
        connections: Connections,
        rooms: RoomDirectory,
        transport: str,
    ) -> None:
        self.metrics = metrics
        self.store = store
        self.broker = broker
        self.connections = connections
        self.rooms = rooms
        self.transport = transport
        self.started = time.time()
        self._process = psutil.Process()
        self.collector = MetricsCollector(metrics, self.gauges)

    def http(self, target: str) -> tuple[int, bytes, str]:
        """Answer a plain GET on the listener: status, body, content type."""
        self.metrics.handshakes += 1
        path = urlsplit(target).path
        if path == "/metrics":
            return 200, render(self.collector), CONTENT_TYPE_LATEST
        body, healthy = self.report()
        return (200 if healthy else 503), encode(body) + b"\n", "application/json"

    def report(self) -> tuple[dict[str, Any], bool]:
        """The ``/healthz`` document, and whether it is healthy (200) or not (503)."""
        store = self.store.health()
        lag = self.metrics.loop_lag
        if self.connections.draining:
            status = "draining"
        elif store.get("status") != "ok":
            status = "store_down"
        elif lag > LOOP_LAG_UNHEALTHY:
            status = "overloaded"
        else:
            status = "ok"
        return {
            "status": status,
            "connections": len(self.connections.sessions),
            "users": len(self.connections.users),
            "rooms": len(self.rooms),
            "uptime_s": round(time.time() - self.started, 3),
            "loop_lag_ms": round(lag * 1000, 3),
            "store": store,
            "broker": self.broker.health(),
            "rss_bytes": self._process.memory_info().rss,
            "pid": os.getpid(),
            "transport": self.transport,
        }, status == "ok"

    def gauges(self) -> dict[str, float]:
        """Values read at scrape time (the counters are kept in ``Metrics``)."""
        return {
            "connections": len(self.connections.sessions),
            "users_online": len(self.connections.users),
            "rooms_loaded": len(self.rooms),
            "store_pending_writes": self.store.outstanding,
            "rss_bytes": self._process.memory_info().rss,
        }
