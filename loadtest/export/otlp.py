"""OpenTelemetry metrics over OTLP/HTTP (protobuf), through the official SDK's exporter.

The run's figures are already aggregated (cumulative counters, HDR histograms), so they
are handed to ``OTLPMetricExporter`` as the SDK's own ``MetricsData`` points: a
monotonic cumulative Sum per counter, a Gauge per gauge, an explicit-bucket Histogram
per latency (the classic edges, SLO thresholds included). The exporter does the
encoding, headers (``OTEL_EXPORTER_OTLP_HEADERS``) and compression; ``PushSink`` runs it
off the load's loop.

Names: the Prometheus name without its ``_total`` or unit suffix, with the unit in the
unit field (``s``, ``1``), which is how an OTLP-to-Prometheus translation gets the same
names back.
"""

from __future__ import annotations

import time

from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter
from opentelemetry.sdk.metrics.export import (
    AggregationTemporality,
    Gauge,
    Histogram,
    HistogramDataPoint,
    Metric,
    MetricExportResult,
    MetricsData,
    NumberDataPoint,
    ResourceMetrics,
    ScopeMetrics,
    Sum,
)
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.util.instrumentation import InstrumentationScope

from loadtest.export.model import Family, Kind, Snapshot
from loadtest.export.sink import PushSink, SendError

SCOPE = InstrumentationScope("rtbench.loadtest.export", "1")
CUMULATIVE = AggregationTemporality.CUMULATIVE


def otel_name(family: Family) -> tuple[str, str]:
    """(name, unit) of a family in OTLP."""
    name = family.spec.full_name.removesuffix("_total")
    for suffix, unit in (("_seconds", "s"), ("_ratio", "1")):
        if name.endswith(suffix):
            return name.removesuffix(suffix), unit
    return name, ""


def metrics_data(snapshot: Snapshot, start_ns: int) -> MetricsData:
    now_ns = snapshot.timestamp_ms * 1_000_000
    base = dict(snapshot.run_labels)
    metrics = []
    for family in snapshot.families:
        name, unit = otel_name(family)
        kind = family.spec.kind
        if kind is Kind.HISTOGRAM:
            points = []
            for p in family.points:
                b = p.buckets
                assert b is not None
                cumulative = [n for _, n in b.cumulative] + [b.count]
                per_bucket = [cumulative[0]] + [
                    cumulative[i] - cumulative[i - 1] for i in range(1, len(cumulative))
                ]
                low = p.hist.percentile_ms(0.0) if p.hist is not None else None
                high = p.hist.max_ms() if p.hist is not None else None
                points.append(
                    HistogramDataPoint(
                        attributes={**base, **dict(p.labels)},
                        start_time_unix_nano=start_ns,
                        time_unix_nano=now_ns,
                        count=b.count,
                        sum=b.sum_s,
                        bucket_counts=per_bucket,
                        explicit_bounds=[le for le, _ in b.cumulative],
                        min=(low or 0.0) / 1000.0,
                        max=(high or 0.0) / 1000.0,
                    )
                )
            data: Sum | Gauge | Histogram = Histogram(points, CUMULATIVE)
        else:
            numbers = [
                NumberDataPoint(
                    attributes={**base, **dict(p.labels)},
                    start_time_unix_nano=start_ns,
                    time_unix_nano=now_ns,
                    value=p.value,
                )
                for p in family.points
            ]
            data = Sum(numbers, CUMULATIVE, True) if kind is Kind.COUNTER else Gauge(numbers)
        metrics.append(Metric(name, family.spec.help, unit, data))
    resource = Resource.create({"service.name": "rtbench", "rtbench.run_id": base["run_id"]})
    return MetricsData([ResourceMetrics(resource, [ScopeMetrics(SCOPE, metrics, "")], "")])


class OtlpSink(PushSink):
    def __init__(self, url: str, *, timeout_s: float = 5.0) -> None:
        self.url = url
        self.timeout_s = timeout_s
        self.start_ns = time.time_ns()
        self.exporter = OTLPMetricExporter(endpoint=url, timeout=timeout_s)
        super().__init__("OTLP", self._export)

    def _export(self, batch: list[Snapshot]) -> None:
        for snapshot in batch:  # one request per instant: OTLP points carry their own time
            result = self.exporter.export(
                metrics_data(snapshot, self.start_ns), timeout_millis=self.timeout_s * 1000
            )
            if result is not MetricExportResult.SUCCESS:
                raise SendError(f"export to {self.url} failed", retry=False)

    def close(self, timeout_s: float) -> None:
        super().close(timeout_s)
        self.exporter.shutdown()
