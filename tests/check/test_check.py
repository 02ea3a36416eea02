"""`rtbench check`: all four targets on one timeline, against real servers at small scale.

Each check runs as a person runs it (the ``rtbench`` command in a subprocess) against
the real reference server (started by the check through ``--server-cmd``, or by the
test), or the third-party JSON server through the generic adapter. Servers made to
stall (SIGSTOP of a server the test started, by its PID), to drop deliveries or to
refuse connections past a count must fail the matching verdict with its reason;
times are judged against SLO files written for a shared test machine.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
import xml.etree.ElementTree as ET
from collections.abc import Callable
from pathlib import Path

import pytest

from rtbench.cli import main
from rtbench.exitcodes import ExitCode
from rtbench.results import Results, read_results
from rtbench.slo import Status, Target
from tests.recovery.conftest import serve_cmd
from tests.support.server import ServerProcess
from tests.thirdparty.conftest import GENERIC_OPTIONS, scenario_toml
from tests.thirdparty.servers import ServerProc

StartServer = Callable[..., ServerProcess]
StartProc = Callable[..., ServerProc]

pytestmark = pytest.mark.slow

CHECK = [sys.executable, "-c", "from rtbench.entry import run; run()", "check"]
SMALL = ["--connections", "150", "--ramp", "1.5", "--duration", "9", "--rate", "1", "--seed", "3"]


def slo_file(path: Path, **sections: dict) -> Path:
    """An SLO file with lenient defaults for a shared machine, then ``sections``."""
    values: dict[str, dict] = {
        "uptime": {"objective": 50},
        "delivery_latency": {"percentile": 90, "threshold_ms": 2000},
        "connections": {"min": 150},
        "recovery": {"percentile": 99, "threshold_ms": 15000},
    }
    for name, fields in sections.items():
        values[name] = {**values[name], **fields}
    lines = []
    for name, fields in values.items():
        lines.append(f"[{name}]")
        lines += [f"{key} = {json.dumps(value)}" for key, value in fields.items()]
    path.write_text("\n".join(lines) + "\n")
    return path


def check(tmp_path: Path, *args: str) -> tuple[int, Results, str]:
    out = tmp_path / "out"
    command = [*CHECK, *args, "--out", str(out), "--quiet"]
    done = subprocess.run(command, capture_output=True, text=True, timeout=240, check=False)
    text = done.stdout + done.stderr
    assert (out / "results.json").exists(), text[-3000:]
    return done.returncode, read_results(out / "results.json"), text


def verdicts(results: Results) -> dict[Target, object]:
    return {v.target: v for v in results.verdicts}


def test_a_small_check_measures_all_four_targets_and_passes(tmp_path: Path) -> None:
    store = f"sqlite:///{tmp_path / 'chat.db'}"
    slo = slo_file(tmp_path / "slo.toml")
    code, results, text = check(
        tmp_path,
        "--server-cmd",
        serve_cmd("--store", store),
        "--slo",
        str(slo),
        "--probe-interval",
        "0.5",
        *SMALL,
    )
    assert code == ExitCode.OK, text[-3000:]
    assert results.run.mode == "check" and results.exit_code == ExitCode.OK
    by = verdicts(results)
    assert list(by) == [
        Target.UPTIME,
        Target.DELIVERY_LATENCY,
        Target.CONNECTIONS,
        Target.RECOVERY,
    ]
    assert all(v.status is Status.PASS and v.trusted for v in by.values()), by
    assert "probe intervals good" in by[Target.UPTIME].detail
    assert "run allows" in by[Target.UPTIME].detail  # the budget, in words
    assert by[Target.CONNECTIONS].measured == 150
    assert "through the fault" in by[Target.CONNECTIONS].detail
    assert "over 150 recoveries" in by[Target.RECOVERY].detail  # the restart dropped all
    t = results.totals
    assert t.lost == 0 and t.duplicated_after_dedupe == 0 and not t.errors_by_code
    assert len(results.probes) >= 15  # every 0.5 s from the ramp to the drain
    # each probe carries the prober's own delay (monitor.prober), and every one counted
    assert all(p.own_ms is not None and p.counted for p in results.probes), results.probes
    names = [p.name for p in results.phases]
    assert names[:2] == ["ramp", "load"] and "restart" in names and names[-1] == "drain"
    restart = next(p for p in results.phases if p.name == "restart")
    load = next(p for p in results.phases if p.name == "load")
    assert load.start < restart.start < restart.end < load.end
    # the verdicts lead the terminal output, and the plan says what the check does
    assert text.index("SLO verdicts") < text.index("figure")
    assert "hold 150 connections" in text and "restart:term@3s" in text
    last = text.strip().splitlines()[-1]
    assert last.startswith("rtbench check: 4 of 4 promises kept; uptime ") and "(exit 0)" in last
    report = (tmp_path / "out" / "report.html").read_text()
    assert "rtbench check: the four promises" in report and 'id="chart-check-timeline"' in report
    assert report.count('class="probe"') == len(results.probes)


def test_junit_and_markdown_of_a_check_list_the_four_targets(tmp_path: Path) -> None:
    store = f"sqlite:///{tmp_path / 'chat.db'}"
    slo = slo_file(tmp_path / "slo.toml")
    junit, summary = tmp_path / "junit.xml", tmp_path / "summary.md"
    code, _, text = check(
        tmp_path,
        "--server-cmd",
        serve_cmd("--store", store),
        "--slo",
        str(slo),
        *SMALL,
        "--duration",
        "6",
        "--junit",
        str(junit),
        "--summary-md",
        str(summary),
        "--metrics-listen",
        "127.0.0.1:0",
    )
    assert code == ExitCode.OK, text[-3000:]
    assert "live metrics at http://127.0.0.1:" in text  # run's export options, declared once
    cases = ET.parse(junit).getroot().findall(".//testcase")
    assert [c.get("name") for c in cases] == [
        "uptime",
        "delivery_latency",
        "connections",
        "recovery",
    ]
    assert {c.get("classname") for c in cases} == {"rtbench.check"}
    assert not any(c.find("failure") is not None or c.find("skipped") is not None for c in cases)
    markdown = summary.read_text()
    assert all(name in markdown.lower() for name in ("uptime", "recovery", "connections"))


def test_a_stalled_server_fails_delivery_latency_trusted(
    start_server: StartServer, tmp_path: Path
) -> None:
    """The server stops for 1.5 s mid-load: the delivery verdict fails, trusted (the
    generator was fine, so the server's stall is never excused)."""
    server = start_server(store="memory")
    slo = slo_file(tmp_path / "slo.toml", delivery_latency={"percentile": 99, "threshold_ms": 500})

    def stall() -> None:
        time.sleep(6.0)  # into the load: the ramp takes 1.5 s, the load 9 s after it
        os.kill(server.pid, signal.SIGSTOP)
        time.sleep(1.5)  # the stall itself: what the delivery verdict must show
        os.kill(server.pid, signal.SIGCONT)

    staller = threading.Thread(target=stall, daemon=True)
    staller.start()
    try:
        code, results, text = check(
            tmp_path, "--target", server.url, "--slo", str(slo), *SMALL, "--rate", "2"
        )
    finally:
        staller.join(15)
        os.kill(server.pid, signal.SIGCONT)  # never leave it stopped
    assert code == ExitCode.SLO_FAILED, text[-3000:]
    latency = verdicts(results)[Target.DELIVERY_LATENCY]
    assert latency.status is Status.FAIL and latency.trusted, latency
    assert latency.measured is not None and latency.measured > 500, latency
    assert not results.generator.saturated


def test_a_server_that_drops_deliveries_fails_delivery_with_the_loss(
    json_server: StartProc, tmp_path: Path
) -> None:
    server = json_server(drop_every=10)
    scenario = scenario_toml(tmp_path / "json.toml", GENERIC_OPTIONS, scenario="chat")
    slo = slo_file(tmp_path / "slo.toml", delivery_latency={"percentile": 99})
    code, results, text = check(
        tmp_path, str(scenario), "--protocol", "generic", "--target", server.url, "--slo",
        str(slo), *SMALL,
    )  # fmt: skip
    assert code == ExitCode.SLO_FAILED, text[-3000:]
    latency = verdicts(results)[Target.DELIVERY_LATENCY]
    assert latency.status is Status.FAIL and "expected deliveries lost" in latency.detail
    assert results.totals.lost > 0
    assert verdicts(results)[Target.CONNECTIONS].status is Status.PASS  # it is not the count


def test_a_server_refusing_connections_past_a_count_fails_connections(
    start_server: StartServer, tmp_path: Path
) -> None:
    limits = {"max_connections_per_ip": 100, "connection_limit_exempt": []}  # loopback too
    server = start_server(store="memory", config={"limits": limits})
    slo = slo_file(tmp_path / "slo.toml")
    code, results, text = check(tmp_path, "--target", server.url, "--slo", str(slo), *SMALL)
    assert code == ExitCode.SLO_FAILED, text[-3000:]
    assert "connections (100 connections; >= 150 held)" in text.strip().splitlines()[-1]
    held = verdicts(results)[Target.CONNECTIONS]
    assert held.status is Status.FAIL and held.trusted, held
    assert held.measured is not None and held.measured <= 100
    assert "of 150 connections held" in held.detail
    assert results.totals.connections_failed >= 50


def test_a_fault_that_takes_no_effect_fails_recovery_with_the_reason(
    start_server: StartServer, tmp_path: Path
) -> None:
    """A blackhole shorter than the clients' heartbeat drops no connection: the recovery
    target was not measured, and a check says so as a failure, not a silent pass."""
    server = start_server(store="memory")
    slo = slo_file(tmp_path / "slo.toml")
    code, results, text = check(
        tmp_path, "--target", server.url, "--slo", str(slo), *SMALL, "--fault", "blackhole:0.1s@3s"
    )
    assert code == ExitCode.SLO_FAILED, text[-3000:]
    recovery = verdicts(results)[Target.RECOVERY]
    assert recovery.status is Status.FAIL, recovery
    assert "not measured: no client lost its connection" in recovery.detail
    assert "not_measured" not in {v.status.value for v in results.verdicts}


def test_a_socketio_server_is_checked_on_all_four(sio_server: StartProc, tmp_path: Path) -> None:
    """Socket.IO (named as its users name it, http://): rooms, no resume (a cut client
    joins again), Engine.IO heartbeats answered; all four targets measured."""
    server = sio_server()
    slo = slo_file(tmp_path / "slo.toml")
    target = server.url.replace("ws://", "http://", 1)
    code, results, text = check(
        tmp_path, "--protocol", "socketio", "--target", target, "--slo", str(slo), *SMALL
    )
    assert code == ExitCode.OK, text[-3000:]
    assert all(v.status is Status.PASS for v in results.verdicts), results.verdicts
    assert results.run.scenario == "chat" and results.totals.reconnects == 150


def test_an_echo_server_is_checked_with_round_trips(echo, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """A plain echo server has no rooms: the check's messaging is round trips (the
    delivery), its uptime probe an echo, its fault a cut every client comes back from."""
    server = echo()
    slo = slo_file(tmp_path / "slo.toml")
    code, results, text = check(
        tmp_path, "--protocol", "echo", "--target", server.url, "--slo", str(slo), *SMALL
    )
    assert code == ExitCode.OK, text[-3000:]
    assert results.run.scenario == "rtt"
    assert all(v.status is Status.PASS for v in results.verdicts), results.verdicts
    t = results.totals
    # an echo has no replay: a round trip in flight when its connection is cut is lost
    assert t.expected_deliveries == t.delivered + t.lost and t.delivered > 0
    assert "over 150 recoveries" in verdicts(results)[Target.RECOVERY].detail


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (["--target", "ws://127.0.0.1:9", "--probe-interval", "0"], "--probe-interval"),
        (["--target", "ws://127.0.0.1:9", "--kill"], "--kill restarts the server"),
        (["--target", "ws://127.0.0.1:9", "--kill", "--fault", "cut@2s"], "restart:kill@T"),
        ([], "no target"),
        (["--target", "http://127.0.0.1:9"], "must be a ws:// or wss:// URL"),
        (["loadtest/scenarios/fanout.toml", "--target", "ws://127.0.0.1:9"], "chats"),
        (["--target", "ws://127.0.0.1:9", "--slo", "no-such-slo.toml"], "SLO file"),
        (["--target", "ws://127.0.0.1:9", "--connections", "many"], "--connections"),
        (["--target", "ws://127.0.0.1:9", "--fault", "meteor@3s"], "meteor"),
    ],
)
def test_bad_flags_exit_2_with_one_line(
    capsys: pytest.CaptureFixture[str], args: list[str], words: str
) -> None:
    assert main(["check", *args]) == ExitCode.USAGE
    err = capsys.readouterr().err
    assert words in err and err.count("\n") == 1, err
