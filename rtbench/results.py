"""results.json: the versioned record of one run, read by reports, gates and the monitor.

The schema is documented in docs/RESULTS.md; its version is ``SCHEMA``. Readers
accept every version in ``READABLE`` and ignore fields they do not know, so the
schema can grow without breaking old baselines; a change that alters the
meaning of a field bumps the version. Version 2 writes every counter of ``totals``
explicitly, zeros included (version 1 omitted counters equal to 0, so ``jq
.totals.lost`` read ``null``); a version 1 file reads the same, missing counters as 0.

Latencies are in milliseconds. Each latency summary carries the encoded HDR
histogram (``hdr``), so percentiles can be recomputed and runs merged exactly.
"""

from __future__ import annotations

import os
import platform
import socket
import sys
from importlib import metadata
from pathlib import Path
from typing import Any

import msgspec
from msgspec import Struct

from rtbench import __version__
from rtbench.histogram import LatencyHistogram
from rtbench.slo import Verdict

SCHEMA = "rtbench.results/2"
READABLE = ("rtbench.results/1", SCHEMA)
"""Versions this rtbench reads: the current one, and 1 (whose omitted counters are 0)."""


class LatencySummary(Struct, omit_defaults=True, kw_only=True):
    count: int = 0
    p50: float | None = None
    p90: float | None = None
    p99: float | None = None
    p999: float | None = None
    max: float | None = None
    mean: float | None = None
    hdr: str | None = None  # base64 compressed HDR histogram, microseconds
    # the generator's own delay that may be inside each percentile above (ms; docs/RESULTS.md)
    bound: dict[str, float] = {}

    @classmethod
    def of(cls, histogram: LatencyHistogram) -> LatencySummary:
        summary = histogram.summary()  # its keys are this struct's fields: count, p50, ..., mean
        return cls(**summary, hdr=histogram.encode() if histogram.count else None)  # type: ignore[arg-type]

    def histogram(self) -> LatencyHistogram | None:
        return LatencyHistogram.decode(self.hdr) if self.hdr else None


class Totals(Struct, kw_only=True):
    """Counters of the whole run. ``expected_deliveries == delivered + lost`` always holds.

    Every field is written, zeros included: a CI job's ``jq .totals.lost`` reads ``0``,
    never ``null``, and no consumer has to know an omission rule."""

    connections_attempted: int = 0
    connections_opened: int = 0
    connections_failed: int = 0
    peak_connections: int = 0
    failures_by_cause: dict[str, int] = {}
    closes_by_code: dict[str, int] = {}
    sent: int = 0
    acked: int = 0
    expected_deliveries: int = 0
    delivered: int = 0  # unique deliveries (duplicates not counted here)
    lost: int = 0
    duplicated: int = 0  # arrived again on the wire, before any client-side dedupe
    duplicated_after_dedupe: int = 0  # ... and past the resuming client's seq dedupe
    out_of_order: int = 0
    errors_by_code: dict[str, int] = {}
    reconnects: int = 0
    resent: int = 0  # unacked sends written again after a reconnect (same idempotency key)
    replay_duplicates: int = 0  # replayed items a resuming client already had, dropped by it
    bytes_sent: int = 0
    bytes_received: int = 0
    # Added by the native engine (docs/RESULTS.md); readers that do not know them ignore them.
    connections_ready: int = 0  # up and joined when sending started
    connections_held: int = 0  # still open when sending (or holding) ended
    connections_answering: int | None = None  # connect: answered the last heartbeat probe
    rejected: int = 0  # sends refused with an error frame: not expected anywhere
    unacked: int = 0  # sends with neither ack nor error by the end of the drain
    send_skipped: int = 0  # scheduled sends not made because that connection had closed
    typing_sent: int = 0
    receipts_sent: int = 0
    events_by_type: dict[str, int] = {}  # other frames received, by kind (typing, receipt...)
    drained: bool | None = None  # every expected delivery arrived before the drain timeout


class SecondSample(Struct, omit_defaults=True, kw_only=True):
    """One second of the run (``t`` seconds from the start of the run)."""

    t: float
    connections: int = 0
    sent: int = 0
    acked: int = 0
    delivered: int = 0
    errors: int = 0
    reconnects: int = 0
    delivery_p50: float | None = None
    delivery_p99: float | None = None
    delivery_max: float | None = None
    generator_cpu: float | None = None  # percent of one core, summed over generator processes
    loop_lag_ms: float | None = None  # worst event-loop lag seen in the second
    # percent busy of the CPUs the generator may run on, with all their work (the server's
    # too when it shares them); the busiest process's set
    generator_cpus_busy: float | None = None


class ProbeSample(Struct, omit_defaults=True, kw_only=True):
    """One uptime probe of a check (the monitor's probe: connect, send, receive)."""

    t: float  # seconds from the start of the run, like ``series``
    ok: bool
    latency_ms: float | None = None
    error: str | None = None
    own_ms: float | None = None  # the prober's own delay inside it (docs/RESULTS.md)
    counted: bool = True  # False: a failure the prober's own stop explains, not an interval


class Phase(Struct, kw_only=True):
    """A span of the run's timeline, seconds from its start: ``ramp``, ``load``,
    ``drain``, or a fault (``restart``, ``cut``, ...) as it really happened."""

    name: str
    start: float
    end: float


class Window(Struct, omit_defaults=True, kw_only=True):
    """A longer window (soak runs report per-minute windows)."""

    start: float
    end: float
    sent: int = 0
    delivered: int = 0
    lost: int = 0
    delivery: LatencySummary = msgspec.field(default_factory=LatencySummary)


class GeneratorHealth(Struct, omit_defaults=True, kw_only=True):
    """How the load generator itself fared: a saturated generator makes verdicts untrustworthy."""

    processes: int = 1
    cpu_percent_mean: float | None = None  # per process, percent of one core
    cpu_percent_max: float | None = None
    loop_lag_ms_p99: float | None = None
    loop_lag_ms_max: float | None = None
    rss_bytes_max: int | None = None
    # The thresholds the run judged saturation by, so reports can mark them.
    cpu_saturation_percent: float | None = None
    loop_lag_saturation_ms: float | None = None
    saturated: bool = False
    notes: list[str] = []


class Environment(Struct, omit_defaults=True, kw_only=True):
    hostname: str
    platform: str
    python: str
    cpu_count: int
    packages: dict[str, str]
    clock: str = "same machine: send and receive times from one monotonic clock"

    @classmethod
    def current(cls, extra_packages: tuple[str, ...] = ()) -> Environment:
        names = (
            "rtbench",
            "picows",
            "websockets",
            "uvloop",
            "msgspec",
            "hdrhistogram",
            "locust",
            *extra_packages,
        )
        packages = {}
        for name in names:
            try:
                packages[name] = metadata.version(name)
            except metadata.PackageNotFoundError:
                continue
        return cls(
            hostname=socket.gethostname(),
            platform=platform.platform(),
            python=sys.version.split()[0],
            cpu_count=os.cpu_count() or 1,
            packages=packages,
        )


class RunInfo(Struct, omit_defaults=True, kw_only=True):
    id: str
    scenario: str
    target: str
    protocol: str
    started_at: str  # ISO 8601, UTC
    ended_at: str
    duration_s: float
    engine: str = "native"  # or "locust"
    mode: str = "run"  # "check": ``rtbench check``, all four targets on one timeline
    config: dict[str, Any] = {}  # the resolved scenario parameters
    slo: dict[str, Any] = {}  # the SLO the verdicts were judged against
    faults: list[dict[str, Any]] = []


class Results(Struct, omit_defaults=True, kw_only=True):
    schema: str = SCHEMA
    tool: dict[str, str] = msgspec.field(
        default_factory=lambda: {"name": "rtbench", "version": __version__}
    )
    run: RunInfo
    environment: Environment
    generator: GeneratorHealth = msgspec.field(default_factory=GeneratorHealth)
    totals: Totals = msgspec.field(default_factory=Totals)
    latency: dict[str, LatencySummary] = {}  # delivery, ack, handshake, rtt, recovery, reconnect
    series: list[SecondSample] = []
    windows: list[Window] = []
    probes: list[ProbeSample] = []  # check: the uptime probes, in order
    phases: list[Phase] = []  # check: ramp, load, fault(s), drain on the run's time axis
    server: dict[str, Any] = {}  # what the target said of itself (/healthz, /metrics), if anything
    verdicts: list[Verdict] = []
    exit_code: int = 0


class ResultsFileError(ValueError):
    """A results file cannot be read or is not an rtbench results file."""


_encoder = msgspec.json.Encoder()


def write_results(results: Results, path: str | Path) -> Path:
    """Write results.json atomically (a crash never leaves half a file)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    # omit_defaults would drop ``schema`` (it is a default), yet readers need it first.
    data = {"schema": results.schema, **msgspec.to_builtins(results)}
    tmp.write_bytes(msgspec.json.format(_encoder.encode(data), indent=2))
    os.replace(tmp, path)
    return path


def read_results(path: str | Path) -> Results:
    path = Path(path)
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise ResultsFileError(f"cannot read results file {path}: {exc.strerror or exc}") from None
    try:
        head = msgspec.json.decode(raw)
    except msgspec.DecodeError as exc:
        raise ResultsFileError(f"{path} is not JSON: {exc}") from None
    schema = head.get("schema") if isinstance(head, dict) else None
    if not isinstance(schema, str) or not schema.startswith("rtbench.results/"):
        raise ResultsFileError(f"{path} is not an rtbench results file (no rtbench schema field)")
    if schema not in READABLE:
        known = " and ".join(READABLE)
        raise ResultsFileError(f"{path} has schema {schema}; this rtbench reads {known}")
    try:
        return msgspec.json.decode(raw, type=Results)
    except msgspec.ValidationError as exc:
        raise ResultsFileError(f"{path} does not match {SCHEMA}: {exc}") from None
