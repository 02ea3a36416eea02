"""A /metrics endpoint for the run (prometheus-client's WSGI app, its own registry).

The driver's update only swaps the latest snapshot in (a reference assignment); each
scrape renders it on the server's thread. On close the endpoint stays up until a scrape
has *finished sending* the final snapshot (the WSGI server closes a response's body
after writing it all), or the grace period ends, so the run's last figures land.
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Callable, Iterable, Iterator
from wsgiref.simple_server import WSGIRequestHandler, make_server

from prometheus_client import CollectorRegistry, make_wsgi_app
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.exposition import ThreadingWSGIServer
from prometheus_client.registry import Collector

from loadtest.export.model import RUN_LABELS, Kind, Snapshot
from loadtest.export.sink import lower_priority


class _SnapshotCollector(Collector):
    def __init__(self) -> None:
        self.snapshot: Snapshot | None = None
        self.final_sent = threading.Event()

    def collect(self) -> Iterator[Metric]:
        snapshot = self.snapshot
        if snapshot is None:
            return
        run_values = [value for _, value in snapshot.run_labels]
        for family in snapshot.families:
            spec = family.spec
            extra = [name for name, _ in family.points[0].labels] if family.points else []
            names = [*RUN_LABELS, *extra]
            if spec.kind is Kind.COUNTER:
                metric: Metric = CounterMetricFamily(
                    spec.full_name.removesuffix("_total"), spec.help, labels=names
                )
            elif spec.kind is Kind.GAUGE:
                metric = GaugeMetricFamily(spec.full_name, spec.help, labels=names, unit="")
            else:
                metric = HistogramMetricFamily(spec.full_name, spec.help, labels=names)
            for point in family.points:
                values = run_values + [value for _, value in point.labels]
                if point.buckets is not None:
                    b = point.buckets
                    buckets = [(repr(float(le)), n) for le, n in b.cumulative]
                    buckets.append(("+Inf", b.count))
                    # each Metric subclass has its own add_metric: histogram points come
                    # in a histogram family, the others in a counter or gauge one
                    metric.add_metric(values, buckets, b.sum_s)  # type: ignore[attr-defined]
                else:
                    metric.add_metric(values, point.value)  # type: ignore[attr-defined]
            yield metric


class _Body:
    """A response body that says when the server has written all of it (WSGI ``close``)."""

    def __init__(self, chunks: Iterable[bytes], sent: threading.Event | None) -> None:
        self.chunks = chunks
        self.sent = sent

    def __iter__(self) -> Iterator[bytes]:
        return iter(self.chunks)

    def close(self) -> None:
        if self.sent is not None:
            self.sent.set()


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        """No access log on the run's terminal."""


class MetricsEndpoint:
    def __init__(self, host: str, port: int, *, grace_s: float) -> None:
        self.grace_s = grace_s
        self.collector = collector = _SnapshotCollector()
        registry = CollectorRegistry(auto_describe=False)
        registry.register(collector)
        metrics_app = make_wsgi_app(registry)

        def app(environ: dict, start_response: Callable) -> _Body:
            lower_priority()  # a thread per request: render at the lowest priority
            snapshot = collector.snapshot  # immutable; the final one is the last
            final = snapshot is not None and snapshot.final
            return _Body(
                metrics_app(environ, start_response), collector.final_sent if final else None
            )

        class Server(ThreadingWSGIServer):
            address_family = socket.AF_INET6 if ":" in host else socket.AF_INET

        self.server = make_server(host, port, app, Server, handler_class=_QuietHandler)
        self.thread = threading.Thread(
            target=self.server.serve_forever, name="rtbench-metrics", daemon=True
        )
        self.thread.start()
        self.port = int(self.server.server_address[1])
        self.host = host

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}/metrics"

    def offer(self, snapshot: Snapshot) -> None:
        self.collector.snapshot = snapshot

    def close(self, timeout_s: float) -> None:
        """Wait for a scrape of the final snapshot (at most the grace period), then stop."""
        if self.collector.snapshot is not None and self.collector.snapshot.final:
            self.collector.final_sent.wait(min(timeout_s, self.grace_s))
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(1.0)

    def summary(self) -> str | None:
        return None
