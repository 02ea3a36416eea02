"""/metrics and /healthz for a whole machine's workers, answered by any one of them.

A scrape lands on whichever worker the kernel picks (SO_REUSEPORT), so every
worker must be able to speak for all. prometheus-client's multiprocess mode
writes an mmap'd file on every increment; the reference server keeps its
counters as plain integers precisely to avoid per-event costs, so it does the
same thing in bulk instead: each worker copies a snapshot of its counters,
histograms, gauges and health into its own slot of one shared-memory file
every ``PERIOD_S`` (msgpack, a few KB), and the worker answering a scrape sums
the other slots with its own live numbers. Values from other workers are at
most ``PERIOD_S`` old. A slot is written under a sequence lock (odd while
writing), so a reader never decodes a half-written snapshot.

Counters stay monotonic across a worker restart: the new worker starts from the
last snapshot its predecessor left in the slot, so Prometheus sees no reset. A
worker answering a scrape publishes its own snapshot first, so nothing a scrape
has shown is lost (increments since a worker's last publish that nobody scraped
are, at most ``PERIOD_S`` of them). The supervisor keeps a slot of its
own with each worker's pid, state and restarts, for the ``workers`` list.
"""

from __future__ import annotations

import asyncio
import mmap
import os
import struct
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import msgspec

from reference_server.metrics import HISTOGRAMS, Metrics, MetricsCollector

if TYPE_CHECKING:  # prometheus-client is imported at the first scrape (metrics.py)
    from prometheus_client.core import Metric

SLOT_BYTES = 32768
HEADER = struct.Struct("<QI")  # sequence (odd while being written), payload length
PERIOD_S = 0.5  # how often a worker publishes its snapshot
STALE_S = 3.0  # a worker whose snapshot is older than this is reported "stale"
READ_TRIES = 50

_NOT_COUNTERS = frozenset({"queue_high_water"})  # an int field that is a gauge (max'd)


def _counter_names() -> tuple[str, ...]:
    """Every integer field of ``Metrics`` but the gauges, read off the class itself.

    A hand-kept list went stale once (a counter added to ``Metrics`` was summed as 0
    machine-wide); deriving it means a new counter is summed over workers with no edit here.
    """
    fields = vars(Metrics())
    return tuple(n for n, v in fields.items() if type(v) is int and n not in _NOT_COUNTERS)


_COUNTERS = _counter_names()
_SUMMED_GAUGES = (
    "connections",
    "users_online",
    "rooms_loaded",
    "store_pending_writes",
    "rss_bytes",
)


class Snapshot(msgspec.Struct, gc=False):
    """One worker's numbers at one moment (what its slot holds)."""

    worker: int
    pid: int
    at: float  # time.time() of the snapshot
    started: float
    counters: dict[str, int]
    errors: dict[str, int]
    closes: dict[int, int]
    histograms: dict[str, tuple[list[int], float]]  # name -> (bucket counts, sum)
    gauges: dict[str, float]
    loop_lag: float
    loop_lag_max: float
    queue_high_water: int
    health: dict[str, Any]  # status, store and broker status, connections...


class WorkerState(msgspec.Struct, gc=False):
    index: int
    pid: int
    state: str  # starting, running, restarting, stopped
    restarts: int
    since: float


class SupervisorState(msgspec.Struct, gc=False):
    pid: int
    started: float
    workers: list[WorkerState]


_encode = msgspec.msgpack.Encoder().encode
_snapshot = msgspec.msgpack.Decoder(Snapshot).decode
_supervisor = msgspec.msgpack.Decoder(SupervisorState).decode


class SlotFile:
    """The shared-memory file: one slot per worker, then one for the supervisor."""

    def __init__(self, path: str | Path, workers: int, create: bool = False) -> None:
        self.path = Path(path)
        self.workers = workers
        size = SLOT_BYTES * (workers + 1)
        if create:
            with open(self.path, "wb") as handle:
                handle.truncate(size)
        fd = os.open(self.path, os.O_RDWR)
        try:
            self.mm = mmap.mmap(fd, size)
        finally:
            os.close(fd)

    @staticmethod
    def default_dir() -> Path:
        """tmpfs when there is one: snapshots never touch a disk."""
        shm = Path("/dev/shm")
        return shm if shm.is_dir() and os.access(shm, os.W_OK) else Path("/tmp")

    def write(self, slot: int, payload: bytes) -> None:
        if len(payload) > SLOT_BYTES - HEADER.size:
            raise ValueError(f"snapshot of {len(payload)} bytes does not fit a slot")
        base = slot * SLOT_BYTES
        seq, _ = HEADER.unpack_from(self.mm, base)
        HEADER.pack_into(self.mm, base, seq + 1, 0)  # odd: being written
        self.mm[base + HEADER.size : base + HEADER.size + len(payload)] = payload
        HEADER.pack_into(self.mm, base, seq + 2, len(payload))

    def read(self, slot: int) -> bytes | None:
        base = slot * SLOT_BYTES
        for _ in range(READ_TRIES):
            seq, length = HEADER.unpack_from(self.mm, base)
            if seq == 0:
                return None  # never written
            if seq % 2:
                continue  # a write is in progress
            data = self.mm[base + HEADER.size : base + HEADER.size + length]
            if HEADER.unpack_from(self.mm, base)[0] == seq:
                return data
        return None

    def snapshot(self, slot: int) -> Snapshot | None:
        data = self.read(slot)
        if not data:
            return None
        try:
            return _snapshot(data)
        except msgspec.ValidationError:
            return None

    def supervisor(self) -> SupervisorState | None:
        data = self.read(self.workers)
        return _supervisor(data) if data else None

    def write_supervisor(self, state: SupervisorState) -> None:
        self.write(self.workers, _encode(state))

    def close(self) -> None:
        self.mm.close()


# ---------------------------------------------------------------------- snapshots


def take(
    index: int,
    started: float,
    metrics: Metrics,
    gauges: dict[str, float],
    health: dict[str, Any],
    base: Snapshot | None = None,
) -> Snapshot:
    """This worker's numbers now, added to its predecessor's last ones (``base``)."""
    counters = {name: getattr(metrics, name) for name in _COUNTERS}
    errors = dict(metrics.errors)
    closes = dict(metrics.closes)
    histograms = {
        name: (list(getattr(metrics, name).counts), getattr(metrics, name).total)
        for name in HISTOGRAMS
    }
    if base is not None:
        counters = {k: v + base.counters.get(k, 0) for k, v in counters.items()}
        errors = dict(Counter(errors) + Counter(base.errors))
        closes = dict(Counter(closes) + Counter(base.closes))
        for name, (counts, total) in base.histograms.items():
            mine = histograms.get(name)
            if mine is not None and len(mine[0]) == len(counts):
                histograms[name] = (
                    [a + b for a, b in zip(mine[0], counts, strict=True)],
                    mine[1] + total,
                )
    return Snapshot(
        worker=index,
        pid=os.getpid(),
        at=time.time(),
        started=started,
        counters=counters,
        errors=errors,
        closes=closes,
        histograms=histograms,
        gauges=gauges,
        loop_lag=metrics.loop_lag,
        loop_lag_max=metrics.loop_lag_max,
        queue_high_water=metrics.queue_high_water,
        health=health,
    )


def merged_metrics(snapshots: list[Snapshot]) -> tuple[Metrics, dict[str, float]]:
    """One ``Metrics`` (and gauges) for the machine: counters summed, lags at their max."""
    total = Metrics()
    gauges: dict[str, float] = dict.fromkeys(_SUMMED_GAUGES, 0.0)
    for snap in snapshots:
        for name, value in snap.counters.items():
            setattr(total, name, getattr(total, name) + value)
        total.errors.update(snap.errors)
        total.closes.update(snap.closes)
        for name, (counts, summed) in snap.histograms.items():
            hist = getattr(total, name)
            if len(hist.counts) == len(counts):
                hist.counts = [a + b for a, b in zip(hist.counts, counts, strict=True)]
                hist.total += summed
        for name in _SUMMED_GAUGES:
            gauges[name] += snap.gauges.get(name, 0.0)
        total.loop_lag = max(total.loop_lag, snap.loop_lag)
        total.loop_lag_max = max(total.loop_lag_max, snap.loop_lag_max)
        total.queue_high_water = max(total.queue_high_water, snap.queue_high_water)
    return total, gauges


# ---------------------------------------------------------------------- one worker's view


class WorkerStats:
    """A worker's link to the slot file: publishes its snapshot, answers for all."""

    def __init__(
        self,
        slots: SlotFile,
        index: int,
        metrics: Metrics,
        gauges: Callable[[], dict[str, float]],
        health: Callable[[], dict[str, Any]],
    ) -> None:
        self.slots = slots
        self.index = index
        self.metrics = metrics
        self.gauges = gauges
        self.health = health
        self.started = time.time()
        self.base = slots.snapshot(index)  # a predecessor's last numbers, if any

    def now(self) -> Snapshot:
        return take(self.index, self.started, self.metrics, self.gauges(), self.health(), self.base)

    def publish(self) -> None:
        self.slots.write(self.index, _encode(self.now()))

    async def publish_forever(self) -> None:
        while True:
            self.publish()
            await asyncio.sleep(PERIOD_S)

    def everyone(self) -> list[tuple[int, Snapshot | None]]:
        """Every worker's latest snapshot; this worker's is taken now and published first.

        Publishing what a scrape is about to show means no number a scrape has shown can
        go back: were this worker killed next, its successor starts from the slot. (With
        only the periodic publish, a counter seen live could lose up to ``PERIOD_S`` of
        increments at a restart: the dead-worker test read 9 hellos after 16.)"""
        mine = self.now()
        self.slots.write(self.index, _encode(mine))  # on the loop, as publish_forever
        return [
            (i, mine if i == self.index else self.slots.snapshot(i))
            for i in range(self.slots.workers)
        ]

    def collector(self) -> ClusterCollector:
        return ClusterCollector(self)

    def workers(self) -> tuple[list[dict[str, Any]], dict[str, Any]]:
        """The ``workers`` list of /healthz, and the machine-wide totals."""
        supervisor = self.slots.supervisor()
        states = {w.index: w for w in supervisor.workers} if supervisor else {}
        now = time.time()
        listing: list[dict[str, Any]] = []
        fresh: list[Snapshot] = []
        for i, snap in self.everyone():
            state = states.get(i)
            entry: dict[str, Any] = {
                "worker": i,
                "pid": state.pid if state else (snap.pid if snap else None),
                "restarts": state.restarts if state else 0,
            }
            if snap is None or now - snap.at > STALE_S or (state and state.pid != snap.pid):
                entry["status"] = state.state if state and state.state != "running" else "stale"
            else:
                fresh.append(snap)
                health = snap.health
                entry.update(
                    status=health.get("status", "ok"),
                    connections=int(snap.gauges.get("connections", 0)),
                    rss_bytes=int(snap.gauges.get("rss_bytes", 0)),
                    loop_lag_ms=round(snap.loop_lag * 1000, 3),
                    uptime_s=round(now - snap.started, 3),
                    store=health.get("store_status"),
                    broker=health.get("broker_status"),
                )
            listing.append(entry)
        _, gauges = merged_metrics(fresh)
        totals = {
            "connections": int(gauges["connections"]),
            "rss_bytes": int(gauges["rss_bytes"]),
            "users": int(gauges["users_online"]),
            "rooms": int(gauges["rooms_loaded"]),
        }
        if supervisor is not None:
            totals["supervisor_pid"] = supervisor.pid
        return listing, totals


class ClusterCollector:
    """Prometheus families for the whole machine, plus a few per worker."""

    def __init__(self, stats: WorkerStats) -> None:
        self.stats = stats

    def collect(self) -> Iterator[Metric]:
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        everyone = self.stats.everyone()
        now = time.time()
        fresh = [s for _, s in everyone if s is not None and now - s.at <= STALE_S]
        total, gauges = merged_metrics(fresh)
        yield from MetricsCollector(total, lambda: gauges).collect()
        supervisor = self.stats.slots.supervisor()
        restarts = {w.index: w.restarts for w in supervisor.workers} if supervisor else {}
        p = "rtbench_server_worker_"
        up = GaugeMetricFamily(p + "up", "1 if the worker published recently.", labels=["worker"])
        conns = GaugeMetricFamily(p + "connections", "Open connections.", labels=["worker"])
        rss = GaugeMetricFamily(p + "rss_bytes", "Resident memory.", labels=["worker"])
        restarted = CounterMetricFamily(
            p + "restarts", "Times the supervisor restarted this worker.", labels=["worker"]
        )
        for i, snap in everyone:
            label = [str(i)]
            alive = snap is not None and now - snap.at <= STALE_S
            up.add_metric(label, 1.0 if alive else 0.0)
            if alive:
                assert snap is not None
                conns.add_metric(label, snap.gauges.get("connections", 0.0))
                rss.add_metric(label, snap.gauges.get("rss_bytes", 0.0))
            restarted.add_metric(label, restarts.get(i, 0))
        yield up
        yield conns
        yield rss
        yield restarted
