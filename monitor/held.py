"""The held connection: one long-lived client per target whose every drop is timed.

It joins the probe room and stays, answering heartbeats, so it sees what a real user
sees. When the connection is lost (closed by the server, reset, or found dead by a
missed WebSocket pong), it reconnects with short jittered backoff and resumes: for
the reference protocol a ``hello`` naming the last seq seen in the room, after which
the server replays what was missed and answers ``joined``. The recovery time runs
from the moment the loss was noticed to the moment the room is joined again with
every missed seq received (DESIGN.md, "connection recovery"); a resume that leaves
a gap is stored as incomplete. Protocols without resume recover by reconnecting and
joining again.

The backoff is capped at one probe interval (at most 1 s): the monitor measures how
fast the service lets clients back, so its own waiting must stay small against it.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Awaitable, Callable

from loadtest.adapters import Delivery, Feature, Notice, Ready, ReferenceAdapter
from loadtest.session import SeqOrder, SessionState
from monitor.probes import USERS, TargetProbes
from monitor.store import Recovery
from monitor.transport import ProbeConnection, failure_text
from rtbench.protocol import encode
from rtbench.protocol.messages import Hello

log = logging.getLogger("rtbench.monitor")

FIRST_DELAY = 0.05


class HeldConnection:
    """Keeps one connection to a target open and reports each recovery."""

    def __init__(
        self,
        probes: TargetProbes,
        name: str,
        interval: float,
        timeout: float,
        on_recovery: Callable[[Recovery], Awaitable[None]],
    ) -> None:
        self.probes = probes
        self.name = name
        self.interval = interval
        self.timeout = timeout
        self.on_recovery = on_recovery
        self.state = SessionState()
        self.connected = False
        self.max_delay = min(1.0, interval)

    async def run(self) -> None:
        lost_at: float | None = None  # wall clock, for the record
        lost_mono = 0.0
        reason = ""
        delay = FIRST_DELAY
        room = self.probes.target.room
        rooms = Feature.ROOMS in self.probes.adapter.features
        while True:
            try:
                async with asyncio.timeout(self.timeout):
                    conn, complete, replayed = await self._connect(room if rooms else None)
            except Exception as exc:
                if lost_at is None:
                    log.debug("%s: held connection not up yet: %s", self.name, exc)
                await asyncio.sleep(delay * random.uniform(0.8, 1.2))
                delay = min(delay * 2, self.max_delay)
                continue
            self.connected = True
            delay = FIRST_DELAY
            if lost_at is not None:
                ms = (time.monotonic() - lost_mono) * 1000.0
                await self.on_recovery(
                    Recovery(
                        target=self.name,
                        lost_at=lost_at,
                        recovered_at=time.time(),
                        ms=ms,
                        complete=complete,
                        replayed=replayed,
                        reason=reason,
                    )
                )
                lost_at = None
            try:
                while True:
                    event = await conn.receive()
                    if isinstance(event, Delivery | Notice) and event.room and event.seq:
                        self.state.observe(event.room, event.seq)
            except Exception as exc:
                reason = failure_text(exc, "held connection lost")
            finally:
                await conn.close()
            self.connected = False
            lost_at, lost_mono = time.time(), time.monotonic()
            log.info("%s: %s", self.name, reason)

    async def _connect(self, room: str | None) -> tuple[ProbeConnection, bool, int]:
        """Connect (resuming when there is something to resume); (conn, complete, replayed)."""
        resume = self.state.resume() if room else {}
        hello = self._resume_hello(resume) if resume else None
        conn = await self.probes.open(
            "held", ping_interval=self.interval, ping_timeout=self.timeout, hello=hello
        )
        try:
            if room is None:
                return conn, True, 0
            if hello is None:
                ready = await conn.join(room)
                self.state.joined(room, ready.seq)
                return conn, True, 0
            gaps_before = self.state.gaps
            replayed = 0
            while True:
                event = await conn.receive()
                if isinstance(event, Ready) and event.room == room:
                    last = self.state.last_seq.get(room, 0)
                    complete = self.state.gaps == gaps_before and last >= event.seq
                    self.state.joined(room, event.seq)
                    return conn, complete, replayed
                if (
                    isinstance(event, Delivery | Notice)
                    and event.room == room
                    and event.seq
                    and self.state.observe(room, event.seq) is not SeqOrder.OLD
                ):
                    replayed += 1
        except BaseException:
            await conn.close()
            raise

    def _resume_hello(self, resume: dict[str, int]) -> list[bytes] | None:
        """The reference protocol resumes in its hello; other protocols rejoin instead."""
        adapter = self.probes.adapter
        if not isinstance(adapter, ReferenceAdapter):
            return None
        token = self.probes.token("held") or USERS["held"]
        return [encode(Hello(token=token, resume=resume, client="rtbench-monitor"))]
