"""Prometheus metrics of the monitor (prometheus-client, its own registry).

Two kinds of series:
- Live counters and histograms, updated as each probe or recovery is stored. They
  restart at zero with the monitor, which ``rate()`` handles, and they feed the
  recording and burn-rate alert rules in ``monitor/prometheus/``. Every SLO is also
  exported as good/bad *events* (``rtbench_monitor_slo_events_total``) with its
  objective as a ratio, so one set of rules computes the burn rate of all of them:
  uptime (intervals), delivery latency (probe deliveries under the threshold) and
  recovery (held-connection recoveries under the threshold).
- Gauges read from the latest evaluated snapshot at scrape time (uptime ratio per
  window from the on-disk history, error budget, burn rate, verdict state), so they
  survive monitor restarts and always agree with /healthz and the status page.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from monitor.evaluate import Snapshot
from monitor.store import ProbeResult, Recovery
from rtbench.slo import SLO, Status, Target

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
_BASE_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
_RECOVERY_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0, 300.0)
EVENT_SLOS = (Target.UPTIME, Target.DELIVERY_LATENCY, Target.RECOVERY)


def _with(buckets: tuple[float, ...], *extra: float) -> tuple[float, ...]:
    """Buckets that include the SLO thresholds, so a rule can count events under them."""
    return tuple(sorted({*buckets, *extra}))


class MonitorMetrics:
    """The monitor's registry; ``render()`` is the body of /metrics."""

    def __init__(
        self,
        slo: SLO,
        targets: dict[str, str],
        snapshot: Callable[[], Snapshot | None],
    ) -> None:
        """``targets``: name -> uptime probe kind."""
        self.slo = slo
        self.registry = CollectorRegistry(auto_describe=True)
        latency_s = slo.delivery_latency.threshold_ms / 1000.0
        recovery_s = slo.recovery.threshold_ms / 1000.0
        self.probes = Counter(
            "rtbench_monitor_probes",
            "Probes run, by target, probe kind and result (ok, fail, not_counted: a failure "
            "the monitor's own stop explains).",
            ["target", "kind", "result"],
            registry=self.registry,
        )
        self.duration = Histogram(
            "rtbench_monitor_probe_duration_seconds",
            "Figure of each passing probe: delivery latency, echo round trip, handshake time, "
            "health-check time.",
            ["target", "kind"],
            buckets=_with(_BASE_BUCKETS, latency_s),
            registry=self.registry,
        )
        self.own_delay = Histogram(
            "rtbench_monitor_own_delay_seconds",
            "The monitor's own delay during each probe (its process kept from running: its "
            "own work, another process, a pause); the probe's timeout is extended by it.",
            ["target", "kind"],
            buckets=_with(_BASE_BUCKETS, latency_s),
            registry=self.registry,
        )
        self.recovery = Histogram(
            "rtbench_monitor_recovery_seconds",
            "Held connection: time from connection lost to resumed with every missed message.",
            ["target"],
            buckets=_with(_RECOVERY_BUCKETS, recovery_s),
            registry=self.registry,
        )
        self.events = Counter(
            "rtbench_monitor_slo_events",
            "SLO events by result: uptime intervals, probe deliveries under the latency "
            "threshold, recoveries under the recovery threshold.",
            ["target", "slo", "result"],
            registry=self.registry,
        )
        self.uptime_kind = dict(targets)
        for name in targets:
            self.recovery.labels(name)  # zero buckets from the start, so rate() has a base
            for slo_name in EVENT_SLOS:
                for result in ("good", "bad"):
                    self.events.labels(name, slo_name.value, result)
        self.registry.register(_SnapshotCollector(slo, snapshot))

    def observe_probe(self, result: ProbeResult) -> None:
        outcome = "ok" if result.ok else "fail" if result.counted else "not_counted"
        self.probes.labels(result.target, result.kind, outcome).inc()
        if result.own_ms is not None:
            self.own_delay.labels(result.target, result.kind).observe(result.own_ms / 1000.0)
        if result.ok and result.latency_ms is not None:
            self.duration.labels(result.target, result.kind).observe(result.latency_ms / 1000.0)
        if result.kind == self.uptime_kind.get(result.target) and result.counted:
            self._event(result.target, Target.UPTIME, result.ok)
            if result.ok and result.latency_ms is not None:
                # over the threshold only by the monitor's own delay: neither good nor bad
                threshold = self.slo.delivery_latency.threshold_ms
                own = result.latency_own_ms or 0.0
                if result.latency_ms < threshold:
                    self._event(result.target, Target.DELIVERY_LATENCY, True)
                elif result.latency_ms - own >= threshold:
                    self._event(result.target, Target.DELIVERY_LATENCY, False)

    def observe_recovery(self, recovery: Recovery) -> None:
        self.recovery.labels(recovery.target).observe(recovery.ms / 1000.0)
        ok = recovery.complete and recovery.ms < self.slo.recovery.threshold_ms
        self._event(recovery.target, Target.RECOVERY, ok)

    def _event(self, target: str, slo: Target, good: bool) -> None:
        self.events.labels(target, slo.value, "good" if good else "bad").inc()

    def render(self) -> bytes:
        return generate_latest(self.registry)


class _SnapshotCollector(Collector):
    """Gauges computed from the evaluated snapshot at scrape time."""

    def __init__(self, slo: SLO, snapshot: Callable[[], Snapshot | None]) -> None:
        self.slo = slo
        self.snapshot = snapshot

    def describe(self) -> Iterator[Metric]:
        return iter(())  # dynamic: do not run the collector at registration

    def collect(self) -> Iterator[Metric]:
        snap = self.snapshot()
        slo = self.slo
        up = GaugeMetricFamily(
            "rtbench_monitor_up",
            "1 when the target's last probe interval was good and no incident is open.",
            labels=["target"],
        )
        ratio = GaugeMetricFamily(
            "rtbench_monitor_uptime_ratio",
            "Good probe intervals over observed intervals in the window (on-disk history).",
            labels=["target", "window"],
        )
        burn = GaugeMetricFamily(
            "rtbench_monitor_burn_rate",
            "Bad share of the window's intervals over the share the uptime objective allows.",
            labels=["target", "window"],
        )
        budget = GaugeMetricFamily(
            "rtbench_monitor_error_budget_remaining_ratio",
            "Share of the SLO window's uptime error budget left (negative: overspent).",
            labels=["target"],
        )
        state = GaugeMetricFamily(
            "rtbench_monitor_slo_state",
            "Verdict of each SLO target: 1 on the current state (pass, fail, not_measured, "
            "inconclusive: a failure the monitor's own delay could explain).",
            labels=["target", "slo", "state"],
        )
        objective = GaugeMetricFamily(
            "rtbench_monitor_slo_objective_ratio",
            "Share of SLO events that must be good (uptime objective, latency and recovery "
            "percentile).",
            labels=["target", "slo"],
        )
        threshold = GaugeMetricFamily(
            "rtbench_monitor_slo_threshold_seconds",
            "Threshold of the latency and recovery SLOs.",
            labels=["target", "slo"],
        )
        latency = GaugeMetricFamily(
            "rtbench_monitor_delivery_latency_seconds",
            "Probe delivery latency over the health window, by percentile (50, 99).",
            labels=["target", "percentile"],
        )
        connections = GaugeMetricFamily(
            "rtbench_monitor_target_connections",
            "Open connections the target reports (its /healthz or /metrics).",
            labels=["target"],
        )
        connections_min = GaugeMetricFamily(
            "rtbench_monitor_slo_connections_min",
            "Connections the SLO says the target must hold at once.",
            labels=["target"],
        )
        incident = GaugeMetricFamily(
            "rtbench_monitor_incident_open",
            "1 while an incident (consecutive failing intervals) is open.",
            labels=["target"],
        )
        healthy = GaugeMetricFamily(
            "rtbench_monitor_healthy",
            "1 when no SLO verdict of the target fails (what /healthz answers).",
            labels=["target"],
        )
        families = [
            up,
            ratio,
            burn,
            budget,
            state,
            objective,
            threshold,
            latency,
            connections,
            connections_min,
            incident,
            healthy,
        ]
        if snap is None:
            yield from families
            return
        for t in snap.targets:
            if t.up is not None:
                up.add_metric([t.name], 1.0 if t.up else 0.0)
            for w in t.windows:
                if w.ratio is not None:
                    ratio.add_metric([t.name, w.window], w.ratio)
                if w.burn_rate is not None:
                    burn.add_metric([t.name, w.window], w.burn_rate)
            budget.add_metric([t.name], t.budget.remaining)
            for v in t.verdicts:
                inconclusive = v.failed and not v.trusted  # the monitor's own delay may explain it
                for s in Status:
                    on = v.status is s and not (inconclusive and s is Status.FAIL)
                    state.add_metric([t.name, v.target.value, s.value], float(on))
                state.add_metric([t.name, v.target.value, "inconclusive"], float(inconclusive))
            objective.add_metric([t.name, Target.UPTIME.value], slo.uptime.objective / 100.0)
            objective.add_metric(
                [t.name, Target.DELIVERY_LATENCY.value], slo.delivery_latency.percentile / 100.0
            )
            objective.add_metric([t.name, Target.RECOVERY.value], slo.recovery.percentile / 100.0)
            threshold.add_metric(
                [t.name, Target.DELIVERY_LATENCY.value], slo.delivery_latency.threshold_ms / 1000
            )
            threshold.add_metric([t.name, Target.RECOVERY.value], slo.recovery.threshold_ms / 1000)
            for q, value in (("50", t.latency.p50), ("99", t.latency.p99)):
                if value is not None:
                    latency.add_metric([t.name, q], value / 1000.0)
            if t.connections.current is not None:
                connections.add_metric([t.name], t.connections.current)
            connections_min.add_metric([t.name], float(slo.connections.min))
            open_now = any(i.open for i in t.incidents)
            incident.add_metric([t.name], 1.0 if open_now else 0.0)
            healthy.add_metric([t.name], 1.0 if t.status == "pass" else 0.0)
        yield from families
