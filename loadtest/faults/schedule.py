"""The fault schedule: ``--fault KIND[:ARG]@TIME``, parsed and checked before anything starts.

==================  ===============================================================
``restart@10s``     stop the server rtbench started (``--server-cmd``) with SIGTERM
                    (graceful: it drains and closes clients with 1012) and start it again
``restart:kill@10s`` the same with SIGKILL: a crash, nothing drained
``cut@10s``         the fault proxy resets every connection (TCP RST, no close frame)
``cut:30%@10s``     ... a share of them (``0.3`` means the same)
``blackhole:3s@10s`` the proxy passes no bytes for 3 s and closes nothing: only heartbeats
                    can tell a connection is dead
``kill-worker@10s`` SIGKILL one worker process of a multi-worker server (``kill-worker:2``:
                    two of them); its supervisor is expected to replace it
``drain:1000/100ms@10s`` the server asks its clients to reconnect (close 1012), 1,000 at a
                    time, a batch every 100 ms, and keeps running (the reference
                    server's ``/admin/drain``; Phoenix's socket drainer on shutdown:
                    ``batch_size`` / ``batch_interval``); ``drain@10s``: Phoenix's
                    defaults, 10,000 every 2 s
==================  ===============================================================

TIME counts from the start of the load (the first scheduled send), in ``s``, ``ms`` or
``m``; a bare number is seconds. A bad spec is one line naming it (exit code 2).
"""

from __future__ import annotations

import itertools
import re
from enum import StrEnum

from msgspec import Struct


class FaultError(ValueError):
    """A fault spec or combination that cannot run; one line says what to fix."""


class FaultRunError(RuntimeError):
    """What a fault run needs could not be set up (the server, the proxy); one line."""


class FaultKind(StrEnum):
    RESTART = "restart"
    CUT = "cut"
    BLACKHOLE = "blackhole"
    KILL_WORKER = "kill-worker"
    DRAIN = "drain"


NEEDS_SERVER = frozenset({FaultKind.RESTART, FaultKind.KILL_WORKER})
NEEDS_PROXY = frozenset({FaultKind.CUT, FaultKind.BLACKHOLE})
DEFAULT_BLACKHOLE_S = 3.0
DEFAULT_DRAIN = (10_000, 2.0)  # Phoenix's drainer: batch_size 10,000, batch_interval 2 s

_SPEC = re.compile(r"^(?P<kind>[a-z-]+)(?::(?P<arg>[^@]+))?@(?P<at>.+)$")
_DURATION = re.compile(r"^(?P<value>\d+(?:\.\d+)?)(?P<unit>ms|s|m)?$")
_UNIT_S = {"ms": 0.001, "s": 1.0, "m": 60.0, None: 1.0}


class Fault(Struct, frozen=True, kw_only=True, omit_defaults=True):
    """One planned fault."""

    kind: FaultKind
    at_s: float  # seconds after the start of the load
    spec: str  # as the user wrote it
    signal: str = ""  # restart: "term" or "kill"
    share: float = 1.0  # cut: share of connections reset
    duration_s: float = 0.0  # blackhole: how long no byte passes
    count: int = 1  # kill-worker: workers killed; drain: clients per batch
    interval_s: float = 0.0  # drain: seconds between batches

    @property
    def end_s(self) -> float:
        """When the fault's own disturbance ends (a blackhole lasts; the others are instant)."""
        return self.at_s + self.duration_s


def parse_duration(text: str, what: str) -> float:
    """'10s' / '500ms' / '1m' / '2.5' (seconds) -> seconds."""
    match = _DURATION.match(text.strip())
    if not match:
        raise FaultError(f"{what} {text!r} must look like 10s, 500ms, 1m or 2.5")
    return float(match["value"]) * _UNIT_S[match["unit"]]


def _share(text: str, spec: str) -> float:
    text = text.strip()
    try:
        value = float(text[:-1]) / 100.0 if text.endswith("%") else float(text)
    except ValueError:
        raise FaultError(f"fault {spec!r}: share {text!r} must be like 30% or 0.3") from None
    if not 0.0 < value <= 1.0:
        raise FaultError(f"fault {spec!r}: share must be above 0 and at most 100%")
    return value


def _drain(text: str, spec: str) -> tuple[int, float]:
    """'1000/100ms' -> (1000 clients per batch, 0.1 s between batches)."""
    batch, sep, interval = text.partition("/")
    batch = batch.strip().replace("_", "")
    if not sep or not batch.isdigit() or int(batch) < 1:
        raise FaultError(
            f"fault {spec!r}: drain takes BATCH/INTERVAL, clients per batch and the time "
            "between batches, e.g. drain:1000/100ms@8s"
        )
    seconds = parse_duration(interval, f"fault {spec!r}: interval")
    if seconds > 60:
        raise FaultError(f"fault {spec!r}: batches at most 60 s apart")
    return int(batch), seconds


def parse_fault(spec: str) -> Fault:
    """One ``KIND[:ARG]@TIME`` spec."""
    match = _SPEC.match(spec.strip())
    if not match:
        raise FaultError(
            f"fault {spec!r} must look like KIND[:ARG]@TIME, e.g. restart:kill@10s, cut:30%@5s"
        )
    try:
        kind = FaultKind(match["kind"])
    except ValueError:
        kinds = ", ".join(k.value for k in FaultKind)
        raise FaultError(f"fault {spec!r}: unknown kind {match['kind']!r} ({kinds})") from None
    at_s = parse_duration(match["at"], f"fault {spec!r}: time")
    arg = match["arg"]
    if kind is FaultKind.RESTART:
        how = arg or "term"
        if how not in ("term", "kill"):
            raise FaultError(f"fault {spec!r}: restart takes :term (SIGTERM) or :kill (SIGKILL)")
        return Fault(kind=kind, at_s=at_s, spec=spec, signal=how)
    if kind is FaultKind.CUT:
        return Fault(kind=kind, at_s=at_s, spec=spec, share=_share(arg, spec) if arg else 1.0)
    if kind is FaultKind.BLACKHOLE:
        seconds = parse_duration(arg, f"fault {spec!r}: duration") if arg else DEFAULT_BLACKHOLE_S
        if seconds <= 0:
            raise FaultError(f"fault {spec!r}: a blackhole needs a duration above 0")
        return Fault(kind=kind, at_s=at_s, spec=spec, duration_s=seconds)
    if kind is FaultKind.DRAIN:
        batch, interval = _drain(arg, spec) if arg else DEFAULT_DRAIN
        return Fault(kind=kind, at_s=at_s, spec=spec, count=batch, interval_s=interval)
    count = 1
    if arg:
        if not arg.isdigit() or int(arg) < 1:
            raise FaultError(f"fault {spec!r}: kill-worker takes a worker count, e.g. :2")
        count = int(arg)
    return Fault(kind=kind, at_s=at_s, spec=spec, count=count)


def parse_faults(
    specs: list[str], *, duration_s: float | None, server_cmd: str | None
) -> list[Fault]:
    """Every spec (comma-separated lists allowed), in time order, checked against the run."""
    faults = [parse_fault(part) for spec in specs for part in spec.split(",") if part.strip()]
    faults.sort(key=lambda f: f.at_s)
    for fault in faults:
        if fault.kind in NEEDS_SERVER and not server_cmd:
            raise FaultError(
                f"fault {fault.spec!r} needs --server-cmd: rtbench must start the server "
                "itself to restart it or kill its workers"
            )
        if duration_s is not None and fault.end_s >= duration_s:
            raise FaultError(
                f"fault {fault.spec!r} ends at {fault.end_s:g} s, past the {duration_s:g} s "
                "of load: make --duration longer so recovery can be seen"
            )
    for before, after in itertools.pairwise(faults):
        if before.kind is FaultKind.BLACKHOLE and after.at_s < before.end_s:
            raise FaultError(f"fault {after.spec!r} starts inside blackhole {before.spec!r}")
    return faults
