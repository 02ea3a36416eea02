"""A run's merged figures (``Outcome``), the pure merge that makes them, and the drain rule.

Every driver ends a run the same way: each of its processes has reported a ``Ready``
bitmap, a ``Tick`` a second and a ``Final`` (``loadtest.run.report``); ``merge`` sums
counters and merges HDR histograms exactly into one ``Outcome``, which
``loadtest.judge.build_results`` judges. The merge knows nothing of processes, pipes or
Locust messages: it takes what was reported, so the native coordinator and the Locust
master cannot merge differently.
"""

from __future__ import annotations

import time
from collections import Counter, defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from loadtest.plan import Plan, bitmap_count
from loadtest.run.report import Final, Tick
from loadtest.scenarios import Kind, Scenario
from rtbench.histogram import LatencyHistogram

if TYPE_CHECKING:
    from loadtest.client.reconnect import Recovery
    from loadtest.faults.runner import FaultSession

MERGED_COUNTS = (
    "failures_by_cause",
    "closes_by_code",
    "errors_by_code",
    "events_by_type",
    "sent_by_second",
    "expected_by_second",
    "delivered_by_second",
)
"""The ``Final`` fields that are counts by key, summed key by key over the processes."""


@dataclass
class Progress:
    """What the live panel shows, once a second."""

    phase: str  # connecting, running, draining, closing
    elapsed_s: float
    total_s: float
    connections: int
    target_connections: int
    failed: int
    sends_per_s: float
    deliveries_per_s: float
    p99_ms: float | None
    errors: int
    cpu_percent: float  # summed over the generator's processes


@dataclass
class SecondStats:
    """One merged second of the run."""

    t: int
    connections: int = 0
    counters: Counter[str] = field(default_factory=Counter)  # deltas in this second
    delivery: LatencyHistogram = field(default_factory=LatencyHistogram)
    cpu: float = 0.0
    lag_ms: float = 0.0
    cpus_busy: float | None = None  # the busiest of the processes' CPU sets (loadtest.cpumeter)


@dataclass
class Outcome:
    """Everything a run measured, merged over its processes; turned into results.json."""

    scenario: Scenario
    plan: Plan
    url: str
    started_wall: float
    ended_wall: float
    t0_ns: int
    go_ns: int | None
    send_end_ns: int | None
    counters: Counter[str]
    histograms: dict[str, LatencyHistogram]
    failures_by_cause: Counter[str]
    closes_by_code: Counter[str]
    errors_by_code: Counter[str]
    events_by_type: Counter[str]
    sent_by_second: Counter[int]
    expected_by_second: Counter[int]
    delivered_by_second: Counter[int]
    seconds: list[SecondStats]
    ready: int
    held: int
    answering: int
    peak_connections: int
    cpu_samples: list[list[float]]  # per process
    lag_samples: list[list[float]]
    rss_max: list[int]
    notes: list[str]
    drained: bool
    interrupted: bool = False
    server: dict[str, Any] = field(default_factory=dict)
    # fault runs (loadtest.faults): every connection loss and what the injections did
    recoveries: list[Recovery] = field(default_factory=list)  # every process's
    ontime_by_ds: Counter[int] = field(default_factory=Counter)  # on-time deliveries / 100 ms
    faults: FaultSession | None = None  # the run's fault session, when it had one
    # per process: the CPUs it may run on, and how busy they were each measured second
    cpus: list[list[int]] = field(default_factory=list)
    cpus_busy_samples: list[list[float]] = field(default_factory=list)


@dataclass
class ProcessReport:
    """What one load process reported: its ready bitmap, its ticks by second, its final.

    Any of them may be missing (a process that died, or never got as far): the merge
    counts what is there.
    """

    live: bytes | None = None  # the Ready bitmap of its connections up and joined
    ticks: dict[int, Tick] = field(default_factory=dict)
    final: Final | None = None


@dataclass(frozen=True)
class RunFrame:
    """What the merging side knows of the run itself: what ran, where, and its clock.

    ``t0_ns``, ``go_ns`` and ``end_ns`` are on the clock the processes counted their
    ticks and scheduled-send seconds from (CLOCK_MONOTONIC for the native engine, the
    wall clock for Locust).
    """

    scenario: Scenario
    plan: Plan
    url: str
    t0_ns: int
    started_wall: float
    go_ns: int | None = None
    end_ns: int | None = None


def merge(
    frame: RunFrame,
    reports: Sequence[ProcessReport],
    *,
    drained: bool,
    interrupted: bool = False,
    server: dict[str, Any] | None = None,
    faults: FaultSession | None = None,
) -> Outcome:
    """The run's ``Outcome`` from every process's reports: sums and exact HDR merges."""
    finals = [r.final for r in reports if r.final is not None]
    counters: Counter[str] = Counter()
    histograms: dict[str, LatencyHistogram] = {}
    merged: dict[str, Counter[Any]] = defaultdict(Counter)
    for final in finals:
        counters.update(final.counters)
        for name, encoded in final.histograms.items():
            hist = LatencyHistogram.decode(encoded)
            if name in histograms:
                histograms[name].merge(hist)
            else:
                histograms[name] = hist
        for name in MERGED_COUNTS:
            merged[name].update(getattr(final, name))
    seconds = merge_seconds([r.ticks for r in reports])
    peak = max((s.connections for s in seconds), default=0)
    ready = sum(bitmap_count(r.live) for r in reports if r.live is not None)
    return Outcome(
        scenario=frame.scenario,
        plan=frame.plan,
        url=frame.url,
        started_wall=frame.started_wall,
        ended_wall=time.time(),
        t0_ns=frame.t0_ns,
        go_ns=frame.go_ns,
        send_end_ns=frame.end_ns,
        counters=counters,
        histograms=histograms,
        failures_by_cause=merged["failures_by_cause"],
        closes_by_code=merged["closes_by_code"],
        errors_by_code=merged["errors_by_code"],
        events_by_type=merged["events_by_type"],
        sent_by_second=merged["sent_by_second"],
        expected_by_second=merged["expected_by_second"],
        delivered_by_second=merged["delivered_by_second"],
        seconds=seconds,
        ready=ready,
        held=sum(f.held for f in finals),
        answering=sum(f.answering for f in finals),
        peak_connections=max(peak, ready),
        cpu_samples=[f.cpu_samples for f in finals],
        lag_samples=[f.lag_samples for f in finals],
        rss_max=[f.rss_max for f in finals],
        notes=[note for f in finals for note in f.notes],
        drained=drained,
        interrupted=interrupted,
        server=server if server is not None else {},
        recoveries=[r for f in finals for r in f.recoveries],
        ontime_by_ds=sum((Counter(f.ontime_by_ds) for f in finals), Counter()),
        faults=faults,
        cpus=[f.cpus for f in finals],
        cpus_busy_samples=[f.cpus_busy_samples for f in finals],
    )


def merge_seconds(ticks_by_process: Sequence[dict[int, Tick]]) -> list[SecondStats]:
    """Second by second over the run: counter deltas, connections, deliveries, CPU, lag.

    A process whose tick for a second is missing (late, or lost) adds nothing to that
    second's deltas, which the next tick's cumulative counters then carry; its open
    connections are carried from its last tick, so the connection series has no holes.
    """
    last = max((max(ticks, default=0) for ticks in ticks_by_process), default=0)
    out: list[SecondStats] = []
    previous: list[dict[str, int]] = [{} for _ in ticks_by_process]
    carried: list[int] = [0 for _ in ticks_by_process]
    for second in range(1, last + 1):
        stats = SecondStats(t=second)
        for k, ticks in enumerate(ticks_by_process):
            tick = ticks.get(second)
            if tick is None:
                stats.connections += carried[k]
                continue
            carried[k] = tick.open_now
            stats.connections += tick.open_now
            for name, value in tick.counters.items():
                stats.counters[name] += value - previous[k].get(name, 0)
            previous[k] = tick.counters
            if tick.delivery_hdr:
                stats.delivery.merge(LatencyHistogram.decode(tick.delivery_hdr))
            stats.cpu += tick.cpu_percent
            stats.lag_ms = max(stats.lag_ms, tick.loop_lag_ms)
            if tick.cpus_busy_percent is not None:
                stats.cpus_busy = max(stats.cpus_busy or 0.0, tick.cpus_busy_percent)
        out.append(stats)
    return out


def all_in(kind: Kind, needs_acks: bool, total: Callable[[str], int]) -> bool:
    """The drain is over: every expected delivery arrived and, where the adapter acks
    sends, every send was acked or refused (``total(name)``: a counter summed over the
    run's processes so far).

    A connect run has nothing to drain; a round trip's reply is its own ack, so an rtt
    run waits for deliveries only.
    """
    if kind is Kind.CONNECT:
        return True
    if total("delivered") < total("expected"):
        return False
    if not needs_acks or kind is Kind.RTT:
        return True
    return total("acked") + total("rejected") >= total("sent")
