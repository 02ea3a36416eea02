"""HDR latency histograms in the two shapes Prometheus and OpenTelemetry carry.

- Classic buckets: cumulative counts at fixed edges (seconds). The SLO thresholds are
  edges, so ``bucket{le=threshold} / count`` is exactly the share of values within the
  target and a verdict can be recomputed in PromQL.
- Native (exponential) buckets: sparse buckets whose bounds grow by 2^(2^-schema); what
  remote write's ``Histogram`` and OTLP's ``ExponentialHistogram`` carry.

Both count a value by its HDR bucket's *highest equivalent* value, the one
``LatencyHistogram.percentile_ms`` reports, so "p99 < threshold" in results.json and
"bucket{le=threshold} >= 0.99 x count" in PromQL agree on every value.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from rtbench.histogram import LatencyHistogram

LADDER_S = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
NATIVE_SCHEMA = 3  # bucket bounds grow by 2^(1/8), about 9 %: finer than the classic ladder


def edges_for(*thresholds_s: float) -> tuple[float, ...]:
    """The classic ladder plus the SLO thresholds (seconds), ascending, without +Inf."""
    return tuple(sorted({*LADDER_S, *thresholds_s}))


@dataclass(frozen=True)
class ClassicBuckets:
    cumulative: tuple[tuple[float, int], ...]  # (le seconds, count <= le), ascending
    count: int
    sum_s: float  # HDR keeps no exact sum: count x the HDR mean


@dataclass(frozen=True)
class NativeBuckets:
    schema: int
    count: int
    sum_s: float
    indexes: tuple[int, ...]  # Prometheus bucket indexes: bucket i is (b^(i-1), b^i]
    counts: tuple[int, ...]  # absolute counts, same order


def _raw(hist: LatencyHistogram) -> tuple[np.ndarray, np.ndarray]:
    """The histogram's counts array and each index's highest equivalent value (us)."""
    counts, lowest, size = hist.buckets()
    return counts, lowest + size - 1


def _sum_s(hist: LatencyHistogram, count: int) -> float:
    mean = hist.mean_ms()
    return 0.0 if mean is None else mean * count / 1000.0


def classic_buckets(hist: LatencyHistogram, edges_s: tuple[float, ...]) -> ClassicBuckets:
    counts, highest = _raw(hist)
    cumulative = np.cumsum(counts)
    total = int(cumulative[-1]) if cumulative.size else 0
    out = []
    for edge in edges_s:
        # the last index whose top value is within the edge
        at = int(np.searchsorted(highest, round(edge * 1e6), side="right")) - 1
        out.append((edge, int(cumulative[at]) if at >= 0 else 0))
    return ClassicBuckets(tuple(out), total, _sum_s(hist, total))


def native_buckets(hist: LatencyHistogram, schema: int = NATIVE_SCHEMA) -> NativeBuckets:
    counts, highest = _raw(hist)
    nonzero = np.nonzero(counts)[0]
    total = int(counts[nonzero].sum())
    if total == 0:
        return NativeBuckets(schema, 0, 0.0, (), ())
    seconds = highest[nonzero] / 1e6
    index = np.ceil(np.log2(seconds) * (1 << schema) - 1e-9).astype(np.int64)
    unique, inverse = np.unique(index, return_inverse=True)
    summed = np.zeros(unique.size, dtype=np.int64)
    np.add.at(summed, inverse, counts[nonzero])
    return NativeBuckets(
        schema,
        total,
        _sum_s(hist, total),
        tuple(int(i) for i in unique),
        tuple(int(n) for n in summed),
    )


def spans_and_deltas(
    indexes: tuple[int, ...], counts: tuple[int, ...]
) -> tuple[list[tuple[int, int]], list[int]]:
    """Prometheus's sparse form: (offset, length) spans and count deltas.

    A gap of one or two empty buckets is cheaper filled with zero counts than as a new
    span (Prometheus's own encoder does the same).
    """
    spans: list[tuple[int, int]] = []
    deltas: list[int] = []
    previous_index: int | None = None
    previous_count = 0
    for index, count in zip(indexes, counts, strict=True):
        if previous_index is None:
            spans.append((index, 1))
        else:
            gap = index - previous_index - 1
            if gap <= 2:
                for _ in range(gap):
                    deltas.append(-previous_count)
                    previous_count = 0
                offset, length = spans[-1]
                spans[-1] = (offset, length + gap + 1)
            else:
                spans.append((gap, 1))
        deltas.append(count - previous_count)
        previous_count = count
        previous_index = index
    return spans, deltas


def base_of(schema: int) -> float:
    return math.pow(2.0, math.pow(2.0, -schema))
