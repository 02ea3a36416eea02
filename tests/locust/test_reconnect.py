"""A server restart mid-run: every user reconnects and resumes through the shared client
(``loadtest.client``); the recovery target is timed from each loss's record."""

from __future__ import annotations

import json
import urllib.request
from pathlib import Path

from rtbench.results import read_results
from rtbench.slo import Status, Target
from tests.locust.conftest import listening_port, scenario_file, slo_file, start_locust, stop
from tests.locust.test_webui import wait_for_phase
from tests.support.server import ServerProcess

CHAT = """
scenario = "chat"
users = 20
room_size = 10
rate = 2.0
dm_share = 0.0
ramp = 0.5
duration = 10.0
drain = 5.0
connect_timeout = 20.0
"""


def test_users_reconnect_and_resume_after_a_server_restart(
    reference_server: ServerProcess, tmp_path: Path
) -> None:
    scenario = scenario_file(tmp_path / "chat.toml", CHAT)
    slo = slo_file(tmp_path / "slo.toml", delivery_ms=60_000)
    out = tmp_path / "out"
    proc = start_locust(
        "--autostart", "--autoquit", "120", "--web-host", "127.0.0.1", "--web-port", "0",
        "-H", reference_server.url, "--scenario", str(scenario), "--slo", str(slo),
        "--out", str(out), cwd=tmp_path, log=tmp_path / "locust.log",
    )  # fmt: skip
    try:
        base = f"http://127.0.0.1:{listening_port(proc.pid)}"
        wait_for_phase(base, ("running",))
        reference_server.restart("term")  # drains, closes everyone with 1012, same port + store
        wait_for_phase(base, ("done",), timeout=90)
        with urllib.request.urlopen(f"{base}/stats/requests", timeout=10) as response:
            stats = {s["name"]: s for s in json.loads(response.read())["stats"]}
    finally:
        stop(proc)
    results = read_results(out / "results.json")
    t = results.totals
    # every connection was closed by the restart and came back, re-joined by resume
    assert t.closes_by_code.get("1012") == 20
    assert (
        t.reconnects
        == 20
        == stats["reconnect"]["num_requests"] - stats["reconnect"]["num_failures"]
    )
    recovery = next(v for v in results.verdicts if v.target is Target.RECOVERY)
    assert recovery.status is Status.PASS and "over 20 recoveries" in recovery.detail
    assert results.latency["reconnect"].count == 20
    # the shared client's record of every loss, merged and judged as the native engine's
    [losses] = results.run.faults
    assert losses["kind"] == "none" and losses["connections_lost"] == losses["recovered"] == 20
    assert losses["causes"] == {"close_1012": 20}
    assert results.latency["recovery"].count == 20
    # resume replays what was missed, never twice; a send lost in the restart was never acked
    assert t.delivered > 0 and t.duplicated == 0
    assert t.lost == 0 or t.unacked > 0, (t.lost, t.unacked)
