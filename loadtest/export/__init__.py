"""Live run metrics for Prometheus and OpenTelemetry: one exporter fed by any driver.

A driver (the native coordinator, the Locust master, ``rtbench check``) opens the
exporters once, hands them the aggregate it already merges every second, and closes
them at the end with the run's exact final figures::

    with open_exporters(settings, labels, slo) as exporters:
        ...  exporters.update(aggregate)            # once a second, on the driver's loop
        exporters.update(final_aggregate, final=True)
    warnings = exporters.warnings                  # dropped updates, in words

``update`` and ``call`` cost the caller a hand-off to the export thread, which builds
the snapshot (bucket counts from the HDR histograms) and gives it to the sinks: the
HTTP endpoint renders on its own request threads, the remote-write and OTLP pushes run
in their own threads with bounded queues. Every export thread runs at nice 19
(``sink.lower_priority``), so on the generator's core it yields to the load.
"""

from __future__ import annotations

import secrets
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from types import TracebackType
from typing import Protocol
from urllib.parse import urlparse

from loadtest.export.model import LiveAggregate, RunLabels, RunMetrics, Snapshot
from loadtest.export.sink import lower_priority
from rtbench.slo import SLO

__all__ = [
    "ExportError",
    "ExportSettings",
    "Exporters",
    "LiveAggregate",
    "RunLabels",
    "new_run_id",
    "open_exporters",
    "parse_listen",
]

DEFAULT_GRACE_S = 15.0  # one default Prometheus scrape interval
PENDING_LIMIT = 600  # export jobs waiting (ten minutes of ticks); past it they are dropped
CLOSE_BUDGET_S = 10.0  # pushes: time to send what is queued at the end


class ExportError(ValueError):
    """A bad exporter setting (the CLI's usage error, exit 2)."""


@dataclass(frozen=True)
class ExportSettings:
    """What the three command-line options ask for; all None: export nothing."""

    metrics_listen: str | None = None  # HOST:PORT, :PORT or PORT (host 127.0.0.1)
    remote_write: str | None = None  # http(s)://.../api/v1/write
    otlp: str | None = None  # http(s)://host:4318[/v1/metrics]
    native_histograms: bool = False  # remote write: native histograms beside the classic
    grace_s: float = DEFAULT_GRACE_S

    @property
    def enabled(self) -> bool:
        return bool(self.metrics_listen or self.remote_write or self.otlp)

    def checked(self) -> ExportSettings:
        """Raise ExportError on a malformed address or URL (before any load starts)."""
        if self.metrics_listen is not None:
            parse_listen(self.metrics_listen)
        if self.remote_write is not None:
            _http_url("--remote-write", self.remote_write)
        if self.otlp is not None:
            _http_url("--otlp", self.otlp)
        return self


def new_run_id() -> str:
    """A run's id, known before it starts (series labels), in results.json's form."""
    return time.strftime("%Y%m%d-%H%M%S", time.gmtime()) + "-" + secrets.token_hex(3)


def parse_listen(text: str) -> tuple[str, int]:
    """HOST:PORT, [V6]:PORT, :PORT or PORT -> (host, port); the host defaults to loopback."""
    host, sep, port_text = text.rpartition(":")
    if not sep:
        host, port_text = "", text
    host = host.strip("[]") or "127.0.0.1"
    try:
        port = int(port_text)
    except ValueError:
        raise ExportError(
            f"--metrics-listen {text!r}: give HOST:PORT, e.g. 127.0.0.1:9464"
        ) from None
    if not 0 <= port <= 65535:
        raise ExportError(f"--metrics-listen {text!r}: port must be 0..65535")
    return host, port


def _http_url(option: str, url: str) -> str:
    parts = urlparse(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ExportError(f"{option} {url!r}: give an http:// or https:// URL")
    try:
        parts.port  # noqa: B018  # raises on a bad port
    except ValueError:
        raise ExportError(f"{option} {url!r}: bad port") from None
    return url


def otlp_metrics_url(url: str) -> str:
    """The OTLP/HTTP metrics URL: a bare collector address gets the standard path."""
    parts = urlparse(url)
    if parts.path in ("", "/"):
        return parts._replace(path="/v1/metrics").geturl()
    return url


class _Sink(Protocol):
    def offer(self, snapshot: Snapshot) -> None: ...

    def close(self, timeout_s: float) -> None: ...

    def summary(self) -> str | None: ...


class Exporters:
    """The sinks a run asked for; see the module doc. Use ``open_exporters`` to make one."""

    def __init__(self, metrics: RunMetrics, sinks: list[_Sink], metrics_url: str | None) -> None:
        self.metrics = metrics
        self.sinks = sinks
        self.metrics_url = metrics_url  # where --metrics-listen serves (the real port)
        self.warnings: list[str] = []
        self._closed = False
        self._jobs: deque[tuple[Callable[..., None], tuple]] = deque()
        self._wake = threading.Condition()
        self._busy = False
        self._dropped = 0
        self._thread: threading.Thread | None = None
        if sinks:
            self._thread = threading.Thread(target=self._run, name="rtbench-export", daemon=True)
            self._thread.start()

    @property
    def enabled(self) -> bool:
        return bool(self.sinks)

    def call(self, job: Callable[..., None], *args: object) -> None:
        """Run ``job(*args)`` on the export thread, in order (a driver's feed uses it)."""
        if self._thread is None or self._closed:
            return
        with self._wake:
            if len(self._jobs) >= PENDING_LIMIT:
                self._jobs.popleft()
                self._dropped += 1
            self._jobs.append((job, args))
            self._wake.notify_all()

    def update(self, aggregate: LiveAggregate, *, final: bool = False) -> None:
        """Export ``aggregate`` (the run's figures now; ``final``: its exact end)."""
        self.call(self.publish, aggregate, final)

    def publish(self, aggregate: LiveAggregate, final: bool = False) -> None:
        """On the export thread: the snapshot, to every sink."""
        snapshot = self.metrics.snapshot(aggregate, final=final)
        for sink in self.sinks:
            sink.offer(snapshot)

    def flush(self, timeout_s: float = 10.0) -> bool:
        """Wait until every job handed over so far has run; False on timeout."""
        deadline = time.monotonic() + timeout_s
        with self._wake:
            while self._jobs or self._busy:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self._wake.wait(remaining)
        return True

    def _run(self) -> None:
        lower_priority()
        while True:
            with self._wake:
                while not self._jobs and not self._closed:
                    self._wake.wait()
                if not self._jobs:
                    return
                job, args = self._jobs.popleft()
                self._busy = True
            try:
                job(*args)
            except Exception as exc:  # an export bug must not end the run; say it once
                if not self.warnings:
                    self.warnings.append(f"live export failed: {exc!r}")
            finally:
                with self._wake:
                    self._busy = False
                    self._wake.notify_all()

    def close(self) -> None:
        """Run what is queued (the final snapshot last), then close every sink."""
        if self._closed:
            return
        self.flush(CLOSE_BUDGET_S)
        with self._wake:
            self._closed = True
            self._wake.notify_all()
        if self._thread is not None:
            self._thread.join(CLOSE_BUDGET_S)
        if self._dropped:
            self.warnings.append(f"live export: {self._dropped} updates dropped (fell behind)")
        for sink in self.sinks:
            sink.close(CLOSE_BUDGET_S)
            line = sink.summary()
            if line:
                self.warnings.append(line)

    def __enter__(self) -> Exporters:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def open_exporters(settings: ExportSettings, labels: RunLabels, slo: SLO) -> Exporters:
    """Start what ``settings`` asks for; ExportError when an address cannot be used."""
    settings.checked()
    sinks: list[_Sink] = []
    metrics_url = None
    try:
        if settings.metrics_listen is not None:
            from loadtest.export.promhttp import MetricsEndpoint

            host, port = parse_listen(settings.metrics_listen)
            try:
                endpoint = MetricsEndpoint(host, port, grace_s=settings.grace_s)
            except OSError as exc:
                raise ExportError(
                    f"--metrics-listen {settings.metrics_listen}: {exc.strerror or exc}"
                ) from None
            sinks.append(endpoint)
            metrics_url = endpoint.url
        if settings.remote_write is not None:
            from loadtest.export.remote_write import RemoteWriteSink

            sinks.append(RemoteWriteSink(settings.remote_write, native=settings.native_histograms))
        if settings.otlp is not None:
            from loadtest.export.otlp import OtlpSink

            sinks.append(OtlpSink(otlp_metrics_url(settings.otlp)))
    except BaseException:
        for sink in sinks:
            sink.close(0)
        raise
    return Exporters(RunMetrics(labels, slo), sinks, metrics_url)
