"""Each fault at small scale, through the real engine against the real reference server.

Two hundred clients chat (rooms of 10, DMs, typing, receipts) while rtbench restarts the
server, cuts or blackholes their connections, or kills a worker. Every client must come
back and resume, nothing may be lost or duplicated after the client's seq dedupe, and
the recovery of every client must be measured and reported. Times are not asserted
(the machine is shared): that is the benchmark's job.
"""

from __future__ import annotations

import sqlite3

import pytest

from rtbench.results import Results
from rtbench.slo import Status, Target
from tests.recovery.conftest import serve_cmd
from tests.support import write_config


def _lossless_and_measured(results: Results, lost_connections: int | None = None) -> dict:
    t = results.totals
    assert t.connections_ready == 200
    assert t.expected_deliveries == t.delivered > 0
    assert t.lost == 0 and t.duplicated_after_dedupe == 0, (t.lost, t.duplicated_after_dedupe)
    assert t.drained
    # a clean recovery answers nothing with an error frame (an empty DM room a client
    # resumes is joined at seq 0, not refused: docs/PROTOCOL.md, Resume)
    assert not t.errors_by_code and t.rejected == 0, t.errors_by_code
    (fault,) = [f for f in results.run.faults if "spec" in f]
    assert not fault.get("error"), fault
    assert "started_s" in fault and "ended_s" in fault
    lost = fault["connections_lost"]
    if lost_connections is not None:
        assert lost == lost_connections
    assert lost > 0 and fault["recovered"] == lost and "unrecovered" not in fault
    assert t.reconnects == lost
    recovery = results.latency["recovery"]
    reconnect = results.latency["reconnect"]
    assert recovery.count == reconnect.count == lost
    assert 0 < reconnect.p50 <= recovery.p50 and recovery.p99 <= recovery.max < 30_000
    assert fault["recovery_ms"]["p99"] == pytest.approx(recovery.p99, abs=0.5)
    (verdict,) = [v for v in results.verdicts if v.target is Target.RECOVERY]
    assert verdict.status is not Status.NOT_MEASURED and verdict.measured is not None
    assert f"over {lost:,} recoveries" in verdict.detail
    assert sum(s.reconnects for s in results.series) == lost
    _storm_is_sane(fault, lost)
    return fault


def _storm_is_sane(fault: dict, lost: int) -> None:
    """The storm's figures agree with the recoveries they are computed from."""
    storm = fault["storm"]
    assert storm["losses"] == storm["reconnected"] == storm["resumed_complete"] == lost
    counts = storm["reconnects_per_100ms"]
    assert sum(counts) == lost and counts[-1] > 0
    rate = storm["handshakes_per_s"]
    assert 0 < rate["mean"] <= rate["peak"] == max(counts) * 10
    assert 0 <= storm["first_reconnect_s"] <= storm["last_reconnect_s"] < len(counts) / 10
    # every client was back and whole: 99 % of them were, after the first reconnect
    # and no later than the last loss plus the slowest recovery (the HDR max rounds up)
    assert storm["first_reconnect_s"] < storm["resumed_99_s"]
    worst_s = fault["recovery_ms"]["max"] / 1000
    assert storm["resumed_99_s"] <= storm["last_loss_s"] + worst_s + 0.001


@pytest.mark.slow
def test_graceful_restart_every_client_resumes(fault_run) -> None:  # type: ignore[no-untyped-def]
    fault = _lossless_and_measured(fault_run(["restart:term@3s"]), 200)
    assert fault["causes"] == {"close_1012": 200}  # the drain closed everyone with 1012
    assert fault["signal"] == "term" and fault["start_s"] > 0


@pytest.mark.slow
def test_crash_restart_mid_chat_keeps_every_acked_message(fault_run, tmp_path) -> None:  # type: ignore[no-untyped-def]
    results = fault_run(["restart:kill@3s"])
    fault = _lossless_and_measured(results, 200)
    assert set(fault["causes"]) <= {"dropped", "close_1006"}  # no close frame from a kill
    t = results.totals
    # sends in flight at the kill were written again with their cids after the resume
    assert t.resent > 0
    assert t.acked == t.sent - t.rejected and t.unacked == 0
    # the store holds every acked send exactly once, in dense seqs per room
    with sqlite3.connect(tmp_path / "server.db") as db:
        (stored,) = db.execute("SELECT count(*) FROM items").fetchone()
        twice = db.execute(
            "SELECT count(*) FROM (SELECT 1 FROM items GROUP BY room, sender, cid "
            "HAVING count(*) > 1)"
        ).fetchone()[0]
        holes = db.execute(
            "SELECT count(*) FROM (SELECT room FROM items GROUP BY room "
            "HAVING count(*) != max(seq))"
        ).fetchone()[0]
    assert stored == t.acked and twice == 0 and holes == 0


@pytest.mark.slow
def test_cut_resets_every_connection_through_the_proxy(fault_run) -> None:  # type: ignore[no-untyped-def]
    fault = _lossless_and_measured(fault_run(["cut@3s"]), 200)
    assert fault["connections_reset"] == 200


@pytest.mark.slow
def test_cut_of_a_share_costs_only_that_share(fault_run) -> None:  # type: ignore[no-untyped-def]
    fault = _lossless_and_measured(fault_run(["cut:30%@3s"]), 60)
    assert fault["connections_reset"] == 60


@pytest.mark.slow
def test_blackhole_is_found_by_client_heartbeats(fault_run) -> None:  # type: ignore[no-untyped-def]
    results = fault_run(["blackhole:2s@3s"])
    fault = _lossless_and_measured(results, 200)
    assert fault["causes"] == {"heartbeat": 200}  # nothing closed: only the heartbeat told
    detect = results.latency["detect"]
    assert detect.count == 200
    # ping after 500 ms of silence, dead 500 ms later on two sweeps: well inside the blackhole
    assert detect.max < 2_000


@pytest.mark.slow
@pytest.mark.redis
@pytest.mark.postgres
def test_kill_worker_of_a_multi_worker_server(
    fault_run, tmp_path, pg_dsn, redis_url, redis_prefix
) -> None:  # type: ignore[no-untyped-def]
    config = write_config(tmp_path / "cluster.toml", {"cluster": {"prefix": redis_prefix}})
    cmd = serve_cmd(
        "--workers", "2", "--broker", redis_url, "--store", pg_dsn, "--config", str(config)
    )
    results = fault_run(["kill-worker@3s"], server_cmd=cmd)
    fault = _lossless_and_measured(results)
    assert len(fault["killed_pids"]) == 1
    assert fault["connections_lost"] < 200  # only the killed worker's clients


@pytest.mark.slow
def test_drain_in_batches_every_client_comes_back_to_the_same_server(fault_run) -> None:  # type: ignore[no-untyped-def]
    results = fault_run(["drain:50/200ms@3s"])
    fault = _lossless_and_measured(results, 200)
    assert fault["causes"] == {"close_1012": 200}  # asked to reconnect, not cut
    assert fault["clients_asked"] == 200 and fault["batches"] == 4
    # the last batch is closed three intervals after the request at the earliest
    assert fault["storm"]["last_loss_s"] >= 0.6
    assert fault["ended_s"] - fault["started_s"] >= 0.6
