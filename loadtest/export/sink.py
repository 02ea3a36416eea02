"""A sink that pushes snapshots from its own thread, never from the load's event loop.

The driver's ``offer`` only appends to a bounded deque (constant time, no lock held
across I/O); a thread takes what is waiting, sends it as one batch, retries a failed
batch with backoff while its budget lasts, and otherwise drops it and counts. A dead or
slow endpoint therefore costs the load nothing but the dropped batches, which the
report states at the end.
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from loadtest.export.model import Snapshot

QUEUE_LIMIT = 60  # snapshots waiting (a minute of a run); past it the oldest is dropped
MAX_BATCH = 20  # snapshots per request when the endpoint fell behind


EXPORT_NICE = 19


def lower_priority() -> None:
    """Run the calling thread at the lowest CPU priority (Linux: per-thread nice).

    Export work shares the generator's core (``taskset`` pins the whole process tree);
    at nice 19 it yields to the workers, so it cannot add to their send delay. The main
    thread is never touched: under gevent (the Locust master) every "thread" is a
    greenlet of it, and the users it runs must keep their priority.
    """
    tid = threading.get_native_id()
    if tid == os.getpid():
        return
    with contextlib.suppress(OSError, AttributeError):
        os.setpriority(os.PRIO_PROCESS, tid, EXPORT_NICE)


class SendError(Exception):
    """A batch was refused; ``retry`` says whether sending it again can help."""

    def __init__(self, message: str, *, retry: bool) -> None:
        super().__init__(message)
        self.retry = retry


@dataclass
class SinkStats:
    batches: int = 0
    snapshots: int = 0
    dropped: int = 0  # snapshots never delivered (queue full, or refused after retries)
    retries: int = 0
    last_error: str = ""


class PushSink:
    """Batches snapshots to ``send`` from a daemon thread; see the module doc."""

    def __init__(
        self,
        name: str,
        send: Callable[[list[Snapshot]], None],
        *,
        retry_budget_s: float = 10.0,
        first_backoff_s: float = 0.1,
    ) -> None:
        self.name = name
        self._send = send
        self._retry_budget_s = retry_budget_s
        self._first_backoff_s = first_backoff_s
        self._queue: deque[Snapshot] = deque()
        self._wake = threading.Condition()
        self._closing = False
        self.stats = SinkStats()
        self._thread = threading.Thread(target=self._loop, name=f"rtbench-{name}", daemon=True)
        self._thread.start()

    def offer(self, snapshot: Snapshot) -> None:
        with self._wake:
            if len(self._queue) >= QUEUE_LIMIT:
                self._queue.popleft()
                self.stats.dropped += 1
            self._queue.append(snapshot)
            self._wake.notify()

    def close(self, timeout_s: float) -> None:
        """Send what is queued (the final snapshot last) within ``timeout_s``, then stop."""
        with self._wake:
            self._closing = True
            self._wake.notify()
        self._thread.join(timeout_s)
        with self._wake:
            self.stats.dropped += len(self._queue)
            self._queue.clear()

    def _take(self) -> list[Snapshot] | None:
        with self._wake:
            while not self._queue and not self._closing:
                self._wake.wait()
            if not self._queue:
                return None
            batch = [self._queue.popleft() for _ in range(min(MAX_BATCH, len(self._queue)))]
            return batch

    def _loop(self) -> None:
        lower_priority()
        while (batch := self._take()) is not None:
            self._deliver(batch)

    def _deliver(self, batch: list[Snapshot]) -> None:
        deadline = time.monotonic() + self._retry_budget_s
        backoff = self._first_backoff_s
        while True:
            try:
                self._send(batch)
            except SendError as exc:
                self.stats.last_error = str(exc)
                if not exc.retry or time.monotonic() + backoff > deadline or self._closing:
                    self.stats.dropped += len(batch)
                    return
                self.stats.retries += 1
                time.sleep(backoff)  # this thread's own pause, off the load's loop
                backoff = min(backoff * 2, 2.0)
                continue
            self.stats.batches += 1
            self.stats.snapshots += len(batch)
            return

    def summary(self) -> str | None:
        """One line when something was lost, else None."""
        s = self.stats
        if not s.dropped:
            return None
        why = f" (last error: {s.last_error})" if s.last_error else ""
        return f"{self.name}: {s.dropped} of {s.dropped + s.snapshots} updates dropped{why}"
