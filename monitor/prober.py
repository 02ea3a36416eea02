"""One probe kind on a clock: every ``interval``, one probe bounded by ``limit_s``.

This is the monitor's definition of a probe interval, shared by ``rtbench monitor``
(which stores every result and opens incidents) and ``rtbench check`` (which probes the
target through the load and judges uptime over the run): both call ``probe_every`` with
the same ``TargetProbes`` method, so an interval means the same thing in both.

Probes are scheduled by the clock from the first one; a probe that overran its interval
makes the loop skip the ticks that are gone rather than bunch probes up (a slow target
is then probed less often, never more).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

from monitor.store import ProbeResult
from monitor.transport import failure_text

Probe = Callable[[], Awaitable[tuple[float, float | None]]]
"""A probe: (latency ms, reading or None); raises on failure."""


async def probe_once(target: str, kind: str, probe: Probe, limit_s: float) -> ProbeResult:
    """Run one probe within ``limit_s``; every failure becomes a failed result, never raises."""
    started = time.time()
    try:
        async with asyncio.timeout(limit_s):
            latency_ms, value = await probe()
    except TimeoutError:
        error = f"{kind}: no answer within {limit_s:g}s"
        return ProbeResult(target=target, kind=kind, ts=started, ok=False, error=error)
    except Exception as exc:
        error = failure_text(exc, kind)
        return ProbeResult(target=target, kind=kind, ts=started, ok=False, error=error)
    return ProbeResult(
        target=target, kind=kind, ts=started, ok=True, latency_ms=latency_ms, value=value
    )


async def probe_every(
    target: str,
    kind: str,
    probe: Probe,
    interval: float,
    limit_s: float,
    record: Callable[[ProbeResult], Awaitable[None]],
) -> None:
    """Probe on the clock until cancelled (each within ``limit_s``), handing every result to
    ``record``."""
    loop = asyncio.get_running_loop()
    next_at = loop.time()
    while True:
        await record(await probe_once(target, kind, probe, limit_s))
        next_at += interval
        now = loop.time()
        if next_at < now:  # overran: skip the ticks that are gone rather than bunch up
            next_at += ((now - next_at) // interval + 1) * interval
        await asyncio.sleep(next_at - now)
