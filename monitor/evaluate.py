"""From probe history to the four verdicts per target: the snapshot every endpoint serves.

``evaluate`` runs in the store's reader thread (it only reads SQLite) and returns one
immutable ``Snapshot``; /healthz, /metrics and the status page all render the same
snapshot, so they never disagree with each other.

Windows of the verdicts:
- uptime: the SLO file's window (default 30 d), judged by its error budget (budget.py),
  and failing at once while an incident is open: a service that is down does not hold.
- delivery latency and recovery: the ``health_window`` (default 1 h), so a regression
  shows within the hour and an old one stops failing /healthz after it.
- connections: the strongest evidence within the SLO window (see ``_connections``).
"""

from __future__ import annotations

import functools
import time
from typing import Literal

import msgspec
from msgspec import Struct

from loadtest.adapters import AdapterError, Feature, make_adapter
from monitor.budget import BudgetView, WindowView, error_budget, window_view
from monitor.config import (
    UPTIME_WINDOWS,
    Settings,
    TargetConfig,
    default_health_url,
    default_metrics,
)
from monitor.store import Incident, IngestedRun, ProbeResult, ProbeStore, Recovery
from rtbench.histogram import LatencyHistogram
from rtbench.results import LatencySummary
from rtbench.slo import (
    SLO,
    Status,
    Target,
    Verdict,
    dump_slo,
    judge_connections,
    judge_percentile,
    judge_uptime,
    judge_with_missing,
    parse_window,
    within_generator_delay,
)

ProbeKind = Literal["connect", "delivery", "echo", "health", "metrics"]
RECENT_INCIDENTS = 20
_PERCENTILES = (("p50", 50.0), ("p90", 90.0), ("p99", 99.0), ("p999", 99.9))


def uptime_kind(target: TargetConfig) -> str:
    """The probe whose result decides an interval: connect + send + receive (``delivery``,
    for protocols with rooms), or connect + a round trip (``echo``)."""
    options = msgspec.json.encode(target.protocol_options)
    return "delivery" if _has_rooms(target.protocol, options) else "echo"


@functools.lru_cache(maxsize=64)
def _has_rooms(protocol: str, options: bytes) -> bool:
    """Whether the configured adapter joins rooms (cached: a FILE.py adapter loads once)."""
    try:
        return Feature.ROOMS in make_adapter(protocol, msgspec.json.decode(options)).features
    except AdapterError:  # the service refuses such a target before anything is probed
        return False


def probe_kinds(target: TargetConfig) -> list[str]:
    kinds = ["connect", uptime_kind(target)]
    if default_health_url(target):
        kinds.append("health")
    if default_metrics(target):
        kinds.append("metrics")
    return kinds


class LatencyView(LatencySummary, kw_only=True, omit_defaults=False):
    """The results-file latency summary over the health window (every key, even when empty)."""

    window: str


class OwnDelayView(Struct, kw_only=True):
    """The monitor's own delay in its uptime probes over the health window
    (``monitor.prober``): never charged to the target."""

    window: str
    not_counted: int  # failures its own stop explains: neither good nor bad intervals
    measured: int  # probes whose own delay was measured
    max_ms: float | None = None  # the most the monitor itself added to one probe


class RecoveryView(Struct, kw_only=True):
    window: str
    source: Literal["held_connection", "incidents"]
    count: int
    incomplete: int
    p50: float | None = None
    p99: float | None = None
    max: float | None = None
    last: Recovery | None = None


class ConnectionsView(Struct, kw_only=True):
    current: float | None  # the target's latest own count
    peak: float | None  # the target's largest own count in the SLO window
    runs: list[IngestedRun] = []  # ingested `rtbench run` results in the SLO window


class Bar(Struct, kw_only=True):
    start: float
    seconds: int
    total: int
    good: int


class TargetStatus(Struct, kw_only=True):
    name: str
    url: str
    protocol: str
    status: Literal["pass", "fail"]
    up: bool | None  # None before the first probe
    verdicts: list[Verdict]
    windows: list[WindowView]
    budget: BudgetView
    latency: LatencyView
    own_delay: OwnDelayView
    recovery: RecoveryView
    connections: ConnectionsView
    probes: list[ProbeResult]  # the last of each kind
    incidents: list[Incident]
    bars_hourly: list[Bar]
    bars_daily: list[Bar]


class Snapshot(Struct, kw_only=True):
    status: Literal["pass", "fail"]
    generated_at: float
    interval_s: float
    slo: dict
    targets: list[TargetStatus]

    def target(self, name: str) -> TargetStatus:
        for status in self.targets:
            if status.name == name:
                return status
        raise KeyError(name)


def evaluate(store: ProbeStore, settings: Settings, now: float | None = None) -> Snapshot:
    now = time.time() if now is None else now
    targets = [_evaluate_target(store, settings, t, now) for t in settings.targets]
    failing = any(t.status == "fail" for t in targets)
    return Snapshot(
        status="fail" if failing else "pass",
        generated_at=now,
        interval_s=settings.interval,
        slo=dump_slo(settings.slo),
        targets=targets,
    )


def _evaluate_target(
    store: ProbeStore,
    settings: Settings,
    target: TargetConfig,
    now: float,
) -> TargetStatus:
    slo = settings.slo
    name = target.resolved_name()
    kind = uptime_kind(target)
    slo_window = slo.uptime.window
    slo_seconds = slo.uptime.window_seconds
    windows = {w: parse_window(w) for w in (*UPTIME_WINDOWS, slo_window)}
    counts = store.window_counts(name, kind, {w: now - s for w, s in windows.items()})
    views = [
        window_view(
            w,
            windows[w],
            counts[w].total,
            counts[w].good,
            settings.interval,
            slo.uptime.objective,
        )
        for w in UPTIME_WINDOWS
    ]
    slo_count = counts[slo_window]
    budget = error_budget(
        slo_window,
        slo_seconds,
        slo_count.total,
        slo_count.good,
        settings.interval,
        slo.uptime.objective,
    )
    open_incident = store.open_incident(name, kind)
    health_label = _label(settings.health_window)
    health_since = now - settings.health_window

    pairs = store.latencies(name, kind, health_since)
    latency_hist, low_hist = LatencyHistogram(), LatencyHistogram()
    latency_hist.record_many_us(int(ms * 1000) for ms, _ in pairs)
    # each probe's figure without the monitor's own delay inside it: the server's share
    low_hist.record_many_us(int(max(0.0, ms - own) * 1000) for ms, own in pairs)
    latency = LatencyView(
        window=health_label,
        count=len(pairs),
        # the raw values give the mean exactly (the HDR mean takes each bucket's middle)
        mean=sum(ms for ms, _ in pairs) / len(pairs) if pairs else None,
        max=latency_hist.max_ms(),
        bound=own_bounds(latency_hist, low_hist),
    )
    for key, p in _PERCENTILES:
        setattr(latency, key, latency_hist.percentile_ms(p))
    not_counted, with_own, own_max = store.own_delay(name, kind, health_since)
    own_delay = OwnDelayView(
        window=health_label, not_counted=not_counted, measured=with_own, max_ms=own_max
    )

    recovery, recovery_verdict = _recovery(
        store, slo, target, name, kind, health_since, health_label, now - slo_seconds
    )
    connections, connections_verdict = _connections(store, slo, name, now - slo_seconds)

    verdicts = [
        _uptime_verdict(
            slo, slo_count.total, slo_count.good, budget, open_incident, settings.interval
        ),
        within_own_delay(
            _with_window(
                judge_percentile(
                    slo,
                    Target.DELIVERY_LATENCY,
                    latency_hist.percentile_ms(slo.delivery_latency.percentile),
                    latency_hist.count,
                ),
                f"probe deliveries, last {health_label}",
            ),
            slo,
            latency_hist,
            low_hist,
        ),
        connections_verdict,
        recovery_verdict,
    ]
    probes = [
        last
        for last in (store.last_probe(name, probe_kind) for probe_kind in probe_kinds(target))
        if last is not None
    ]
    last_uptime = next((p for p in probes if p.kind == kind), None)
    up = None if last_uptime is None else open_incident is None and last_uptime.ok
    return TargetStatus(
        name=name,
        url=target.url,
        protocol=target.protocol,
        status="fail" if any(v.failed and v.trusted for v in verdicts) else "pass",
        up=up,
        verdicts=verdicts,
        windows=views,
        budget=budget,
        latency=latency,
        own_delay=own_delay,
        recovery=recovery,
        connections=connections,
        probes=probes,
        incidents=store.incidents(name, RECENT_INCIDENTS),
        bars_hourly=_bars(store, name, kind, now, 3600, 24),
        bars_daily=_bars(store, name, kind, now, 86400, 30),
    )


OWN_CAUSE = "its own process was kept from running: its own work, another process, a pause"


def own_bounds(latency: LatencyHistogram, low: LatencyHistogram) -> dict[str, float]:
    """The monitor's own delay that may be inside each latency percentile (ms): the
    percentile of the probes' figures minus that of their figures without it."""
    if not latency.count:
        return {}
    return {
        key: round(max(0.0, (latency.percentile_ms(p) or 0.0) - (low.percentile_ms(p) or 0.0)), 3)
        for key, p in _PERCENTILES
    }


def within_own_delay(
    verdict: Verdict, slo: SLO, latency: LatencyHistogram, low: LatencyHistogram
) -> Verdict:
    """The latency verdict judged with the monitor's own delay in its probes, by the rule
    a load run's generator delay is judged by (``rtbench.slo.within_generator_delay``):
    the server's own percentile lies between that of the figures without the monitor's
    delay and that of the figures."""
    if not latency.count:
        return verdict
    percentile = slo.delivery_latency.percentile
    bound = (latency.percentile_ms(percentile) or 0.0) - (low.percentile_ms(percentile) or 0.0)
    return within_generator_delay(
        verdict, slo.delivery_latency.threshold_ms, max(0.0, bound), OWN_CAUSE, "the monitor"
    )


def _label(seconds: float) -> str:
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size and seconds % size == 0:
            return f"{int(seconds // size)}{unit}"
    return f"{seconds:g}s"


def _with_window(verdict: Verdict, where: str) -> Verdict:
    return msgspec.structs.replace(verdict, detail=f"{verdict.detail} ({where})")


def _uptime_verdict(
    slo: SLO,
    total: int,
    good: int,
    budget: BudgetView,
    incident: Incident | None,
    interval_s: float,
) -> Verdict:
    """Judged by the error budget of the SLO window, worded so that it cannot read as a
    contradiction: the uptime observed over what was observed (25 s after a start, not
    30 days), then the budget used and left in time. It passes while the budget lasts,
    and the status page calls that "within budget", not a bare "pass"."""
    base = judge_uptime(slo, good, total, slo.uptime.window)
    if base.status is Status.NOT_MEASURED:
        return base
    ratio = 100.0 * good / total
    observed = (
        f"{ratio:.3f} % of {total:,} intervals good over the {_span(total * interval_s)} observed"
    )
    allowed_s = budget.allowed * interval_s
    used_s = budget.used * interval_s
    share = used_s / allowed_s if allowed_s else 1.0
    words = (
        f"error budget of {slo.uptime.window}: {_span(used_s)} of {_span(allowed_s)} used "
        f"({share:.1%}), {_span(max(allowed_s - used_s, 0.0))} left"
    )
    if incident is not None:
        since = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(incident.started_at))
        return msgspec.structs.replace(
            base,
            status=Status.FAIL,
            detail=f"down since {since}: {incident.cause}; {observed}; {words}",
        )
    if budget.used > budget.allowed:
        return msgspec.structs.replace(
            base, status=Status.FAIL, detail=f"error budget spent: {observed}; {words}"
        )
    return msgspec.structs.replace(base, status=Status.PASS, detail=f"{observed}; {words}")


def _span(seconds: float) -> str:
    """A duration in the largest unit that keeps it readable: 5 s, 43 min 12 s, 2 h 5 min."""
    if seconds < 60:
        return f"{seconds:.3g} s"
    minutes, secs = divmod(round(seconds), 60)
    if minutes < 60:
        return f"{minutes} min {secs} s" if secs else f"{minutes} min"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes} min" if minutes else f"{hours} h"


def _recovery(
    store: ProbeStore,
    slo: SLO,
    target: TargetConfig,
    name: str,
    kind: str,
    since: float,
    label: str,
    checks_since: float,
) -> tuple[RecoveryView, Verdict]:
    """Held-connection recoveries; a target without a held connection uses its incidents.

    Every client recovery of the ``rtbench check`` runs ingested in the SLO window
    (``checks_since``) counts too: a check measures what one held connection cannot, a
    whole population coming back after a restart.
    """
    hist = LatencyHistogram()
    last: Recovery | None = None
    incomplete = 0
    if target.held_connection:
        source: Literal["held_connection", "incidents"] = "held_connection"
        for recovery in store.recoveries(name, since):
            hist.record_us(int(recovery.ms * 1000))
            incomplete += not recovery.complete
            last = recovery
    else:
        source = "incidents"
        for incident in store.incidents(name, 10_000, since=since):
            if incident.duration_s is not None:
                hist.record_us(int(incident.duration_s * 1_000_000))
    checks = [r for r in store.runs(name, checks_since) if r.recovery_hdr or r.unrecovered]
    for run in checks:
        if run.recovery_hdr:
            hist.merge(LatencyHistogram.decode(run.recovery_hdr))
    view = RecoveryView(
        window=label,
        source=source,
        count=hist.count,
        incomplete=incomplete,
        p50=hist.percentile_ms(50),
        p99=hist.percentile_ms(99),
        max=hist.max_ms(),
        last=last,
    )
    where = (
        f"held connection, last {label}" if source == "held_connection" else f"incidents, {label}"
    )
    if checks:
        where += f"; {sum(r.recoveries for r in checks):,} clients of {len(checks)} rtbench check"
        where += "s" if len(checks) > 1 else f" {checks[0].run_id}"
    # a check's client that never came back is the slowest of all (as in the check's own
    # verdict); a held connection still recovering has no figure yet and counts nowhere
    unrecovered = sum(r.unrecovered for r in checks)
    if unrecovered:
        where += f", {unrecovered:,} never recovered"
    verdict = _with_window(judge_with_missing(slo, Target.RECOVERY, hist, unrecovered), where)
    if verdict.status is Status.NOT_MEASURED:
        verdict = msgspec.structs.replace(
            verdict, detail=f"no connection was lost and recovered ({where})"
        )
    if incomplete:
        verdict = msgspec.structs.replace(
            verdict,
            status=Status.FAIL,
            detail=f"{incomplete} resume(s) did not get every missed message; {verdict.detail}",
        )
    return view, verdict


def _connections(
    store: ProbeStore, slo: SLO, name: str, since: float
) -> tuple[ConnectionsView, Verdict]:
    """Strongest evidence in the SLO window.

    Pass when the target's own count or any ingested run shows ``min`` held at once.
    Fail when an ingested run aimed at ``min`` or more and held fewer (and nothing shows
    it held). Otherwise not measured: a quiet service with few users proves nothing.
    """
    peaks = [store.peak_value(name, kind, since) for kind in ("health", "metrics")]
    peak = max((p for p, _ in peaks if p is not None), default=None)
    current = next((c for _, c in peaks if c is not None), None)
    runs = store.runs(name, since)
    view = ConnectionsView(current=current, peak=peak, runs=runs)
    best_run = max(runs, key=lambda r: r.peak_connections, default=None)
    if (
        peak is not None
        and peak >= slo.connections.min
        and (best_run is None or peak >= best_run.peak_connections)
    ):
        verdict = judge_connections(slo, int(peak), None)
        return view, _with_window(verdict, "the target's own count")
    if best_run is not None:
        verdict = judge_connections(slo, best_run.peak_connections, best_run.attempted)
        return view, _with_window(verdict, f"rtbench run {best_run.run_id}")
    if peak is not None:
        verdict = judge_connections(slo, int(peak), int(peak))
        return view, msgspec.structs.replace(
            verdict,
            detail=(
                f"the target held at most {int(peak):,} connections; it has not been shown "
                f"to hold {slo.connections.min:,} (ingest a `rtbench run connect` result)"
            ),
        )
    return view, Verdict(
        target=Target.CONNECTIONS,
        status=Status.NOT_MEASURED,
        objective=judge_connections(slo, None, None).objective,
        unit="connections",
        detail="the target exposes no connection count and no run was ingested",
    )


def _bars(
    store: ProbeStore, name: str, kind: str, now: float, seconds: int, count: int
) -> list[Bar]:
    first = (int(now) // seconds - count + 1) * seconds
    got = store.buckets(name, kind, first, seconds)
    bars = []
    for i in range(count):
        start = first + i * seconds
        c = got.get(start)
        bars.append(
            Bar(start=start, seconds=seconds, total=c.total if c else 0, good=c.good if c else 0)
        )
    return bars
