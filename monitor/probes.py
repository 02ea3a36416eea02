"""The synthetic probes of one target, each one bounded step of I/O returning one figure.

- ``connect``: WebSocket upgrade plus the protocol's hello/welcome: handshake time.
- ``delivery`` (protocols with rooms): a receiver and a sender join the probe room, the
  sender sends one marked message, the receiver must get it (and the sender its ack,
  when the protocol acks): latency from send to receipt. This is the uptime interval.
- ``echo`` (protocols with only a round trip): one marked frame there and back.
- ``health``: the target's own HTTP health check; its JSON ``connections`` is read.
- ``metrics``: the target's Prometheus text; ``connections_metric`` summed is read.

Every probe raises ProbeFailure (or a transport exception) on failure; the caller
turns it into a failed probe result and bounds the whole probe with its timeout.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import random
import time
from collections.abc import Coroutine
from typing import Any

import jwt
import msgspec
from prometheus_client.parser import text_string_to_metric_families

from loadtest.adapters import Ack, Adapter, Delivery, Feature, marker
from monitor.config import TargetConfig, default_metrics
from monitor.httpclient import http_get
from monitor.prober import mark_span
from monitor.transport import ProbeConnection, ProbeFailure, now_ns, together

RESEND_S = 0.25
"""How long a probe waits for its message before sending another, on a protocol whose
server never confirms a join (a subscription may not be in place for the first send)."""

USERS = {
    "tx": "rtbench-monitor-tx",
    "rx": "rtbench-monitor-rx",
    "held": "rtbench-monitor-held",
}


class TargetProbes:
    """Probe I/O for one target; keeps the marker sender id and counter of this monitor."""

    def __init__(self, target: TargetConfig, adapter: Adapter, health_url: str | None) -> None:
        self.target = target
        self.adapter = adapter
        self.health_url = health_url
        # Several monitors may probe one room: a random sender id keeps their markers apart.
        self.sender = random.randrange(1, 2**31)
        self._counter = 0

    def token(self, role: str) -> str | None:
        t = self.target
        explicit = {"tx": t.sender_token, "rx": t.receiver_token, "held": t.held_token}[role]
        if explicit:
            return explicit
        if t.jwt_secret:
            claims = {"sub": USERS[role], "exp": int(time.time()) + 3600}
            return jwt.encode(claims, t.jwt_secret, algorithm="HS256")
        return None

    async def open(
        self, role: str, adapter: Adapter | None = None, **kwargs: object
    ) -> ProbeConnection:
        """A connection of ``role``, with its own ``adapter`` (default: a fresh one)."""
        return await ProbeConnection.open(
            adapter or self.adapter.connection(),
            self.target.url,
            USERS[role],
            self.token(role),
            self.target.headers,
            **kwargs,  # type: ignore[arg-type]
        )

    def _next_counter(self) -> int:
        self._counter += 1
        return self._counter

    async def connect(self) -> tuple[float, float | None]:
        started = time.perf_counter()
        conn = await self.open("tx")
        elapsed = (time.perf_counter() - started) * 1000.0
        await conn.close()
        return elapsed, None

    async def delivery(self) -> tuple[float, float | None]:
        rx, tx = await together(self.open("rx"), self.open("tx"))
        try:
            room = self.target.room
            await together(rx.join(room), tx.join(room))
            if tx.adapter.confirms_join:
                return await self._send_and_receive(rx, tx, room)
            # The server never confirms a join (GraphQL subscriptions, some JSON servers):
            # the first send may reach the server before the receiver's subscription is in
            # place. Send again every RESEND_S until one arrives; the probe's own timeout
            # still fails a server that delivers nothing. Latency counts from the send
            # whose copy arrived.
            while True:
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(RESEND_S):
                        return await self._send_and_receive(rx, tx, room)
        finally:
            await together(rx.close(), tx.close())

    async def _send_and_receive(
        self, rx: ProbeConnection, tx: ProbeConnection, room: str
    ) -> tuple[float, float | None]:
        """One marked message from ``tx`` into ``room``; ``rx`` must get it (and ``tx`` its
        ack, when the protocol acks): (send -> receipt ms, None)."""
        counter = self._next_counter()
        req = tx.next_id()
        sched = now_ns()
        await tx.send(tx.adapter.send(room, marker(self.sender, 0, counter, sched), req))
        received_ns = 0

        async def receive() -> None:
            nonlocal received_ns
            await rx.expect(
                lambda e: (
                    isinstance(e, Delivery) and e.sender == self.sender and e.counter == counter
                ),
                "deliver",
            )
            received_ns = now_ns()

        waits: list[Coroutine[Any, Any, object]] = [receive()]
        if Feature.ACK in self.adapter.features:
            waits.append(tx.expect(lambda e: isinstance(e, Ack) and e.req_id == req, "ack", req))
        await together(*waits)
        mark_span(sched, received_ns)
        return (received_ns - sched) / 1e6, None

    async def echo(self) -> tuple[float, float | None]:
        conn = await self.open("tx")
        try:
            counter = self._next_counter()
            req = conn.next_id()
            sched = now_ns()
            await conn.send(conn.adapter.ping(marker(self.sender, 0, counter, sched), req))
            await conn.expect(
                lambda e: (
                    isinstance(e, Delivery) and e.sender == self.sender and e.counter == counter
                ),
                "echo",
                req,
            )
            received_ns = now_ns()
            mark_span(sched, received_ns)
            return (received_ns - sched) / 1e6, None
        finally:
            await conn.close()

    async def health(self) -> tuple[float, float | None]:
        assert self.health_url is not None
        started = time.perf_counter()
        status, body = await http_get(self.health_url)
        elapsed = (time.perf_counter() - started) * 1000.0
        if status != 200:
            raise ProbeFailure(f"http_{status}", f"{self.health_url} answered {status}")
        return elapsed, connections_from_health(body)

    async def metrics(self) -> tuple[float, float | None]:
        found = default_metrics(self.target)
        assert found is not None
        url, metric = found
        started = time.perf_counter()
        status, body = await http_get(url, self.target.metrics_token)
        elapsed = (time.perf_counter() - started) * 1000.0
        if status != 200:
            raise ProbeFailure(f"http_{status}", f"{url} answered {status}")
        value = metric_sum(body.decode("utf-8", "replace"), metric)
        if value is None:
            raise ProbeFailure("no_metric", f"{url} has no {metric}")
        return elapsed, value


def connections_from_health(body: bytes) -> float | None:
    """``connections`` of a health JSON: a number, or an object with open/current/total."""
    try:
        doc = msgspec.json.decode(body)
    except msgspec.DecodeError:
        return None
    value = doc.get("connections") if isinstance(doc, dict) else None
    if isinstance(value, dict):
        value = next((value[k] for k in ("open", "current", "total") if k in value), None)
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        return None
    return float(value)


def metric_sum(text: str, name: str) -> float | None:
    """Sum of every sample of metric ``name`` (family or sample name) in Prometheus text."""
    total: float | None = None
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name or (
                family.name == name and sample.name in (name, f"{name}_total")
            ):
                total = (total or 0.0) + sample.value
    return total
