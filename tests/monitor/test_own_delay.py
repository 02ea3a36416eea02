"""A probe delayed by the monitor's own machine does not count against the target; a
server that really stalls still fails.

``rtbench monitor`` runs as a process of its own against the real reference server (both
started here, on loopback ports of their own), so either can be stopped by its PID
(SIGSTOP, SIGCONT). A probe gets its timeout in the monitor's own running time
(``monitor.prober``): an answer that waited in the socket while the monitor was stopped
is an answer, and the stop is recorded as the monitor's own delay.
"""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from monitor.store import ProbeResult, ProbeStore
from tests.locust.conftest import listening_port
from tests.support.machine import machine_lock
from tests.support.server import ServerProcess

pytestmark = pytest.mark.slow

INTERVAL_S = 2.0
"""The probe interval and timeout: long enough that the stops below fall inside one probe."""
MONITOR_STOP_S = 3.0
"""Longer than the probe timeout."""


@pytest.fixture
def server(tmp_path: Path) -> Iterator[ServerProcess]:
    """The reference server of one test (port 0, SQLite), running again before it ends."""
    started = ServerProcess(tmp_path / "server").start()
    try:
        yield started
    finally:
        os.kill(started.pid, signal.SIGCONT)
        started.stop("kill")


def start_monitor(url: str, tmp_path: Path) -> subprocess.Popen:
    argv = [sys.executable, "-c", "from rtbench.entry import run; run()", "monitor"]
    argv += ["--target", url, "--interval", f"{INTERVAL_S:g}s", "--timeout", f"{INTERVAL_S:g}s"]
    argv += ["--listen", "127.0.0.1:0", "--db", str(tmp_path / "monitor.db")]
    log = (tmp_path / "monitor.log").open("w")
    return subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT)


def end(proc: subprocess.Popen) -> None:
    """End the monitor this test started, by its PID (running again first)."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGCONT)
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


def healthz(base: str) -> tuple[int, dict]:
    try:
        with urllib.request.urlopen(f"{base}/healthz", timeout=10) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:  # 503: an SLO fails
        return exc.code, json.loads(exc.read())


def last_delivery(base: str) -> dict | None:
    (target,) = healthz(base)[1]["targets"]
    return next((p for p in target["probes"] if p["kind"] == "delivery"), None)


def wait_for_delivery_after(base: str, after: float, within: float = 30.0) -> None:
    deadline = time.monotonic() + within
    while (probe := last_delivery(base)) is None or probe["ts"] <= after:
        assert time.monotonic() < deadline, f"no delivery probe after {after}: {probe}"
        time.sleep(0.1)  # poll /healthz (the monitor re-evaluates after each probe)


def sleep_until(wall: float) -> None:
    time.sleep(max(0.0, wall - time.time()))


def next_probe_start(base: str) -> float:
    """When the monitor starts its next probes, at least 1 s from now: they run on the
    clock, every interval from the first."""
    wait_for_delivery_after(base, 0.0)
    ts = last_delivery(base)["ts"]  # type: ignore[index]
    return ts + INTERVAL_S * math.ceil((time.time() + 1.0 - ts) / INTERVAL_S)


def delivery_probes(tmp_path: Path) -> list[ProbeResult]:
    store = ProbeStore(tmp_path / "monitor.db")
    try:
        rows = store._db.execute(
            "SELECT ts, ok, latency_ms, error, own_ms, latency_own_ms, counted FROM probes"
            " WHERE kind = 'delivery' ORDER BY ts"
        ).fetchall()
    finally:
        store.close()
    return [
        ProbeResult(
            target="-",
            kind="delivery",
            ts=ts,
            ok=bool(ok),
            latency_ms=latency,
            error=error,
            own_ms=own,
            latency_own_ms=latency_own,
            counted=bool(counted),
        )
        for ts, ok, latency, error, own, latency_own, counted in rows
    ]


def test_a_monitor_stopped_longer_than_its_timeout_records_no_server_failure(
    server: ServerProcess, tmp_path: Path
) -> None:
    """The server pauses briefly (well within the timeout) so that the monitor's probes
    are surely in flight, then the monitor is stopped for longer than the timeout: the
    answers wait in its sockets, and the probes pass when it runs again."""
    with machine_lock():
        monitor = start_monitor(server.url, tmp_path)
        try:
            base = f"http://127.0.0.1:{listening_port(monitor.pid)}"
            start = next_probe_start(base)
            sleep_until(start - 0.3)  # the next probes will wait for the server...
            os.kill(server.pid, signal.SIGSTOP)
            try:
                sleep_until(start + 0.8)  # ...and are in flight, 0.8 s of their 2 s spent
                monitor.send_signal(signal.SIGSTOP)
                sleep_until(start + 1.0)  # the server answers while the monitor is stopped
            finally:
                os.kill(server.pid, signal.SIGCONT)
            sleep_until(start + 0.8 + MONITOR_STOP_S)
            monitor.send_signal(signal.SIGCONT)
            resumed = time.time()
            wait_for_delivery_after(base, resumed)  # the monitor probes on
            status, doc = healthz(base)
            metrics = urllib.request.urlopen(f"{base}/metrics", timeout=10).read().decode()
        finally:
            end(monitor)
    (target,) = doc["targets"]
    probes = delivery_probes(tmp_path)
    assert probes and all(p.ok and p.counted for p in probes), probes
    stopped = [p for p in probes if start - 0.5 < p.ts < start + 0.5]
    assert len(stopped) == 1, probes  # the probe the stop fell into...
    (probe,) = stopped
    assert probe.own_ms is not None and probe.own_ms >= 0.9 * MONITOR_STOP_S * 1000  # ...saw it
    assert probe.latency_own_ms is not None and probe.latency_own_ms <= probe.latency_ms  # type: ignore[operator]
    assert target["incidents"] == []
    assert target["windows"][0]["good"] == target["windows"][0]["total"] == len(probes)
    assert target["own_delay"]["max_ms"] >= 0.9 * MONITOR_STOP_S * 1000
    assert target["own_delay"]["not_counted"] == 0
    latency = next(v for v in target["verdicts"] if v["target"] == "delivery_latency")
    assert not (latency["status"] == "fail" and latency["trusted"]), latency
    assert status == 200, target["verdicts"]
    assert 'rtbench_monitor_own_delay_seconds_count{kind="delivery"' in metrics
    # the held connection: a loss of the monitor's own making (the server closes a client
    # silent that long) is logged as not counted, and no recovery is stored
    assert target["recovery"]["count"] == 0, target["recovery"]
    log = (tmp_path / "monitor.log").read_text()
    losses = [line for line in log.splitlines() if "held connection lost" in line]
    assert all("(not counted: the monitor itself was kept from running" in x for x in losses), log


def test_a_server_stopped_longer_than_the_timeout_fails_its_probe(
    server: ServerProcess, tmp_path: Path
) -> None:
    """The server's own stall is never excused: the monitor kept running, its own delay
    is small, and the probe that waited out its timeout is a counted failure."""
    with machine_lock():
        monitor = start_monitor(server.url, tmp_path)
        try:
            base = f"http://127.0.0.1:{listening_port(monitor.pid)}"
            start = next_probe_start(base)
            sleep_until(start - 0.3)
            os.kill(server.pid, signal.SIGSTOP)
            try:
                sleep_until(start + INTERVAL_S + 0.5)  # the probe at ``start`` times out
            finally:
                os.kill(server.pid, signal.SIGCONT)
            wait_for_delivery_after(base, time.time())
            _, doc = healthz(base)
        finally:
            end(monitor)
    (target,) = doc["targets"]
    failed = [p for p in delivery_probes(tmp_path) if not p.ok]
    assert failed, "a probe that waited out its timeout on a stopped server"
    assert all(p.counted for p in failed)
    first = failed[0]
    assert first.error == f"delivery: no answer within {INTERVAL_S:g}s"
    assert first.own_ms is not None and first.own_ms < 500  # the monitor kept running
    assert target["windows"][0]["good"] < target["windows"][0]["total"]
    assert target["own_delay"]["not_counted"] == 0
