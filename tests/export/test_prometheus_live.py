"""A run's live metrics reach a real Prometheus, by scrape and by remote write, and agree
with the run's results.json: same counts, a p99 in the same bucket, the same verdict."""

from __future__ import annotations

import math
import subprocess
import sys
import time
from pathlib import Path

import pytest

from loadtest.export.buckets import LADDER_S, NATIVE_SCHEMA, base_of
from rtbench.exitcodes import ExitCode
from rtbench.histogram import LatencyHistogram
from rtbench.results import Results, read_results
from tests.export.conftest import Prometheus, free_port

RTBENCH = [sys.executable, "-c", "from rtbench.entry import run; run()"]
RULES = Path(__file__).resolve().parents[2] / "loadtest" / "prometheus" / "runs-rules.yml"
LOAD = ["--users", "24", "--room-size", "4", "--rate", "4", "--duration", "4", "--ramp", "0.3"]
LOAD += ["--drain", "3", "--quiet"]


JUDGED = (ExitCode.OK, ExitCode.SLO_FAILED, ExitCode.INCONCLUSIVE)
"""A finished, judged run: the export does not depend on the verdicts, and a shared
machine's noise can fail a latency target (which the rules must then agree with)."""


def rtbench(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*RTBENCH, *args], capture_output=True, text=True, timeout=timeout, check=False
    )


def within_count(results: Results, edge_s: float) -> int:
    """Deliveries at most ``edge_s``, by hdrhistogram's own iterator over results.json."""
    hdr = LatencyHistogram.decode(results.latency["delivery"].hdr)._hdr  # type: ignore[arg-type]
    return sum(
        item.count_at_value_iterated_to
        for item in hdr.get_recorded_iterator()
        if item.value_iterated_to <= round(edge_s * 1e6)
    )


def p99_at_rank(results: Results) -> float:
    """results.json's delivery p99 in seconds, as PromQL ranks it: the value at rank
    ceil(0.99 x count). (HDR's own p99, results.json's, takes the nearest rank, which can
    be one value lower.)"""
    hdr = LatencyHistogram.decode(results.latency["delivery"].hdr)._hdr  # type: ignore[arg-type]
    rank = math.ceil(0.99 * hdr.get_total_count())
    seen = 0
    for item in hdr.get_recorded_iterator():
        seen += item.count_at_value_iterated_to
        if seen >= rank:
            return item.value_iterated_to / 1e6
    raise AssertionError("empty histogram")


def last(prom: Prometheus, selector: str) -> float:
    return prom.value(f"last_over_time({selector}[1m])")


def check_classic(prom: Prometheus, results: Results) -> None:
    run = f'run_id="{results.run.id}"'
    totals = results.totals
    delivery = results.latency["delivery"]
    # the final snapshot was served (or pushed) before rtbench exited; Prometheus commits a
    # scrape's samples just after reading it, so wait for them with a deadline. A run's
    # series go stale a scrape after it ends: read each one's last sample.
    prom.wait_for(
        f'last_over_time(rtbench_run_phase{{{run},phase="done"}}[1m])', lambda v: v == 1, within=5
    )
    assert last(prom, f"rtbench_run_deliveries_total{{{run}}}") == totals.delivered > 0
    assert last(prom, f"rtbench_run_deliveries_expected_total{{{run}}}") == (
        totals.expected_deliveries
    )
    assert last(prom, f"rtbench_run_messages_sent_total{{{run}}}") == totals.sent
    assert last(prom, f"rtbench_run_delivery_latency_seconds_count{{{run}}}") == delivery.count
    assert last(prom, f"rtbench_run_deliveries_lost_total{{{run}}}") == totals.lost
    # every bucket holds exactly what results.json's HDR histogram has at or below its edge
    for edge in (0.005, 0.01, 0.025, 0.1):
        le = repr(edge)
        got = last(prom, f'rtbench_run_delivery_latency_seconds_bucket{{{run},le="{le}"}}')
        assert got == within_count(results, edge), edge
    # the p99 Prometheus interpolates lies in the bucket that holds results.json's p99
    p99_s = p99_at_rank(results)
    assert abs(p99_s - delivery.p99 / 1000.0) <= 0.001 * p99_s or p99_s >= delivery.p99 / 1000  # type: ignore[operator]
    edges = (0.0, *LADDER_S, math.inf)
    low = max(e for e in edges if e < p99_s)
    high = min(e for e in edges if e >= p99_s)
    quantile = prom.value(
        "histogram_quantile(0.99, last_over_time("
        f"rtbench_run_delivery_latency_seconds_bucket{{{run}}}[1m]))"
    )
    assert low <= quantile <= high, (quantile, p99_s)


def test_prometheus_scrapes_a_run_and_its_rules_give_the_runs_verdict(
    prometheus: Prometheus, reference_server, tmp_path: Path
) -> None:  # type: ignore[no-untyped-def]
    port = free_port()
    prometheus.start(scrape=f"127.0.0.1:{port}", rules=[RULES])
    out = tmp_path / "run"
    started = time.monotonic()
    done = rtbench(
        "run", "chat", "--target", reference_server.url, *LOAD,
        "--metrics-listen", f"127.0.0.1:{port}", "--out", str(out),
    )  # fmt: skip
    took = time.monotonic() - started
    assert done.returncode in JUDGED, done.stderr
    assert f"live metrics at http://127.0.0.1:{port}/metrics" in done.stdout
    results = read_results(out / "results.json")
    check_classic(prometheus, results)
    run = f'run_id="{results.run.id}"'
    labels = prometheus.query(f"rtbench_run_deliveries_total{{{run}}}[1m]")[0]["metric"]
    assert labels["scenario"] == "chat" and labels["protocol"] == "reference"
    assert labels["target"] == reference_server.url
    # the endpoint waited for the final scrape (1 s interval), not the whole 15 s grace
    assert took < results.run.duration_s + 10, (took, results.run.duration_s)
    # the recording rules give results.json's delivery verdict
    verdict = {v.target.value: v.status.value for v in results.verdicts}["delivery_latency"]
    assert verdict in ("pass", "fail")
    expected = 1.0 if verdict == "pass" else 0.0
    prometheus.wait_for(f"rtbench:run_delivery_latency:verdict{{{run}}}", lambda v: v == expected)
    ratio = prometheus.wait_for(
        f"rtbench:run_delivery_latency_within_threshold:ratio{{{run}}}", lambda v: v > 0
    )
    assert ratio == within_count(results, 0.1) / results.totals.expected_deliveries
    assert prometheus.query(f"rtbench:run_recovery:verdict{{{run}}}") == []  # not measured


def test_remote_write_with_native_histograms_reaches_prometheus(
    prometheus: Prometheus, reference_server, tmp_path: Path
) -> None:  # type: ignore[no-untyped-def]
    prometheus.start(receiver=True)
    out = tmp_path / "run"
    done = rtbench(
        "run", "chat", "--target", reference_server.url, *LOAD,
        "--remote-write", f"{prometheus.url}/api/v1/write", "--native-histograms",
        "--out", str(out),
    )  # fmt: skip
    assert done.returncode in JUDGED, done.stderr
    assert "dropped" not in done.stderr, done.stderr
    results = read_results(out / "results.json")
    check_classic(prometheus, results)
    run = f'run_id="{results.run.id}"'
    native = f"rtbench_run_delivery_latency_seconds{{{run}}}"  # pushed: never stale
    assert prometheus.value(f"histogram_count({native})") == results.latency["delivery"].count
    # a native bucket is 2^(1/8) wide (about 9 %): the p99 agrees within one bucket
    p99_s = p99_at_rank(results)
    quantile = prometheus.value(f"histogram_quantile(0.99, {native})")
    base = base_of(NATIVE_SCHEMA)
    assert p99_s / base <= quantile <= p99_s * base, (quantile, p99_s)
    # the live updates came in one a second: the series has history, not just the end
    samples = prometheus.query(f"count_over_time(rtbench_run_deliveries_total{{{run}}}[5m])")
    assert float(samples[0]["value"][1]) >= 4


@pytest.mark.parametrize(
    ("option", "value", "message"),
    [
        ("--metrics-listen", "localhost:http", "give HOST:PORT"),
        ("--metrics-listen", "127.0.0.1:70000", "port must be 0..65535"),
        ("--remote-write", "ftp://127.0.0.1/w", "give an http:// or https:// URL"),
        ("--otlp", "127.0.0.1:4318", "give an http:// or https:// URL"),
    ],
)
def test_bad_export_options_are_one_line_usage_errors(option: str, value: str, message: str):
    done = rtbench("run", "chat", "--target", "ws://127.0.0.1:9/ws", option, value, "--quiet")
    assert done.returncode == ExitCode.USAGE, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], done.stderr


def test_a_listen_port_in_use_is_a_usage_error() -> None:
    with __import__("socket").socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        done = rtbench(
            "run", "chat", "--target", "ws://127.0.0.1:9/ws", "--quiet",
            "--metrics-listen", f"127.0.0.1:{port}",
        )  # fmt: skip
    assert done.returncode == ExitCode.USAGE, done.stderr
    assert done.stderr.count("\n") == 1 and "--metrics-listen" in done.stderr, done.stderr


def test_a_dead_remote_write_endpoint_costs_the_run_nothing_but_a_warning(
    reference_server, tmp_path: Path
) -> None:  # type: ignore[no-untyped-def]
    dead = free_port()  # nothing listens there: every push is refused
    out = tmp_path / "run"
    started = time.monotonic()
    done = rtbench(
        "run", "chat", "--target", reference_server.url, *LOAD,
        "--remote-write", f"http://127.0.0.1:{dead}/api/v1/write", "--out", str(out),
    )  # fmt: skip
    took = time.monotonic() - started
    assert done.returncode in JUDGED, done.stderr
    results = read_results(out / "results.json")
    assert results.totals.delivered == results.totals.expected_deliveries > 0
    assert "rtbench: warning: remote write:" in done.stderr and "dropped" in done.stderr
    assert took < results.run.duration_s + 5, (took, results.run.duration_s)
