"""LatencyHistogram's batch path must give exactly hdrhistogram's own counts."""

import random

import pytest
from hdrh.histogram import HdrHistogram

from rtbench.histogram import HIGHEST_US, LatencyHistogram


def test_batch_path_matches_hdrhistogram_exactly():
    rng = random.Random(7)
    values = [int(rng.lognormvariate(7, 2.5)) for _ in range(50_000)] + [0, 1, 2, HIGHEST_US * 2]
    reference = HdrHistogram(1, HIGHEST_US, 3)
    ours = LatencyHistogram()
    for value in values:
        reference.record_value(min(max(value, 1), HIGHEST_US))
        ours.record_us(value)
    ours.flush()
    assert list(ours._hdr.counts) == list(reference.counts)
    for p in (50, 90, 99, 99.9, 100):
        assert ours.percentile_ms(p) == reference.get_value_at_percentile(p) / 1000
    # the vectorised mean is hdrhistogram's (every value at its bucket's median equivalent)
    assert ours.mean_ms() == pytest.approx(reference.get_mean_value() / 1000, rel=1e-12)
    merged = LatencyHistogram.decode(ours.encode())
    merged.merge(LatencyHistogram.decode(ours.encode()))
    assert merged.mean_ms() == pytest.approx(ours.mean_ms(), rel=1e-12)


def test_merge_and_encode_are_exact():
    a, b = LatencyHistogram(), LatencyHistogram()
    for v in range(1, 1001):
        a.record_us(v)
        b.record_us(v * 1000)
    merged = LatencyHistogram.decode(a.encode())
    merged.merge(LatencyHistogram.decode(b.encode()))
    assert merged.count == 2000
    assert merged.percentile_ms(50) == a.copy().max_ms() or merged.percentile_ms(50) <= 1.001
    assert merged.max_ms() >= 999.0


def test_empty_histogram_reports_nothing():
    h = LatencyHistogram()
    assert h.count == 0
    assert h.percentile_ms(99) is None
    assert h.summary()["p99"] is None
