"""The plain HTTP side of the listener: ``/healthz`` and ``/metrics``.

Both are answered from memory (no store round trip, no disk), so a scrape or a
load balancer's probe costs microseconds even when the store is down; that is
exactly when ``/healthz`` must still answer (``store_down``, 503).

With several workers (``cluster``, a ``cluster.stats.WorkerStats``), whichever
worker a request lands on answers for the whole machine: summed metrics, and a
``workers`` list in ``/healthz`` (docs/SCALING.md).
"""

from __future__ import annotations

import os
import time
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import psutil

from reference_server.broker.base import Broker
from reference_server.connections import Connections
from reference_server.metrics import Metrics, MetricsCollector, render
from reference_server.rooms import RoomDirectory
from reference_server.store.base import Store
from rtbench.protocol import encode

if TYPE_CHECKING:
    from reference_server.cluster.stats import WorkerStats

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
        self.cluster: WorkerStats | None = None  # set in a worker of ``--workers N``

    def http(self, target: str) -> tuple[int, bytes, str]:
        """Answer a plain GET on the listener: status, body, content type."""
        self.metrics.handshakes += 1
        path = urlsplit(target).path
        if path == "/metrics":
            from prometheus_client import CONTENT_TYPE_LATEST  # at the first scrape, not at start

            collector = self.collector if self.cluster is None else self.cluster.collector()
            # a ClusterCollector has the same collect() as the MetricsCollector render names
            return 200, render(collector), CONTENT_TYPE_LATEST  # type: ignore[arg-type]
        body, healthy = self.report()
        return (200 if healthy else 503), encode(body) + b"\n", "application/json"

    def report(self) -> tuple[dict[str, Any], bool]:
        """The ``/healthz`` document, and whether it is healthy (200) or not (503)."""
        store, broker = self.store.health(), self.broker.health()
        lag = self.metrics.loop_lag
        status = self.status(store, broker)
        body = {
            "status": status,
            "connections": len(self.connections.sessions),
            "users": len(self.connections.users),
            "rooms": len(self.rooms),
            "uptime_s": round(time.time() - self.started, 3),
            "loop_lag_ms": round(lag * 1000, 3),
            "store": store,
            "broker": broker,
            "rss_bytes": self._process.memory_info().rss,
            "pid": os.getpid(),
            "transport": self.transport,
        }
        if self.cluster is None:  # one process: a one-entry list, same shape as N workers
            body["worker"] = 0
            body["workers"] = [
                {
                    "worker": 0,
                    "pid": body["pid"],
                    "restarts": 0,
                    "status": status,
                    "connections": body["connections"],
                    "rss_bytes": body["rss_bytes"],
                    "loop_lag_ms": body["loop_lag_ms"],
                    "uptime_s": body["uptime_s"],
                    "store": store.get("status"),
                    "broker": broker.get("status"),
                }
            ]
            return body, status == "ok"
        workers, totals = self.cluster.workers()
        body.update(totals, worker=self.cluster.index, workers=workers)
        if status == "ok" and any(w["status"] != "ok" for w in workers):
            body["status"] = status = "degraded"  # a worker restarts: the machine still serves
        return body, status in ("ok", "degraded")

    def status(self, store: dict[str, Any], broker: dict[str, Any]) -> str:
        """This process's own health, as one word."""
        if self.connections.draining:
            return "draining"
        if store.get("status") != "ok":
            return "store_down"
        if broker.get("status") != "ok":
            return "broker_down"
        if self.metrics.loop_lag > LOOP_LAG_UNHEALTHY:
            return "overloaded"
        return "ok"

    def brief(self) -> dict[str, Any]:
        """What the other workers show of this one (its shared-memory snapshot)."""
        store, broker = self.store.health(), self.broker.health()
        return {
            "status": self.status(store, broker),
            "store_status": store.get("status"),
            "broker_status": broker.get("status"),
        }

    def gauges(self) -> dict[str, float]:
        """Values read at scrape time (the counters are kept in ``Metrics``)."""
        return {
            "connections": len(self.connections.sessions),
            "users_online": len(self.connections.users),
            "rooms_loaded": len(self.rooms),
            "store_pending_writes": self.store.outstanding,
            "rss_bytes": self._process.memory_info().rss,
        }
