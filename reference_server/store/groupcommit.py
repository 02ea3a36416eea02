"""What every group-committing store keeps the same way: the bookkeeping around batches.

A store that commits many writes per transaction (SQLite's writer thread,
PostgreSQL's writer coroutine) counts what is submitted and not yet committed,
wakes ``flush`` when that reaches zero, fails every write of a failed batch,
counts commits and reports them on ``/healthz``, and hands each batch back to the
loop. ``GroupCommitStore`` holds that once; a store adds only how it queues a
write (``_enqueue``), how it commits a batch, and its reads. A new store is still
one file against ``store/base.py``: it may take this class or implement ``Store``
directly (``MemoryStore`` does).
"""

from __future__ import annotations

import abc
import asyncio
from typing import Any

from reference_server.store.base import BatchDone, Store, WriteOp


class GroupCommitStore(Store):
    """``Store`` with the batch bookkeeping done; subclasses queue and commit."""

    def __init__(self, url: str, max_batch: int) -> None:
        self.url = url
        self._max_batch = max_batch
        self._on_batch: BatchDone | None = None
        self._outstanding = 0
        self._idle = asyncio.Event()
        self._idle.set()
        self._status = "ok"  # "ok" or "down", as /healthz shows it
        self._last_error: str | None = None
        self._commits = 0

    @abc.abstractmethod
    def _enqueue(self, op: WriteOp) -> None:
        """Hand one write to the committer (never blocks the loop)."""

    def _settle(self, error: str | None) -> None:
        """Called on the loop for every batch before its callback: update the status."""

    @property
    def outstanding(self) -> int:
        return self._outstanding

    def submit(self, op: WriteOp) -> None:
        self._outstanding += 1
        self._idle.clear()
        self._enqueue(op)

    async def flush(self) -> None:
        await self._idle.wait()

    def health(self) -> dict[str, Any]:
        return {
            "status": self._status,
            "url": self.url,
            "pending_writes": self._outstanding,
            "commits": self._commits,
            "last_error": self._last_error,
        }

    def _batch_done(
        self, batch: list[WriteOp], seconds: float, ended_ns: int, error: str | None
    ) -> None:
        """On the loop, once per batch: count it, fail it whole on ``error``, hand it back."""
        self._outstanding -= len(batch)
        if self._outstanding == 0:
            self._idle.set()
        if error is None:
            self._commits += 1
        else:
            for op in batch:
                op.error = error
        self._settle(error)
        assert self._on_batch is not None  # set by open(), before any write
        self._on_batch(batch, seconds, ended_ns)
