"""From a merged ``Outcome`` to ``rtbench.results.Results``: totals, series, verdicts.

Verdicts come from ``rtbench.slo``. Two rules make them honest:

- delivery latency is a percentile over *every expected delivery*: a lost message counts
  as slower than any threshold, so a run that loses more than 1 % cannot pass a p99
  target however fast the rest arrived;
- the generator's own delay is measured (``send_lag``: scheduled send -> written;
  ``loop_delay``: how late its timer woke, which every frame arriving meanwhile waited
  too) and bounds every latency figure at the same percentile: a failed verdict the
  bound could flip is inconclusive, one that fails even without it is the server's
  (``rtbench.slo.within_generator_delay``);
- a run whose generator's CPU was at the limit has its verdicts marked untrustworthy
  (``rtbench.slo.untrusted``): exit code 4 rather than blaming the server.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from datetime import UTC, datetime

import msgspec

from loadtest.faults.analysis import summarize as summarize_recovery
from loadtest.run.outcome import Outcome
from loadtest.scenarios import Kind
from rtbench import slo as slo_mod
from rtbench.exitcodes import ExitCode
from rtbench.histogram import LatencyHistogram
from rtbench.results import (
    Environment,
    GeneratorHealth,
    LatencySummary,
    Results,
    RunInfo,
    SecondSample,
    Totals,
    Window,
)

SATURATED_SHARE = 0.2
"""A worker is saturated when its CPU was at the limit in this share of measured seconds."""


def _hot_seconds(samples: list[float], limit: float) -> int:
    """Seconds at or above ``limit`` when they make the share rule hold (at least 2, and
    ``SATURATED_SHARE`` of the samples), else 0: one rule for a worker's CPU and its CPUs'."""
    hot = sum(1 for v in samples if v >= limit)
    return hot if samples and hot >= max(2, SATURATED_SHARE * len(samples)) else 0


CLOCK_NOTE = (
    "same machine: CLOCK_MONOTONIC, system-wide on Linux, stamps sends and receipts "
    "in every generator process"
)


def _iso(wall: float) -> str:
    return datetime.fromtimestamp(wall, UTC).isoformat(timespec="milliseconds")


def lost_of(outcome: Outcome) -> int:
    return max(0, outcome.counters["expected"] - outcome.counters["delivered"])


def delivery_verdict(
    slo: slo_mod.SLO, hist: LatencyHistogram | None, expected: int, delivered: int
) -> slo_mod.Verdict:
    """Judge the latency percentile over every expected delivery, lost ones included."""
    lost = max(0, expected - delivered)
    return slo_mod.judge_with_missing(
        slo, slo_mod.Target.DELIVERY_LATENCY, hist if delivered else None, lost
    )


def _span(cpus: list[int]) -> str:
    """CPUs as a person reads them: "0-3", "1", "0,2"."""
    if cpus and cpus == list(range(cpus[0], cpus[-1] + 1)) and len(cpus) > 1:
        return f"{cpus[0]}-{cpus[-1]}"
    return ",".join(str(c) for c in cpus) or "?"


def _cpus_full(outcome: Outcome) -> str | None:
    """The generator's CPUs were full: the per-worker rule cannot see workers that fill
    them together (4 at 25 % each are one full core), nor a server running on the same
    CPUs. Both take their CPU from one machine then, so a late delivery may be either
    starving the other: the figures are the machine's, not the server's alone. The same
    share rule as for one worker, on how busy its CPUs were with all their work; a note
    once per set of CPUs (workers inherit the run's affinity, so usually one)."""
    sc = outcome.scenario
    worst: dict[tuple[int, ...], tuple[int, int]] = {}  # CPUs -> (hot seconds, of seconds)
    for cpus, samples in zip(outcome.cpus, outcome.cpus_busy_samples, strict=True):
        hot = _hot_seconds(samples, sc.max_cpu_percent)
        if hot > worst.get(tuple(cpus), (0, 0))[0]:
            worst[tuple(cpus)] = (hot, len(samples))
    if not worst:
        return None
    parts = [
        f"CPU{'s' * (len(cpus) != 1)} {_span(list(cpus))} busy at or above "
        f"{sc.max_cpu_percent:g} % in {hot} of {n} seconds"
        for cpus, (hot, n) in worst.items()
    ]
    return (
        f"the generator's {'; '.join(parts)}, with its own work and whatever else ran there "
        "(the server, when it shares them): a late delivery may be either one starving the "
        "other; pin the server and the generator to separate cores (taskset) to judge the "
        "server alone"
    )


def generator_health(outcome: Outcome) -> GeneratorHealth:
    sc = outcome.scenario
    cpu_all = [v for samples in outcome.cpu_samples for v in samples]
    lag_all = sorted(v for samples in outcome.lag_samples for v in samples)
    notes = list(outcome.notes)
    saturated = False
    for worker, samples in enumerate(outcome.cpu_samples):
        if hot := _hot_seconds(samples, sc.max_cpu_percent):
            saturated = True
            notes.append(
                f"worker {worker}: CPU at or above {sc.max_cpu_percent:g} % of a core "
                f"in {hot} of {len(samples)} seconds"
            )
    full = _cpus_full(outcome)
    if full is not None:
        saturated = True
        notes.append(full)
    for worker, samples in enumerate(outcome.lag_samples):
        slow = sum(1 for v in samples if v > sc.max_loop_lag_ms)
        if slow >= 2:  # its delay is in every verdict's bound (within_generator_delay)
            notes.append(
                f"worker {worker}: event-loop lag over {sc.max_loop_lag_ms:g} ms "
                f"in {slow} of {len(samples)} seconds"
            )
    return GeneratorHealth(
        processes=sc.procs,
        cpu_percent_mean=round(sum(cpu_all) / len(cpu_all), 1) if cpu_all else None,
        cpu_percent_max=max(cpu_all) if cpu_all else None,
        loop_lag_ms_p99=round(lag_all[min(len(lag_all) - 1, int(0.99 * len(lag_all)))], 2)
        if lag_all
        else None,
        loop_lag_ms_max=round(lag_all[-1], 2) if lag_all else None,
        rss_bytes_max=max(outcome.rss_max) if outcome.rss_max else None,
        cpu_saturation_percent=sc.max_cpu_percent,
        loop_lag_saturation_ms=sc.max_loop_lag_ms,
        saturated=saturated,
        notes=notes,
    )


DELAY_PARTS = {
    "delivery": ("send_lag", "loop_delay"),  # sent late, and stamped late on arrival
    "ack": ("send_lag", "loop_delay"),
    "recovery": ("loop_delay",),  # the way back is noticed (and retried) late
    "reconnect": ("loop_delay",),
}
"""What of the generator's own delay can be inside each latency, by name."""
_BOUND_KEYS = {"p50": 50.0, "p90": 90.0, "p99": 99.0, "p999": 99.9}


def generator_bound(
    histograms: dict[str, LatencyHistogram], latency: str, percentile: float
) -> float | None:
    """The most the generator itself can have added to ``latency`` at ``percentile`` (ms):
    its delay parts, each at ``rtbench.slo.bound_percentile`` (None: not measured)."""
    parts = [histograms.get(part) for part in DELAY_PARTS.get(latency, ())]
    if not parts or any(h is None or not h.count for h in parts):
        return None
    q = slo_mod.bound_percentile(percentile)
    return round(sum(h.percentile_ms(q) or 0.0 for h in parts if h is not None), 3)


def delay_cause(outcome: Outcome) -> str:
    """Why the generator was slow, in words, from what its processes measured."""
    cpu = (v for samples in outcome.cpu_samples for v in samples)
    return delay_cause_of(cpu, outcome.scenario.max_cpu_percent)


def delay_cause_of(cpu_samples: Iterable[float], max_cpu_percent: float) -> str:
    """``delay_cause`` from the generator's CPU samples (% of a core) and its limit."""
    if any(v >= max_cpu_percent for v in cpu_samples):
        return "its own work filled its core"
    return (
        "it was kept from running while its own CPU share was low: another process on its "
        "core, a pause (GC, SIGSTOP) or the machine's own scheduling"
    )


def bounded(
    verdict: slo_mod.Verdict, outcome: Outcome, latency: str, threshold_ms: float
) -> slo_mod.Verdict:
    """``verdict`` judged with the generator's own delay on ``latency`` at its percentile."""
    return bounded_by(verdict, outcome.histograms, latency, threshold_ms, delay_cause(outcome))


def bounded_by(
    verdict: slo_mod.Verdict,
    histograms: dict[str, LatencyHistogram],
    latency: str,
    threshold_ms: float,
    cause: str,
) -> slo_mod.Verdict:
    """``bounded`` from the delay histograms themselves (a Locust master's live figures)."""
    bound = verdict_bound(verdict, histograms, latency)
    return slo_mod.within_generator_delay(verdict, threshold_ms, bound, cause)


def verdict_bound(
    verdict: slo_mod.Verdict, histograms: dict[str, LatencyHistogram], latency: str
) -> float | None:
    """The generator's own delay on ``latency`` at ``verdict``'s percentile (ms)."""
    return generator_bound(histograms, latency, slo_mod.percentile_of(verdict))


def verdicts_for(
    outcome: Outcome,
    slo: slo_mod.SLO,
    health: GeneratorHealth,
    recovery: slo_mod.Verdict | None = None,
) -> list[slo_mod.Verdict]:
    kind = outcome.plan.kind
    c = outcome.counters
    if kind is Kind.CONNECT:
        latency = slo_mod.judge_percentile(slo, slo_mod.Target.DELIVERY_LATENCY, None, 0)
        latency = msgspec.structs.replace(
            latency, detail="the connect scenario sends no messages (use chat, fanout or rtt)"
        )
        held = outcome.answering
    else:
        latency = delivery_verdict(
            slo, outcome.histograms.get("delivery"), c["expected"], c["delivered"]
        )
        held = outcome.held
    histograms = getattr(outcome, "histograms", {})
    if histograms.get("loop_delay") is not None:  # (a synthetic outcome may have none)
        latency = bounded(latency, outcome, "delivery", slo.delivery_latency.threshold_ms)
        if recovery is not None:
            recovery = bounded(recovery, outcome, "recovery", slo.recovery.threshold_ms)
    verdicts = [
        slo_mod.judge_uptime(slo, 0, 0, slo.uptime.window),
        latency,
        slo_mod.judge_connections(slo, held, outcome.plan.connections),
        recovery or slo_mod.judge_percentile(slo, slo_mod.Target.RECOVERY, None, 0),
    ]
    verdicts[0] = msgspec.structs.replace(
        verdicts[0], detail="uptime is measured over time by the monitor (`rtbench monitor`)"
    )
    if health.saturated:
        verdicts = slo_mod.untrusted(verdicts, "the load generator was saturated")
    return verdicts


def series_of(outcome: Outcome) -> list[SecondSample]:
    samples = []
    for s in outcome.seconds:
        d = s.delivery
        samples.append(
            SecondSample(
                t=float(s.t),
                connections=s.connections,
                sent=s.counters["sent"],
                acked=s.counters["acked"],
                delivered=s.counters["delivered"],
                errors=s.counters["errors"] + s.counters["failed"],
                reconnects=s.counters["reconnects"],
                delivery_p50=d.percentile_ms(50.0),
                delivery_p99=d.percentile_ms(99.0),
                delivery_max=d.max_ms(),
                generator_cpu=round(s.cpu, 1),
                loop_lag_ms=round(s.lag_ms, 2),
                generator_cpus_busy=None if s.cpus_busy is None else round(s.cpus_busy, 1),
            )
        )
    return samples


def windows_of(outcome: Outcome) -> list[Window]:
    """Soak: per-window sends, deliveries and losses (by scheduled send time) and latency."""
    sc = outcome.scenario
    if sc.scenario is not Kind.SOAK or outcome.go_ns is None:
        return []
    width = max(1, int(sc.window or 60))
    first = (outcome.go_ns - outcome.t0_ns) // 1_000_000_000
    # send_end_ns is set with go_ns (both drivers set them at the go): not None here
    last = (outcome.send_end_ns - outcome.t0_ns) // 1_000_000_000  # type: ignore[operator]
    by_second = {s.t: s for s in outcome.seconds}
    windows = []
    for start in range(first, last + 1, width):
        end = min(start + width, last + 1)
        seconds = range(start, end)
        sent = sum(outcome.sent_by_second.get(k, 0) for k in seconds)
        expected = sum(outcome.expected_by_second.get(k, 0) for k in seconds)
        delivered = sum(outcome.delivered_by_second.get(k, 0) for k in seconds)
        hist = LatencyHistogram()
        for k in range(start + 1, end + 1):  # tick k covers receipts in (k-1, k]
            if k in by_second:
                hist.merge(by_second[k].delivery)
        windows.append(
            Window(
                start=float(start),
                end=float(end),
                sent=sent,
                delivered=delivered,
                lost=max(0, expected - delivered),
                delivery=LatencySummary.of(hist),
            )
        )
    return windows


def totals_of(outcome: Outcome) -> Totals:
    c = outcome.counters
    return Totals(
        connections_attempted=c["attempted"],
        connections_opened=c["opened"],
        connections_failed=c["failed"],
        peak_connections=outcome.peak_connections,
        failures_by_cause=dict(outcome.failures_by_cause),
        closes_by_code=dict(outcome.closes_by_code),
        sent=c["sent"],
        acked=c["acked"],
        expected_deliveries=c["expected"],
        delivered=c["delivered"],
        lost=lost_of(outcome),
        duplicated=c["duplicated"],
        duplicated_after_dedupe=c["dup_after_dedupe"],
        out_of_order=c["out_of_order"],
        errors_by_code=dict(outcome.errors_by_code),
        bytes_sent=c["bytes_sent"],
        bytes_received=c["bytes_received"],
        reconnects=c["reconnects"],
        resent=c["retried"],
        replay_duplicates=c["deduped"],
        connections_ready=outcome.ready,
        connections_held=outcome.held,
        connections_answering=outcome.answering if outcome.plan.kind is Kind.CONNECT else None,
        rejected=c["rejected"],
        unacked=c["unacked"],
        send_skipped=c["send_skipped"],
        typing_sent=c["typing_sent"],
        receipts_sent=c["receipts_sent"],
        events_by_type=dict(outcome.events_by_type),
        drained=outcome.drained,
    )


def build_results(outcome: Outcome, slo: slo_mod.SLO, run_id: str | None = None) -> Results:
    health = generator_health(outcome)
    recovery = summarize_recovery(outcome, slo)  # loadtest.faults.analysis: fault runs
    verdicts = verdicts_for(outcome, slo, health, recovery.verdict)
    sc = outcome.scenario
    latency = {
        name: LatencySummary.of(hist) for name, hist in outcome.histograms.items() if hist.count
    }
    if outcome.plan.kind is not Kind.CONNECT:
        latency.setdefault("delivery", LatencySummary())
    latency.update(recovery.latency)
    latency = with_bounds(latency, outcome)
    environment = Environment.current()
    environment = msgspec.structs.replace(environment, clock=CLOCK_NOTE)
    started = outcome.started_wall
    results = Results(
        run=RunInfo(
            id=run_id
            or time.strftime("%Y%m%d-%H%M%S", time.gmtime(started))
            + "-"
            + outcome.plan.tag.rstrip("-"),
            scenario=sc.scenario.value,
            target=outcome.url,
            protocol=sc.protocol,
            started_at=_iso(started),
            ended_at=_iso(outcome.ended_wall),
            duration_s=round(outcome.ended_wall - started, 3),
            engine="native",
            config=sc.describe(),
            slo=slo_mod.dump_slo(slo),
            faults=recovery.faults,
        ),
        environment=environment,
        generator=health,
        totals=totals_of(outcome),
        latency=latency,
        series=series_of(outcome),
        windows=windows_of(outcome),
        server=server_figures(outcome),
        verdicts=verdicts,
    )
    return msgspec.structs.replace(results, exit_code=exit_code(outcome, verdicts))


def with_bounds(latency: dict[str, LatencySummary], outcome: Outcome) -> dict[str, LatencySummary]:
    """Each latency summary with the generator's own delay at each of its percentiles."""
    out = {}
    for name, summary in latency.items():
        bound = {
            key: value
            for key, percentile in _BOUND_KEYS.items()
            if summary.count
            and (value := generator_bound(outcome.histograms, name, percentile)) is not None
        }
        out[name] = msgspec.structs.replace(summary, bound=bound) if bound else summary
    return out


def server_figures(outcome: Outcome) -> dict:
    """What the target said of itself, plus its memory per held connection when it told."""
    server = dict(outcome.server)
    before = server.get("before", {}).get("rss_bytes")
    peak = server.get("at_peak", {}).get("rss_bytes")
    held = outcome.answering if outcome.plan.kind is Kind.CONNECT else outcome.held
    if before and peak and held:
        server["rss_per_connection_bytes"] = round((peak - before) / held, 1)
    return server


def exit_code(outcome: Outcome, verdicts: list[slo_mod.Verdict]) -> int:
    if outcome.ready == 0:
        return ExitCode.UNREACHABLE
    return slo_mod.exit_code_for(verdicts)
