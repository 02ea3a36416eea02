"""The Socket.IO and generic adapters under Locust (`rtbench locust --headless`).

Locust monkey-patches the standard library with gevent, so it runs as a subprocess
(ended by its PID through ``subprocess.run``'s timeout); the servers' truth is compared
with what the Locust users counted, as for the native engine.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from rtbench.results import read_results
from tests.thirdparty.conftest import GENERIC_OPTIONS, PONG_RULE, scenario_toml
from tests.thirdparty.test_socketio import _exact

FIELDS = dict(
    scenario="chat", users=12, room_size=4, rate=4.0, ramp=0.5, duration=3.0, drain=4.0,
    seed=5, max_cpu_percent=100.0, max_loop_lag_ms=10000.0,
)  # fmt: skip
"""A short chat; the generator's own saturation is not what these tests judge."""


def _locust(scenario: Path, url: str, out: Path) -> None:
    command = [sys.executable, "-c", "from rtbench.entry import run; run()", "locust"]
    command += [str(scenario), "--headless", "-t", url, "--out", str(out)]
    done = subprocess.run(command, capture_output=True, text=True, timeout=150, check=False)
    # 1: the drops fail the latency target, as they should
    assert done.returncode == 1, done.stdout[-3000:] + done.stderr[-3000:]


def test_socketio_under_locust_counts_faults_exactly(sio_server, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    server = sio_server(
        "--echo-sender", "--ping-interval", "0.3", "--ping-timeout", "1.0",
        drop_every=7, dup_every=5, swap_every=11,
    )  # fmt: skip
    options = {"ack": True, "join_ack": True}
    scenario = scenario_toml(tmp_path / "sio.toml", options, protocol="socketio", **FIELDS)
    # named as Socket.IO users name their server: http://, dialled as ws://
    _locust(scenario, server.url.replace("ws://", "http://", 1), tmp_path / "out")
    results = read_results(tmp_path / "out" / "results.json")
    truth = server.stats()
    assert results.run.engine == "locust"
    assert truth["dropped"] and truth["duplicated"] and truth["swapped"]
    _exact(results, truth)
    t = results.totals
    assert t.acked == t.sent and t.events_by_type["own_message"] == t.sent
    assert t.connections_held == 12 and not t.closes_by_code  # Engine.IO pings answered


def test_generic_under_locust_with_application_pings(json_server, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    server = json_server("--app-ping", "0.3", drop_every=7, dup_every=5)
    options = {**GENERIC_OPTIONS, "reply": PONG_RULE}
    scenario = scenario_toml(tmp_path / "json.toml", options, protocol="generic", **FIELDS)
    _locust(scenario, server.url, tmp_path / "out")
    results = read_results(tmp_path / "out" / "results.json")
    truth = server.stats()
    _exact(results, truth)
    assert results.totals.acked == results.totals.sent
    assert results.totals.connections_held == 12 and not results.totals.closes_by_code
    assert truth["pongs"] >= 12 * 5
