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
- **While nothing listens, one probe per worker, not a retry per client.** A refused
  connect means the server is restarting; the client then waits on the worker's
  ``ListenWatch``, which tries a bare TCP connect every ``refused_probe_ms`` and lets
  every waiting client go (each within ``first_spread_ms``) the moment the port
  listens. Clients come back as soon as they would if each retried every 10 ms, while
  10,000 refused clients cost the generator one connect per probe interval instead of
  10,000 (the handshake gate then paces the stampede). A client still tries by
  itself at least every ``max_ms``, so ``give_up_s`` and a probe that cannot see the
  server (another route) still work.
- **One sweep, not a timer per connection.** Every ``min(ping_after, timeout) / 4`` the
  sweep walks the connections once (``Liveness.check``): silent ones get a WebSocket
  ping, ones that stayed silent past the timeout are aborted and recovered. A task or
  timer per connection would cost ten thousand wake-ups per interval. The sweep was
  12 % of the generator's samples in a 10,000-client restart (py-spy), so the common
  answer (heard from recently, no ping out) is decided inline, without a call.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import Counter
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from loadtest.client.policy import Liveness, Pulse, ReconnectPolicy, waits_for_listener
from loadtest.client.setup import SetupError, Step
from loadtest.engine.failures import classify

if TYPE_CHECKING:
    from loadtest.engine.worker import Conn, Worker

SWEEP_MIN_S = 0.02
PROBE_TIMEOUT_S = 1.0


class ListenWatch:
    """Is anything listening on the server's port again? One prober for a whole worker.

    ``open`` is set while the port is believed to listen. A refused attempt clears it
    and starts the probe (once, however many clients were refused); the probe sets it
    again on its first TCP connect that succeeds, then ends.
    """

    def __init__(self, url: str, interval_s: float) -> None:
        parts = urlsplit(url)
        self.host = parts.hostname or "127.0.0.1"
        self.port = parts.port or (443 if parts.scheme in ("wss", "https") else 80)
        self.interval_s = interval_s
        self.open = asyncio.Event()
        self.open.set()
        self.task: asyncio.Task[None] | None = None
        self.probes = 0  # TCP connects tried (for the figures)

    def refused(self) -> None:
        """An attempt was refused: probe until the port listens (if not probing already)."""
        if self.task is None or self.task.done():
            self.open.clear()
            self.task = asyncio.get_running_loop().create_task(self._probe())

    async def wait(self, timeout_s: float) -> None:
        """Until the port listens, or ``timeout_s`` (the client then tries by itself)."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout_s):
                await self.open.wait()

    async def _probe(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            self.probes += 1
            try:
                async with asyncio.timeout(PROBE_TIMEOUT_S):
                    transport, _ = await loop.create_connection(
                        asyncio.Protocol, self.host, self.port
                    )
            except (OSError, TimeoutError):
                await asyncio.sleep(self.interval_s)
                continue
            transport.close()
            self.open.set()
            return

    async def stop(self) -> None:
        task, self.task = self.task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task


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
        self.watch = ListenWatch(worker.url, policy.refused_probe_ms / 1000.0)

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
        if conn.close_code in conn.adapter.fatal_close_codes:  # coming back cannot help
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
        watch = self.watch
        delay = session.retry_delay_s()
        while not self.stopped:
            await asyncio.sleep(delay)
            if self.stopped or not session.attempt(time.monotonic_ns()):
                if not self.stopped:
                    self.w.c["gave_up"] += 1
                return
            cause = await self._attempt(conn)
            if cause is None:
                return
            if waits_for_listener(cause):  # nothing listens yet: wait for it, then go
                watch.refused()
                await watch.wait(self.policy.max_ms / 1000.0)
                delay = session.backoff.spread_s()
            else:
                delay = session.retry_delay_s()

    async def _attempt(self, conn: Conn) -> str | None:
        """One reconnect: upgrade, hello (resuming), every room back, then the outbox.

        Returns None when the client is back, else the failure's cause. The steps are the
        shared setup machine's (``loadtest.client.setup``); this only waits and sends.
        """
        w = self.w
        setup = conn.setup
        token = w.plan.token(conn.index)
        timeout = self.policy.attempt_timeout_ms / 1000.0
        w.c["reconnect_attempts"] += 1
        try:
            # A slot of the gate is held from the SYN to the welcome: the handshakes in
            # flight stay bounded by what the server actually completes. The wait for a
            # slot is the client's own queue, so the attempt's clock starts after it.
            async with self.gate:
                # begun before the upgrade: a server may welcome first, in the 101's read;
                # the server took us back at the welcome, and the replays may take longer
                # (it reads its store for thousands of clients at once): their own time
                setup.begin(time.monotonic_ns(), timeout, self.policy.resume_timeout_ms / 1000.0)
                async with asyncio.timeout(timeout):
                    await w.dial(conn, token, timeout)
                w.opened(conn)
                setup.upgraded(time.monotonic_ns(), token)
                await conn.settle(Step.ROOMS)
            await conn.settle(Step.READY)
        except Exception as exc:  # every failure is counted by cause and retried
            setup.abandon()
            cause = _cause(exc)
            self.failures[cause] += 1
            if conn.is_open and conn.transport is not None:
                conn.transport.disconnect(graceful=False)
            return cause
        backlog = setup.finish(time.monotonic_ns())
        for payload in backlog:
            conn.send(payload)
        w.c["retried"] += len(backlog)
        w.c["reconnects"] += 1
        conn.live = True
        return None

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
            heard_after = now - after  # heard since then, no ping out: fine (no call)
            for conn in self.w.conns:
                if not conn.is_open:
                    continue
                liveness = conn.liveness
                if liveness.last_rx_ns > heard_after and not liveness.ping_ns:
                    continue  # Liveness.check's first answer, inlined: most conns, every sweep
                pulse = liveness.check(now, after, timeout, on_time)
                if pulse is Pulse.OK:
                    continue
                transport = conn.transport
                assert transport is not None  # (open: the upgrade gave it one)
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
        await self.watch.stop()


def new_liveness() -> Liveness:
    return Liveness(time.monotonic_ns())


def _cause(exc: BaseException) -> str:
    if isinstance(exc, SetupError):
        return exc.cause
    return classify(exc)
