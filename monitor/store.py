"""Probe history on disk: SQLite in WAL mode, one commit per probe, per-minute rollups.

Why this shape:
- Every probe result is committed on its own (``synchronous=FULL``), so a crash of the
  monitor loses at most the probe in flight, and uptime survives restarts.
- Uptime over 30 days must stay cheap to compute every few seconds: 30 days of 5 s
  probes is ~500,000 rows per target and probe kind, but only 43,200 per-minute
  rollup rows (total, good, peak value), updated in the same transaction as the probe.
- SQLite calls block, so they never run on the event loop: ``AsyncStore`` owns one
  writer thread (writes keep their order) and one reader thread (an evaluation never
  delays a commit), each with its own connection; WAL lets them run side by side.
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

from msgspec import Struct

SCHEMA_VERSION = 4
MIGRATIONS: dict[int, tuple[str, ...]] = {
    # 1 -> 2: an ingested `rtbench check` also carries its clients' recoveries
    1: (
        "ALTER TABLE runs ADD COLUMN recovery_hdr TEXT",
        "ALTER TABLE runs ADD COLUMN recoveries INTEGER NOT NULL DEFAULT 0",
    ),
    # 2 -> 3: each probe carries the monitor's own delay, and whether it counted
    2: (
        "ALTER TABLE probes ADD COLUMN own_ms REAL",
        "ALTER TABLE probes ADD COLUMN latency_own_ms REAL",
        "ALTER TABLE probes ADD COLUMN counted INTEGER NOT NULL DEFAULT 1",
    ),
    # 3 -> 4: an ingested check's clients that never recovered (counted slowest)
    3: ("ALTER TABLE runs ADD COLUMN unrecovered INTEGER NOT NULL DEFAULT 0",),
}
"""Statements that bring a database of schema N to N + 1, applied in order on open."""
T = TypeVar("T")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS probes (
    id INTEGER PRIMARY KEY,
    target TEXT NOT NULL,
    kind TEXT NOT NULL,
    ts REAL NOT NULL,            -- wall-clock start of the probe, seconds since the epoch
    ok INTEGER NOT NULL,
    latency_ms REAL,             -- the probe's own figure (delivery, round trip, handshake)
    value REAL,                  -- a reading (the target's open connections)
    error TEXT,
    own_ms REAL,                 -- the monitor's own delay during the probe (monitor.prober)
    latency_own_ms REAL,         -- the part of it inside latency_ms
    counted INTEGER NOT NULL DEFAULT 1  -- 0: the monitor's own stop explains the failure
);
CREATE INDEX IF NOT EXISTS probes_by_target ON probes (target, kind, ts);
CREATE TABLE IF NOT EXISTS minutes (
    target TEXT NOT NULL,
    kind TEXT NOT NULL,
    minute INTEGER NOT NULL,     -- floor(ts / 60)
    total INTEGER NOT NULL,
    good INTEGER NOT NULL,
    peak REAL,                   -- largest reading in the minute
    PRIMARY KEY (target, kind, minute)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS incidents (
    id INTEGER PRIMARY KEY,
    target TEXT NOT NULL,
    kind TEXT NOT NULL,
    started_at REAL NOT NULL,    -- start of the first failing probe
    ended_at REAL,               -- start of the first passing probe, NULL while open
    failures INTEGER NOT NULL,
    cause TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS incidents_by_target ON incidents (target, started_at);
CREATE TABLE IF NOT EXISTS recoveries (
    id INTEGER PRIMARY KEY,
    target TEXT NOT NULL,
    lost_at REAL NOT NULL,       -- when the held connection was found lost
    recovered_at REAL NOT NULL,  -- back, re-subscribed, every missed message received
    ms REAL NOT NULL,
    complete INTEGER NOT NULL,   -- 0 when the resume could not replay the whole gap
    replayed INTEGER NOT NULL,
    reason TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS recoveries_by_target ON recoveries (target, recovered_at);
CREATE TABLE IF NOT EXISTS runs (
    run_id TEXT PRIMARY KEY,
    target TEXT NOT NULL,        -- monitor target name it was matched to
    url TEXT NOT NULL,
    ended_at REAL NOT NULL,
    peak_connections INTEGER NOT NULL,
    attempted INTEGER NOT NULL,
    scenario TEXT NOT NULL,
    source TEXT NOT NULL,        -- the results file it came from
    recovery_hdr TEXT,           -- a check's recovery times (HDR histogram, base64)
    recoveries INTEGER NOT NULL DEFAULT 0,
    unrecovered INTEGER NOT NULL DEFAULT 0  -- a check's lost connections that never came back
);
"""


class ProbeResult(Struct, kw_only=True):
    target: str
    kind: str
    ts: float
    ok: bool
    latency_ms: float | None = None
    value: float | None = None
    error: str | None = None
    own_ms: float | None = None  # the monitor's own delay during the probe (monitor.prober)
    latency_own_ms: float | None = None  # the part of it inside ``latency_ms``
    counted: bool = True  # False: not charged to the target (the monitor's own stop)


class Incident(Struct, kw_only=True):
    id: int
    target: str
    kind: str
    started_at: float
    ended_at: float | None
    failures: int
    cause: str
    duration_s: float | None = None  # ended_at - started_at once it has ended
    open: bool = False


class Recovery(Struct, kw_only=True):
    target: str
    lost_at: float
    recovered_at: float
    ms: float
    complete: bool
    replayed: int
    reason: str


class IngestedRun(Struct, kw_only=True):
    run_id: str
    target: str
    url: str
    ended_at: float
    peak_connections: int
    attempted: int
    scenario: str
    source: str
    recovery_hdr: str | None = None  # a check's per-client recovery times (HDR, base64)
    recoveries: int = 0  # connections lost and measured in that check
    unrecovered: int = 0  # connections lost in that check that never came back


class OpenIncident(Struct, kw_only=True):
    started_at: float
    failures: int
    cause: str


class ExtendIncident(Struct, kw_only=True):
    id: int
    failures: int


class CloseIncident(Struct, kw_only=True):
    id: int
    ended_at: float


IncidentChange = OpenIncident | ExtendIncident | CloseIncident


class WindowCount(Struct, kw_only=True):
    total: int
    good: int


class StoreError(RuntimeError):
    """The probe database cannot be opened or is not a monitor database."""


class ProbeStore:
    """Synchronous access to one monitor database; used from one thread only."""

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)
        try:
            if str(path) != ":memory:":
                self.path.parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(str(path), timeout=30.0, isolation_level=None)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=FULL")
            self._db.execute("PRAGMA busy_timeout=30000")
            with self._tx():
                for statement in _SCHEMA.split(";"):
                    if statement.strip():
                        self._db.execute(statement)
                row = self._db.execute("SELECT value FROM meta WHERE key='schema'").fetchone()
                if row is None:
                    self._db.execute(
                        "INSERT INTO meta (key, value) VALUES ('schema', ?)", (SCHEMA_VERSION,)
                    )
                else:
                    self._migrate(int(row[0]))
        except sqlite3.DatabaseError as exc:
            raise StoreError(f"cannot open monitor database {path}: {exc}") from None

    def _migrate(self, found: int) -> None:
        """Bring an older database up to ``SCHEMA_VERSION`` (inside the open's transaction)."""
        if found > SCHEMA_VERSION or any(v not in MIGRATIONS for v in range(found, SCHEMA_VERSION)):
            raise StoreError(
                f"{self.path} has monitor schema {found}; this rtbench reads {SCHEMA_VERSION}"
            )
        for version in range(found, SCHEMA_VERSION):
            for statement in MIGRATIONS[version]:
                self._db.execute(statement)
        self._db.execute("UPDATE meta SET value = ? WHERE key = 'schema'", (SCHEMA_VERSION,))

    def close(self) -> None:
        self._db.close()

    @contextlib.contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        self._db.execute("BEGIN IMMEDIATE")
        try:
            yield self._db
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")

    def snapshot(self, fn: Callable[[ProbeStore], T]) -> T:
        """``fn(self)`` inside one read transaction: every query it makes sees the same
        committed state. Without it each SELECT saw the latest commit, so a probe written
        between two of them tore the view (an incident closed by a good probe beside
        window counts from before that probe; seen once in tests/monitor/test_outage.py)."""
        self._db.execute("BEGIN")
        try:
            return fn(self)
        finally:
            if self._db.in_transaction:  # read-only: ending it writes nothing
                self._db.execute("COMMIT")

    # -- writes ---------------------------------------------------------------

    def record_probe(self, result: ProbeResult, change: IncidentChange | None = None) -> int | None:
        """Store one probe, its minute rollup and its incident change in one transaction.

        Returns the id of an incident this call opened.
        """
        opened: int | None = None
        with self._tx() as db:
            db.execute(
                "INSERT INTO probes (target, kind, ts, ok, latency_ms, value, error, own_ms,"
                " latency_own_ms, counted) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    result.target,
                    result.kind,
                    result.ts,
                    int(result.ok),
                    result.latency_ms,
                    result.value,
                    result.error,
                    result.own_ms,
                    result.latency_own_ms,
                    int(result.counted),
                ),
            )
            if not result.counted:  # not an interval of the target's: no rollup, no incident
                return None
            db.execute(
                "INSERT INTO minutes (target, kind, minute, total, good, peak)"
                " VALUES (?, ?, ?, 1, ?, ?)"
                " ON CONFLICT (target, kind, minute) DO UPDATE SET"
                " total = total + 1, good = good + excluded.good,"
                " peak = CASE WHEN peak IS NULL OR excluded.peak > peak"
                "             THEN COALESCE(excluded.peak, peak) ELSE peak END",
                (result.target, result.kind, int(result.ts // 60), int(result.ok), result.value),
            )
            if isinstance(change, OpenIncident):
                cursor = db.execute(
                    "INSERT INTO incidents (target, kind, started_at, failures, cause)"
                    " VALUES (?, ?, ?, ?, ?)",
                    (result.target, result.kind, change.started_at, change.failures, change.cause),
                )
                opened = cursor.lastrowid
            elif isinstance(change, ExtendIncident):
                db.execute(
                    "UPDATE incidents SET failures = ? WHERE id = ?", (change.failures, change.id)
                )
            elif isinstance(change, CloseIncident):
                db.execute(
                    "UPDATE incidents SET ended_at = ? WHERE id = ?", (change.ended_at, change.id)
                )
        return opened

    def record_recovery(self, recovery: Recovery) -> None:
        with self._tx() as db:
            db.execute(
                "INSERT INTO recoveries"
                " (target, lost_at, recovered_at, ms, complete, replayed, reason)"
                " VALUES (?, ?, ?, ?, ?, ?, ?)",
                (
                    recovery.target,
                    recovery.lost_at,
                    recovery.recovered_at,
                    recovery.ms,
                    int(recovery.complete),
                    recovery.replayed,
                    recovery.reason,
                ),
            )

    def record_run(self, run: IngestedRun) -> bool:
        """Store an ingested load run; False when that run id was already ingested."""
        with self._tx() as db:
            cursor = db.execute(
                "INSERT OR IGNORE INTO runs (run_id, target, url, ended_at, peak_connections,"
                " attempted, scenario, source, recovery_hdr, recoveries, unrecovered)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    run.run_id,
                    run.target,
                    run.url,
                    run.ended_at,
                    run.peak_connections,
                    run.attempted,
                    run.scenario,
                    run.source,
                    run.recovery_hdr,
                    run.recoveries,
                    run.unrecovered,
                ),
            )
            return cursor.rowcount == 1

    def prune(self, before: float) -> int:
        """Drop everything older than ``before`` (epoch seconds); returns probe rows dropped."""
        with self._tx() as db:
            dropped = db.execute("DELETE FROM probes WHERE ts < ?", (before,)).rowcount
            db.execute("DELETE FROM minutes WHERE minute < ?", (int(before // 60),))
            db.execute("DELETE FROM recoveries WHERE recovered_at < ?", (before,))
            db.execute(
                "DELETE FROM incidents WHERE ended_at IS NOT NULL AND ended_at < ?", (before,)
            )
            db.execute("DELETE FROM runs WHERE ended_at < ?", (before,))
        return dropped

    # -- reads ----------------------------------------------------------------

    def open_incident(self, target: str, kind: str) -> Incident | None:
        row = self._db.execute(
            "SELECT id, target, kind, started_at, ended_at, failures, cause FROM incidents"
            " WHERE target = ? AND kind = ? AND ended_at IS NULL ORDER BY id DESC LIMIT 1",
            (target, kind),
        ).fetchone()
        return Incident(**_incident_fields(row)) if row else None

    def trailing_failures(self, target: str, kind: str, limit: int) -> list[ProbeResult]:
        """The failing probes since the last passing one (newest first), at most ``limit``."""
        rows = self._db.execute(
            "SELECT ts, ok, error FROM probes WHERE target = ? AND kind = ? AND counted = 1"
            " ORDER BY ts DESC LIMIT ?",
            (target, kind, limit),
        ).fetchall()
        streak: list[ProbeResult] = []
        for ts, ok, error in rows:
            if ok:
                break
            streak.append(ProbeResult(target=target, kind=kind, ts=ts, ok=False, error=error))
        return streak

    def last_probe(self, target: str, kind: str) -> ProbeResult | None:
        row = self._db.execute(
            "SELECT ts, ok, latency_ms, value, error, own_ms, latency_own_ms, counted FROM probes"
            " WHERE target = ? AND kind = ? ORDER BY ts DESC LIMIT 1",
            (target, kind),
        ).fetchone()
        if row is None:
            return None
        ts, ok, latency_ms, value, error, own_ms, latency_own_ms, counted = row
        return ProbeResult(
            target=target,
            kind=kind,
            ts=ts,
            ok=bool(ok),
            latency_ms=latency_ms,
            value=value,
            error=error,
            own_ms=own_ms,
            latency_own_ms=latency_own_ms,
            counted=bool(counted),
        )

    def window_counts(
        self, target: str, kind: str, since_by_window: dict[str, float]
    ) -> dict[str, WindowCount]:
        """Good and total intervals for several windows in one scan of the rollups."""
        if not since_by_window:
            return {}
        names = list(since_by_window)
        minutes = [int(since_by_window[n] // 60) for n in names]
        sums = ", ".join(
            "COALESCE(SUM(CASE WHEN minute >= ? THEN total END), 0),"
            " COALESCE(SUM(CASE WHEN minute >= ? THEN good END), 0)"
            for _ in names
        )
        params: list[Any] = []
        for m in minutes:
            params += [m, m]
        row = self._db.execute(
            f"SELECT {sums} FROM minutes WHERE target = ? AND kind = ? AND minute >= ?",
            (*params, target, kind, min(minutes)),
        ).fetchone()
        return {
            name: WindowCount(total=int(row[2 * i]), good=int(row[2 * i + 1]))
            for i, name in enumerate(names)
        }

    def first_probe_ts(self, target: str, kind: str) -> float | None:
        row = self._db.execute(
            "SELECT MIN(minute) FROM minutes WHERE target = ? AND kind = ?", (target, kind)
        ).fetchone()
        return None if row[0] is None else float(row[0]) * 60.0

    def latencies(self, target: str, kind: str, since: float) -> list[tuple[float, float]]:
        """(latency, the monitor's own delay inside it) of the passing probes since
        ``since`` (raw rows: exact percentiles; own delay 0 where it was not measured)."""
        return [
            (r[0], r[1] or 0.0)
            for r in self._db.execute(
                "SELECT latency_ms, latency_own_ms FROM probes"
                " WHERE target = ? AND kind = ? AND ts >= ?"
                " AND ok = 1 AND latency_ms IS NOT NULL",
                (target, kind, since),
            )
        ]

    def own_delay(self, target: str, kind: str, since: float) -> tuple[int, int, float | None]:
        """Since ``since``: (probes not counted, probes with the monitor's own delay
        measured, the largest own delay in ms)."""
        row = self._db.execute(
            "SELECT COALESCE(SUM(counted = 0), 0), COUNT(own_ms), MAX(own_ms) FROM probes"
            " WHERE target = ? AND kind = ? AND ts >= ?",
            (target, kind, since),
        ).fetchone()
        return int(row[0]), int(row[1]), row[2]

    def peak_value(self, target: str, kind: str, since: float) -> tuple[float | None, float | None]:
        """(largest reading since ``since``, latest reading) of a probe kind."""
        peak = self._db.execute(
            "SELECT MAX(peak) FROM minutes WHERE target = ? AND kind = ? AND minute >= ?",
            (target, kind, int(since // 60)),
        ).fetchone()[0]
        latest = self._db.execute(
            "SELECT value FROM probes WHERE target = ? AND kind = ? AND value IS NOT NULL"
            " ORDER BY ts DESC LIMIT 1",
            (target, kind),
        ).fetchone()
        return peak, (latest[0] if latest else None)

    def buckets(
        self, target: str, kind: str, since: float, bucket_s: int
    ) -> dict[int, WindowCount]:
        """Good/total per bucket of ``bucket_s`` seconds (a multiple of 60) since ``since``."""
        per = bucket_s // 60
        rows = self._db.execute(
            "SELECT minute / ? AS b, SUM(total), SUM(good) FROM minutes"
            " WHERE target = ? AND kind = ? AND minute >= ? GROUP BY b",
            (per, target, kind, int(since // 60)),
        ).fetchall()
        return {int(b) * bucket_s: WindowCount(total=t, good=g) for b, t, g in rows}

    def incidents(self, target: str, limit: int, since: float | None = None) -> list[Incident]:
        """Newest first; with ``since``, those still open or ended after it."""
        where = "target = ?"
        params: list[Any] = [target]
        if since is not None:
            where += " AND (ended_at IS NULL OR ended_at >= ?)"
            params.append(since)
        rows = self._db.execute(
            "SELECT id, target, kind, started_at, ended_at, failures, cause FROM incidents"
            f" WHERE {where} ORDER BY started_at DESC LIMIT ?",
            (*params, limit),
        ).fetchall()
        return [Incident(**_incident_fields(r)) for r in rows]

    def recoveries(self, target: str, since: float) -> list[Recovery]:
        rows = self._db.execute(
            "SELECT lost_at, recovered_at, ms, complete, replayed, reason FROM recoveries"
            " WHERE target = ? AND recovered_at >= ? ORDER BY recovered_at",
            (target, since),
        ).fetchall()
        return [
            Recovery(
                target=target,
                lost_at=r[0],
                recovered_at=r[1],
                ms=r[2],
                complete=bool(r[3]),
                replayed=r[4],
                reason=r[5],
            )
            for r in rows
        ]

    def runs(self, target: str, since: float) -> list[IngestedRun]:
        rows = self._db.execute(
            "SELECT run_id, target, url, ended_at, peak_connections, attempted, scenario, source,"
            " recovery_hdr, recoveries, unrecovered"
            " FROM runs WHERE target = ? AND ended_at >= ? ORDER BY ended_at DESC",
            (target, since),
        ).fetchall()
        return [
            IngestedRun(
                run_id=r[0],
                target=r[1],
                url=r[2],
                ended_at=r[3],
                peak_connections=r[4],
                attempted=r[5],
                scenario=r[6],
                source=r[7],
                recovery_hdr=r[8],
                recoveries=r[9],
                unrecovered=r[10],
            )
            for r in rows
        ]

    def probe_count(self, target: str | None = None) -> int:
        if target is None:
            return int(self._db.execute("SELECT COUNT(*) FROM probes").fetchone()[0])
        return int(
            self._db.execute("SELECT COUNT(*) FROM probes WHERE target = ?", (target,)).fetchone()[
                0
            ]
        )


def _incident_fields(row: tuple[Any, ...]) -> dict[str, Any]:
    keys = ("id", "target", "kind", "started_at", "ended_at", "failures", "cause")
    fields = dict(zip(keys, row, strict=True))
    ended, started = fields["ended_at"], fields["started_at"]
    fields["duration_s"] = None if ended is None else ended - started
    fields["open"] = ended is None
    return fields


class AsyncStore:
    """ProbeStore off the event loop: one writer thread (ordered) and one reader thread."""

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)
        self._local = threading.local()
        self._writer = ThreadPoolExecutor(1, thread_name_prefix="monitor-db-write")
        self._reader = ThreadPoolExecutor(1, thread_name_prefix="monitor-db-read")
        self._stores: list[ProbeStore] = []
        self._lock = threading.Lock()

    def _store(self) -> ProbeStore:
        store = getattr(self._local, "store", None)
        if store is None:
            store = ProbeStore(self.path)
            self._local.store = store
            with self._lock:
                self._stores.append(store)
        return store

    async def open(self) -> None:
        """Create the schema (raises StoreError) before any probe runs."""
        await self.write(lambda s: None)
        await self.read(lambda s: None)

    async def write(self, fn: Callable[[ProbeStore], T]) -> T:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._writer, lambda: fn(self._store()))

    async def read(self, fn: Callable[[ProbeStore], T]) -> T:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._reader, lambda: self._store().snapshot(fn))

    def close(self) -> None:
        """Finish queued writes, then close both connections (call after the tasks stopped)."""
        for executor in (self._writer, self._reader):
            executor.submit(self._close_local).result()
            executor.shutdown(wait=True)

    def _close_local(self) -> None:
        store = getattr(self._local, "store", None)
        if store is not None:
            store.close()
            self._local.store = None
