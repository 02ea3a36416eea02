"""How a client reconnects and how it notices a dead connection: one policy, sans-IO.

The numbers are the point of the recovery target (p99 < 2 s from connection lost to
resumed), so each default is argued in docs/RECOVERY.md; in short:

- **The first attempt goes at once**, spread over ``first_spread_ms`` only so that
  thousands of clients dropped by one event do not send their SYNs in the same
  millisecond. Pacing beyond that is the driver's job (the native engine bounds the
  handshakes in flight per process), not a sleep: a client that waits a fixed second
  before its first try has spent half the target doing nothing.
- **A refused connect does not climb the ladder.** "Connection refused" means nothing
  listens yet (the server is restarting): the driver waits until the port listens
  again (the native engine probes it once per ``refused_probe_ms`` for the whole
  process, not once per client) and then goes within ``first_spread_ms``. Climbing
  the exponential ladder while the server restarts is what made clients sleep through
  its comeback (backoff waste p99 ~370 ms at 1,000 clients, docs/RECOVERY.md).
- **Other failures back off exponentially with full jitter** (``base_ms`` x ``factor``
  ^ n, capped at ``max_ms``, each delay drawn from [``1 - jitter``, 1] of its value;
  ``jitter`` 1 is "full jitter"), so a server that accepts but cannot answer is not
  hammered, and the cap keeps the wait after it recovers short.
  That includes a server's "try again later": an upgrade refused with HTTP 503 (the
  reference server's admission bucket) takes the ladder, not its ``Retry-After``,
  whose whole seconds would hold every refused client at least 1 s, half the
  recovery target; the jittered ladder spreads them over [0, d] instead.
- **A silent connection is pinged, and given up when the pong does not come**
  (``ping_after_ms`` of silence, then ``ping_timeout_ms``): over a blackholed network
  nothing arrives, not even a close, and only the client's own heartbeat can tell.
  A connection that carries traffic is never pinged: anything received counts.
"""

from __future__ import annotations

import random
from enum import IntEnum
from typing import Annotated

from msgspec import Meta, Struct

PositiveMs = Annotated[float, Meta(gt=0)]
NonNegativeMs = Annotated[float, Meta(ge=0)]


class ReconnectPolicy(Struct, forbid_unknown_fields=True, kw_only=True, omit_defaults=True):
    """Reconnect and heartbeat settings (the ``[reconnect]`` table of a scenario file)."""

    first_spread_ms: NonNegativeMs = 50.0  # first attempt: uniform in [0, this] after the loss
    base_ms: PositiveMs = 100.0  # second attempt waits about this long ...
    factor: Annotated[float, Meta(ge=1)] = 2.0  # ... and each later one this many times more
    max_ms: PositiveMs = 1000.0  # longest wait between attempts
    jitter: Annotated[float, Meta(ge=0, le=1)] = 1.0  # a delay d is drawn from [(1-j) d, d]
    refused_probe_ms: PositiveMs = 10.0  # after a refused connect: poll the port this often
    attempt_timeout_ms: PositiveMs = 3000.0  # one attempt: connect, upgrade, welcome
    resume_timeout_ms: PositiveMs = 10000.0  # then every room back (the server is working)
    give_up_s: Annotated[float, Meta(gt=0)] | None = None  # stop trying after this (None: never)
    ping_after_ms: PositiveMs = 500.0  # silence before the client pings
    ping_timeout_ms: PositiveMs = 500.0  # no frame this long after the ping: connection dead
    outbox: Annotated[int, Meta(ge=1)] = 4096  # unacked and queued sends kept per client

    def validate(self) -> str | None:
        """None, or one line saying which setting is inconsistent."""
        if self.base_ms > self.max_ms:
            return f"reconnect base_ms ({self.base_ms:g}) is above max_ms ({self.max_ms:g})"
        return None


def waits_for_listener(cause: str) -> bool:
    """True when a failed attempt means nothing listens yet (wait for the port, then go
    within ``first_spread_ms``); every other cause (a timeout, a reset, an upgrade refused
    with 503 or any status) takes the exponential ladder (``Backoff.next_delay_s``)."""
    return cause == "refused"


class Backoff:
    """The delays between one client's attempts after a loss (reset when it is back)."""

    __slots__ = ("attempt", "policy", "rng")

    def __init__(self, policy: ReconnectPolicy, rng: random.Random | None = None) -> None:
        self.policy = policy
        self.rng = rng or random.Random()
        self.attempt = 0

    def reset(self) -> None:
        self.attempt = 0

    def spread_s(self) -> float:
        """A delay in [0, ``first_spread_ms``]: going again once the port listens."""
        return self.rng.uniform(0.0, self.policy.first_spread_ms) / 1000.0

    def next_delay_s(self) -> float:
        """Seconds to wait before the next attempt (the first one: almost none)."""
        p = self.policy
        n = self.attempt
        self.attempt += 1
        if n == 0:
            return self.rng.uniform(0.0, p.first_spread_ms) / 1000.0
        ceiling = min(p.max_ms, p.base_ms * p.factor ** (n - 1))
        return self.rng.uniform((1.0 - p.jitter) * ceiling, ceiling) / 1000.0


class Pulse(IntEnum):
    """What a heartbeat check says to do with one connection."""

    OK = 0
    PING = 1  # silent for ping_after_ms: send a WebSocket ping
    DEAD = 2  # no answer within ping_timeout_ms, seen on two checks in a row


class Liveness:
    """Client-side dead-connection detection for one connection, sans-IO.

    The driver stamps ``last_rx_ns`` on every frame received and calls ``check`` from a
    periodic sweep. Death needs two checks past the deadline, and both must come from
    sweeps that ran on time (``on_time``): the second runs at least one event-loop
    iteration later, after the loop has read its sockets, and a sweep that ran late
    says the silence may be the client's own (a busy or descheduled process), not the
    connection's. A load generator that convicted its own healthy connections whenever
    it fell behind would turn its overload into a reconnect storm.
    """

    __slots__ = ("last_rx_ns", "ping_ns", "suspect")

    def __init__(self, now_ns: int) -> None:
        self.last_rx_ns = now_ns
        self.ping_ns = 0  # when the outstanding ping was sent (0: none)
        self.suspect = False

    def check(self, now_ns: int, after_ns: int, timeout_ns: int, on_time: bool = True) -> Pulse:
        last = self.last_rx_ns
        if self.ping_ns:
            if last >= self.ping_ns:  # heard since the ping: alive
                self.ping_ns = 0
                self.suspect = False
            elif now_ns - self.ping_ns >= timeout_ns:
                if not on_time:
                    self.suspect = False  # this sweep's silence may be our own lateness
                    return Pulse.OK
                if self.suspect:
                    return Pulse.DEAD
                self.suspect = True
                return Pulse.OK
            else:
                return Pulse.OK
        if now_ns - last >= after_ns:
            self.ping_ns = now_ns
            return Pulse.PING
        return Pulse.OK

    def reset(self, now_ns: int) -> None:
        self.last_rx_ns = now_ns
        self.ping_ns = 0
        self.suspect = False
