"""Locust runs judged by the same rule as native ones: the generator's own delay bounds
every latency verdict (``loadtest.judge.bounded``), headless and in the Realtime SLO tab.

The Locust process's gevent loop is stalled from outside (SIGSTOP of the Locust process
this test started, by its PID): its delay meter sees the stop, and a tight delivery SLO
the stop alone could fail is inconclusive (exit 4), never the server's. The same run
without the stop is a trusted pass with its bound stated.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path

import pytest

from rtbench.exitcodes import ExitCode
from rtbench.results import read_results
from rtbench.slo import Status, Target
from tests.locust.conftest import (
    listening_port,
    scenario_file,
    slo_file,
    start_locust,
    stop,
)
from tests.support.machine import machine_lock
from tests.support.server import ServerProcess

pytestmark = pytest.mark.slow

CHAT = """
scenario = "chat"
users = 30
room_size = 10
rate = 2.0
ramp = 0.5
duration = 6.0
drain = 5.0
seed = 11
dm_share = 0.0
typing_share = 0.0
receipt_share = 0.0
"""
STOP_S = 0.5
"""The stop the issue names (a generator worker stopped for 500 ms)."""


def delivery(results):  # type: ignore[no-untyped-def]
    return next(v for v in results.verdicts if v.target is Target.DELIVERY_LATENCY)


def slo_state(base: str) -> dict:
    with urllib.request.urlopen(f"{base}/rtbench/slo", timeout=10) as response:
        return json.loads(response.read())


def run_headless(
    server: ServerProcess, tmp_path: Path, during: Callable[[int], None]
) -> tuple[int, str]:
    """``rtbench locust --headless`` (one Locust process), ``during(its PID)`` beside it."""
    scenario = scenario_file(tmp_path / "chat.toml", CHAT)
    slo = slo_file(tmp_path / "slo.toml", delivery_ms=100)
    command = [sys.executable, "-c", "from rtbench.entry import run; run()", "locust"]
    command += [str(scenario), "--headless", "-t", server.url, "--slo", str(slo)]
    command += ["--out", str(tmp_path / "out")]
    proc = subprocess.Popen(
        command, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    meddler = threading.Thread(target=during, args=(proc.pid,), daemon=True)
    meddler.start()
    try:
        out, _ = proc.communicate(timeout=120)
    finally:
        meddler.join(30)
    return proc.returncode, out


def locust_of(rtbench_pid: int) -> int:
    """The Locust process ``rtbench locust`` started (its only child)."""
    import psutil

    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        children = psutil.Process(rtbench_pid).children()
        if children:
            return children[0].pid
        time.sleep(0.05)  # the child appears within a second of the start
    raise AssertionError("rtbench locust started no Locust process")


def stop_for_a_while(pid: int) -> None:
    import os

    os.kill(pid, signal.SIGSTOP)
    try:
        time.sleep(STOP_S)  # the stop itself
    finally:
        os.kill(pid, signal.SIGCONT)


def test_a_quiet_locust_run_is_a_trusted_pass_with_its_bound_stated(
    reference_server: ServerProcess, tmp_path: Path
) -> None:
    with machine_lock():
        code, out = run_headless(reference_server, tmp_path, lambda _pid: None)
    assert code == ExitCode.OK, out[-3000:]
    results = read_results(tmp_path / "out" / "results.json")
    assert results.run.engine == "locust"
    verdict = delivery(results)
    assert verdict.status is Status.PASS and verdict.trusted
    summary = results.latency["delivery"]
    assert set(summary.bound) == {"p50", "p90", "p99", "p999"}
    assert 0 <= summary.bound["p99"] < 100  # the gevent loop kept up
    assert results.latency["loop_delay"].count > 100  # 100 wake-ups a second, corrected


def test_a_stopped_locust_process_makes_a_tight_verdict_inconclusive_exit_4(
    reference_server: ServerProcess, tmp_path: Path
) -> None:
    def stop_locust(rtbench_pid: int) -> None:
        pid = locust_of(rtbench_pid)
        reference_server.into_the_load(120)  # 2 s of CHAT's 60 msg/s: inside its sending
        stop_for_a_while(pid)

    with machine_lock():
        code, out = run_headless(reference_server, tmp_path, stop_locust)
    results = read_results(tmp_path / "out" / "results.json")
    verdict = delivery(results)
    assert code == ExitCode.INCONCLUSIVE, f"{verdict}\n{out[-3000:]}"
    assert verdict.status is Status.FAIL and not verdict.trusted
    assert verdict.detail.startswith("inconclusive: the generator itself added up to")
    assert "the threshold is 100 ms" in verdict.detail
    assert results.latency["loop_delay"].max >= 0.9 * STOP_S * 1000  # the stop, seen
    assert results.latency["delivery"].bound["p99"] >= 300
    assert results.totals.lost == 0  # every message arrived: only late, by our own stop


def test_a_server_that_stalls_for_a_second_fails_a_locust_run_trusted(
    reference_server: ServerProcess, tmp_path: Path
) -> None:
    """The server's own stall is never excused: the Locust process kept running."""

    def stall_the_server(rtbench_pid: int) -> None:
        import os

        locust_of(rtbench_pid)  # Locust is starting
        reference_server.into_the_load(120)
        os.kill(reference_server.pid, signal.SIGSTOP)
        try:
            time.sleep(1.0)  # the server's stall
        finally:
            os.kill(reference_server.pid, signal.SIGCONT)

    with machine_lock():
        code, out = run_headless(reference_server, tmp_path, stall_the_server)
    results = read_results(tmp_path / "out" / "results.json")
    verdict = delivery(results)
    assert code == ExitCode.SLO_FAILED, f"{verdict}\n{out[-3000:]}"
    assert verdict.status is Status.FAIL and verdict.trusted
    assert verdict.measured is not None and verdict.measured > 500
    assert "does not explain it" in verdict.detail


def test_the_realtime_slo_tab_says_inconclusive_with_the_generators_delay(
    reference_server: ServerProcess, browser, tmp_path: Path
) -> None:  # type: ignore[no-untyped-def]
    """Live and final, the tab shows the bound beside the delivery figure and calls the
    verdict the stop could flip inconclusive; the process exits 4."""
    scenario = scenario_file(tmp_path / "chat.toml", CHAT.replace("6.0", "12.0", 1))
    slo = slo_file(tmp_path / "slo.toml", delivery_ms=100)
    with machine_lock():
        proc = start_locust(
            "--web-host", "127.0.0.1", "--web-port", "0", "--autostart", "--autoquit", "5",
            "-H", reference_server.url, "--scenario", str(scenario), "--slo", str(slo),
            cwd=tmp_path, log=tmp_path / "locust.log",
        )  # fmt: skip
        try:
            base = f"http://127.0.0.1:{listening_port(proc.pid)}"
            deadline = time.monotonic() + 60
            while slo_state(base)["phase"] != "running":
                assert time.monotonic() < deadline, slo_state(base)
                time.sleep(0.2)  # poll the phase (the ramp takes ~1 s)
            time.sleep(2.0)  # some load before the stop
            stop_for_a_while(proc.pid)
            rows: dict = {}
            deadline = time.monotonic() + 20
            while rows.get("delivery latency", {}).get("status") != "inconclusive so far":
                assert time.monotonic() < deadline, rows
                time.sleep(0.5)  # the tab's figures come from the 1 s ticks
                rows = {row["figure"]: row for row in slo_state(base)["rows"]}
            live = rows["delivery latency"]
            assert live["bound"].startswith("up to ") and live["bound"].endswith(" ms at p99")
            assert "the generator itself added up to" in live["detail"]
            browser.get(f"{base}/?tab=realtime-slo")
            from tests.locust.test_webui import shown_text

            text = shown_text(browser, ("Generator's own delay", "inconclusive"))
            assert "up to " in text
            deadline = time.monotonic() + 60
            while (state := slo_state(base))["phase"] != "done":
                assert time.monotonic() < deadline, state
                time.sleep(0.5)  # the run ends after its 12 s and the drain
            final = {row["figure"]: row for row in state["rows"]}["delivery latency"]
            assert state["exit_code"] == ExitCode.INCONCLUSIVE, final
            assert final["status"] == "inconclusive" and final["bound"].startswith("up to ")
            assert proc.wait(30) == ExitCode.INCONCLUSIVE  # --autoquit: the verdicts' code
        finally:
            stop(proc)
    log = (tmp_path / "locust.log").read_text()
    assert "Traceback" not in log, log[-3000:]
