"""Prometheus remote write 1.0: snapshots as snappy-compressed protobuf WriteRequests.

Each batch is one ``WriteRequest`` holding every series once with one sample per
snapshot (oldest first), plus the families' metadata. Histograms go out as classic
``_bucket``/``_sum``/``_count`` series, and with ``native=True`` also as native
histograms (the receiver must accept them: Prometheus needs
``--enable-feature=native-histograms``). 5xx and 429 answers are retried, other 4xx are
not (the spec's rule); the retrying happens in ``PushSink``'s thread.
"""

from __future__ import annotations

import math
import urllib.error
import urllib.request

import cramjam

from loadtest.export.buckets import NativeBuckets, native_buckets, spans_and_deltas
from loadtest.export.model import Family, Kind, Snapshot
from loadtest.export.prompb import remote_pb2 as pb
from loadtest.export.sink import PushSink, SendError

HEADERS = {
    "Content-Type": "application/x-protobuf",
    "Content-Encoding": "snappy",
    "X-Prometheus-Remote-Write-Version": "0.1.0",
    "User-Agent": "rtbench",
}
_TYPES = {
    Kind.COUNTER: pb.MetricMetadata.COUNTER,
    Kind.GAUGE: pb.MetricMetadata.GAUGE,
    Kind.HISTOGRAM: pb.MetricMetadata.HISTOGRAM,
}


def _le(edge: float) -> str:
    return "+Inf" if math.isinf(edge) else repr(float(edge))


def _series(
    family: Family, snapshot: Snapshot, *, native: bool
) -> list[tuple[tuple, float | NativeBuckets]]:
    """(labels, value) pairs of one family; value is a float or a NativeBuckets."""
    base = snapshot.run_labels
    name = family.spec.full_name
    out: list[tuple[tuple, float | NativeBuckets]] = []
    for point in family.points:
        labels = base + point.labels
        if family.spec.kind is not Kind.HISTOGRAM:
            out.append(((("__name__", name), *labels), point.value))
            continue
        buckets = point.buckets
        assert buckets is not None
        for edge, count in (*buckets.cumulative, (math.inf, buckets.count)):
            out.append(((("__name__", name + "_bucket"), *labels, ("le", _le(edge))), count))
        out.append(((("__name__", name + "_sum"), *labels), buckets.sum_s))
        out.append(((("__name__", name + "_count"), *labels), buckets.count))
        if native and point.hist is not None:
            out.append(((("__name__", name), *labels), native_buckets(point.hist)))
    return out


def encode(batch: list[Snapshot], *, native: bool = False) -> bytes:
    """One WriteRequest for the batch (uncompressed protobuf)."""
    request = pb.WriteRequest()
    by_labels: dict[tuple, pb.TimeSeries] = {}
    for snapshot in batch:
        for family in snapshot.families:
            for labels, value in _series(family, snapshot, native=native):
                key = tuple(sorted(labels))
                series = by_labels.get(key)
                if series is None:
                    series = by_labels[key] = request.timeseries.add()
                    for label_name, label_value in key:
                        series.labels.add(name=label_name, value=label_value)
                if isinstance(value, int | float):
                    series.samples.add(value=float(value), timestamp=snapshot.timestamp_ms)
                else:
                    _add_native(series, value, snapshot.timestamp_ms)
    for family in batch[-1].families:
        request.metadata.add(
            type=_TYPES[family.spec.kind],
            metric_family_name=family.spec.full_name,
            help=family.spec.help,
            unit=family.spec.unit,
        )
    return request.SerializeToString()


def _add_native(series: pb.TimeSeries, native: NativeBuckets, timestamp_ms: int) -> None:
    spans, deltas = spans_and_deltas(native.indexes, native.counts)
    histogram = series.histograms.add(
        count_int=native.count,
        sum=native.sum_s,
        schema=native.schema,
        zero_threshold=0.0,
        zero_count_int=0,
        timestamp=timestamp_ms,
    )
    for offset, length in spans:
        histogram.positive_spans.add(offset=offset, length=length)
    histogram.positive_deltas.extend(deltas)


class RemoteWriteSink(PushSink):
    def __init__(self, url: str, *, native: bool = False, timeout_s: float = 5.0) -> None:
        self.url = url
        self.native = native
        self.timeout_s = timeout_s
        super().__init__("remote write", self._post)

    def _post(self, batch: list[Snapshot]) -> None:
        body = bytes(cramjam.snappy.compress_raw(encode(batch, native=self.native)))
        request = urllib.request.Request(self.url, data=body, headers=HEADERS, method="POST")
        try:
            with urllib.request.urlopen(request, timeout=self.timeout_s) as answer:
                answer.read()
        except urllib.error.HTTPError as exc:
            detail = exc.read()[:200].decode("utf-8", "replace").strip()
            retry = exc.code >= 500 or exc.code == 429
            raise SendError(f"HTTP {exc.code} {detail}", retry=retry) from None
        except (OSError, urllib.error.URLError) as exc:
            raise SendError(str(getattr(exc, "reason", exc)), retry=True) from None
