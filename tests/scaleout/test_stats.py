"""Machine-wide /metrics and /healthz from per-worker shared-memory slots."""

from __future__ import annotations

import multiprocessing
import os
import time
from pathlib import Path

from reference_server.cluster.stats import (
    STALE_S,
    SlotFile,
    SupervisorState,
    WorkerState,
    WorkerStats,
    merged_metrics,
)
from reference_server.metrics import Metrics, render


def stats_for(slots: SlotFile, index: int, metrics: Metrics, connections: int) -> WorkerStats:
    gauges = {"connections": connections, "rss_bytes": 1000 * (index + 1), "users_online": 1}
    return WorkerStats(slots, index, metrics, lambda: dict(gauges), lambda: {"status": "ok"})


def busy_metrics(n: int) -> Metrics:
    m = Metrics()
    m.frames_in = n
    m.fanout_deliveries = 10 * n
    m.errors["bad_json"] = n
    m.closes[1012] = 1
    m.commit_seconds.observe(0.003)
    m.loop_lag = 0.001 * n
    return m


def test_workers_sum_into_one_view(tmp_path: Path) -> None:
    slots = SlotFile(tmp_path / "s", 2, create=True)
    a = stats_for(slots, 0, busy_metrics(3), connections=5)
    b = stats_for(slots, 1, busy_metrics(4), connections=7)
    b.publish()
    snapshots = [s for _, s in a.everyone() if s is not None]
    total, gauges = merged_metrics(snapshots)
    assert total.frames_in == 7 and total.fanout_deliveries == 70
    assert total.errors == {"bad_json": 7} and total.closes == {1012: 2}
    assert total.commit_seconds.counts[3] == 2  # 0.003 s falls in the 0.005 bucket
    assert total.loop_lag == 0.004  # the worst worker, not a sum
    assert gauges["connections"] == 12
    text = render(a.collector()).decode()  # type: ignore[arg-type]
    assert "rtbench_server_messages_in_total 7.0" in text
    assert "rtbench_server_connections 12.0" in text
    assert 'rtbench_server_worker_up{worker="1"} 1.0' in text
    assert 'rtbench_server_worker_connections{worker="0"} 5.0' in text


def test_every_counter_of_metrics_is_summed_over_workers(tmp_path: Path) -> None:
    """A counter added to ``Metrics`` later must not read 0 machine-wide."""
    counters = [n for n, v in vars(Metrics()).items() if type(v) is int and n != "queue_high_water"]
    slots = SlotFile(tmp_path / "s", 2, create=True)
    workers = []
    for index in (0, 1):
        m = Metrics()
        for n, name in enumerate(counters):
            setattr(m, name, n + 1)
        workers.append(stats_for(slots, index, m, connections=1))
    workers[1].publish()
    total, _ = merged_metrics([s for _, s in workers[0].everyone() if s is not None])
    assert {name: getattr(total, name) for name in counters} == {
        name: 2 * (n + 1) for n, name in enumerate(counters)
    }
    text = render(workers[0].collector()).decode()  # type: ignore[arg-type]
    assert (
        f"rtbench_server_frames_rate_limited_total {2.0 * (counters.index('rate_limited') + 1)}"
        in text
    )


def test_healthz_lists_every_worker_and_flags_silent_ones(tmp_path: Path) -> None:
    slots = SlotFile(tmp_path / "s", 3, create=True)
    a = stats_for(slots, 0, Metrics(), connections=2)
    stats_for(slots, 1, Metrics(), connections=3).publish()
    slots.write_supervisor(
        SupervisorState(
            pid=1,
            started=time.time(),
            workers=[
                WorkerState(index=0, pid=os.getpid(), state="running", restarts=0, since=0),
                # worker 1 was restarted: its slot still holds the dead process's numbers
                WorkerState(index=1, pid=4241, state="running", restarts=2, since=0),
                WorkerState(index=2, pid=4242, state="restarting", restarts=1, since=0),
            ],
        )
    )
    listing, totals = a.workers()
    assert [w["worker"] for w in listing] == [0, 1, 2]
    assert [w["status"] for w in listing] == ["ok", "stale", "restarting"]
    assert [w["restarts"] for w in listing] == [0, 2, 1]
    assert listing[0]["connections"] == 2 and totals["connections"] == 2
    assert totals["supervisor_pid"] == 1


def test_a_restarted_worker_keeps_counters_monotonic(tmp_path: Path) -> None:
    slots = SlotFile(tmp_path / "s", 1, create=True)
    first = stats_for(slots, 0, busy_metrics(5), connections=1)
    first.publish()
    second = stats_for(slots, 0, busy_metrics(2), connections=1)  # same slot, a new process
    assert second.now().counters["frames_in"] == 7
    assert second.now().errors == {"bad_json": 7}


def _writer(path: str, rounds: int) -> None:
    slots = SlotFile(path, 1)
    m = Metrics()
    stats = WorkerStats(slots, 0, m, lambda: {"connections": 1.0}, lambda: {"status": "ok"})
    for i in range(rounds):
        m.frames_in = i
        m.errors[f"code{i % 7}"] += 1  # snapshots of varying length
        stats.publish()


def test_reader_never_sees_a_torn_snapshot(tmp_path: Path) -> None:
    path = tmp_path / "s"
    slots = SlotFile(path, 1, create=True)
    writer = multiprocessing.get_context("spawn").Process(target=_writer, args=(str(path), 3000))
    writer.start()
    seen = 0
    deadline = time.monotonic() + 60
    while writer.is_alive() and time.monotonic() < deadline:
        snap = slots.snapshot(0)  # decoding a torn one would raise or return garbage
        if snap is not None:
            assert snap.counters["frames_in"] >= seen
            seen = snap.counters["frames_in"]
    writer.join(10)
    assert writer.exitcode == 0
    assert slots.snapshot(0).counters["frames_in"] == 2999  # type: ignore[union-attr]
    assert STALE_S > 0
