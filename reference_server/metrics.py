"""Server metrics: plain integers on the hot path, Prometheus text on scrape.

Incrementing a prometheus-client Counter costs a lock and a method call; doing
that per fan-out delivery would cost more than the delivery. So the core bumps
plain attributes (in bulk where it can), and a custom collector turns them into
metric families only when /metrics is scraped.

prometheus-client itself is imported at the first scrape, not at start: it is ~23 ms
of the server's start time, and a restarted server that listens sooner is a shorter
outage for every client (docs/RECOVERY.md).
"""

from __future__ import annotations

import bisect
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from prometheus_client.core import HistogramMetricFamily, Metric

COMMIT_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
BATCH_BUCKETS = (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000)
STAGE_BUCKETS = (
    0.0001, 0.00025, 0.0005, 0.001, 0.002, 0.003, 0.005, 0.0075,
    0.01, 0.015, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.5,
)  # fmt: skip
"""Seconds of an ack and of its stages. Fine under 20 ms, where the benchmarks judge a
10 ms goal (chat_10k): with only 5/10/20 ms edges an ack p99 "between 5 and 10 ms" could
not be told from one at 9.9, nor split into where it was spent."""
ACK_BUCKETS = STAGE_BUCKETS
HISTOGRAMS = (
    "commit_seconds", "batch_sizes", "ack_seconds", "store_wait_seconds", "callback_seconds"
)  # fmt: skip
"""The ``Metrics`` attributes that are histograms (workers merge them by these names)."""


class Histogram:
    """A fixed-bucket histogram kept as counts (cumulated only when exported)."""

    __slots__ = ("bounds", "counts", "total")

    def __init__(self, bounds: Sequence[float]) -> None:
        self.bounds = tuple(bounds)
        self.counts = [0] * (len(self.bounds) + 1)
        self.total = 0.0

    def observe(self, value: float) -> None:
        self.counts[bisect.bisect_left(self.bounds, value)] += 1
        self.total += value

    def family(self, name: str, doc: str) -> HistogramMetricFamily:
        from prometheus_client.core import HistogramMetricFamily

        buckets, running = [], 0
        for bound, count in zip((*self.bounds, float("inf")), self.counts, strict=True):
            running += count
            buckets.append(("+Inf" if bound == float("inf") else repr(bound), running))
        return HistogramMetricFamily(name, doc, buckets=buckets, sum_value=self.total)


class Metrics:
    """Every number the server exports; fields are bumped directly by the core."""

    def __init__(self) -> None:
        self.connections_opened = 0
        self.handshakes = 0
        self.hellos = 0
        self.frames_in = 0
        self.frames_out = 0  # direct replies and every fan-out delivery
        self.fanout_deliveries = 0
        self.messages_stored = 0
        self.events_published = 0
        self.replayed = 0
        self.resumes = 0
        self.slow_consumers = 0
        self.heartbeat_pings = 0
        self.gap_repairs = 0  # gaps in a room's order filled from the store (several workers)
        self.repaired_items = 0
        self.rate_limited = 0  # frames dropped by the per-connection rate limit
        self.admission_refused = 0  # upgrades refused 503 past the admission bucket
        self.queue_high_water = 0  # largest outgoing buffer seen on any connection, bytes
        self.loop_lag = 0.0  # seconds, last sample
        self.loop_lag_max = 0.0
        self.errors: Counter[str] = Counter()
        self.closes: Counter[int] = Counter()
        self.commit_seconds = Histogram(COMMIT_BUCKETS)
        self.batch_sizes = Histogram(BATCH_BUCKETS)
        self.ack_seconds = Histogram(ACK_BUCKETS)
        # the ack's stages (Commits.on_batch): handled -> its transaction began, per item;
        # commit ended (committer's clock) -> the loop ran the batch's callback, per batch
        self.store_wait_seconds = Histogram(STAGE_BUCKETS)
        self.callback_seconds = Histogram(STAGE_BUCKETS)


class MetricsCollector:
    """prometheus-client collector reading ``Metrics`` and live gauges at scrape time."""

    def __init__(self, metrics: Metrics, gauges: Callable[[], dict[str, float]]) -> None:
        self.m = metrics
        self.gauges = gauges  # connections, rooms, rss... computed on demand

    def collect(self) -> Iterator[Metric]:
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        m = self.m
        p = "rtbench_server_"
        counters = (
            ("connections_opened", "WebSocket connections accepted.", m.connections_opened),
            ("handshakes", "HTTP requests handled on the listener (upgrades too).", m.handshakes),
            ("hellos", "Sessions that completed hello.", m.hellos),
            ("messages_in", "Frames received from clients.", m.frames_in),
            ("messages_out", "Frames sent to clients (replies and fan-out).", m.frames_out),
            ("fanout_deliveries", "Room frames delivered to subscribers.", m.fanout_deliveries),
            ("messages_stored", "Messages and stored events made durable.", m.messages_stored),
            ("events_published", "Events published (stored or not).", m.events_published),
            ("replayed_items", "Stored items replayed on join/resume.", m.replayed),
            ("resumes", "Rooms re-subscribed by hello.resume.", m.resumes),
            ("slow_consumers", "Connections closed 1013 as slow consumers.", m.slow_consumers),
            ("heartbeat_pings", "WebSocket pings sent to silent connections.", m.heartbeat_pings),
            ("gap_repairs", "Gaps in a room's order filled from the store.", m.gap_repairs),
            ("repaired_items", "Items read from the store to fill gaps.", m.repaired_items),
            ("frames_rate_limited", "Frames dropped by the rate limit.", m.rate_limited),
            (
                "admission_refused",
                "Upgrades refused 503 past the admission rate.",
                m.admission_refused,
            ),
        )
        for name, doc, value in counters:
            yield CounterMetricFamily(p + name, doc, value=value)
        errors = CounterMetricFamily(p + "errors", "Error frames sent, by code.", labels=["code"])
        for code, count in sorted(m.errors.items()):
            errors.add_metric([code], count)
        yield errors
        closes = CounterMetricFamily(
            p + "closes", "Connections closed by the server, by close code.", labels=["code"]
        )
        for close_code, count in sorted(m.closes.items()):
            closes.add_metric([str(close_code)], count)
        yield closes
        for name, gauge in self.gauges().items():
            yield GaugeMetricFamily(p + name, f"Current {name.replace('_', ' ')}.", value=gauge)
        yield GaugeMetricFamily(
            p + "queue_high_water_bytes",
            "Largest outgoing buffer seen on one connection.",
            value=m.queue_high_water,
        )
        yield GaugeMetricFamily(
            p + "loop_lag_seconds", "Event-loop lag, last sample.", value=m.loop_lag
        )
        yield GaugeMetricFamily(
            p + "loop_lag_max_seconds", "Largest event-loop lag seen.", value=m.loop_lag_max
        )
        yield m.commit_seconds.family(
            p + "store_commit_seconds", "Time of one group commit (writer thread)."
        )
        yield m.batch_sizes.family(
            p + "store_batch_size", "Operations per group commit (writes sharing one fsync)."
        )
        yield m.ack_seconds.family(
            p + "ack_seconds",
            "From a stored send's frame handled to its ack written: the server's own part of "
            "the sender's ack latency (store queue, group commit, publish).",
        )
        yield m.store_wait_seconds.family(
            p + "store_wait_seconds",
            "From a stored send's frame handled to the start of the transaction that stored "
            "it: the ack's wait for the committer (one observation per item).",
        )
        yield m.callback_seconds.family(
            p + "store_callback_seconds",
            "From a group commit's end to the event loop running its batch's callback: the "
            "ack's wait for the loop (one observation per batch).",
        )


def render(collector: MetricsCollector) -> bytes:
    """The Prometheus text exposition of the server's metrics."""
    from prometheus_client import CollectorRegistry, generate_latest

    registry = CollectorRegistry(auto_describe=False)
    registry.register(collector)
    return generate_latest(registry)
