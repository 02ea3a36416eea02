"""The figures a report shows and a gate compares, read from results in one place.

A figure a run did not measure is ``None``, never 0: a connect-only run has no
delivery latency, and a gate must say "not comparable" rather than "no change".
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from rtbench.results import Results
from rtbench.slo import Target

_PERCENTILE_OF_KEY = {"p50": 50.0, "p90": 90.0, "p99": 99.0, "p999": 99.9}


def latency_ms(results: Results, kind: str, key: str) -> float | None:
    """``key`` (p50, p90, p99, p999, max, mean) of ``latency[kind]`` in ms.

    Falls back to the encoded histogram when the summary lacks the figure, so a
    results file written by a tool that stored only ``hdr`` still compares.
    """
    summary = results.latency.get(kind)
    if summary is None:
        return None
    value = getattr(summary, key, None)
    if value is not None:
        return float(value)
    histogram = summary.histogram()
    if histogram is None or histogram.count == 0:
        return None
    if key == "max":
        return histogram.max_ms()
    if key == "mean":
        return histogram.mean_ms()
    percentile = _PERCENTILE_OF_KEY.get(key)
    return histogram.percentile_ms(percentile) if percentile is not None else None


def deliveries_per_second(results: Results) -> float | None:
    """Unique deliveries per second of the run; None when the run delivered nothing by design."""
    totals = results.totals
    if totals.expected_deliveries == 0 or results.run.duration_s <= 0:
        return None
    return totals.delivered / results.run.duration_s


def connections_held(results: Results) -> float | None:
    """Connections held at once, as the connections verdict judged them (held to the end, or
    answering heartbeats); the peak open when the run recorded no such verdict; None when the
    run never tried to connect."""
    for verdict in results.verdicts:
        if verdict.target is Target.CONNECTIONS and verdict.measured is not None:
            return verdict.measured
    totals = results.totals
    if totals.connections_attempted == 0 and totals.peak_connections == 0:
        return None
    return float(totals.peak_connections)


def loss_percent(results: Results) -> float | None:
    """Lost deliveries as a percentage of those expected."""
    totals = results.totals
    if totals.expected_deliveries == 0:
        return None
    return 100.0 * totals.lost / totals.expected_deliveries


@dataclass(frozen=True)
class Metric:
    """A figure a regression gate can compare; ``lower_is_better`` sets what a regression is."""

    name: str
    label: str
    unit: str
    lower_is_better: bool
    read: Callable[[Results], float | None]


def _latency(name: str, kind: str, key: str, label: str) -> Metric:
    return Metric(name, label, "ms", True, lambda r: latency_ms(r, kind, key))


METRICS: dict[str, Metric] = {
    m.name: m
    for m in (
        _latency("delivery_p50", "delivery", "p50", "delivery p50"),
        _latency("delivery_p90", "delivery", "p90", "delivery p90"),
        _latency("delivery_p99", "delivery", "p99", "delivery p99"),
        _latency("delivery_p999", "delivery", "p999", "delivery p99.9"),
        _latency("delivery_max", "delivery", "max", "delivery max"),
        Metric("throughput", "throughput", "deliveries/s", False, deliveries_per_second),
        Metric("connections", "connections held", "connections", False, connections_held),
        _latency("recovery_p50", "recovery", "p50", "recovery p50"),
        _latency("recovery_p99", "recovery", "p99", "recovery p99"),
        _latency("ack_p99", "ack", "p99", "ack p99"),
        _latency("handshake_p99", "handshake", "p99", "handshake p99"),
        Metric("loss", "lost deliveries", "%", True, loss_percent),
    )
}

DEFAULT_METRICS: tuple[str, ...] = (
    "delivery_p50",
    "delivery_p99",
    "throughput",
    "connections",
    "recovery_p99",
)
