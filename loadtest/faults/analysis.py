"""From every client's recovery records to the recovery figures and verdict of a run.

Each worker ships one record per connection loss (``loadtest.client.Recovery``: when it
was lost, back, resumed; attempts; replayed; complete), stamped on the machine-wide
monotonic clock the fault injections are stamped on too. From them:

- ``reconnect`` (loss -> the session is back) and ``recovery`` (loss -> every room resumed
  with every missed item received) latencies, p50/p90/p99/p99.9/max over clients;
- per fault: how many clients it cost a connection, how many came back, their
  percentiles, the time until the message flow was back to its rate, and the messages
  lost among those scheduled from the fault to the next one;
- the recovery verdict (``rtbench.slo``): the percentile over every loss, a client that
  never came back counting as slower than any threshold.

**Blackholes.** No client can be back while the network passes nothing, and a
blackhole's length is the test's choice, not the service's performance: for a loss
noticed while a blackhole was on, both clocks start when the blackhole lifts. How long
clients took to notice the dead connection (blackhole start -> loss noticed) is
reported as ``detect``.

**Message flow.** Workers count on-time deliveries (faster than the delivery target)
per 100 ms of receive time. The rate before the first fault is the baseline; after a
fault, the flow is back at the first 1-second window that carries 90 % of that rate
again, once it has dropped below it (``flow_back_s``, from the fault's start; 0: it
never dropped).

**The storm** (``storm`` of each fault, ``storm_figures``): the fault's clients coming
back, on one time axis from the fault's start (a blackhole: from when it lifts). The
server accepted a client's handshake when it welcomed the session again
(``Recovery.reconnected_ns``); counted per 100 ms, that gives the accepted handshakes
per second at the peak 100 ms and on average over the storm (from its first 100 ms
with a reconnect to the one holding its 99th-percentile reconnect: a straggler does not
stretch it), and the counts themselves for the report's chart. And
the time until 99 % of the clients the fault cost were resubscribed to every room with
every item they missed (resumed and complete): the storm's end as a user would see it,
which the per-client recovery p99 does not say when the losses are spread over time
(a drain in batches).
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from loadtest.faults.schedule import FaultKind
from rtbench import slo as slo_mod
from rtbench.histogram import LatencyHistogram
from rtbench.results import LatencySummary

if TYPE_CHECKING:
    from loadtest.client import Recovery
    from loadtest.run.outcome import Outcome

DS_NS = 100_000_000
FLOW_SHARE = 0.9
FLOW_WINDOW_DS = 10
STORM_SHARE = 0.99  # the storm is over when this share of its clients is back and whole
STORM_MAX_BINS = 600  # 60 s of 100 ms counts in results.json at most


@dataclass
class _Bucket:
    """The losses attributed to one fault (or to none: before any fault)."""

    losses: int = 0
    unrecovered: int = 0
    incomplete: int = 0
    attempts: int = 0
    causes: Counter = field(default_factory=Counter)
    reconnect: LatencyHistogram = field(default_factory=LatencyHistogram)
    recovery: LatencyHistogram = field(default_factory=LatencyHistogram)
    detect: LatencyHistogram = field(default_factory=LatencyHistogram)
    records: list[Recovery] = field(default_factory=list)


@dataclass
class RecoveryFigures:
    """What a run's faults did, ready for results.json."""

    latency: dict[str, LatencySummary]
    faults: list[dict[str, Any]]
    verdict: slo_mod.Verdict
    losses: int = 0
    unrecovered: int = 0


def _brief(hist: LatencyHistogram) -> dict[str, float]:
    if not hist.count:
        return {}
    return {
        "p50": round(hist.percentile_ms(50) or 0.0, 1),
        "p99": round(hist.percentile_ms(99) or 0.0, 1),
        "max": round(hist.max_ms() or 0.0, 1),
    }


def recovery_verdict(slo: slo_mod.SLO, hist: LatencyHistogram, unrecovered: int) -> slo_mod.Verdict:
    """The recovery percentile over every loss; one that never recovered is the slowest."""
    return slo_mod.judge_with_missing(slo, slo_mod.Target.RECOVERY, hist, unrecovered)


def summarize(outcome: Outcome, slo: slo_mod.SLO) -> RecoveryFigures:
    """Recovery figures of a run (empty, and a not-measured verdict, without losses)."""
    session = outcome.faults
    injections = [i for i in getattr(session, "injections", []) if i.started_ns]
    starts = [i.started_ns for i in injections]
    blackholes = [
        (i.started_ns, i.ended_ns) for i in injections if i.fault.kind is FaultKind.BLACKHOLE
    ]
    buckets = [_Bucket() for _ in range(len(injections) + 1)]  # [0]: before any fault
    reconnect, recovery, detect = LatencyHistogram(), LatencyHistogram(), LatencyHistogram()
    unrecovered = 0
    for record in outcome.recoveries:
        which = sum(1 for s in starts if s <= record.lost_ns)
        bucket = buckets[which]
        bucket.losses += 1
        bucket.records.append(record)
        bucket.attempts += record.attempts
        bucket.causes[record.cause] += 1
        start = record.lost_ns
        for began, ended in blackholes:
            if began <= record.lost_ns <= ended:
                start = ended  # nobody can be back before the network is
                bucket.detect.record_ns(record.lost_ns - began)
                detect.record_ns(record.lost_ns - began)
        if record.reconnected_ns:
            value = max(0, record.reconnected_ns - start)
            bucket.reconnect.record_ns(value)
            reconnect.record_ns(value)
        if record.resumed_ns:
            value = max(0, record.resumed_ns - start)
            bucket.recovery.record_ns(value)
            recovery.record_ns(value)
            if not record.complete:
                bucket.incomplete += 1
        else:
            bucket.unrecovered += 1
            unrecovered += 1
    latency = {
        name: LatencySummary.of(hist)
        for name, hist in (("recovery", recovery), ("reconnect", reconnect), ("detect", detect))
        if hist.count
    }
    verdict = recovery_verdict(slo, recovery, unrecovered)
    entries = _fault_entries(outcome, session, injections, buckets)
    return RecoveryFigures(
        latency=latency,
        faults=entries,
        verdict=verdict,
        losses=len(outcome.recoveries),
        unrecovered=unrecovered,
    )


def _fault_entries(
    outcome: Outcome, session: Any, injections: list[Any], buckets: list[_Bucket]
) -> list[dict[str, Any]]:
    if session is None:
        if buckets[0].losses:  # reconnects without faults (a server that closed connections)
            return [{"kind": "none", **_bucket_figures(buckets[0])}]
        return []
    entries = session.log()
    done = iter(range(1, len(buckets)))
    flow = _Flow(outcome)
    for k, entry in enumerate(entries):
        injection = session.injections[k]
        if not injection.started_ns:
            continue
        index = next(done)
        entry.update(_bucket_figures(buckets[index]))
        following = [i.started_ns for i in session.injections[k + 1 :] if i.started_ns]
        until = following[0] if following else outcome.send_end_ns or injection.ended_ns
        back = flow.back_after(injection.started_ns, until)
        if back is not None:
            entry["flow_back_s"] = back
        entry["lost"] = _lost_between(outcome, injection.started_ns, until)
        storm_start = (
            injection.ended_ns
            if injection.fault.kind is FaultKind.BLACKHOLE
            else injection.started_ns
        )
        storm = storm_figures(buckets[index].records, storm_start)
        if storm:
            entry["storm"] = storm
    if buckets[0].losses:
        entries.insert(0, {"kind": "before any fault", **_bucket_figures(buckets[0])})
    return entries


def _bucket_figures(bucket: _Bucket) -> dict[str, Any]:
    out: dict[str, Any] = {
        "connections_lost": bucket.losses,
        "recovered": bucket.recovery.count,
    }
    if bucket.unrecovered:
        out["unrecovered"] = bucket.unrecovered
    if bucket.incomplete:
        out["incomplete"] = bucket.incomplete  # resumed past a gap the server could not replay
    if bucket.losses:
        out["attempts_per_loss"] = round(bucket.attempts / bucket.losses, 2)
        out["causes"] = dict(bucket.causes.most_common())
    for name in ("reconnect", "recovery", "detect"):
        figures = _brief(getattr(bucket, name))
        if figures:
            out[f"{name}_ms"] = figures
    return out


def storm_figures(records: Sequence[Recovery], start_ns: int) -> dict[str, Any]:
    """The storm of one fault's losses, from ``start_ns`` (empty without losses).

    ``handshakes_per_s``: accepted handshakes (welcomes) per second, in the busiest
    100 ms (``peak``) and over the storm (``mean``: the reconnects in the 100 ms bins
    from the first reconnect's to the 99th-percentile reconnect's, over that span);
    ``reconnects_per_100ms``: the counts from ``start_ns`` (at most ``STORM_MAX_BINS``);
    ``resumed_99_s``: seconds from
    ``start_ns`` until 99 % of the losses were resumed with every missed item (absent
    when fewer ever were: ``resumed_complete`` says how many); ``last_loss_s``: when the
    last of them lost its connection (a drain in batches spreads the losses).
    """
    if not records:
        return {}
    back = [max(0, r.reconnected_ns - start_ns) for r in records if r.reconnected_ns]
    bins = Counter(ns // DS_NS for ns in back)
    whole = sorted(r.resumed_ns for r in records if r.resumed_ns and r.complete)
    out: dict[str, Any] = {
        "losses": len(records),
        "reconnected": len(back),
        "resumed_complete": len(whole),
        "last_loss_s": round(max(0, max(r.lost_ns for r in records) - start_ns) / 1e9, 3),
    }
    need = math.ceil(STORM_SHARE * len(records))
    if len(whole) >= need:
        out["resumed_99_s"] = round(max(0, whole[need - 1] - start_ns) / 1e9, 3)
    if bins:
        back.sort()
        first, last = back[0] // DS_NS, back[-1] // DS_NS
        # the storm's bulk ends with its 99th-percentile reconnect: one straggler (an
        # attempt that timed out) must not stretch the mean over seconds of quiet
        bulk_end = back[math.ceil(STORM_SHARE * len(back)) - 1] // DS_NS
        in_bulk = sum(bins[d] for d in range(first, bulk_end + 1))
        span_s = (bulk_end - first + 1) * DS_NS / 1e9
        out["first_reconnect_s"] = round(back[0] / 1e9, 3)
        out["last_reconnect_s"] = round(back[-1] / 1e9, 3)
        out["handshakes_per_s"] = {
            "peak": round(max(bins.values()) * 1e9 / DS_NS, 1),
            "mean": round(in_bulk / span_s, 1),
        }
        shown = min(last + 1, STORM_MAX_BINS)
        out["reconnects_per_100ms"] = [bins.get(d, 0) for d in range(shown)]
        if shown <= last:
            out["reconnects_cut_at_s"] = round(shown * DS_NS / 1e9, 1)
    return out


def _lost_between(outcome: Outcome, start_ns: int, end_ns: int) -> int:
    """Deliveries lost among the messages scheduled in [start, end) (whole seconds)."""
    first = (start_ns - outcome.t0_ns) // 1_000_000_000
    last = (end_ns - outcome.t0_ns) // 1_000_000_000
    lost = 0
    for second in range(first, last + 1):
        expected = outcome.expected_by_second.get(second, 0)
        delivered = outcome.delivered_by_second.get(second, 0)
        lost += max(0, expected - delivered)
    return lost


class _Flow:
    """On-time deliveries per 100 ms, and the pre-fault rate they are compared with."""

    def __init__(self, outcome: Outcome) -> None:
        self.counts = outcome.ontime_by_ds
        self.t0 = outcome.t0_ns
        session = outcome.faults
        first_fault = min(
            (i.started_ns for i in getattr(session, "injections", []) if i.started_ns),
            default=None,
        )
        self.baseline: float | None = None  # on-time deliveries per 100 ms before any fault
        if outcome.go_ns is None or first_fault is None or not self.counts:
            return
        begin = self._ds(outcome.go_ns) + FLOW_WINDOW_DS  # the first second warms up
        end = self._ds(first_fault)
        if end - begin >= FLOW_WINDOW_DS:
            self.baseline = sum(self.counts.get(d, 0) for d in range(begin, end)) / (end - begin)

    def _ds(self, ns: int) -> int:
        return (ns - self.t0) // DS_NS

    def _window(self, d: int) -> int:
        return sum(self.counts.get(k, 0) for k in range(d, d + FLOW_WINDOW_DS))

    def back_after(self, start_ns: int, end_ns: int) -> float | None:
        """Seconds from ``start_ns`` until the flow was back at rate (None: unknown)."""
        if not self.baseline:
            return None
        need = FLOW_SHARE * self.baseline * FLOW_WINDOW_DS
        d, last = self._ds(start_ns), self._ds(end_ns) - FLOW_WINDOW_DS
        first = d
        while d <= last and self._window(d) >= need:
            d += 1
        if d > last:
            return 0.0  # it never dropped
        while d <= last and self._window(d) < need:
            d += 1
        if d > last:
            return None  # not back before the next fault or the end of the load
        return round((d - first) * DS_NS / 1e9, 1)
