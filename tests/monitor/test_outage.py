"""The monitor against a real server that goes down for a known time and comes back.

The target runs as its own process on a fixed loopback port (picked free first), so
stopping it is a real outage: refused connections, a dropped held connection. The
probes run every 0.5 s; every wait polls with a deadline.
"""

from __future__ import annotations

import asyncio
import time

from monitor.store import ProbeStore
from tests.monitor.conftest import healthz, lenient_slo, monitor_config, poll, running

INTERVAL = 0.5
DOWNTIME = 3.0
SLACK = 0.25  # event-loop scheduling on a shared two-core machine


async def _good_probes(monitor, at_least: int):
    last: list[dict] = [{}]

    async def check():
        status, doc = await healthz(monitor)
        last[0] = doc
        window = doc["targets"][0]["windows"][0]
        return status == 200 and window["good"] >= at_least and doc

    try:
        return await poll(check, 20, f"{at_least} good probes")
    except AssertionError as exc:
        raise AssertionError(f"{exc}; last /healthz: {last[0]}") from None


async def test_outage_opens_one_incident_of_the_right_length(outage_target, tmp_path):
    target, config = outage_target
    name = config.name
    kind = "delivery" if config.protocol == "reference" else "echo"
    db = tmp_path / "monitor.db"
    settings = monitor_config(config, db, slo=lenient_slo(tmp_path))
    async with running(settings) as monitor:
        await _good_probes(monitor, 6)
        held = monitor.targets[0].held
        await poll(lambda: asyncio.sleep(0, held.connected), 10, "held connection up")

        stopped_at = await asyncio.to_thread(target.stop)

        async def unhealthy():
            status, doc = await healthz(monitor)
            return status == 503 and doc

        doc = await poll(unhealthy, 10, "/healthz 503 during the outage")
        down = doc["targets"][0]
        assert down["up"] is False
        uptime = next(v for v in down["verdicts"] if v["target"] == "uptime")
        assert uptime["status"] == "fail" and "down since" in uptime["detail"]
        assert down["incidents"][0]["open"] is True

        await asyncio.sleep(max(0.0, stopped_at + DOWNTIME - time.time()))
        back_at = await asyncio.to_thread(target.start)
        downtime = back_at - stopped_at

        expected = {"connect", kind, "health"} | ({"metrics"} if kind == "delivery" else set())

        async def healthy_again():
            # Each kind probes on its own clock, so the last probe of one kind may have
            # started before the server was ready (and rightly failed) while another's
            # already passed: wait until every kind has a probe started after ``back_at``.
            status, doc = await healthz(monitor)
            t = doc["targets"][0]
            since = {p["kind"] for p in t["probes"] if p["ts"] >= back_at}
            return status == 200 and t["recovery"]["count"] == 1 and since == expected and doc

        doc = await poll(healthy_again, 15, "/healthz 200 after the outage")
        t = doc["targets"][0]
        assert t["up"] is True
        # the target's own connection count, read from its /healthz (and /metrics)
        assert t["connections"]["current"] >= 1 and t["connections"]["peak"] >= 1
        kinds = {p["kind"]: p["ok"] for p in t["probes"]}
        assert set(kinds) == expected and all(kinds.values()), kinds

        # One incident; it spans the outage within one probe interval.
        (incident,) = t["incidents"]
        assert incident["open"] is False
        assert incident["started_at"] >= stopped_at - 0.05
        assert incident["ended_at"] >= back_at - 0.05
        assert abs(incident["duration_s"] - downtime) <= INTERVAL + SLACK, (incident, downtime)
        assert incident["cause"].startswith(f"{kind}: ")

        # Uptime: the failed intervals are the downtime divided by the interval.
        window = t["windows"][0]
        bad = window["total"] - window["good"]
        assert abs(bad - downtime / INTERVAL) <= 2, (bad, downtime)
        assert window["ratio"] == window["good"] / window["total"]
        assert t["budget"]["used"] == bad

        # The held connection was lost when the server went and timed its way back.
        recovery = t["recovery"]
        assert recovery["source"] == "held_connection"
        assert downtime - SLACK <= recovery["p99"] / 1000 <= downtime + INTERVAL + 1.0
        assert t["recovery"]["last"]["complete"] is True

    # Every probe is on disk, each counted once in the rollups.
    store = ProbeStore(db)
    try:
        counts = store.window_counts(name, kind, {"all": 0.0})["all"]
        raw = store._db.execute(
            "SELECT COUNT(*) FROM probes WHERE target = ? AND kind = ?", (name, kind)
        ).fetchone()[0]
        assert counts.total == raw
        assert counts.total - counts.good == bad
    finally:
        store.close()


async def test_history_survives_a_monitor_restart_mid_outage(outage_target, tmp_path):
    target, config = outage_target
    db = tmp_path / "monitor.db"
    settings = monitor_config(config, db, slo=lenient_slo(tmp_path))
    async with running(settings) as first:
        await _good_probes(first, 4)
        stopped_at = await asyncio.to_thread(target.stop)

        async def incident_open():
            status, doc = await healthz(first)
            incidents = doc["targets"][0]["incidents"]
            return status == 503 and incidents and incidents[0]["open"] and doc

        before = await poll(incident_open, 10, "an open incident")
    before_target = before["targets"][0]
    before_window = before_target["windows"][0]
    opened = before_target["incidents"][0]

    async with running(settings) as second:
        status, doc = await healthz(second)
        t = doc["targets"][0]
        # Restored from disk before the first new probe: counts, the open incident, 503.
        assert status == 503
        assert t["windows"][0]["total"] >= before_window["total"]
        assert t["windows"][0]["good"] >= before_window["good"]
        assert t["incidents"][0]["id"] == opened["id"] and t["incidents"][0]["open"]

        await asyncio.sleep(max(0.0, stopped_at + DOWNTIME - time.time()))
        back_at = await asyncio.to_thread(target.start)

        async def closed():
            status, doc = await healthz(second)
            incidents = doc["targets"][0]["incidents"]
            return status == 200 and not incidents[0]["open"] and doc

        doc = await poll(closed, 15, "the incident to close after the restart")
        (incident,) = doc["targets"][0]["incidents"]  # still one incident, not two
        assert incident["id"] == opened["id"]
        assert incident["started_at"] == opened["started_at"]
        assert abs(incident["duration_s"] - (back_at - stopped_at)) <= INTERVAL + SLACK
        # the probes before the restart are still counted
        assert doc["targets"][0]["windows"][0]["good"] >= before_window["good"] + 1
