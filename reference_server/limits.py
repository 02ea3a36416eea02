"""Per-connection rate limits and per-user / per-address connection limits.

Both sit on paths that run for every frame or every connection, so they keep their
state in plain slots of the Session (no object, task or timer per connection) and
do a few float operations per frame.

**Rate limit.** A token bucket per connection: ``rate_per_s`` frames a second,
``rate_burst`` at once. A frame that finds the bucket empty is dropped *before it is
decoded*, so flooding costs the server almost nothing. The first dropped frame of an
episode gets one ``error rate_limited``; the rest are dropped silently (answering
each would let a flood buy a reply per frame). The episode ends when the bucket has
refilled completely. A connection that keeps going until ``rate_abuse_frames``
frames of one episode were dropped is closed with 1008. A client that sends at or
under its rate never loses a frame, however long it keeps it up.

**Connection limits.** ``max_connections_per_ip`` counts open sockets per source
address (from the upgrade on; addresses in ``connection_limit_exempt``, loopback by
default, are not counted: load generators and a local reverse proxy live there).
``max_connections_per_user`` counts connections that said hello as one user. Past
either, the new connection is closed with 4429.

**Admission.** A token bucket on the server's accepted upgrades, shared by every
connection (``admit_rate`` a second, ``admit_burst`` at once; off by default). Past it,
an upgrade is refused before a socket exists, with HTTP 503 and ``Retry-After``: a
reconnect storm then costs the server a short HTTP answer per refused attempt instead
of a handshake, a hello and a resume it may not finish within the client's timeout,
and every client it did accept gets its turn at full speed. Clients treat the 503 as
"try again later" (backoff with jitter: docs/RECOVERY.md), which spreads the storm.
"""

from __future__ import annotations

import ipaddress
import math
from enum import IntEnum
from typing import Protocol

IpNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
_ONE = 1.0 - 1e-9  # a client sending at exactly its rate must not lose a frame to rounding


class Verdict(IntEnum):
    """What to do with one frame."""

    PASS = 0
    WARN = 1  # drop it, and send one ``rate_limited`` error: an episode begins
    DROP = 2  # drop it silently
    CLOSE = 3  # persistent abuse: close 1008


class Metered(Protocol):
    """The rate-limit slots a Session carries."""

    allowance: float  # tokens left in the bucket
    data_at: float  # monotonic time of the last data frame (the allowance is up to date)
    strikes: int  # frames dropped in the current over-limit episode


class RateLimiter:
    """The token bucket of every connection; one instance per server."""

    __slots__ = ("abuse", "burst", "rate")

    def __init__(self, rate_per_s: float, burst: int, abuse_frames: int) -> None:
        self.rate = float(rate_per_s)
        self.burst = float(max(burst, 1))
        self.abuse = abuse_frames

    @classmethod
    def from_config(cls, rate_per_s: int, burst: int, abuse_frames: int) -> RateLimiter | None:
        """The server's limiter, or None when ``rate_per_s`` is 0 (no rate limit)."""
        return cls(rate_per_s, burst, abuse_frames) if rate_per_s > 0 else None

    def start(self, s: Metered, now: float) -> None:
        """A new connection starts with a full bucket."""
        s.allowance = self.burst
        s.data_at = now
        s.strikes = 0

    def admit(self, s: Metered, now: float) -> Verdict:
        """Take one token for a frame, or say why the frame goes no further."""
        tokens = s.allowance + (now - s.data_at) * self.rate
        s.data_at = now
        if tokens >= self.burst:
            tokens = self.burst
            s.strikes = 0  # refilled completely: any episode is over
        if tokens >= _ONE:
            s.allowance = tokens - 1.0
            return Verdict.PASS
        s.allowance = tokens
        strikes = s.strikes = s.strikes + 1
        if strikes == 1:
            return Verdict.WARN
        if strikes > self.abuse:
            return Verdict.CLOSE
        return Verdict.DROP

    def describe(self) -> str:
        return (
            f"rate limit: {self.rate:g} frames/s, bursts of {self.burst:g}; frames past it are "
            f"dropped unanswered until you slow down, and after {self.abuse} dropped frames "
            "the connection is closed 1008"
        )


class Admission:
    """The token bucket of accepted upgrades (one per server process)."""

    __slots__ = ("at", "burst", "rate", "tokens")

    def __init__(self, rate_per_s: float, burst: int, now: float) -> None:
        self.rate = float(rate_per_s)
        self.burst = float(max(burst, 1))
        self.tokens = self.burst  # a new process starts with a full bucket
        self.at = now

    @classmethod
    def from_config(cls, rate_per_s: float, burst: int, now: float) -> Admission | None:
        """The server's bucket, or None when ``rate_per_s`` is 0 (every upgrade admitted).

        ``burst`` 0 means one second's worth (``rate_per_s``, at least 1).
        """
        if rate_per_s <= 0:
            return None
        return cls(rate_per_s, burst or math.ceil(rate_per_s), now)

    def admit(self, now: float) -> float:
        """0.0 when one more upgrade may go ahead now; else seconds until it could."""
        tokens = min(self.burst, self.tokens + (now - self.at) * self.rate)
        self.at = now
        if tokens >= _ONE:
            self.tokens = tokens - 1.0
            return 0.0
        self.tokens = tokens
        return (1.0 - tokens) / self.rate


def peer_address(peer: str) -> str:
    """The address part of a ``host:port`` peer string (IPv6 addresses keep their colons)."""
    host, sep, _ = peer.rpartition(":")
    return (host if sep else peer).strip("[]")


EXEMPT_CACHE = 4096  # source addresses whose exemption is remembered


class ConnectionLimits:
    """Counts open connections per source address; checks the per-user count it is given."""

    def __init__(self, per_user: int, per_ip: int, exempt: list[str]) -> None:
        self.per_user = per_user  # 0: no limit
        self.per_ip = per_ip  # 0: no limit
        self.exempt: tuple[IpNetwork, ...] = tuple(parse_networks(exempt))
        self.by_ip: dict[str, int] = {}  # only counted (non-exempt) addresses
        # address -> exempt: parsing an address and testing it against the networks cost
        # ~4 us per accepted connection, a few % of a reconnect (reports/reconnect-cost.md),
        # and a storm comes from few addresses. Bounded: cleared when full.
        self._exempt_seen: dict[str, bool] = {}

    def _exempt(self, address: str) -> bool:
        seen = self._exempt_seen.get(address)
        if seen is None:
            if len(self._exempt_seen) >= EXEMPT_CACHE:
                self._exempt_seen.clear()
            seen = self._exempt_seen[address] = self._exempt_uncached(address)
        return seen

    def _exempt_uncached(self, address: str) -> bool:
        try:
            ip = ipaddress.ip_address(address)
        except ValueError:  # a peer we cannot parse (a Unix socket): nothing to count
            return True
        if ip.version == 6 and ip.ipv4_mapped is not None:
            ip = ip.ipv4_mapped
        return any(ip in net for net in self.exempt)

    def open(self, peer: str) -> tuple[bool, str | None]:
        """(allowed, counted address) for a new connection from ``peer``.

        The address is None when nothing was counted (no limit, or exempt); the
        caller hands a counted address back to ``close`` when the connection ends.
        """
        if not self.per_ip:
            return True, None
        address = peer_address(peer)
        if self._exempt(address):
            return True, None
        count = self.by_ip.get(address, 0)
        if count >= self.per_ip:
            return False, None
        self.by_ip[address] = count + 1
        return True, address

    def close(self, address: str) -> None:
        """A counted connection is gone."""
        count = self.by_ip.get(address, 0) - 1
        if count > 0:
            self.by_ip[address] = count
        else:
            self.by_ip.pop(address, None)

    def user_full(self, open_now: int) -> bool:
        """True when a user who already holds ``open_now`` connections may not open another."""
        return bool(self.per_user) and open_now >= self.per_user


def parse_networks(items: list[str]) -> list[IpNetwork]:
    """``["127.0.0.0/8", "::1"]`` -> networks; a bad entry is a ValueError naming it."""
    nets = []
    for item in items:
        try:
            nets.append(ipaddress.ip_network(item, strict=False))
        except ValueError:
            msg = f"connection_limit_exempt: {item!r} is not an address or network"
            raise ValueError(msg) from None
    return nets
