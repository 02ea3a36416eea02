"""One probe kind on a clock: every ``interval``, one probe bounded by ``limit_s``.

This is the monitor's definition of a probe interval, shared by ``rtbench monitor``
(which stores every result and opens incidents) and ``rtbench check`` (which probes the
target through the load and judges uptime over the run): both call ``probe_every`` with
the same ``TargetProbes`` method, so an interval means the same thing in both.

Probes are scheduled by the clock from the first one; a probe that overran its interval
makes the loop skip the ticks that are gone rather than bunch probes up (a slow target
is then probed less often, never more).

The monitor's own delay is never charged to the target. An ``OwnDelay`` (the delay
meter of ``loadtest.delay``, the one the load generator runs) knows how long the
monitor's process was kept from running (its own work, another process on its core, a
pause, a SIGSTOP). So:

- a probe's timeout counts the monitor's running time only: a probe gets ``limit_s`` of
  it, however long the process was stopped meanwhile (an answer that waited in the
  socket while the monitor was stopped is an answer);
- each result carries ``own_ms``, the monitor's own delay during the probe (what its
  timeout was extended by), and ``latency_own_ms``, the part of it inside the figure it
  measured (``mark_span``), so the latency verdict is bounded by it as a load run's is
  by the generator's (``rtbench.slo.within_generator_delay``);
- a failure other than a timeout while the monitor was stopped for longer than the probe
  timeout (a server may close a client that silent) is recorded, not counted: neither a
  good nor a bad interval, and no step towards an incident.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable
from contextvars import ContextVar

from loadtest.delay import StallLog, meter
from monitor.store import ProbeResult
from monitor.transport import failure_text

Probe = Callable[[], Awaitable[tuple[float, float | None]]]
"""A probe: (latency ms, reading or None); raises on failure."""

_span: ContextVar[list[float] | None] = ContextVar("probe_span", default=None)


def mark_span(start_ns: int, end_ns: int) -> None:
    """A probe says which part of it its figure covers (``time.monotonic_ns``): the
    monitor's own delay is counted over that part (default: the whole probe)."""
    span = _span.get()
    if span is not None:
        span[:] = [start_ns / 1e9, end_ns / 1e9]


class OwnDelay:
    """The monitor's own delay: one delay meter per process (``run`` it as a task)."""

    def __init__(self) -> None:
        self.log = StallLog()

    async def run(self) -> None:
        await meter(lambda _late_ms: None, self.log)  # the log keeps what the monitor needs

    def own_s(self, start: float, end: float) -> float:
        return self.log.own_s(start, end)


async def within_own_time(
    waiter: asyncio.Future, start: float, limit_s: float, own: OwnDelay | None
) -> bool:
    """Wait for ``waiter`` until ``limit_s`` of the monitor's own running time since
    ``start`` (monotonic) have passed: the deadline moves by every stall of the monitor's
    meanwhile. True when it is done; it is left running otherwise."""
    while not waiter.done():
        own_s = own.own_s(start, time.monotonic()) if own is not None else 0.0
        remaining = start + limit_s + own_s - time.monotonic()
        if remaining <= 0:
            return False
        await asyncio.wait([waiter], timeout=remaining)
    return True


async def probe_once(
    target: str, kind: str, probe: Probe, limit_s: float, own: OwnDelay | None = None
) -> ProbeResult:
    """Run one probe within ``limit_s`` of the monitor's running time; every failure
    becomes a failed result, never raises."""
    started = time.time()
    start = time.monotonic()
    span: list[float] = []
    token = _span.set(span)
    try:
        task = asyncio.ensure_future(probe())  # the task sees this context's span
    finally:
        _span.reset(token)
    try:
        await within_own_time(task, start, limit_s, own)
    finally:
        timed_out = not task.done()
        if timed_out:
            task.cancel()
            with contextlib.suppress(BaseException):
                await task
    end = time.monotonic()
    own_total_ms = 1000.0 * own.own_s(start, end) if own is not None else 0.0
    own_ms = round(own_total_ms, 3) if own is not None else None
    if timed_out or task.cancelled():
        error = f"{kind}: no answer within {limit_s:g}s"
        return ProbeResult(
            target=target, kind=kind, ts=started, ok=False, error=error, own_ms=own_ms
        )
    exc = task.exception()
    if exc is not None:
        error = failure_text(exc, kind)
        counted = own_total_ms < 1000.0 * limit_s
        if not counted:
            error = (
                f"{error} (not counted: the monitor itself was kept from running "
                f"{own_total_ms / 1000:.2f} s of it, longer than the {limit_s:g}s timeout)"
            )
        return ProbeResult(
            target=target,
            kind=kind,
            ts=started,
            ok=False,
            error=error,
            own_ms=own_ms,
            counted=counted,
        )
    latency_ms, value = task.result()
    latency_own_ms = None
    if own is not None:  # the monitor's own delay inside the figure itself
        inside = own.own_s(span[0], span[1]) * 1000.0 if span else own_total_ms
        latency_own_ms = round(min(inside, latency_ms), 3)
    return ProbeResult(
        target=target,
        kind=kind,
        ts=started,
        ok=True,
        latency_ms=latency_ms,
        value=value,
        own_ms=own_ms,
        latency_own_ms=latency_own_ms,
    )


async def probe_every(
    target: str,
    kind: str,
    probe: Probe,
    interval: float,
    limit_s: float,
    record: Callable[[ProbeResult], Awaitable[None]],
    own: OwnDelay | None = None,
) -> None:
    """Probe on the clock until cancelled (each within ``limit_s`` of the monitor's
    running time, ``own`` its delay meter), handing every result to ``record``."""
    loop = asyncio.get_running_loop()
    next_at = loop.time()
    while True:
        await record(await probe_once(target, kind, probe, limit_s, own))
        next_at += interval
        now = loop.time()
        if next_at < now:  # overran: skip the ticks that are gone rather than bunch up
            next_at += ((now - next_at) // interval + 1) * interval
        await asyncio.sleep(next_at - now)
