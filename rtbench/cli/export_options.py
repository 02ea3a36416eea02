"""The live-export options, declared once for ``rtbench run``, ``check`` and ``locust``.

A command adds the four parameters below to its signature, turns them into settings
with ``export_settings`` (a malformed address is a one-line usage error, exit 2, before
any load starts) and wraps its run in ``exporting``, which opens the exporters, says
where the metrics are served, and on exit waits for the final scrape or push and
prints what could not be delivered.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

import typer

from rtbench.cli import UserError

if TYPE_CHECKING:
    from loadtest.export import Exporters, ExportSettings, RunLabels
    from rtbench.slo import SLO

METRICS_LISTEN = typer.Option(
    None,
    "--metrics-listen",
    help=(
        "Serve the run's live metrics for Prometheus at HOST:PORT/metrics (host 127.0.0.1 "
        "when only :PORT is given), kept up after the end until the final figures are "
        "scraped (at most 15 s)."
    ),
)
REMOTE_WRITE = typer.Option(
    None,
    "--remote-write",
    help="Push the live metrics to this Prometheus remote-write URL (e.g. .../api/v1/write).",
)
OTLP = typer.Option(
    None,
    "--otlp",
    help="Push the live metrics to this OTLP/HTTP endpoint (e.g. http://127.0.0.1:4318).",
)
NATIVE_HISTOGRAMS = typer.Option(
    False,
    "--native-histograms",
    help="--remote-write: send native histograms too (the receiver must accept them).",
)


def export_settings(
    metrics_listen: str | None,
    remote_write: str | None,
    otlp: str | None,
    native_histograms: bool = False,
) -> ExportSettings:
    from loadtest.export import ExportError, ExportSettings

    try:
        return ExportSettings(
            metrics_listen=metrics_listen,
            remote_write=remote_write,
            otlp=otlp,
            native_histograms=native_histograms,
        ).checked()
    except ExportError as exc:
        raise UserError(str(exc)) from None


@contextmanager
def exporting(
    settings: ExportSettings,
    labels: RunLabels,
    slo: SLO,
    console=None,
) -> Iterator[Exporters]:
    """Open the exporters ``settings`` ask for (none: a no-op) around a run."""
    from loadtest.export import ExportError, open_exporters

    try:
        exporters = open_exporters(settings, labels, slo)
    except ExportError as exc:
        raise UserError(str(exc)) from None
    if exporters.metrics_url and console is not None:
        console.print(f"live metrics at {exporters.metrics_url}", highlight=False)
    try:
        yield exporters
    finally:
        exporters.close()
        for line in exporters.warnings:
            typer.echo(f"rtbench: warning: {line}", err=True)
