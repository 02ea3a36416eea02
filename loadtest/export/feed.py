"""From the reports a driver already receives to the exporters' aggregate.

Both drivers get the same per-second ``Tick`` from each of their processes (the
native coordinator from its workers, the Locust master from its nodes) and end with the
same merged ``Outcome``. ``LiveFeed`` is what they hand those to: it keeps each
process's latest tick, merges them once every process has reported a second, and gives
the exporters one ``LiveAggregate``; at the end ``finish`` exports the run's exact
merged figures, the ones results.json is written from.

Reconnect and recovery latency are measured here per loss, from lost to back (reconnect)
and to resumed with every missed message (recovery); results.json's recovery figures
also start a loss inside a blackhole at the blackhole's end, which a live export cannot
know ahead.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Hashable, Iterable
from typing import TYPE_CHECKING

from loadtest.client.reconnect import Recovery
from loadtest.export import Exporters
from loadtest.export.model import LiveAggregate
from loadtest.run.report import Tick
from rtbench.histogram import LatencyHistogram

if TYPE_CHECKING:
    from loadtest.run.outcome import Outcome


class LiveFeed:
    """Per-process ticks in, one aggregate a second out (see the module doc)."""

    def __init__(
        self,
        exporters: Exporters,
        *,
        target_connections: int,
        t0_ns: int,
        clock: Callable[[], int] = time.monotonic_ns,
    ) -> None:
        """``t0_ns``: the run's start on ``clock`` (the Locust nodes use the wall clock)."""
        self.exporters = exporters
        self.clock = clock
        self.target_connections = target_connections
        self.t0_ns = t0_ns
        self.latest: dict[Hashable, Tick] = {}
        self.delivery = LatencyHistogram()  # cumulative: every tick's second merged in
        self.reconnect = LatencyHistogram()
        self.recovery = LatencyHistogram()
        self.exported = 0  # the last second exported
        self.held = 0  # set by the driver once sending has ended
        self.finished = False

    def tick(self, key: Hashable, tick: Tick, phase: str, processes: int) -> None:
        """One process's tick; exports once all ``processes`` have reported a new second.

        Called on the driver's loop, it only hands the tick to the export thread, where
        the decoding and merging happen.
        """
        if not self.finished:
            self.exporters.call(self._tick, key, tick, phase, processes)

    def _tick(self, key: Hashable, tick: Tick, phase: str, processes: int) -> None:
        self.latest[key] = tick
        if tick.delivery_hdr:
            self.delivery.merge(LatencyHistogram.decode(tick.delivery_hdr))
        self._recoveries(tick.recoveries)
        if len(self.latest) < processes:
            return
        second = min(t.second for t in self.latest.values())
        if second > self.exported:
            self.exported = second
            self.exporters.publish(self._aggregate(phase))

    def _recoveries(self, records: Iterable[Recovery]) -> None:
        for record in records:
            if record.reconnected_ns:
                self.reconnect.record_ns(max(0, record.reconnected_ns - record.lost_ns))
            if record.resumed_ns:
                self.recovery.record_ns(max(0, record.resumed_ns - record.lost_ns))

    def _aggregate(self, phase: str) -> LiveAggregate:
        ticks = list(self.latest.values())
        counters: dict[str, int] = {}
        for t in ticks:
            for name, value in t.counters.items():
                counters[name] = counters.get(name, 0) + value
        histograms: dict[str, LatencyHistogram] = {"delivery": self.delivery}
        for t in ticks:
            for name, encoded in t.histograms.items():
                histograms.setdefault(name, LatencyHistogram()).merge(
                    LatencyHistogram.decode(encoded)
                )
        for name, hist in (("reconnect", self.reconnect), ("recovery", self.recovery)):
            if hist.count:
                histograms[name] = hist
        return LiveAggregate(
            phase=phase,
            elapsed_s=(self.clock() - self.t0_ns) / 1e9,
            counters=counters,
            connections_open=sum(t.open_now for t in ticks),
            connections_target=self.target_connections,
            histograms=histograms,
            cpu_percent=sum(t.cpu_percent for t in ticks),
            loop_lag_ms=max((t.loop_lag_ms for t in ticks), default=0.0),
            cpus_busy_percent=max((t.cpus_busy_percent or 0.0 for t in ticks), default=0.0),
            connections_held=self.held,
        )

    def finish(self, outcome: Outcome) -> None:
        """Export the run's merged figures as its final snapshot (after every tick)."""
        if self.finished:
            return
        self.finished = True
        self.exporters.call(self._finish, outcome)

    def _finish(self, outcome: Outcome) -> None:
        self.reconnect, self.recovery = LatencyHistogram(), LatencyHistogram()
        self._recoveries(outcome.recoveries)
        histograms = dict(outcome.histograms)
        for name, hist in (("reconnect", self.reconnect), ("recovery", self.recovery)):
            if hist.count:
                histograms[name] = hist
        last = outcome.seconds[-1] if outcome.seconds else None
        counters = outcome.counters
        self.exporters.publish(
            LiveAggregate(
                phase="done",
                elapsed_s=(self.clock() - self.t0_ns) / 1e9,
                counters=dict(counters),
                connections_open=0,
                connections_target=self.target_connections,
                histograms=histograms,
                cpu_percent=last.cpu if last else 0.0,
                loop_lag_ms=last.lag_ms if last else 0.0,
                cpus_busy_percent=(last.cpus_busy or 0.0) if last else 0.0,
                connections_held=outcome.held,
                lost=max(0, counters["expected"] - counters["delivered"]),
            ),
            final=True,
        )
