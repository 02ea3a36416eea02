"""The running monitor: probe tasks, the held connections, evaluation and the HTTP pages.

Ownership: ``Monitor`` creates every task (one per target per probe kind, one held
connection per target, one evaluator, one retention pruner) and cancels and awaits
all of them in ``stop()``; then it closes the store, whose writer thread finishes
the writes already queued. Probes are scheduled by the clock (every ``interval``
from the start, skipping ticks a slow probe overran), and each is bounded by the
probe timeout, which never exceeds the interval.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
from dataclasses import dataclass, field
from typing import Any

import msgspec

from loadtest.adapters import Adapter, AdapterError, Feature, make_adapter
from monitor.config import ConfigError, Settings, TargetConfig, default_health_url
from monitor.evaluate import Snapshot, evaluate, probe_kinds, uptime_kind
from monitor.held import HeldConnection
from monitor.httpserver import HttpServer, Response
from monitor.incidents import IncidentTracker
from monitor.metrics import CONTENT_TYPE, MonitorMetrics
from monitor.prober import OwnDelay, probe_every
from monitor.probes import TargetProbes
from monitor.status_page import render_status
from monitor.store import AsyncStore, CloseIncident, OpenIncident, ProbeResult, Recovery

log = logging.getLogger("rtbench.monitor")

PRUNE_EVERY = 3600.0
_json = msgspec.json.Encoder()


@dataclass
class TargetRuntime:
    config: TargetConfig
    name: str
    adapter: Adapter
    probes: TargetProbes
    health_url: str | None
    uptime_kind: str
    tracker: IncidentTracker | None = None
    held: HeldConnection | None = None
    kinds: list[str] = field(default_factory=list)


def build_adapter(target: TargetConfig) -> Adapter:
    """The loadtest adapter of a target; a protocol that cannot send and receive is refused."""
    try:
        adapter = make_adapter(target.protocol, target.protocol_options)
    except AdapterError as exc:
        raise ConfigError(f"target {target.resolved_name()}: {exc}") from None
    if not ({Feature.ROOMS, Feature.PING} & adapter.features):
        raise ConfigError(
            f"target {target.resolved_name()}: protocol {adapter.name!r} can neither send to a "
            "room nor echo, so no probe can check delivery"
        )
    return adapter


class Monitor:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.store = AsyncStore(settings.db)
        self.targets: list[TargetRuntime] = []
        for config in settings.targets:
            adapter = build_adapter(config)
            health_url = default_health_url(config)
            runtime = TargetRuntime(
                config=config,
                name=config.resolved_name(),
                adapter=adapter,
                probes=TargetProbes(config, adapter, health_url),
                health_url=health_url,
                uptime_kind=uptime_kind(config),
            )
            runtime.kinds = probe_kinds(config)
            self.targets.append(runtime)
        self.snapshot: Snapshot | None = None
        self.metrics = MonitorMetrics(
            settings.slo, {t.name: t.uptime_kind for t in self.targets}, lambda: self.snapshot
        )
        self.http = HttpServer(
            {
                "/": self._status_page,
                "/healthz": self._healthz,
                "/metrics": self._metrics,
            },
            tokens={"/metrics": settings.metrics_token} if settings.metrics_token else None,
        )
        self.address: tuple[str, int] | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._dirty = asyncio.Event()
        self.own = OwnDelay()  # the monitor's own delay, never charged to a target

    # -- lifecycle -------------------------------------------------------------

    async def start(self) -> tuple[str, int]:
        """Open the store, restore incident state, start probing and serving."""
        await self.store.open()
        for t in self.targets:
            open_incident, streak = await self.store.read(
                functools.partial(self._incident_state, t)
            )
            t.tracker = IncidentTracker(self.settings.failures_to_open, open_incident, streak)
        await self._evaluate()
        self.address = await self.http.start(self.settings.listen_host, self.settings.listen_port)
        spawn = asyncio.get_running_loop().create_task
        self._tasks.append(spawn(self.own.run(), name="own-delay"))
        for t in self.targets:
            for kind in t.kinds:
                loop = probe_every(
                    t.name,
                    kind,
                    getattr(t.probes, kind),
                    self.settings.interval,
                    self.settings.timeout,
                    functools.partial(self._record, t),
                    self.own,
                )
                self._tasks.append(spawn(loop, name=f"{t.name}:{kind}"))
            if t.config.held_connection:
                t.held = HeldConnection(
                    t.probes,
                    t.name,
                    self.settings.interval,
                    self.settings.timeout,
                    self._recovered,
                    self.own,
                )
                self._tasks.append(spawn(t.held.run(), name=f"{t.name}:held"))
        self._tasks.append(spawn(self._evaluate_loop(), name="evaluate"))
        self._tasks.append(spawn(self._prune_loop(), name="prune"))
        return self.address

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks.clear()
        await self.http.stop()
        await asyncio.to_thread(self.store.close)

    async def run_until(self, stop: asyncio.Event) -> None:
        """Run until ``stop`` is set or a task dies (then raise its error)."""
        waiter = asyncio.ensure_future(stop.wait())
        try:
            done, _ = await asyncio.wait(
                [waiter, *self._tasks], return_when=asyncio.FIRST_COMPLETED
            )
            for task in done:
                if task is not waiter and not task.cancelled() and task.exception():
                    raise task.exception()  # type: ignore[misc]
        finally:
            waiter.cancel()

    # -- probing ---------------------------------------------------------------

    async def _record(self, t: TargetRuntime, result: ProbeResult) -> None:
        change = None
        if result.kind == t.uptime_kind and t.tracker is not None:
            change = t.tracker.observe(result)
        opened = await self.store.write(lambda s: s.record_probe(result, change))
        if isinstance(change, OpenIncident) and opened is not None and t.tracker is not None:
            t.tracker.opened(opened)
            log.warning(
                "%s: incident #%d opened (%d failed probes since %s): %s",
                t.name,
                opened,
                change.failures,
                time.strftime("%H:%M:%S", time.localtime(change.started_at)),
                change.cause,
            )
        elif isinstance(change, CloseIncident) and t.tracker is not None:
            log.warning("%s: incident #%d closed: target answers again", t.name, change.id)
        self.metrics.observe_probe(result)
        self._dirty.set()

    async def _recovered(self, recovery: Recovery) -> None:
        await self.store.write(lambda s: s.record_recovery(recovery))
        self.metrics.observe_recovery(recovery)
        log.info(
            "%s: held connection recovered in %.0f ms%s",
            recovery.target,
            recovery.ms,
            "" if recovery.complete else " (resume incomplete: messages missing)",
        )
        self._dirty.set()

    # -- evaluation --------------------------------------------------------------

    async def _evaluate(self) -> None:
        self.snapshot = await self.store.read(lambda s: evaluate(s, self.settings))

    async def _evaluate_loop(self) -> None:
        """Re-evaluate after new results (at most every half interval, 1 s) and each interval."""
        pause = min(1.0, self.settings.interval / 2)
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._dirty.wait(), timeout=self.settings.interval)
            self._dirty.clear()
            try:
                await self._evaluate()
            except Exception:  # keep serving the last snapshot; the next round may succeed
                log.exception("evaluating the probe history failed")
            await asyncio.sleep(pause)

    def _incident_state(self, t: TargetRuntime, s: Any) -> tuple[Any, Any]:
        """On the store's thread: ``t``'s open incident and its trailing failures."""
        return (
            s.open_incident(t.name, t.uptime_kind),
            s.trailing_failures(t.name, t.uptime_kind, self.settings.failures_to_open),
        )

    async def _prune_loop(self) -> None:
        while True:
            before = time.time() - self.settings.retention
            dropped = await self.store.write(functools.partial(_prune, before=before))
            if dropped:
                log.info("retention: dropped %d probe rows", dropped)
            await asyncio.sleep(PRUNE_EVERY)

    # -- pages -----------------------------------------------------------------

    def _healthz(self) -> Response:
        snap = self.snapshot
        assert snap is not None
        return Response(
            status=200 if snap.status == "pass" else 503,
            body=_json.encode(_healthz_doc(snap)),
            content_type="application/json",
        )

    def _metrics(self) -> Response:
        return Response(status=200, body=self.metrics.render(), content_type=CONTENT_TYPE)

    def _status_page(self) -> Response:
        assert self.snapshot is not None
        refresh = max(5, int(self.settings.interval))
        return Response(
            status=200,
            body=render_status(self.snapshot, refresh),
            content_type="text/html; charset=utf-8",
        )


def _healthz_doc(snap: Snapshot) -> dict:
    """The /healthz body: the snapshot without the uptime bars (they are for the page)."""
    doc = msgspec.to_builtins(snap)
    for target in doc["targets"]:
        target.pop("bars_hourly", None)
        target.pop("bars_daily", None)
    return doc


__all__ = ["Monitor"]


def _prune(s: Any, before: float) -> int:
    """On the store's thread: drop probe rows older than ``before``."""
    return int(s.prune(before))
