"""The held connection: one long-lived client per target whose every drop is timed.

It joins the probe room and stays, answering heartbeats, so it sees what a real user
sees. When the connection is lost (closed by the server, reset, or found dead by a
missed WebSocket pong: no pong within the timeout of the monitor's own running time, so
the monitor's own stop is not a loss, ``monitor.prober.within_own_time``), it reconnects
and resumes with the shared client library (``loadtest.client``, the same code the load
engine and the Locust users run): backoff, the resume hello naming the last seq seen in
the room, dedupe of the replay, and the recovery timing from the moment the loss was
noticed to the moment the room is joined again with every missed seq received
(DESIGN.md, "connection recovery"); a resume that leaves a gap is stored as incomplete.
Protocols without resume recover by reconnecting and joining again.

The backoff is capped at one probe interval (at most 1 s): the monitor measures how
fast the service lets clients back, so its own waiting must stay small against it.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable

from websockets.exceptions import ConnectionClosed

from loadtest.adapters import Delivery, Feature, Notice, Ready, Rejected
from loadtest.client import ClientSession, ReconnectPolicy, Recovery, SessionSetup
from loadtest.session import ITEM_KINDS
from monitor.prober import OwnDelay, within_own_time
from monitor.probes import USERS, TargetProbes
from monitor.store import Recovery as StoredRecovery
from monitor.transport import ProbeConnection, failure_text

log = logging.getLogger("rtbench.monitor")

FIRST_DELAY_MS = 50.0


class HeldConnection:
    """Keeps one connection to a target open and reports each recovery."""

    def __init__(
        self,
        probes: TargetProbes,
        name: str,
        interval: float,
        timeout: float,
        on_recovery: Callable[[StoredRecovery], Awaitable[None]],
        own: OwnDelay | None = None,
    ) -> None:
        self.probes = probes
        self.own = own  # the monitor's own delay: a pong waits out the monitor's stops
        self.dead: str | None = None  # why the keepalive gave the connection up
        self.name = name
        self.interval = interval
        self.timeout = timeout
        self.on_recovery = on_recovery
        cap_ms = min(1000.0, interval * 1000.0)
        policy = ReconnectPolicy(
            first_spread_ms=FIRST_DELAY_MS,
            base_ms=min(FIRST_DELAY_MS * 2, cap_ms),
            max_ms=cap_ms,
            attempt_timeout_ms=timeout * 1000.0,
        )
        # ids from the clock: a restarted monitor reuses the same user, never the same ids
        self.session = ClientSession(policy, first_id=time.time_ns() // 1000)
        self.adapter = probes.adapter.connection()  # kept across reconnects (resume state)
        rooms = [probes.target.room] if Feature.ROOMS in probes.adapter.features else []
        # hello, welcome, the room resumed or joined: the shared setup steps
        self.setup = SessionSetup(self.session, self.adapter, USERS["held"], rooms)
        self.connected = False

    async def run(self) -> None:
        session = self.session
        lost_wall = 0.0
        own_loss = 0.0  # the last loss was of the monitor's own making (its own delay, s)
        while True:
            session.attempt(time.monotonic_ns())
            try:
                async with asyncio.timeout(self.timeout):
                    conn = await self._connect()
            except Exception as exc:
                if session.current is None:
                    log.debug("%s: held connection not up yet: %s", self.name, exc)
                await asyncio.sleep(session.retry_delay_s())
                continue
            self.connected = True
            finished = session.records[-1] if session.records else None
            if finished is not None and lost_wall:
                if own_loss:
                    ms = (finished.resumed_ns - finished.lost_ns) / 1e6
                    log.info("%s: held connection back in %.0f ms: not counted", self.name, ms)
                else:
                    await self.on_recovery(self._stored(finished, lost_wall))
                session.records.clear()
                lost_wall = 0.0
            self.dead = None
            keepalive = asyncio.get_running_loop().create_task(self._keepalive(conn))
            try:
                while True:
                    self._observe(await conn.receive())
            except Exception as exc:
                reason = failure_text(exc, "held connection lost")
                if self.dead is not None:
                    reason = f"held connection lost: {self.dead}"
            finally:
                keepalive.cancel()
                await conn.close()
            self.connected = False
            own_loss = self._own_loss()
            if own_loss:
                reason += (
                    f" (not counted: the monitor itself was kept from running {own_loss:.2f} s "
                    f"of the last {self.interval + self.timeout:g} s, longer than the "
                    f"{self.timeout:g}s timeout)"
                )
            session.lost(time.monotonic_ns(), reason)
            lost_wall = time.time()
            log.info("%s: %s", self.name, reason)

    def _own_loss(self) -> float:
        """The monitor's own delay over the last ping interval and timeout before the loss
        was noticed (s), when it is longer than the timeout: the connection was silent that
        long by the monitor's doing, a server may close a client that silent, and the loss
        is then of the monitor's making (0.0 otherwise). A frame processed after a stall
        may have arrived at any time during it, so the window is the clock's, not the last
        frame's."""
        if self.own is None:
            return 0.0
        now = time.monotonic()
        own_s = self.own.own_s(now - self.interval - self.timeout, now)
        return own_s if own_s >= self.timeout else 0.0

    async def _keepalive(self, conn: ProbeConnection) -> None:
        """A WebSocket ping every interval; no pong within the timeout of the monitor's own
        running time ends the connection (the reader then reports the loss)."""
        while True:
            await asyncio.sleep(self.interval)
            start = time.monotonic()
            try:
                pong = await conn.ws.ping()
            except ConnectionClosed:
                return  # the reader reports it
            # websockets types the pong waiter as an Awaitable; it is a Future
            if not await within_own_time(
                asyncio.ensure_future(pong), start, self.timeout, self.own
            ):
                self.dead = f"no pong within {self.timeout:g}s"
                conn.ws.transport.abort()
                return

    def _observe(self, event: object) -> None:
        """Stored items (not a receipt's read marker) move the resume point and dedupe."""
        if (
            isinstance(event, Delivery) or (isinstance(event, Notice) and event.kind in ITEM_KINDS)
        ) and (event.room and event.seq):
            self.session.item(event.room, event.seq)

    def _stored(self, record: Recovery, lost_wall: float) -> StoredRecovery:
        return StoredRecovery(
            target=self.name,
            lost_at=lost_wall,
            recovered_at=lost_wall + (record.resumed_ns - record.lost_ns) / 1e9,
            ms=(record.resumed_ns - record.lost_ns) / 1e6,
            complete=record.complete,
            replayed=record.replayed,
            reason=record.cause,
        )

    async def _connect(self) -> ProbeConnection:
        """Connect, resuming when there is something to resume; the room is back on return.
        The steps are the shared setup machine's (``loadtest.client.setup``): this only
        moves its frames and feeds it what arrives, within the attempt's timeout."""
        setup = self.setup
        setup.begin(time.monotonic_ns(), self.timeout)
        conn = await self.probes.open(
            "held",
            self.adapter,
            ping_interval=None,  # pinged by _keepalive, in the monitor's own running time
            ping_timeout=None,
            hello=[],  # the machine says what to send once the socket is open
            welcome=False,  # ... and reads the welcome itself
        )
        try:
            setup.upgraded(time.monotonic_ns(), self.probes.token("held"))
            while True:
                for frame in setup.take():
                    await conn.send(frame)
                setup.check()
                if setup.over:
                    break
                try:
                    async with asyncio.timeout(setup.wait_s(time.monotonic_ns())):
                        event = await conn.receive()
                except TimeoutError:
                    setup.expire(time.monotonic_ns())
                    continue
                if isinstance(event, Ready):
                    setup.ready(event, time.monotonic_ns())
                elif isinstance(event, Rejected):
                    setup.rejected(event.code)
                else:
                    self._observe(event)
            setup.finish(time.monotonic_ns())
        except BaseException:
            setup.abandon()
            await conn.close()
            raise
        return conn
