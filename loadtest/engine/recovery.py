"""The worker side of recovery: bring lost connections back, and notice dead ones.

What a client remembers and decides (backoff, resume map, outbox, recovery timings)
is ``loadtest.client``; this module is its driver on picows: one reconnect task per
lost connection, a per-process bound on handshakes in flight, and one heartbeat sweep
for all connections.

- **Handshakes in flight are bounded per worker** (``connect_concurrency``, the same
  gate as the ramp). Ten thousand clients dropped at once would otherwise send ten
  thousand SYNs into a listen queue of 4,096 (``somaxconn`` here); the overflow is
  dropped by the kernel and retried by TCP after 1 s, then 3 s: the p99 of a storm is
  made of those retries. A bounded gate keeps the queue short, so the server accepts as
  fast as it can handshake and nobody waits for a SYN timer.
- **One sweep, not a timer per connection.** Every ``min(ping_after, timeout) / 4`` the
  sweep walks the connections once (``Liveness.check``): silent ones get a WebSocket
  ping, ones that stayed silent past the timeout are aborted and recovered. A task or
  timer per connection would cost ten thousand wake-ups per interval.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import Counter
from typing import TYPE_CHECKING

from picows import ws_connect

from loadtest.client.policy import FATAL_CLOSE_CODES, Liveness, Pulse, ReconnectPolicy
from loadtest.engine.failures import classify

if TYPE_CHECKING:
    from loadtest.engine.worker import Conn, Worker

SWEEP_MIN_S = 0.02


class Reconnector:
    """Reconnects a worker's lost connections and pings its silent ones."""

    def __init__(self, worker: Worker, policy: ReconnectPolicy) -> None:
        self.w = worker
        self.policy = policy
        self.gate = asyncio.Semaphore(worker.scenario.connect_concurrency)
        self.tasks: set[asyncio.Task[None]] = set()
        self.sweeper: asyncio.Task[None] | None = None
        self.after_ns = int(policy.ping_after_ms * 1e6)
        self.timeout_ns = int(policy.ping_timeout_ms * 1e6)
        self.stopped = False
        self.failures: Counter[str] = Counter()  # failed attempts by cause

    # -- losses -----------------------------------------------------------------------------

    def cause_of(self, conn: Conn) -> str:
        if conn.lost_cause:
            return conn.lost_cause
        if conn.close_code is not None:
            return f"close_{conn.close_code}"
        return "dropped"  # no close frame: reset, or the server process died

    def lost(self, conn: Conn) -> None:
        """``conn`` went away: start bringing it back (unless it is already coming)."""
        if self.stopped or not conn.session.lost(time.monotonic_ns(), self.cause_of(conn)):
            return
        if conn.close_code in FATAL_CLOSE_CODES:
            conn.session.give_up()
            self.w.c["gave_up"] += 1
            return
        if conn.recovering is not None and not conn.recovering.done():
            return  # the attempt in progress failed; its loop tries again
        task = asyncio.get_running_loop().create_task(self._recover(conn))
        conn.recovering = task
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def _recover(self, conn: Conn) -> None:
        session = conn.session
        while not self.stopped:
            await asyncio.sleep(session.retry_delay_s())
            if self.stopped or not session.attempt(time.monotonic_ns()):
                if not self.stopped:
                    self.w.c["gave_up"] += 1
                return
            if await self._attempt(conn):
                return

    async def _attempt(self, conn: Conn) -> bool:
        """One reconnect: upgrade, hello (resuming), every room back, then the outbox."""
        w = self.w
        adapter = w.adapter
        session = conn.session
        token = w.plan.token(conn.index)
        timeout = self.policy.attempt_timeout_ms / 1000.0
        resume_timeout = self.policy.resume_timeout_ms / 1000.0
        loop = asyncio.get_running_loop()
        kwargs = {}
        local = w.local_addr_for(conn.index)
        if local is not None:
            kwargs["local_addr"] = local
        w.c["reconnect_attempts"] += 1
        try:
            # A slot of the gate is held from the SYN to the welcome: the handshakes in
            # flight stay bounded by what the server actually completes. The wait for a
            # slot is the client's own queue, so the attempt's clock starts after it.
            async with self.gate, asyncio.timeout(timeout):
                await ws_connect(
                    lambda: conn,
                    w.url,
                    websocket_handshake_timeout=timeout,
                    extra_headers=adapter.headers(conn.user, token),
                    max_redirects=0,
                    enable_auto_pong=True,
                    **kwargs,
                )
                w.opened(conn)
                conn.setup = loop.create_future()
                conn.wait_rooms = False  # first the welcome
                frames, rooms_with_hello = session.opening_frames(adapter, conn.user, token)
                conn.want_welcome = adapter.expects_welcome
                for payload in frames:
                    conn.send(payload)
                if conn.want_welcome:
                    await conn.setup
                else:
                    session.welcomed(time.monotonic_ns())
            # the server took us back: the replays may take longer (it reads its store for
            # thousands of clients at once); cutting them off would waste that work
            async with asyncio.timeout(resume_timeout):
                conn.wait_rooms = True
                conn.setup = loop.create_future()
                if not session.settled():
                    await conn.setup
                if not rooms_with_hello:  # no resume in this protocol: join again
                    rooms = w.rooms_of(conn)
                    conn.setup = loop.create_future()
                    if adapter.confirms_join:
                        session.expect_rooms(rooms)
                    for room in rooms:
                        conn.send(adapter.join(room, conn.req()))
                    if not session.settled():
                        await conn.setup
                conn.setup = None
        except Exception as exc:  # every failure is counted by cause and retried
            conn.setup = None
            self.failures[_cause(exc)] += 1
            if conn.is_open and conn.transport is not None:
                conn.transport.disconnect(graceful=False)
            return False
        backlog = session.ready(time.monotonic_ns())
        for payload in backlog:
            conn.send(payload)
        w.c["retried"] += len(backlog)
        w.c["reconnects"] += 1
        conn.live = True
        return True

    # -- heartbeats -------------------------------------------------------------------------

    def start(self) -> None:
        """From the go: watch every connection's heartbeat."""
        if self.sweeper is None:
            self.sweeper = asyncio.get_running_loop().create_task(self._sweep())

    async def _sweep(self) -> None:
        period = max(SWEEP_MIN_S, min(self.after_ns, self.timeout_ns) / 4e9)
        after, timeout = self.after_ns, self.timeout_ns
        c = self.w.c
        period_ns = int(period * 1e9)
        due = time.monotonic_ns() + period_ns
        while True:
            await asyncio.sleep(max(0.0, (due - time.monotonic_ns()) / 1e9))
            now = time.monotonic_ns()
            on_time = now - due < period_ns // 2  # a late sweep convicts nobody
            due = now + period_ns
            for conn in self.w.conns:
                if not conn.is_open:
                    continue
                pulse = conn.liveness.check(now, after, timeout, on_time)
                if pulse is Pulse.OK:
                    continue
                transport = conn.transport
                if pulse is Pulse.PING:
                    transport.send_ping()
                    c["pings_sent"] += 1
                else:
                    conn.lost_cause = "heartbeat"
                    c["heartbeat_dead"] += 1
                    transport.disconnect(graceful=False)

    # -- the end ---------------------------------------------------------------------------

    async def stop(self) -> None:
        """No more reconnects (the run is closing); every task of ours ends."""
        self.stopped = True
        tasks = [t for t in (*self.tasks, self.sweeper) if t is not None]
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self.tasks.clear()
        self.sweeper = None


def new_liveness() -> Liveness:
    return Liveness(time.monotonic_ns())


def _cause(exc: BaseException) -> str:
    name = type(exc).__name__
    if name == "_SetupRejected":
        return f"rejected_{exc.args[0]}"
    if name == "_SetupClosed":
        return f"closed_{exc.args[0]}"
    return classify(exc)
