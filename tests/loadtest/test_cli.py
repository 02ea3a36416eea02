"""`rtbench run` and `rtbench demo` (a check) on the real command line: exit codes, files."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

from rtbench.exitcodes import ExitCode
from rtbench.results import read_results
from rtbench.slo import Status, dump_slo, load_slo

ROOT = Path(__file__).resolve().parents[2]

RTBENCH = [sys.executable, "-c", "from rtbench.entry import run; run()"]
SHORT = ["--ramp", "0.3", "--drain", "3", "--quiet"]


def rtbench(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*RTBENCH, *args], capture_output=True, text=True, timeout=timeout, check=False
    )


def _slo(tmp_path: Path, threshold_ms: float) -> Path:
    path = tmp_path / "slo.toml"
    path.write_text(f"[delivery_latency]\npercentile = 99\nthreshold_ms = {threshold_ms}\n")
    return path


def test_exit_0_writes_results_and_verdicts(tiny, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    server = tiny()
    out = tmp_path / "run"
    done = rtbench(
        "run", "chat", "--target", server.url, "--users", "12", "--room-size", "4",
        "--rate", "3", "--duration", "1.5", "--slo", str(_slo(tmp_path, 1000)),
        "--out", str(out), *SHORT,
    )  # fmt: skip
    assert done.returncode == ExitCode.OK, done.stderr
    results = read_results(out / "results.json")
    assert results.run.scenario == "chat" and results.run.engine == "native"
    assert results.totals.delivered == results.totals.expected_deliveries > 0
    statuses = {v.target.value: v.status.value for v in results.verdicts}
    assert statuses == {
        "uptime": "not_measured",
        "delivery_latency": "pass",
        "connections": "not_measured",
        "recovery": "not_measured",
    }
    assert "delivery_latency" in done.stdout and "pass" in done.stdout
    assert results.environment.clock.startswith("same machine")


def test_exit_1_when_latency_misses_the_slo(tiny, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    server = tiny(delay_ms=30)
    done = rtbench(
        "run", "chat", "--target", server.url, "--users", "8", "--room-size", "4",
        "--rate", "3", "--duration", "1.5", "--slo", str(_slo(tmp_path, 10)), *SHORT,
    )  # fmt: skip
    assert done.returncode == ExitCode.SLO_FAILED, done.stderr
    assert "fail" in done.stdout


def test_exit_2_for_usage_errors(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text('scenario = "chat"\nrate = "fast"\n')
    cases = [
        (["run", "chatty", "--target", "ws://127.0.0.1:9"], "unknown scenario"),
        (["run", str(bad), "--target", "ws://127.0.0.1:9"], "invalid scenario file"),
        (["run", "chat", "--target", "127.0.0.1:9"], "must be a ws:// or wss:// URL"),
        (["run", "chat"], "no target"),
        (["run", "chat", "--target", "ws://127.0.0.1:9", "--protocol", "echo"], "lacks"),
        (["run", "chat", "--target", "ws://x:1", "--slo", str(tmp_path / "no.toml")], "SLO"),
        (["run", "chat", "--target", "ws://x:1", "--users", "many"], "--users"),
    ]
    for args, words in cases:
        done = rtbench(*args)
        assert done.returncode == ExitCode.USAGE, (args, done.stderr)
        lines = done.stderr.strip().splitlines()
        assert len(lines) == 1 and words in lines[0], (args, done.stderr)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_exit_3_unreachable_with_one_line_per_cause(tiny, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    port = _free_port()
    done = rtbench("run", "chat", "--target", f"ws://127.0.0.1:{port}", "--users", "5", *SHORT)
    assert done.returncode == ExitCode.UNREACHABLE
    assert done.stderr.strip() == (
        f"rtbench: cannot reach ws://127.0.0.1:{port}/ws: all 5 connections failed: "
        "5 connection refused (nothing listens there)"
    )
    refusing = tiny(upgrade_status=403)
    done = rtbench("run", "rtt", "--target", refusing.url, "--users", "3", *SHORT)
    assert done.returncode == ExitCode.UNREACHABLE
    assert "3 the WebSocket upgrade was refused with HTTP 403" in done.stderr
    done = rtbench("run", "rtt", "--target", refusing.url.replace("ws:", "wss:"), "--users", "2",
                   "--out", str(tmp_path / "tls"), *SHORT)  # fmt: skip
    assert done.returncode == ExitCode.UNREACHABLE
    assert "2 TLS handshake failed" in done.stderr
    assert read_results(tmp_path / "tls" / "results.json").totals.failures_by_cause == {"tls": 2}


def test_demo_checks_the_reference_server_and_stops_it(tmp_path: Path) -> None:
    """`make demo` is `rtbench check` of the reference server it starts: four verdicts,
    all measured, the report, and no server left behind."""
    out = tmp_path / "demo"
    done = rtbench("demo", "--connections", "200", "--duration", "6", "--out", str(out),
                   "--quiet", timeout=240)  # fmt: skip
    assert done.returncode == ExitCode.OK, done.stdout[-2000:] + done.stderr[-2000:]
    results = read_results(out / "results.json")
    assert results.run.mode == "check" and len(results.verdicts) == 4
    assert all(v.status is not Status.NOT_MEASURED for v in results.verdicts)
    assert results.totals.connections_ready == 200
    assert results.totals.delivered == results.totals.expected_deliveries > 0
    assert results.totals.typing_sent and results.totals.receipts_sent
    assert results.run.slo == dump_slo(load_slo(ROOT / "slo.toml"))  # the root slo.toml
    (restart,) = [f for f in results.run.faults if f.get("kind") == "restart"]
    assert restart["connections_lost"] == 200 and restart["recovered"] == 200
    pid = restart["pid"]  # the server the restart started; the check stopped it at the end
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        pass
    else:
        raise AssertionError(f"the demo left its server (PID {pid}) running")
    assert f"results: {out / 'results.json'}" in done.stdout
    assert (out / "report.html").exists()
    assert f"`rtbench check` exits {results.exit_code} for this run" in done.stdout
