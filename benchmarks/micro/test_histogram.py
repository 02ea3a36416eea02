"""Histogram record and merge (``rtbench.histogram``): the generator records every delivery.

Record: 10,000 latencies through ``record_us`` plus the vectorised flush into the HDR
counts. Merge: what the coordinator does once per worker per second.
"""

from __future__ import annotations

import random

from rtbench.histogram import LatencyHistogram

BATCH = 10_000
_rng = random.Random(7)
VALUES = [int(_rng.lognormvariate(7.0, 1.0)) for _ in range(BATCH)]  # ~1 ms median, in us


def _record_batch() -> LatencyHistogram:
    hist = LatencyHistogram()
    record = hist.record_us
    for value in VALUES:
        record(value)
    hist.flush()
    return hist


def test_record_10k(benchmark) -> None:  # type: ignore[no-untyped-def]
    hist = benchmark(_record_batch)
    assert hist.count == BATCH


def test_merge(benchmark) -> None:  # type: ignore[no-untyped-def]
    part = _record_batch()

    def merge() -> LatencyHistogram:
        total = LatencyHistogram()
        total.merge(part)
        return total

    total = benchmark(merge)
    assert total.count == BATCH
    assert total.percentile_ms(50) == part.percentile_ms(50)
