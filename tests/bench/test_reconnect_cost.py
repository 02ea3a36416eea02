"""benchmarks/reconnect_cost.py at its quick size, through the suite (``rtbench bench
--only reconnect_cost``): real reference server, Node ws peer and bare picows server on
loopback, real picows clients. Figures are not asserted (300 clients decide nothing),
only that each was measured and every client came back with exactly what it missed."""

from __future__ import annotations

import json
from pathlib import Path

from benchmarks import suite


def test_reconnect_cost_quick_through_the_suite(tmp_path: Path, node: str) -> None:
    suite.run_suite(suite.select(["reconnect_cost"]), tmp_path, quick=True, runs=1, log=print)
    data = json.loads((tmp_path / "reconnect_cost.json").read_text())
    assert data["status"] == "ok", data["notes"]
    summary = data["summary"]
    assert summary["clients"] == 300 and summary["rounds"] == 2
    assert summary["resumed"] == 600  # each storm checks every client's replay, or fails
    for name in ("reference", "node", "picows"):
        assert len(summary["rounds_us"][name]) == 2
        assert summary["us_per_op"][name] > 0
    assert summary["ratio_reference_to_node"] > 0
    [goal] = data["goals"]
    assert goal["met"] is None  # a quick run decides nothing
    report = (tmp_path / "reconnect_cost.md").read_text()
    assert "| Node ws, bare handshake (connect + close) |" in report
    assert "benchmarks.reconnect_cost --quick" in report
