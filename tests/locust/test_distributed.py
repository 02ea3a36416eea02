"""A Locust master and two workers on loopback: their statistics merge, exactly."""

from __future__ import annotations

import re
from pathlib import Path

from rtbench.results import read_results
from tests.locust.conftest import (
    free_port,
    run_locust,
    scenario_file,
    slo_file,
    start_locust,
    stats_rows,
    stop,
)
from tests.support.server import ServerProcess

FANOUT = """
scenario = "fanout"
users = 40
room_size = 20
publishers = 1
rate = 4.0
ramp = 0.5
duration = 3.0
drain = 5.0
"""
PROCESS_NOTE = re.compile(
    r"Locust process (?P<node>\S+): (?P<ready>[\d,]+) connections ready, "
    r"(?P<sent>[\d,]+) sent, (?P<delivered>[\d,]+) delivered"
)


def test_master_and_two_workers_merge_their_statistics(
    reference_server: ServerProcess, tmp_path: Path
) -> None:
    port = free_port()
    scenario = scenario_file(tmp_path / "fanout.toml", FANOUT)
    slo = slo_file(tmp_path / "slo.toml", delivery_ms=5000)
    worker = ("--worker", "--master-port", str(port))
    workers = [start_locust(*worker, cwd=tmp_path, log=tmp_path / f"w{k}.log") for k in range(2)]
    try:
        done = run_locust(
            "--master", "--headless", "--expect-workers", "2", "--master-bind-host", "127.0.0.1",
            "--master-bind-port", str(port), "-H", reference_server.url,
            "--scenario", str(scenario), "--slo", str(slo), "--out", str(tmp_path / "out"),
            "--csv", str(tmp_path / "stats"), "--only-summary",
            cwd=tmp_path,
        )  # fmt: skip
    finally:
        for worker in workers:
            stop(worker)
    assert done.returncode == 0, done.stdout[-3000:]

    results = read_results(tmp_path / "out" / "results.json")
    t = results.totals
    notes = [m.groupdict() for n in results.generator.notes if (m := PROCESS_NOTE.match(n))]
    per_process = [{k: int(v.replace(",", "")) for k, v in n.items() if k != "node"} for n in notes]
    # both workers took connections and received deliveries ...
    assert len(per_process) == 2 and results.generator.processes == 2
    assert all(p["ready"] > 0 and p["delivered"] > 0 for p in per_process)
    # ... and the master's figures are exactly their sum: 40 subscribers + 2 publishers
    assert sum(p["ready"] for p in per_process) == t.connections_ready == 42
    assert sum(p["sent"] for p in per_process) == t.sent > 0
    assert sum(p["delivered"] for p in per_process) == t.delivered == t.expected_deliveries
    assert t.expected_deliveries == t.sent * 20  # 20 subscribers + 1 publisher - the sender
    # Locust merged its own statistics from both workers the same way
    rows = stats_rows(tmp_path / "stats")
    assert int(rows["connect"]["Request Count"]) == 42
    assert int(rows["delivery"]["Request Count"]) == t.delivered
    assert int(rows["send→ack"]["Request Count"]) == t.acked == t.sent
