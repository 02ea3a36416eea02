"""A run's live metrics over OTLP/HTTP reach a receiver that decodes them with the official
OpenTelemetry protobuf classes, and the last export carries results.json's figures."""

from __future__ import annotations

import gzip
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest,
    ExportMetricsServiceResponse,
)

from rtbench.exitcodes import ExitCode
from rtbench.results import read_results

RTBENCH = [sys.executable, "-c", "from rtbench.entry import run; run()"]
JUDGED = (ExitCode.OK, ExitCode.SLO_FAILED, ExitCode.INCONCLUSIVE)  # a finished, judged run


class Receiver:
    """An OTLP/HTTP metrics receiver on a free loopback port (protobuf only)."""

    def __init__(self) -> None:
        self.requests: list[ExportMetricsServiceRequest] = []
        self.paths: list[str] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                if self.headers.get("Content-Encoding") == "gzip":
                    body = gzip.decompress(body)
                assert self.headers["Content-Type"] == "application/x-protobuf"
                request = ExportMetricsServiceRequest()
                request.ParseFromString(body)
                receiver.requests.append(request)
                receiver.paths.append(self.path)
                answer = ExportMetricsServiceResponse().SerializeToString()
                self.send_response(200)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

            def log_message(self, format: str, *args: object) -> None:
                """Quiet."""

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    server = Receiver()
    try:
        yield server
    finally:
        server.close()


def test_otlp_export_carries_the_runs_figures(receiver: Receiver, reference_server, tmp_path: Path):  # type: ignore[no-untyped-def]
    out = tmp_path / "run"
    done = subprocess.run(
        [
            *RTBENCH, "run", "chat", "--target", reference_server.url, "--users", "16",
            "--room-size", "4", "--rate", "4", "--duration", "3", "--ramp", "0.3",
            "--drain", "3", "--quiet", "--otlp", f"http://127.0.0.1:{receiver.port}",
            "--out", str(out),
        ],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert done.returncode in JUDGED, done.stderr  # the verdicts do not matter here
    assert "dropped" not in done.stderr, done.stderr
    results = read_results(out / "results.json")
    assert set(receiver.paths) == {"/v1/metrics"}  # a bare address gets the standard path
    assert len(receiver.requests) >= 3  # one a second while running, then the final one
    last = receiver.requests[-1]
    resource = last.resource_metrics[0]
    attributes = {a.key: a.value.string_value for a in resource.resource.attributes}
    assert attributes["service.name"] == "rtbench"
    assert attributes["rtbench.run_id"] == results.run.id
    metrics = {m.name: m for m in resource.scope_metrics[0].metrics}

    delivered = metrics["rtbench_run_deliveries"]
    assert delivered.sum.is_monotonic and delivered.sum.aggregation_temporality == 2  # cumul.
    point = delivered.sum.data_points[0]
    assert point.as_double == results.totals.delivered > 0
    labels = {a.key: a.value.string_value for a in point.attributes}
    assert labels == {
        "run_id": results.run.id,
        "scenario": "chat",
        "target": reference_server.url,
        "protocol": "reference",
    }

    latency = metrics["rtbench_run_delivery_latency"]
    assert latency.unit == "s"
    hist = latency.histogram.data_points[0]
    assert hist.count == results.latency["delivery"].count
    assert 0.1 in hist.explicit_bounds and 2.0 in hist.explicit_bounds  # the SLO thresholds
    assert sum(hist.bucket_counts) == hist.count
    assert len(hist.bucket_counts) == len(hist.explicit_bounds) + 1
    assert hist.max == pytest.approx(results.latency["delivery"].max / 1000.0)  # type: ignore[operator]

    cpu = metrics["rtbench_run_generator_cpu"]
    assert cpu.unit == "1" and cpu.HasField("gauge")
    phase = {
        dict((a.key, a.value.string_value) for a in p.attributes)["phase"]: p.as_double
        for p in metrics["rtbench_run_phase"].gauge.data_points
    }
    assert phase["done"] == 1.0 and phase["running"] == 0.0


def test_rtbench_locust_exports_from_its_master(
    receiver: Receiver, reference_server, tmp_path: Path
) -> None:  # type: ignore[no-untyped-def]
    """The same exporter behind the Locust master: the users' ticks in, the run's figures out."""
    out = tmp_path / "out"
    done = subprocess.run(
        [
            *RTBENCH, "locust", "chat", "--headless", "--target", reference_server.url,
            "--users", "12", "--room-size", "4", "--rate", "3", "--ramp", "0.5",
            "--duration", "3", "--drain", "3", "--out", str(out),
            "--otlp", f"http://127.0.0.1:{receiver.port}/v1/metrics",
        ],
        cwd=tmp_path, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert done.returncode in JUDGED, done.stdout[-2000:] + done.stderr[-2000:]
    results = read_results(out / "results.json")
    assert results.run.engine == "locust"
    assert len(receiver.requests) >= 3
    resource = receiver.requests[-1].resource_metrics[0]
    metrics = {m.name: m for m in resource.scope_metrics[0].metrics}
    point = metrics["rtbench_run_deliveries"].sum.data_points[0]
    labels = {a.key: a.value.string_value for a in point.attributes}
    assert labels["run_id"] == results.run.id and labels["scenario"] == "chat"
    assert point.as_double == results.totals.delivered > 0
    hist = metrics["rtbench_run_delivery_latency"].histogram.data_points[0]
    assert hist.count == results.latency["delivery"].count
    # the live updates before the final one came from the users' ticks while running
    running = [
        r for r in receiver.requests[:-1]
        for m in r.resource_metrics[0].scope_metrics[0].metrics
        if m.name == "rtbench_run_connections_open" and m.gauge.data_points[0].as_double == 12
    ]  # fmt: skip
    assert running, "no live update saw every user connected"


def test_bad_export_option_stops_rtbench_locust_before_locust_starts(tmp_path: Path) -> None:
    done = subprocess.run(
        [*RTBENCH, "locust", "chat", "--headless", "--target", "ws://127.0.0.1:9/ws",
         "--remote-write", "not a url"],
        cwd=tmp_path, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert done.returncode == ExitCode.USAGE
    assert done.stderr.strip().splitlines() == [
        "rtbench: --remote-write 'not a url': give an http:// or https:// URL"
    ], done.stderr
