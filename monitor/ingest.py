"""``rtbench monitor --ingest results.json``: load-run evidence for connections and recovery.

A quiet production service never shows it can hold 10,000 connections, nor that 10,000
clients come back after a restart; a ``rtbench run connect`` or ``rtbench check`` result
does. Ingesting stores, under the monitor target whose host:port the run targeted, how
many connections the run held (a check: held through the whole run, never a peak) and
how many it aimed for, and a check's per-client recovery times, so the connections and
recovery verdicts can use them for one SLO window.
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from urllib.parse import urlsplit

from monitor.config import TargetConfig
from monitor.store import IngestedRun, ProbeStore
from rtbench.results import ResultsFileError, read_results


class IngestError(ValueError):
    """The results file cannot be ingested (one line)."""


def target_name_for(url: str, targets: list[TargetConfig]) -> str:
    """The configured target with the run's host:port, else the host:port itself."""
    netloc = urlsplit(url).netloc or urlsplit(f"ws://{url}").netloc
    for target in targets:
        if urlsplit(target.url).netloc == netloc:
            return target.resolved_name()
    return TargetConfig(url=url if "://" in url else f"ws://{url}").resolved_name()


def read_run(path: str | Path, targets: list[TargetConfig], name: str | None) -> IngestedRun:
    try:
        results = read_results(path)
    except ResultsFileError as exc:
        raise IngestError(str(exc)) from None
    run = results.run
    try:
        ended = datetime.fromisoformat(run.ended_at.replace("Z", "+00:00")).timestamp()
    except ValueError:
        raise IngestError(
            f"{path}: run.ended_at {run.ended_at!r} is not an ISO 8601 time"
        ) from None
    totals = results.totals
    recovery = results.latency.get("recovery") if run.mode == "check" else None
    if run.mode == "check":  # held from the go through the fault to the end
        held = totals.connections_held
    elif totals.connections_answering is not None:  # held and answering the last heartbeat
        held = totals.connections_answering
    else:
        held = totals.peak_connections
    return IngestedRun(
        run_id=run.id,
        target=name or target_name_for(run.target, targets),
        url=run.target,
        ended_at=ended,
        peak_connections=held,
        attempted=totals.connections_attempted,
        scenario="check" if run.mode == "check" else run.scenario,
        source=str(Path(path).resolve()),
        recovery_hdr=recovery.hdr if recovery is not None else None,
        recoveries=recovery.count if recovery is not None else 0,
        # per fault (and before any): the clients that never came back
        unrecovered=sum(int(f.get("unrecovered", 0)) for f in run.faults)
        if run.mode == "check"
        else 0,
    )


def ingest(
    store: ProbeStore, path: str | Path, targets: list[TargetConfig], name: str | None = None
) -> tuple[IngestedRun, bool]:
    """Store one results file; (the run, False when it had been ingested before)."""
    run = read_run(path, targets, name)
    return run, store.record_run(run)
