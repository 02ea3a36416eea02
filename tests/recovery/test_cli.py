"""`rtbench run --fault ... --server-cmd ...` through the real command line."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from rtbench.exitcodes import ExitCode
from rtbench.results import read_results
from rtbench.slo import Status, Target
from tests.recovery.conftest import serve_cmd

RTBENCH = [sys.executable, "-c", "from rtbench.entry import run; run()"]


def rtbench(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*RTBENCH, *args], capture_output=True, text=True, timeout=timeout, check=False
    )


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--fault", "restart@2s", "--target", "ws://127.0.0.1:9"], "needs --server-cmd"),
        (["--fault", "reboot@2s", "--target", "ws://127.0.0.1:9"], "unknown kind 'reboot'"),
        (["--fault", "cut@30s", "--target", "ws://127.0.0.1:9"], "past the 5 s of load"),
        (["--server-cmd", "rtbench serve --port 8765"], "needs --target"),
        (["--server-cmd", "'unbalanced", "--target", "ws://127.0.0.1:9"], "cannot be parsed"),
    ],
)
def test_bad_fault_options_are_one_line_and_exit_2(args: list[str], message: str) -> None:
    done = rtbench("run", "chat", "--duration", "5", "--quiet", *args)
    assert done.returncode == ExitCode.USAGE, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], done.stderr


def test_a_server_command_that_dies_says_why(tmp_path: Path) -> None:
    cmd = f"{sys.executable} -c 'import sys; print(\"no config here\"); sys.exit(3)'"
    done = rtbench(
        "run", "chat", "--server-cmd", cmd, "--target", "ws://127.0.0.1:9", "--fault",
        "restart@1s", "--duration", "3", "--quiet",
    )  # fmt: skip
    assert done.returncode == ExitCode.USAGE
    assert "exited with code 3" in done.stderr and "no config here" in done.stderr


@pytest.mark.slow
def test_fault_run_writes_recovery_figures_and_prints_them(tmp_path: Path) -> None:
    out = tmp_path / "run"
    store = f"sqlite:///{tmp_path / 'server.db'}"
    # An untimed delivery target (as tests/loadtest/conftest.UNTIMED): messages sent while
    # the server is down wait out the restart, so delivery p99 lands near 100 ms, where a
    # loaded runner's own delay makes that verdict inconclusive (exit 4, seen once). This
    # test is about the fault's figures; the recovery target keeps its default.
    slo = tmp_path / "slo.toml"
    slo.write_text("[delivery_latency]\nthreshold_ms = 60000\n")
    done = rtbench(
        "run", "chat", "--users", "60", "--room-size", "6", "--rate", "1", "--ramp", "0.5",
        "--duration", "6", "--drain", "8", "--server-cmd", serve_cmd("--store", store),
        "--fault", "restart:kill@2s", "--out", str(out), "--quiet", "--slo", str(slo),
    )  # fmt: skip
    assert done.returncode in (ExitCode.OK, ExitCode.SLO_FAILED), done.stderr
    results = read_results(out / "results.json")
    (fault,) = results.run.faults
    assert fault["spec"] == "restart:kill@2s" and fault["recovered"] == 60
    assert results.totals.lost == 0 and results.totals.reconnects == 60
    (verdict,) = [v for v in results.verdicts if v.target is Target.RECOVERY]
    assert verdict.status in (Status.PASS, Status.FAIL)
    assert "faults" in done.stdout and "restart:kill@2s" in done.stdout
    assert (out / "server.log").read_text().count("--- start") == 2  # started, restarted
