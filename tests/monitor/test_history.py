"""Probe history on real SQLite: rollups, incidents across restarts, budget, verdicts, retention.

Timestamps are synthetic (a probe every 5 s from a fixed instant), so every figure is
exact and no test depends on the clock.
"""

from __future__ import annotations

import msgspec
import pytest

from monitor.budget import error_budget, window_view
from monitor.config import MonitorConfig, TargetConfig, settle
from monitor.evaluate import evaluate
from monitor.incidents import IncidentTracker
from monitor.store import (
    CloseIncident,
    ExtendIncident,
    IngestedRun,
    OpenIncident,
    ProbeResult,
    ProbeStore,
    Recovery,
    StoreError,
)
from rtbench.slo import Status

T0 = 1_699_999_980.0  # a minute boundary
STEP = 5.0


def settings(tmp_path, slo_text: str | None = None, **target: object):
    slo = None
    if slo_text is not None:
        slo = tmp_path / "slo.toml"
        slo.write_text(slo_text)
    config = MonitorConfig(
        target=[TargetConfig(url="ws://127.0.0.1:1/ws", name="chat", **target)],  # type: ignore[arg-type]
        interval=STEP,
        db=str(tmp_path / "m.db"),
        slo=str(slo) if slo else None,
    )
    return settle(config)


class Feed:
    """Feeds delivery results through a tracker into the store, like the running monitor."""

    def __init__(self, store: ProbeStore, failures_to_open: int = 2) -> None:
        self.store = store
        self.tracker = self.restore(failures_to_open)
        self.ts = T0

    def restore(self, failures_to_open: int) -> IncidentTracker:
        return IncidentTracker(
            failures_to_open,
            self.store.open_incident("chat", "delivery"),
            self.store.trailing_failures("chat", "delivery", failures_to_open),
        )

    def run(
        self,
        ok: bool,
        n: int = 1,
        latency_ms: float = 4.0,
        own_ms: float | None = None,
        counted: bool = True,
    ) -> list:
        """``own_ms``: the monitor's own delay during each probe (all inside its figure)."""
        changes = []
        for _ in range(n):
            result = ProbeResult(
                target="chat",
                kind="delivery",
                ts=self.ts,
                ok=ok,
                latency_ms=latency_ms if ok else None,
                error=None if ok else "delivery: connection refused",
                own_ms=own_ms,
                latency_own_ms=own_ms if ok else None,
                counted=counted,
            )
            change = self.tracker.observe(result)
            opened = self.store.record_probe(result, change)
            if opened is not None:
                self.tracker.opened(opened)
            changes.append(change)
            self.ts += STEP
        return changes


@pytest.fixture
def store(tmp_path):
    s = ProbeStore(tmp_path / "m.db")
    yield s
    s.close()


def test_incident_spans_first_failure_to_first_pass_and_blips_open_none(store):
    feed = Feed(store, failures_to_open=3)
    feed.run(True, 100)
    assert feed.run(False, 2) == [None, None]  # a blip below the threshold
    feed.run(True, 10)
    first_fail = feed.ts
    changes = feed.run(False, 5)
    assert changes[:2] == [None, None]
    assert isinstance(changes[2], OpenIncident) and changes[2].started_at == first_fail
    assert all(isinstance(c, ExtendIncident) for c in changes[3:])
    first_pass = feed.ts
    (closed,) = feed.run(True)
    assert isinstance(closed, CloseIncident)

    (incident,) = store.incidents("chat", 10)
    assert incident.started_at == first_fail
    assert incident.ended_at == first_pass
    assert incident.duration_s == 5 * STEP
    assert incident.failures == 5
    assert incident.cause == "delivery: connection refused"

    counts = store.window_counts("chat", "delivery", {"all": 0.0, "last": first_fail})
    assert (counts["all"].total, counts["all"].good) == (118, 111)
    raw = store._db.execute("SELECT COUNT(*), SUM(ok) FROM probes").fetchone()
    assert raw == (118, 111)  # the rollups agree with the raw rows


def test_an_outage_across_a_monitor_restart_stays_one_incident(tmp_path):
    path = tmp_path / "m.db"
    store = ProbeStore(path)
    feed = Feed(store)
    feed.run(True, 3)
    first_fail = feed.ts
    feed.run(False, 1)  # below the threshold when the monitor stops
    store.close()

    store = ProbeStore(path)  # "restart": new connection, state rebuilt from disk
    feed2 = Feed(store)
    feed2.ts = feed.ts
    (opened,) = feed2.run(False)
    assert isinstance(opened, OpenIncident) and opened.started_at == first_fail
    store.close()

    store = ProbeStore(path)  # restart again while the incident is open
    feed3 = Feed(store)
    feed3.ts = feed2.ts
    assert feed3.tracker.is_open
    (extended,) = feed3.run(False)
    assert isinstance(extended, ExtendIncident)
    (closed,) = feed3.run(True)
    assert isinstance(closed, CloseIncident)
    (incident,) = store.incidents("chat", 10)
    assert incident.failures == 3 and incident.duration_s == 3 * STEP
    store.close()


def test_budget_and_burn_rate_arithmetic():
    view = window_view("1h", 3600, total=720, good=719, interval_s=5.0, objective_percent=99.9)
    assert view.ratio == pytest.approx(719 / 720)
    assert view.burn_rate == pytest.approx((1 / 720) / 0.001)
    assert view.coverage == 1.0
    budget = error_budget("30d", 30 * 86400, 720, 700, 5.0, 99.9)
    assert budget.allowed == pytest.approx(518.4)
    assert budget.used == 20
    assert budget.remaining == pytest.approx(1 - 20 / 518.4)
    short = window_view("30d", 30 * 86400, total=0, good=0, interval_s=5.0, objective_percent=99.9)
    assert short.ratio is None and short.burn_rate is None


def test_evaluate_judges_the_four_targets(tmp_path):
    s = settings(tmp_path, "[delivery_latency]\npercentile = 99\nthreshold_ms = 50\n")
    store = ProbeStore(s.db)
    feed = Feed(store)
    feed.run(True, 600)
    feed.run(False, 6)  # 30 s down
    feed.run(True, 113)
    store.record_recovery(
        Recovery(
            target="chat",
            lost_at=T0 + 3000,
            recovered_at=T0 + 3031.5,
            ms=31_500,
            complete=True,
            replayed=0,
            reason="closed",
        )
    )
    for i, conns in enumerate((120.0, 480.0, 300.0)):
        store.record_probe(
            ProbeResult(target="chat", kind="health", ts=T0 + i * 5, ok=True, value=conns)
        )
    now = feed.ts
    snap = evaluate(store, s, now=now)
    t = snap.target("chat")
    by = {v.target.value: v for v in t.verdicts}
    one_hour = t.windows[0]
    assert (one_hour.total, one_hour.good) == (719, 713)
    assert by["uptime"].status is Status.PASS  # 6 of 518.4 allowed bad intervals spent
    assert by["uptime"].measured == pytest.approx(100 * 713 / 719)
    assert t.budget.used == 6
    assert by["delivery_latency"].status is Status.PASS and by[
        "delivery_latency"
    ].measured == pytest.approx(4.0, rel=1e-3)
    assert by["recovery"].status is Status.FAIL  # 31.5 s > 2 s
    assert by["connections"].status is Status.NOT_MEASURED  # 480 held proves nothing yet
    assert t.connections.peak == 480.0 and t.connections.current == 300.0
    assert t.up is True and snap.status == "fail"
    (incident,) = t.incidents
    assert incident.duration_s == 30.0

    # a load run that held 12,000 connections proves the connections target
    store.record_run(
        IngestedRun(
            run_id="r1",
            target="chat",
            url="ws://127.0.0.1:1/ws",
            ended_at=now - 60,
            peak_connections=12_000,
            attempted=12_000,
            scenario="connect",
            source="results.json",
        )
    )
    t = evaluate(store, s, now=now).target("chat")
    assert {v.target.value: v.status for v in t.verdicts}["connections"] is Status.PASS
    store.close()


def test_slow_deliveries_and_a_spent_budget_fail(tmp_path):
    s = settings(tmp_path, '[uptime]\nobjective = 99.9\nwindow = "1h"\n')
    store = ProbeStore(s.db)
    feed = Feed(store, failures_to_open=100)  # no incident: the budget alone must fail it
    feed.run(True, 100, latency_ms=250.0)
    feed.run(False, 1)
    feed.run(True, 10, latency_ms=250.0)
    t = evaluate(store, s, now=feed.ts).target("chat")
    by = {v.target.value: v for v in t.verdicts}
    assert t.budget.allowed == pytest.approx(0.72)  # 0.1 % of 720 intervals in an hour
    assert by["uptime"].status is Status.FAIL and "error budget spent" in by["uptime"].detail
    assert by["delivery_latency"].status is Status.FAIL and by[
        "delivery_latency"
    ].measured == pytest.approx(250.0, rel=1e-3)
    store.close()


def test_retention_drops_old_rows_and_rollups(store):
    feed = Feed(store)
    feed.run(True, 24)  # two minutes
    feed.run(False, 3)
    feed.run(True, 1)
    dropped = store.prune(T0 + 60)
    assert dropped == 12
    counts = store.window_counts("chat", "delivery", {"all": 0.0})["all"]
    assert counts.total == 16
    assert len(store.incidents("chat", 10)) == 1  # ended after the cut: kept


def test_a_foreign_database_is_refused(tmp_path):
    path = tmp_path / "other.db"
    ProbeStore(path).close()
    import sqlite3

    with sqlite3.connect(path) as db:
        db.execute("UPDATE meta SET value = '99' WHERE key = 'schema'")
    with pytest.raises(StoreError, match="schema 99"):
        ProbeStore(path)
    garbage = tmp_path / "garbage.db"
    garbage.write_bytes(b"not a database" * 100)
    with pytest.raises(StoreError, match="cannot open monitor database"):
        ProbeStore(garbage)


def test_a_young_monitor_after_an_outage_reads_as_within_budget_not_pass(tmp_path):
    """25 s after the start, one 5 s interval of 5 was bad: 80 % observed. The card says
    80 % of what was observed, the 30-day budget used and left in time, and "within
    budget", never a bare "pass" beside 80 % (the contradiction the status page had)."""
    from monitor.status_page import fmt_measured, render_status, status_word

    s = settings(tmp_path)
    store = ProbeStore(s.db)
    feed = Feed(store, failures_to_open=2)
    feed.run(True, 2)
    feed.run(False, 1)
    feed.run(True, 2)
    snap = evaluate(store, s, now=feed.ts)
    uptime = {v.target.value: v for v in snap.target("chat").verdicts}["uptime"]
    assert uptime.status is Status.PASS and uptime.measured == pytest.approx(80.0)
    assert "80.000 % of 5 intervals good over the 25 s observed" in uptime.detail
    assert "error budget of 30d: 5 s of 43 min 12 s used (0.2%), 43 min 7 s left" in uptime.detail
    assert (fmt_measured(uptime), status_word(uptime)) == ("80.000 % observed", "within budget")
    page = render_status(snap).decode()
    assert "within budget" in page and ">pass<" not in page.split('data-slo="uptime"')[1][:400]
    store.close()


def test_an_ingested_check_feeds_connections_and_recovery(tmp_path):
    """A check held 10,000 connections through a restart and timed every client's way
    back: both verdicts of the monitor use it for the SLO window."""
    from rtbench.histogram import LatencyHistogram

    s = settings(tmp_path)
    store = ProbeStore(s.db)
    recoveries = LatencyHistogram()
    recoveries.record_many_us([400_000] * 9_900 + [1_500_000] * 100)
    store.record_run(
        IngestedRun(
            run_id="check-1",
            target="chat",
            url="ws://127.0.0.1:1/ws",
            ended_at=T0 - 60,
            peak_connections=10_000,
            attempted=10_000,
            scenario="check",
            source="results.json",
            recovery_hdr=recoveries.encode(),
            recoveries=10_000,
        )
    )
    by = {v.target.value: v for v in evaluate(store, s, now=T0).target("chat").verdicts}
    assert by["connections"].status is Status.PASS and by["connections"].measured == 10_000
    assert by["recovery"].status is Status.PASS
    assert by["recovery"].measured == pytest.approx(400.0, rel=0.01)  # p99 of 10,000
    assert "10,000 clients of 1 rtbench check check-1" in by["recovery"].detail
    store.close()


def test_a_version_1_database_is_migrated_in_place(tmp_path):
    """Schema 1 (before checks carried recoveries) opens, gains the columns, keeps its rows."""
    import sqlite3

    path = tmp_path / "v1.db"
    ProbeStore(path).close()
    with sqlite3.connect(path) as db:  # make it exactly what schema 1 was
        db.execute("DROP TABLE probes")  # (before schema 3: no own delay, every probe counted)
        db.execute(
            "CREATE TABLE probes (id INTEGER PRIMARY KEY, target TEXT NOT NULL, kind TEXT NOT"
            " NULL, ts REAL NOT NULL, ok INTEGER NOT NULL, latency_ms REAL, value REAL,"
            " error TEXT)"
        )
        db.execute(
            "INSERT INTO probes (target, kind, ts, ok, latency_ms) VALUES"
            " ('chat', 'delivery', 1.0, 1, 4.5)"
        )
        db.execute("DROP TABLE runs")
        db.execute(
            "CREATE TABLE runs (run_id TEXT PRIMARY KEY, target TEXT NOT NULL, url TEXT NOT"
            " NULL, ended_at REAL NOT NULL, peak_connections INTEGER NOT NULL, attempted"
            " INTEGER NOT NULL, scenario TEXT NOT NULL, source TEXT NOT NULL)"
        )
        db.execute(
            "INSERT INTO runs VALUES ('old', 'chat', 'ws://h:1/ws', 1.0, 5, 5, 'connect', 'r')"
        )
        db.execute("UPDATE meta SET value = '1' WHERE key = 'schema'")
    store = ProbeStore(path)
    (old,) = store.runs("chat", 0.0)
    assert (
        old.run_id,
        old.peak_connections,
        old.recovery_hdr,
        old.recoveries,
        old.unrecovered,
    ) == ("old", 5, None, 0, 0)
    old_probe = store.last_probe("chat", "delivery")
    assert old_probe is not None and old_probe.latency_ms == 4.5
    assert old_probe.counted and old_probe.own_ms is None  # not measured then
    store.close()
    with sqlite3.connect(path) as db:
        assert db.execute("SELECT value FROM meta WHERE key='schema'").fetchone()[0] == "4"


def test_slow_probes_the_monitors_own_delay_explains_are_inconclusive_not_failing(tmp_path):
    """The rule of a load run's generator delay (rtbench.slo.within_generator_delay): the
    server's own p99 lies between that of the figures without the monitor's delay and
    that of the figures; a failure it could flip is inconclusive, /healthz stays green."""
    s = settings(tmp_path)
    store = ProbeStore(s.db)
    feed = Feed(store)
    feed.run(True, 50, latency_ms=4.0, own_ms=0.5)
    feed.run(True, 2, latency_ms=900.0, own_ms=895.0)  # the monitor was stopped inside
    t = evaluate(store, s, now=feed.ts).target("chat")
    latency = {v.target.value: v for v in t.verdicts}["delivery_latency"]
    assert latency.status is Status.FAIL and not latency.trusted
    assert latency.detail.startswith("inconclusive: the monitor itself added up to 895.")
    assert "the threshold is 100 ms" in latency.detail
    assert t.status == "pass"  # never charged to the target
    assert t.latency.bound["p99"] == pytest.approx(895.0, rel=0.01)
    assert t.own_delay.max_ms == 895.0 and t.own_delay.measured == 52
    store.close()


def test_slow_probes_the_monitors_own_delay_does_not_explain_fail_trusted(tmp_path):
    s = settings(tmp_path)
    store = ProbeStore(s.db)
    feed = Feed(store)
    feed.run(True, 50, latency_ms=250.0, own_ms=0.5)  # a slow server, a monitor on time
    t = evaluate(store, s, now=feed.ts).target("chat")
    latency = {v.target.value: v for v in t.verdicts}["delivery_latency"]
    assert latency.status is Status.FAIL and latency.trusted
    assert "the monitor's own delay, at most 0.5 ms at p99, does not explain it" in latency.detail
    assert t.status == "fail"
    store.close()


def test_a_failure_not_counted_is_no_interval_and_no_step_to_an_incident(tmp_path):
    s = settings(tmp_path)
    store = ProbeStore(s.db)
    feed = Feed(store, failures_to_open=2)
    feed.run(True, 10)
    assert feed.run(False, 3, own_ms=6000.0, counted=False) == [None, None, None]
    feed.run(False, 1)  # one counted failure: a blip, not yet an incident
    t = evaluate(store, s, now=feed.ts).target("chat")
    assert (t.windows[0].total, t.windows[0].good) == (11, 10)
    assert t.own_delay.not_counted == 3 and t.incidents == []
    store.close()


def test_a_snapshot_sees_one_committed_state_while_probes_are_written(tmp_path):
    """The monitor evaluates in a read transaction on its reader connection: a probe the
    writer commits between two of its queries is in neither (before: in the second only,
    so an incident read as closed beside window counts from before the closing probe)."""
    db = tmp_path / "m.db"
    writer, reader = ProbeStore(db), ProbeStore(db)
    try:
        probe = ProbeResult(target="chat", kind="delivery", ts=T0, ok=True, latency_ms=4.0)
        writer.record_probe(probe)

        def two_reads(s: ProbeStore) -> tuple[int, int]:
            first = s.window_counts("chat", "delivery", {"all": 0.0})["all"].good
            writer.record_probe(msgspec.structs.replace(probe, ts=T0 + STEP))
            return first, s.window_counts("chat", "delivery", {"all": 0.0})["all"].good

        assert reader.snapshot(two_reads) == (1, 1)
        assert reader.window_counts("chat", "delivery", {"all": 0.0})["all"].good == 2
    finally:
        writer.close()
        reader.close()
