"""``rtbench monitor`` as a user meets it: one-line errors with exit 2, and --ingest."""

from __future__ import annotations

import socket
from datetime import UTC, datetime

import pytest

from monitor.config import MonitorConfig, TargetConfig, settle
from monitor.evaluate import evaluate
from monitor.store import ProbeStore
from rtbench.cli import main
from rtbench.results import Environment, Results, RunInfo, Totals, write_results
from rtbench.slo import Status


def _run(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(["monitor", *argv])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--target", "http://127.0.0.1:1/"], "must be a ws:// or wss:// URL with a host"),
        (["--target", "ws://127.0.0.1:1/ws", "--interval", "0"], "interval: must be more"),
        (["--target", "ws://127.0.0.1:1/ws", "--interval", "soon"], "is not a duration"),
        (
            ["--target", "ws://127.0.0.1:1/ws", "--interval", "1s", "--timeout", "5s"],
            "must not exceed the interval",
        ),
        (["--target", "ws://127.0.0.1:1/ws", "--protocol", "carrier-pigeon"], "unknown protocol"),
        (["--target", "ws://127.0.0.1:1/ws", "--listen", "nowhere"], "expected HOST:PORT"),
        (["--target", "ws://127.0.0.1:1/ws", "--slo", "/nonexistent/slo.toml"], "cannot read SLO"),
        (["--config", "/nonexistent/monitor.toml"], "cannot read monitor config"),
        (["--interval", "5s"], "no target"),
        (
            ["-t", "a=ws://127.0.0.1:1/ws", "-t", "a=ws://127.0.0.1:2/ws"],
            "target name 'a' is used twice",
        ),
    ],
)
def test_bad_input_is_one_line_and_exit_2(capsys, tmp_path, argv, message):
    code, _, err = _run(capsys, *argv, "--db", str(tmp_path / "m.db"))
    assert code == 2
    assert message in err
    assert len(err.strip().splitlines()) == 1, err


def test_a_busy_listen_port_is_a_clear_error(capsys, tmp_path):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        code, _, err = _run(
            capsys,
            "--target",
            "ws://127.0.0.1:1/ws",
            "--listen",
            f"127.0.0.1:{port}",
            "--db",
            str(tmp_path / "m.db"),
        )
    assert code == 2
    assert f"cannot listen on 127.0.0.1:{port}" in err


def test_config_file_targets_and_settings(tmp_path):
    path = tmp_path / "monitor.toml"
    path.write_text(
        'interval = "2s"\nfailures_to_open = 3\n'
        '[[target]]\nname = "chat"\nurl = "ws://127.0.0.1:8765/ws"\n'
        '[[target]]\nurl = "ws://127.0.0.1:9000/"\nprotocol = "echo"\n'
    )
    from monitor.config import default_health_url, default_metrics, load_config_file

    settings = settle(load_config_file(path))
    chat, echo = settings.targets
    assert settings.interval == 2.0 and settings.timeout == 2.0 and settings.failures_to_open == 3
    assert echo.resolved_name() == "127.0.0.1:9000"
    assert default_health_url(chat) == "http://127.0.0.1:8765/healthz"
    assert default_metrics(chat) == ("http://127.0.0.1:8765/metrics", "rtbench_server_connections")
    assert default_health_url(echo) is None and default_metrics(echo) is None
    path.write_text('[[target]]\nurl = "ws://x/"\nbogus = 1\n')
    with pytest.raises(Exception, match="invalid monitor config"):
        load_config_file(path)


def _results(tmp_path, run_id: str, held: int, attempted: int):
    now = datetime.now(UTC).isoformat()
    results = Results(
        run=RunInfo(
            id=run_id,
            scenario="connect",
            target="ws://127.0.0.1:8765/ws",
            protocol="reference",
            started_at=now,
            ended_at=now,
            duration_s=60.0,
        ),
        environment=Environment.current(),
        totals=Totals(peak_connections=held, connections_attempted=attempted),
    )
    return write_results(results, tmp_path / f"{run_id}.json")


def test_ingest_feeds_the_connections_verdict(capsys, tmp_path):
    db = tmp_path / "m.db"
    settings = settle(
        MonitorConfig(target=[TargetConfig(url="ws://127.0.0.1:8765/ws", name="chat")], db=str(db))
    )
    failed = _results(tmp_path, "run-small", held=8_000, attempted=10_000)
    code, out, _ = _run(capsys, "--ingest", str(failed), "--db", str(db), "--ingest-as", "chat")
    assert code == 0 and "ingested run run-small (connect) for target chat" in out
    store = ProbeStore(db)
    try:
        verdict = evaluate(store, settings).target("chat").verdicts[2]
        assert verdict.target.value == "connections"
        assert verdict.status is Status.FAIL and verdict.measured == 8000
    finally:
        store.close()

    held = _results(tmp_path, "run-big", held=12_000, attempted=12_000)
    code, out, _ = _run(capsys, "--ingest", str(held), "--db", str(db), "--ingest-as", "chat")
    assert code == 0
    code, out, _ = _run(capsys, "--ingest", str(held), "--db", str(db), "--ingest-as", "chat")
    assert code == 0 and out.startswith("already ingested run run-big")
    store = ProbeStore(db)
    try:
        verdict = evaluate(store, settings).target("chat").verdicts[2]
        assert verdict.status is Status.PASS and verdict.measured == 12_000
    finally:
        store.close()


def test_ingest_of_a_check_feeds_connections_held_through_it_and_recovery(capsys, tmp_path):
    """A check's results.json: the connections held through the run (not its peak) and
    every client's recovery time reach the monitor's verdicts."""
    from rtbench.histogram import LatencyHistogram
    from rtbench.results import LatencySummary

    db = tmp_path / "m.db"
    settings = settle(
        MonitorConfig(target=[TargetConfig(url="ws://127.0.0.1:8765/ws", name="chat")], db=str(db))
    )
    recovery = LatencyHistogram()
    recovery.record_many_us([300_000] * 10_000)
    now = datetime.now(UTC).isoformat()
    results = Results(
        run=RunInfo(
            id="check-9", scenario="chat", target="ws://127.0.0.1:8765/ws", protocol="reference",
            started_at=now, ended_at=now, duration_s=100.0, mode="check",
        ),
        environment=Environment.current(),
        totals=Totals(
            peak_connections=10_400, connections_held=10_000, connections_attempted=10_000
        ),
        latency={"recovery": LatencySummary.of(recovery)},
    )  # fmt: skip
    path = write_results(results, tmp_path / "check.json")
    code, out, _ = _run(capsys, "--ingest", str(path), "--db", str(db), "--ingest-as", "chat")
    assert code == 0 and out == (
        "ingested run check-9 (check) for target chat: held through the check 10,000 of 10,000 "
        "connections, 10,000 recoveries\n"
    )
    store = ProbeStore(db)
    try:
        by = {v.target.value: v for v in evaluate(store, settings).target("chat").verdicts}
    finally:
        store.close()
    assert by["connections"].status is Status.PASS and by["connections"].measured == 10_000
    assert by["recovery"].status is Status.PASS
    assert by["recovery"].measured == pytest.approx(300.0, rel=0.01)


def test_an_ingested_checks_clients_that_never_recovered_count_slowest(capsys, tmp_path):
    """The monitor's recovery verdict is the check's own rule (``rtbench.slo``): a client
    that never came back is slower than any that did, so 2 of 102 fail a p99 that the
    100 recovered alone would pass."""
    from rtbench.histogram import LatencyHistogram
    from rtbench.results import LatencySummary

    db = tmp_path / "m.db"
    settings = settle(
        MonitorConfig(target=[TargetConfig(url="ws://127.0.0.1:8765/ws", name="chat")], db=str(db))
    )
    recovery = LatencyHistogram()
    recovery.record_many_us([300_000] * 100)
    now = datetime.now(UTC).isoformat()
    faults = [
        {"kind": "before any fault", "connections_lost": 1, "recovered": 0, "unrecovered": 1},
        {"kind": "restart", "connections_lost": 101, "recovered": 100, "unrecovered": 1},
    ]
    results = Results(
        run=RunInfo(
            id="check-10", scenario="chat", target="ws://127.0.0.1:8765/ws", protocol="reference",
            started_at=now, ended_at=now, duration_s=100.0, mode="check", faults=faults,
        ),
        environment=Environment.current(),
        totals=Totals(peak_connections=102, connections_held=100, connections_attempted=102),
        latency={"recovery": LatencySummary.of(recovery)},
    )  # fmt: skip
    path = write_results(results, tmp_path / "check.json")
    code, _, _ = _run(capsys, "--ingest", str(path), "--db", str(db), "--ingest-as", "chat")
    assert code == 0
    store = ProbeStore(db)
    try:
        (run,) = store.runs("chat", 0.0)
        by = {v.target.value: v for v in evaluate(store, settings).target("chat").verdicts}
    finally:
        store.close()
    assert (run.recoveries, run.unrecovered) == (100, 2)
    verdict = by["recovery"]
    assert verdict.status is Status.FAIL and verdict.measured is None
    assert "2 of 102 lost connections never recovered" in verdict.detail


def test_ingest_of_something_else_is_exit_2(capsys, tmp_path):
    bogus = tmp_path / "notes.json"
    bogus.write_text('{"hello": "world"}')
    code, _, err = _run(capsys, "--ingest", str(bogus), "--db", str(tmp_path / "m.db"))
    assert code == 2 and "not an rtbench results file" in err
