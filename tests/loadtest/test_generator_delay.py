"""The generator's own delay bounds every verdict: never blame the server for it, never
excuse the server's own stall (issue: a verdict stays honest on a shared CPU).

Each run is ``rtbench run`` as a person runs it, against the real reference server. The
generator is made slow from outside (a worker stopped with SIGSTOP, or CPU hogs pinned to
its core), or the server is (SIGSTOP of the server this test started); the verdict must
be inconclusive for the first and a trusted failure for the second. Processes are
stopped, hogged and ended only by the PIDs this test started.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import psutil
import pytest

from rtbench.exitcodes import ExitCode
from rtbench.results import Results, read_results
from rtbench.slo import Status, Target
from tests.support.server import ServerProcess

pytestmark = pytest.mark.slow

RUN = [sys.executable, "-c", "from rtbench.entry import run; run()", "run", "chat"]
CHAT = ["--users", "100", "--room-size", "10", "--rate", "2", "--ramp", "1", "--seed", "4"]
CHAT += ["--dm-share", "0", "--typing-share", "0", "--receipt-share", "0", "--quiet"]
TWO_CORES = len(os.sched_getaffinity(0)) >= 2


def slo_file(path: Path, threshold_ms: float) -> Path:
    path.write_text(f"[delivery_latency]\npercentile = 99\nthreshold_ms = {threshold_ms}\n")
    return path


def run_while(
    argv: list[str], out: Path, during: Callable[[psutil.Process], None], pin: str | None = None
) -> tuple[int, Results, str]:
    """``rtbench run`` with ``during(its process)`` called from a thread while it runs."""
    command = [*(["taskset", "-c", pin] if pin else []), *RUN, *argv, "--out", str(out)]
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    meddler = threading.Thread(target=during, args=(psutil.Process(proc.pid),), daemon=True)
    meddler.start()
    try:
        text, _ = proc.communicate(timeout=240)
    finally:
        meddler.join(30)
    return proc.returncode, read_results(out / "results.json"), text


def delivery(results: Results):  # type: ignore[no-untyped-def]
    return next(v for v in results.verdicts if v.target is Target.DELIVERY_LATENCY)


def nothing(_: psutil.Process) -> None:
    return None


def test_a_quiet_run_is_a_trusted_pass_with_its_bound_stated(
    start_server: Callable[..., ServerProcess], tmp_path: Path
) -> None:
    server = start_server(store="memory")
    slo = slo_file(tmp_path / "slo.toml", 100)
    argv = ["--target", server.url, "--duration", "4", "--slo", str(slo)]
    code, results, text = run_while([*argv, *CHAT], tmp_path / "out", nothing)
    assert code == ExitCode.OK, text[-3000:]
    verdict = delivery(results)
    assert verdict.status is Status.PASS and verdict.trusted
    summary = results.latency["delivery"]
    assert set(summary.bound) == {"p50", "p90", "p99", "p999"}
    assert 0 <= summary.bound["p99"] < summary.bound["p999"] + 1e-9
    assert results.latency["loop_delay"].count > 100  # 100 wake-ups a second, corrected


def test_a_generator_worker_stopped_for_half_a_second_is_flagged(
    start_server: Callable[..., ServerProcess], tmp_path: Path
) -> None:
    """Every delivery that arrives while the worker is stopped waits for it: the measured
    p99 fails the threshold, and the generator's own delay says it may be all its own."""
    server = start_server(store="memory")
    slo = slo_file(tmp_path / "slo.toml", 100)

    def stop_a_worker(rtbench: psutil.Process) -> None:
        server.into_the_load(400)  # 2 s of CHAT's 200 msg/s: inside its sending
        (worker,) = rtbench.children()  # the one worker of --procs 1
        worker.send_signal(signal.SIGSTOP)
        time.sleep(0.5)  # the stop the issue names
        worker.send_signal(signal.SIGCONT)

    argv = ["--target", server.url, "--duration", "6", "--slo", str(slo), "--procs", "1"]
    code, results, text = run_while([*argv, *CHAT], tmp_path / "out", stop_a_worker)
    assert code == ExitCode.INCONCLUSIVE, text[-3000:]
    verdict = delivery(results)
    assert verdict.status is Status.FAIL and not verdict.trusted, verdict
    assert verdict.detail.startswith("inconclusive: the generator itself added up to")
    assert results.latency["loop_delay"].max >= 450  # the stop, seen by the delay meter
    assert results.latency["delivery"].bound["p99"] >= 300


def test_a_server_that_stalls_for_a_second_fails_trusted(
    start_server: Callable[..., ServerProcess], tmp_path: Path
) -> None:
    server = start_server(store="memory")
    slo = slo_file(tmp_path / "slo.toml", 100)

    def stall_the_server(_: psutil.Process) -> None:
        server.into_the_load(400)
        os.kill(server.pid, signal.SIGSTOP)
        time.sleep(1.0)  # the server's own stall: never excused
        os.kill(server.pid, signal.SIGCONT)

    argv = ["--target", server.url, "--duration", "6", "--slo", str(slo)]
    try:
        code, results, text = run_while([*argv, *CHAT], tmp_path / "out", stall_the_server)
    finally:
        os.kill(server.pid, signal.SIGCONT)
    assert code == ExitCode.SLO_FAILED, text[-3000:]
    verdict = delivery(results)
    assert verdict.status is Status.FAIL and verdict.trusted, verdict
    assert verdict.measured is not None and verdict.measured > 500
    assert "does not explain it" in verdict.detail


@pytest.mark.skipif(not TWO_CORES, reason="pins the server and the generator to two cores")
def test_cpu_hogs_on_the_generators_core_make_a_tight_verdict_inconclusive(
    start_server: Callable[..., ServerProcess], tmp_path: Path
) -> None:
    """Two busy loops share the generator's core (the server has the other): what the
    generator adds is as large as what it measures, so a 5 ms verdict cannot be judged."""
    server = start_server(store="memory")
    os.sched_setaffinity(server.pid, {0})
    hog = "import time\nend = time.monotonic() + 60\nwhile time.monotonic() < end: pass"
    hogs = [subprocess.Popen(["taskset", "-c", "1", sys.executable, "-c", hog]) for _ in range(2)]
    slo = slo_file(tmp_path / "slo.toml", 5)
    argv = ["--target", server.url, "--duration", "6", "--slo", str(slo), "--procs", "1"]
    try:
        code, results, text = run_while([*argv, *CHAT], tmp_path / "out", nothing, pin="1")
    finally:
        for busy in hogs:  # the hogs this test started, by PID
            busy.kill()
            busy.wait()
    verdict = delivery(results)
    assert code == ExitCode.INCONCLUSIVE, f"{verdict}\n{text[-3000:]}"
    assert verdict.status is Status.FAIL and not verdict.trusted
    assert "the generator itself added up to" in verdict.detail
    assert "the threshold is 5 ms" in verdict.detail
