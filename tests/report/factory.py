"""Realistic results for report tests: real HDR histograms filled with known values,
real verdicts from ``rtbench.slo``'s judges, per-second series shaped like a run."""

from __future__ import annotations

import msgspec

from rtbench.histogram import LatencyHistogram
from rtbench.results import (
    Environment,
    GeneratorHealth,
    LatencySummary,
    Results,
    RunInfo,
    SecondSample,
    Totals,
)
from rtbench.slo import (
    SLO,
    Target,
    dump_slo,
    exit_code_for,
    judge_connections,
    judge_percentile,
    judge_uptime,
    untrusted,
)

# Every chart of the report, in reading order (ids of rtbench.report.charts.Chart).
CHART_IDS = (
    "latency-over-time",
    "percentiles",
    "connections",
    "throughput",
    "errors",
    "generator-cpu",
    "generator-lag",
    "generator-cpus",
)


def histogram(*groups: tuple[int, float]) -> LatencyHistogram:
    """``histogram((9900, 2.0), (100, 150.0))``: 9,900 values of 2 ms and 100 of 150 ms."""
    h = LatencyHistogram()
    for count, ms in groups:
        h.record_many_us([round(ms * 1000)] * count)
    return h


def make_results(
    *,
    scenario: str = "chat",
    target: str = "ws://127.0.0.1:8765/ws",
    delivery: LatencyHistogram | None = None,
    recovery: LatencyHistogram | None = None,
    users: int = 1000,
    peak: int = 1000,
    duration_s: float = 60.0,
    seconds: int = 60,
    lost: int = 0,
    saturated: bool = False,
    slo: SLO | None = None,
    config: dict | None = None,
) -> Results:
    """A run of ``users`` connections for ``duration_s`` seconds, judged against ``slo``."""
    slo = slo or SLO()
    if delivery is None:
        delivery = histogram((9_900, 2.0), (90, 40.0), (10, 150.0))
    delivered = delivery.count
    latency = {
        "delivery": LatencySummary.of(delivery),
        "ack": LatencySummary.of(histogram((5_000, 1.0), (50, 9.0))),
    }
    if recovery is not None:
        latency["recovery"] = LatencySummary.of(recovery)
    series = [
        SecondSample(
            t=float(i),
            connections=min(peak, (i + 1) * peak // 5),
            sent=100 if i >= 5 else 0,
            acked=100 if i >= 5 else 0,
            delivered=delivered // seconds,
            errors=3 if i == 30 else 0,
            reconnects=2 if i == 31 else 0,
            delivery_p50=2.0,
            delivery_p99=40.0 if i % 10 else 150.0,
            delivery_max=150.0 + i,
            generator_cpu=40.0 + (50.0 if saturated else 0.0),
            loop_lag_ms=1.5,
            generator_cpus_busy=60.0 + (38.0 if saturated else 0.0),
        )
        for i in range(seconds)
    ]
    verdicts = [
        judge_uptime(slo, 0, 0, slo.uptime.window),
        judge_percentile(
            slo,
            Target.DELIVERY_LATENCY,
            delivery.percentile_ms(slo.delivery_latency.percentile),
            delivered,
        ),
        judge_connections(slo, peak, users),
        judge_percentile(
            slo,
            Target.RECOVERY,
            recovery.percentile_ms(slo.recovery.percentile) if recovery else None,
            recovery.count if recovery else 0,
        ),
    ]
    if saturated:
        verdicts = untrusted(verdicts, "generator CPU 95 % (threshold 90 %)")
    results = Results(
        run=RunInfo(
            id="20250101T000000Z-test",
            scenario=scenario,
            target=target,
            protocol="rtbench/1",
            started_at="2025-01-01T00:00:00Z",
            ended_at="2025-01-01T00:01:00Z",
            duration_s=duration_s,
            config=config
            if config is not None
            else {"users": users, "rate": 1.0, "room": {"size": 10}},
            slo=dump_slo(slo),
        ),
        environment=Environment.current(),
        generator=GeneratorHealth(
            processes=1,
            cpu_percent_mean=45.0,
            cpu_percent_max=95.0 if saturated else 48.0,
            loop_lag_ms_p99=1.5,
            loop_lag_ms_max=2.5,
            rss_bytes_max=80_000_000,
            cpu_saturation_percent=90.0,
            loop_lag_saturation_ms=50.0,
            saturated=saturated,
            notes=["generator CPU 95 % (threshold 90 %)"] if saturated else [],
        ),
        totals=Totals(
            connections_attempted=users,
            connections_opened=peak,
            connections_failed=users - peak,
            peak_connections=peak,
            sent=5_500,
            acked=5_500,
            expected_deliveries=delivered + lost,
            delivered=delivered,
            lost=lost,
            errors_by_code={"rate_limited": 3},
            reconnects=2,
        ),
        latency=latency,
        series=series,
        verdicts=verdicts,
    )
    return msgspec.structs.replace(results, exit_code=exit_code_for(verdicts))
