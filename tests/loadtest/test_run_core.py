"""The engine-neutral run core without sockets: the merge of the processes' reports, the
drain rule, and the probe schedule both engines pace their probes by."""

from __future__ import annotations

from loadtest.plan import PROBE_TICK_NS, Plan, bitmap, spread
from loadtest.run.outcome import ProcessReport, RunFrame, all_in, merge
from loadtest.run.report import Final, Tick
from loadtest.scenarios import Kind, Scenario
from rtbench.histogram import LatencyHistogram


def _final(counters: dict[str, int], delivery_us: list[int], held: int) -> Final:
    hist = LatencyHistogram()
    hist.record_many_us(delivery_us)
    return Final(
        counters=counters,
        histograms={"delivery": hist.encode()},
        failures_by_cause={"refused": 1},
        closes_by_code={},
        errors_by_code={},
        events_by_type={},
        sent_by_second={1: counters["sent"]},
        expected_by_second={1: counters["expected"]},
        delivered_by_second={1: counters["delivered"]},
        held=held,
        answering=0,
        cpu_samples=[10.0],
        lag_samples=[0.5],
        rss_max=1,
        notes=[],
        ontime_by_ds={3: 2},
    )


def _tick(second: int, sent: int, open_now: int) -> Tick:
    return Tick(
        second=second,
        counters={"sent": sent},
        open_now=open_now,
        delivery_hdr=None,
        cpu_percent=5.0,
        loop_lag_ms=float(second),
        rss_bytes=1,
    )


def test_the_merge_sums_every_process_and_carries_a_missing_tick() -> None:
    scenario = Scenario(scenario=Kind.CHAT, users=8, target="ws://127.0.0.1:1").resolved()
    frame = RunFrame(scenario, Plan(scenario, "t-"), "ws://127.0.0.1:1", 0, 0.0, 1, 2)
    one = ProcessReport(
        bitmap(8, range(0, 8, 2)),
        {1: _tick(1, 3, 4), 2: _tick(2, 5, 4)},
        _final({"sent": 5, "expected": 10, "delivered": 9}, [1_000] * 9, held=4),
    )
    # the other process's second tick was lost: its connections carry over, its sends
    # of that second arrive with its next cumulative count (here: only in the final)
    two = ProcessReport(
        bitmap(8, range(1, 8, 2)),
        {1: _tick(1, 2, 3)},
        _final({"sent": 4, "expected": 8, "delivered": 8}, [3_000] * 8, held=3),
    )
    gone = ProcessReport()  # a process that died before its Ready: counted as nothing
    outcome = merge(frame, [one, two, gone], drained=False)
    assert outcome.counters == {"sent": 9, "expected": 18, "delivered": 17}
    assert outcome.histograms["delivery"].count == 17
    assert outcome.failures_by_cause == {"refused": 2}
    assert outcome.sent_by_second == {1: 9} and outcome.ontime_by_ds == {3: 4}
    assert (outcome.ready, outcome.held, outcome.peak_connections) == (8, 7, 8)
    assert [(s.t, s.connections, s.counters["sent"]) for s in outcome.seconds] == [
        (1, 7, 5),
        (2, 7, 2),
    ]
    assert outcome.seconds[1].lag_ms == 2.0 and len(outcome.cpu_samples) == 2
    assert (outcome.go_ns, outcome.send_end_ns, outcome.drained) == (1, 2, False)


def test_the_drain_waits_for_deliveries_and_acks_where_the_adapter_acks() -> None:
    counts = {"expected": 10, "delivered": 10, "sent": 5, "acked": 3, "rejected": 1}
    total = counts.__getitem__
    assert all_in(Kind.CHAT, needs_acks=False, total=total)
    assert not all_in(Kind.CHAT, needs_acks=True, total=total)  # one send unanswered
    assert all_in(Kind.RTT, needs_acks=True, total=total)  # the reply is the ack
    short = {**counts, "delivered": 9}.__getitem__
    assert not all_in(Kind.FANOUT, needs_acks=False, total=short)
    assert all_in(Kind.CONNECT, needs_acks=True, total=short)  # nothing to drain


def test_probes_are_spread_over_their_interval_in_small_batches() -> None:
    batches = list(spread(1000, 5, 1_000_000_000))
    assert len(batches) == 1_000_000_000 // PROBE_TICK_NS
    assert [when for when, _ in batches[:3]] == [5, 5 + PROBE_TICK_NS, 5 + 2 * PROBE_TICK_NS]
    covered = [i for _, batch in batches for i in range(1000)[batch]]
    assert covered == list(range(1000))  # every connection once, in order
    assert list(spread(3, 0, 1_000_000_000)) == [
        (0, slice(0, 1)),
        (333_333_333, slice(1, 2)),
        (666_666_666, slice(2, 3)),
    ]
    assert list(spread(0, 7, 10)) == [(7, slice(0, 0))]  # nothing to probe: one empty batch
