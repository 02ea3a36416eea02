"""The live-metrics model of a run: one aggregate in, one set of metric families out.

A driver (the native coordinator, the Locust master) hands ``RunMetrics.snapshot`` the
figures it already merges once a second (``LiveAggregate``); this module turns them into
``Family`` values that every sink (HTTP exposition, remote write, OTLP) renders in its
own format. The metric set, names, units and help texts are stated here once, so the
three outputs and the Grafana dashboard speak of the same series.

Cardinality is bounded by design: four run labels (run id, scenario, target, protocol)
and a fixed set of families; nothing per connection, room or worker.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from enum import StrEnum

from loadtest.export.buckets import ClassicBuckets, classic_buckets, edges_for
from rtbench.histogram import LatencyHistogram
from rtbench.slo import SLO

PREFIX = "rtbench_run_"
RUN_LABELS = ("run_id", "scenario", "target", "protocol")


class Kind(StrEnum):
    COUNTER = "counter"
    GAUGE = "gauge"
    HISTOGRAM = "histogram"


@dataclass(frozen=True)
class Spec:
    """One metric family: its name (without the prefix and the _total suffix), kind, help."""

    name: str
    kind: Kind
    help: str
    source: str = ""  # counter: the tally counter; histogram: the histogram name
    unit: str = ""

    @property
    def full_name(self) -> str:
        return PREFIX + self.name


# -- the metric set ------------------------------------------------------------------------

HISTOGRAM_SPECS = (
    Spec(
        "delivery_latency_seconds",
        Kind.HISTOGRAM,
        "Delivery latency: a recipient received a message minus the time its send was "
        "scheduled (open loop), over every recipient.",
        "delivery",
        "seconds",
    ),
    Spec(
        "ack_latency_seconds",
        Kind.HISTOGRAM,
        "Send to the server's ack of it (durable), from the scheduled send time.",
        "ack",
        "seconds",
    ),
    Spec(
        "handshake_latency_seconds",
        Kind.HISTOGRAM,
        "WebSocket opening handshake time per connection attempt.",
        "handshake",
        "seconds",
    ),
    Spec(
        "reconnect_latency_seconds",
        Kind.HISTOGRAM,
        "Connection lost to the session back (welcome), per loss.",
        "reconnect",
        "seconds",
    ),
    Spec(
        "recovery_latency_seconds",
        Kind.HISTOGRAM,
        "Connection lost to back, re-subscribed and every missed message received, per loss.",
        "recovery",
        "seconds",
    ),
    Spec(
        "generator_send_delay_seconds",
        Kind.HISTOGRAM,
        "The generator's own delay: a send went out this long after its scheduled time "
        "(its error bound on every latency figure).",
        "send_lag",
        "seconds",
    ),
)
COUNTER_SPECS = (
    Spec("messages_sent_total", Kind.COUNTER, "Messages sent.", "sent"),
    Spec("messages_acked_total", Kind.COUNTER, "Sends the server acked.", "acked"),
    Spec("messages_rejected_total", Kind.COUNTER, "Sends the server refused.", "rejected"),
    Spec(
        "deliveries_expected_total",
        Kind.COUNTER,
        "Deliveries owed: every recipient of every message sent.",
        "expected",
    ),
    Spec("deliveries_total", Kind.COUNTER, "Unique deliveries received.", "delivered"),
    Spec(
        "deliveries_duplicated_total",
        Kind.COUNTER,
        "Deliveries that arrived again on the wire.",
        "duplicated",
    ),
    Spec(
        "deliveries_out_of_order_total",
        Kind.COUNTER,
        "Deliveries that arrived after a later one of the same stream.",
        "out_of_order",
    ),
    Spec(
        "deliveries_lost_total",
        Kind.COUNTER,
        "Deliveries that never arrived: 0 while the run is on, the final count once the "
        "drain has ended.",
        "lost",
    ),
    Spec("connections_attempted_total", Kind.COUNTER, "Connection attempts.", "attempted"),
    Spec("connections_failed_total", Kind.COUNTER, "Connections that failed to open.", "failed"),
    Spec("reconnects_total", Kind.COUNTER, "Reconnections after a loss.", "reconnects"),
    Spec("errors_total", Kind.COUNTER, "Error frames received.", "errors"),
)
GAUGE_SPECS = (
    Spec("connections_open", Kind.GAUGE, "Connections open now."),
    Spec("connections_target", Kind.GAUGE, "Connections the run aims for."),
    Spec(
        "connections_held",
        Kind.GAUGE,
        "Connections still open when the load ended (0 until then).",
    ),
    Spec(
        "deliveries_outstanding",
        Kind.GAUGE,
        "Deliveries owed and not (yet) received: in flight while the run is on.",
    ),
    Spec(
        "generator_cpu_ratio",
        Kind.GAUGE,
        "CPU of the generator's processes in the last second, in cores (1 = one core).",
    ),
    Spec(
        "generator_cpus_busy_ratio",
        Kind.GAUGE,
        "How busy the CPUs the generator may run on were in the last second, with all their "
        "work, the server's too when it shares them (1 = full: docs/LOADTEST.md, saturation).",
    ),
    Spec(
        "generator_loop_lag_seconds",
        Kind.GAUGE,
        "Worst event-loop lag of any generator process in the last second.",
    ),
    Spec("elapsed_seconds", Kind.GAUGE, "Seconds since the run started."),
    Spec(
        "phase",
        Kind.GAUGE,
        "1 for the run's current phase (connecting, running, holding, draining, closing, "
        "done), 0 for the others.",
    ),
    Spec(
        "slo_threshold_seconds",
        Kind.GAUGE,
        "The SLO file's latency thresholds (slo=delivery_latency|recovery): the dashboard's "
        "SLO line and the recording rules' reference.",
    ),
    Spec(
        "slo_percentile_ratio",
        Kind.GAUGE,
        "The SLO file's percentile for each latency target, as a ratio (0.99).",
    ),
    Spec("slo_connections_min", Kind.GAUGE, "The SLO file's connections target."),
)
PHASES = ("connecting", "running", "holding", "draining", "closing", "done")
SPECS = HISTOGRAM_SPECS + COUNTER_SPECS + GAUGE_SPECS


# -- what a driver hands in -------------------------------------------------------------------


@dataclass
class LiveAggregate:
    """One second of a run as its driver already merged it (every figure over all processes).

    Counters and histograms are cumulative since the run started (a histogram's counts
    only grow), so a lost or late update never skews a rate.
    """

    phase: str
    elapsed_s: float
    counters: dict[str, int]
    connections_open: int
    connections_target: int
    histograms: dict[str, LatencyHistogram] = field(default_factory=dict)
    cpu_percent: float = 0.0  # summed over the generator's processes
    loop_lag_ms: float = 0.0  # worst over them
    cpus_busy_percent: float = 0.0  # its CPUs, busy with all their work (the busiest set)
    connections_held: int = 0
    lost: int = 0  # set once the drain has ended


# -- what the sinks render ------------------------------------------------------------------


@dataclass(frozen=True)
class Point:
    labels: tuple[tuple[str, str], ...]  # besides the run labels
    value: float = 0.0
    buckets: ClassicBuckets | None = None  # histograms
    hist: LatencyHistogram | None = None  # histograms: the exact HDR (native forms)


@dataclass(frozen=True)
class Family:
    spec: Spec
    points: tuple[Point, ...]


@dataclass(frozen=True)
class Snapshot:
    """Every family at one instant; immutable, so sinks read it from their own threads."""

    families: tuple[Family, ...]
    run_labels: tuple[tuple[str, str], ...]
    timestamp_ms: int
    final: bool = False


@dataclass(frozen=True)
class RunLabels:
    """The labels every series carries: which run, which load, which server."""

    run_id: str
    scenario: str
    target: str
    protocol: str

    def pairs(self) -> tuple[tuple[str, str], ...]:
        return tuple((name, getattr(self, name)) for name in RUN_LABELS)


class RunMetrics:
    """Turns aggregates into snapshots; holds the bucket edges derived from the SLO."""

    def __init__(self, labels: RunLabels, slo: SLO) -> None:
        self.labels = labels
        self.slo = slo
        delivery_s = slo.delivery_latency.threshold_ms / 1000.0
        recovery_s = slo.recovery.threshold_ms / 1000.0
        self.edges = {
            spec.source: edges_for(delivery_s, recovery_s)
            for spec in HISTOGRAM_SPECS  # every latency gets both SLO edges
        }
        self._last_ms = 0  # the previous snapshot's timestamp (one export thread builds them)

    def _next_ms(self) -> int:
        """Now in ms, and always after the previous snapshot's: remote write rejects a
        series' sample at a timestamp it already holds (HTTP 400), so a final snapshot
        built in the same millisecond as the last live one would lose the run's end."""
        self._last_ms = max(int(time.time() * 1000), self._last_ms + 1)
        return self._last_ms

    def snapshot(self, agg: LiveAggregate, *, final: bool = False) -> Snapshot:
        families: list[Family] = []
        for spec in HISTOGRAM_SPECS:
            hist = agg.histograms.get(spec.source)
            if hist is None:
                continue
            buckets = classic_buckets(hist, self.edges[spec.source])
            families.append(Family(spec, (Point((), buckets=buckets, hist=hist),)))
        for spec in COUNTER_SPECS:
            value = agg.lost if spec.source == "lost" else agg.counters.get(spec.source, 0)
            families.append(Family(spec, (Point((), float(value)),)))
        families.extend(self._gauges(agg, final))
        return Snapshot(
            families=tuple(families),
            run_labels=self.labels.pairs(),
            timestamp_ms=self._next_ms(),
            final=final,
        )

    def _gauges(self, agg: LiveAggregate, final: bool) -> list[Family]:
        c = agg.counters
        outstanding = max(0, c.get("expected", 0) - c.get("delivered", 0))
        phase = "done" if final else agg.phase
        values = {
            "connections_open": agg.connections_open,
            "connections_target": agg.connections_target,
            "connections_held": agg.connections_held,
            "deliveries_outstanding": outstanding,
            "generator_cpu_ratio": agg.cpu_percent / 100.0,
            "generator_cpus_busy_ratio": agg.cpus_busy_percent / 100.0,
            "generator_loop_lag_seconds": agg.loop_lag_ms / 1000.0,
            "elapsed_seconds": agg.elapsed_s,
            "slo_connections_min": self.slo.connections.min,
        }
        by_name = {spec.name: spec for spec in GAUGE_SPECS}
        out = [Family(by_name[name], (Point((), float(v)),)) for name, v in values.items()]
        out.append(
            Family(
                by_name["phase"],
                tuple(Point((("phase", p),), 1.0 if p == phase else 0.0) for p in PHASES),
            )
        )
        targets = (
            ("delivery_latency", self.slo.delivery_latency),
            ("recovery", self.slo.recovery),
        )
        out.append(
            Family(
                by_name["slo_threshold_seconds"],
                tuple(Point((("slo", n),), t.threshold_ms / 1000.0) for n, t in targets),
            )
        )
        out.append(
            Family(
                by_name["slo_percentile_ratio"],
                tuple(Point((("slo", n),), t.percentile / 100.0) for n, t in targets),
            )
        )
        return out
