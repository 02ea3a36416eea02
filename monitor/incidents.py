"""Incidents: N consecutive failing intervals open one; the first passing interval closes it.

An incident starts at the start of its *first* failing probe (not the N-th, which
only confirms it) and ends at the start of the first passing one, so its duration is
the outage as the probes saw it, accurate to one probe interval. A single failure
below the threshold is a blip: it costs uptime but opens nothing.

The tracker is a plain state machine (no I/O); the caller stores each change in the
same transaction as the probe that caused it, and rebuilds the tracker from the
store after a restart, so an outage that spans a monitor restart stays one incident.
"""

from __future__ import annotations

from monitor.store import (
    CloseIncident,
    ExtendIncident,
    Incident,
    IncidentChange,
    OpenIncident,
    ProbeResult,
)


class IncidentTracker:
    """Consecutive-failure state of one target's uptime probe."""

    def __init__(
        self,
        failures_to_open: int,
        open_incident: Incident | None = None,
        trailing_failures: list[ProbeResult] | None = None,
    ) -> None:
        """``trailing_failures``: the failing probes since the last pass, newest first."""
        self.failures_to_open = failures_to_open
        self.open_id: int | None = open_incident.id if open_incident else None
        self.open_started_at: float | None = open_incident.started_at if open_incident else None
        streak = list(reversed(trailing_failures or []))
        self.streak = len(streak)
        self.streak_started_at: float | None = streak[0].ts if streak else None
        self.streak_cause: str | None = (streak[0].error or "probe failed") if streak else None
        if open_incident is not None:
            self.streak = max(self.streak, open_incident.failures)

    @property
    def is_open(self) -> bool:
        return self.open_id is not None

    def observe(self, result: ProbeResult) -> IncidentChange | None:
        """Feed one uptime-probe result; returns the change to store with it, if any."""
        if not result.counted:  # the monitor's own stop explains it: no interval at all
            return None
        if result.ok:
            self.streak = 0
            self.streak_started_at = None
            self.streak_cause = None
            if self.open_id is not None:
                change = CloseIncident(id=self.open_id, ended_at=result.ts)
                self.open_id = None
                self.open_started_at = None
                return change
            return None
        if self.streak == 0:
            self.streak_started_at = result.ts
            self.streak_cause = result.error or "probe failed"
        self.streak += 1
        if self.open_id is not None:
            return ExtendIncident(id=self.open_id, failures=self.streak)
        if self.streak >= self.failures_to_open:
            assert self.streak_started_at is not None
            self.open_started_at = self.streak_started_at
            return OpenIncident(
                started_at=self.streak_started_at,
                failures=self.streak,
                cause=self.streak_cause or "probe failed",
            )
        return None

    def opened(self, incident_id: int) -> None:
        """Record the id the store gave the incident an OpenIncident change created."""
        self.open_id = incident_id
