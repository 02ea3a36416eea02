"""The exposition and the shipped Prometheus files: /metrics lints clean under promtool,
the rules load and give the designed verdicts (promtool unit tests), and the Grafana
dashboard only reads series that are exposed or recorded."""

from __future__ import annotations

import itertools
import json
import re
import subprocess
import urllib.request
from pathlib import Path

import pytest

from loadtest.export import ExportSettings, LiveAggregate, RunLabels, open_exporters
from rtbench.histogram import LatencyHistogram
from rtbench.slo import SLO

pytestmark = pytest.mark.promtool

PROM = Path(__file__).resolve().parents[2] / "loadtest" / "prometheus"


def _promtool(promtool: str, *args: str, stdin: bytes | None = None, cwd: Path | None = None):
    return subprocess.run(
        [promtool, *args], input=stdin, capture_output=True, timeout=60, cwd=cwd, check=False
    )


def _exposition() -> bytes:
    """A live /metrics body with every histogram filled, read over HTTP."""
    histograms = {}
    for k, name in enumerate(("delivery", "ack", "handshake", "send_lag", "reconnect", "recovery")):
        hist = LatencyHistogram()
        hist.record_many_us([150 * (k + 1), 2_000, 40_000, 99_800, 2_500_000])
        histograms[name] = hist
    aggregate = LiveAggregate(
        phase="running",
        elapsed_s=3.5,
        counters={"sent": 10, "acked": 9, "expected": 30, "delivered": 28, "duplicated": 1},
        connections_open=12,
        connections_target=12,
        histograms=histograms,
        cpu_percent=37.5,
        loop_lag_ms=1.5,
        cpus_busy_percent=62.5,
    )
    labels = RunLabels("20261207-000000-abcdef", "chat", "ws://127.0.0.1:1/ws", "reference")
    exporters = open_exporters(ExportSettings(metrics_listen="127.0.0.1:0"), labels, SLO())
    try:
        exporters.update(aggregate)
        assert exporters.flush()  # the snapshot is built on the export thread
        with urllib.request.urlopen(exporters.metrics_url, timeout=10) as answer:
            assert answer.status == 200
            return answer.read()
    finally:
        exporters.close()


def test_live_metrics_lint_clean_and_are_bounded(promtool: str) -> None:
    body = _exposition()
    done = _promtool(promtool, "check", "metrics", stdin=body)
    assert done.returncode == 0 and not done.stdout.strip() and not done.stderr.strip(), (
        done.stdout.decode() + done.stderr.decode()
    )
    text = body.decode()
    assert 'le="0.1"' in text and 'le="2.0"' in text  # edges at the SLO thresholds
    assert (
        'rtbench_run_delivery_latency_seconds_bucket{le="0.1",protocol="reference",'
        'run_id="20261207-000000-abcdef",scenario="chat",target="ws://127.0.0.1:1/ws"} 4.0'
    ) in text  # 99.8 ms is within 100 ms (HDR: at most 99.839), 2.5 s is not
    assert "rtbench_run_generator_cpu_ratio{" in text and "} 0.375" in text
    assert "rtbench_run_generator_cpus_busy_ratio{" in text and "} 0.625" in text
    label_names = set(re.findall(r"[{,]([a-z_]+)=", text))
    assert label_names == {"run_id", "scenario", "target", "protocol", "le", "phase", "slo"}


def _recorded_names() -> set[str]:
    return set(re.findall(r"^\s*- record: (\S+)$", (PROM / "runs-rules.yml").read_text(), re.M))


def test_rules_check_and_unit_tests_pass(promtool: str) -> None:
    done = _promtool(promtool, "check", "rules", str(PROM / "runs-rules.yml"))
    assert done.returncode == 0, done.stdout.decode() + done.stderr.decode()
    assert b"SUCCESS: 10 rules found" in done.stdout
    tests = Path(__file__).with_name("runs_rules_test.yml")
    done = _promtool(promtool, "test", "rules", tests.name, cwd=tests.parent)
    assert done.returncode == 0, done.stdout.decode() + done.stderr.decode()


def test_dashboard_reads_only_exposed_or_recorded_series(promtool: str) -> None:
    text = _exposition().decode()
    exposed = set(re.findall(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{| )", text, re.M))
    known = exposed | _recorded_names()
    dashboard = json.loads((PROM / "runs-dashboard.json").read_text())
    exprs = [t["expr"] for p in dashboard["panels"] for t in p["targets"]]
    assert len(exprs) >= 20
    titles = " ".join(p["title"] for p in dashboard["panels"]).lower()
    for topic in ("latency", "throughput", "loss", "connections", "recovery", "generator"):
        assert topic in titles, topic
    rule_text = (PROM / "runs-rules.yml").read_text()
    for source in [rule_text, *exprs]:
        for name in re.findall(r"\b(rtbench[a-zA-Z0-9_:]*[a-zA-Z0-9])\b", source):
            assert name in known, f"{name} is neither exposed nor recorded"


def test_each_snapshot_is_stamped_after_the_previous_one() -> None:
    """Remote write refuses a series' second sample at a timestamp it already holds, so
    snapshots built in one millisecond (the last live one and the final) must still be
    stamped in order, or the run's final figures are refused (seen once in CI: the
    `phase="done"` sample never reached Prometheus)."""
    from loadtest.export.model import RunMetrics

    metrics = RunMetrics(RunLabels("r", "chat", "ws://127.0.0.1:1/ws", "reference"), SLO())
    aggregate = LiveAggregate(
        phase="running", elapsed_s=1.0, counters={}, connections_open=0,
        connections_target=0, histograms={}, cpu_percent=0.0, loop_lag_ms=0.0,
    )  # fmt: skip
    stamps = [metrics.snapshot(aggregate, final=i == 49).timestamp_ms for i in range(50)]
    assert all(b > a for a, b in itertools.pairwise(stamps)), stamps
