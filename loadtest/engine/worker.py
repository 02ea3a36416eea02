"""A worker process: opens its share of the connections, sends on the clock, counts every fate.

Run as ``python -m loadtest.engine.worker`` by the coordinator, talking over stdin/stdout
(``loadtest.engine.wire``). Sockets are picows on uvloop: the fastest client measured on
this machine (ANCHORS.md: ~97,000 msgs per CPU-second, 3-4x Locust or Artillery).

Phases: connect (ramped, bounded concurrency) -> Ready -> wait for Go (every connection of
the run is up and joined, so each message's expected recipients are known exactly) ->
open-loop Poisson sends until the end time (or, for connect, hold with heartbeat probes)
-> SendDone -> keep receiving while the coordinator drains -> Finish -> close -> Final.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import ipaddress
import logging
import math
import os
import random
import resource
import sys
import time
from collections import Counter
from urllib.parse import urlparse

import psutil
from picows import WSCloseCode, WSListener, WSMsgType, ws_connect

from loadtest.adapters import (
    Ack,
    Delivery,
    Feature,
    Notice,
    Ready,
    Rejected,
    Reply,
    make_adapter,
    marker,
)
from loadtest.client.policy import ReconnectPolicy
from loadtest.client.reconnect import ClientSession, Recovery
from loadtest.engine import wire
from loadtest.engine.failures import classify
from loadtest.engine.recovery import Reconnector, new_liveness
from loadtest.engine.schedule import OpenLoop
from loadtest.ledger import Arrival, RecipientLedger
from loadtest.plan import PROBE_STREAM, Plan, compose, receipt
from loadtest.scenarios import Kind
from loadtest.session import ITEM_KINDS, SeqOrder
from rtbench.histogram import LatencyHistogram

COUNTERS = (
    "attempted",
    "opened",
    "failed",
    "ready",
    "closed",
    "sent",
    "acked",
    "rejected",
    "expected",
    "delivered",
    "duplicated",  # arrived again on the wire (before the client's seq dedupe)
    "dup_after_dedupe",  # arrived again and got past the dedupe
    "out_of_order",
    "errors",
    "send_skipped",
    "typing_sent",
    "receipts_sent",
    "probes_sent",
    "probes_answered",
    "bytes_sent",
    "bytes_received",
    "unacked",
    # recovery (loadtest.engine.recovery)
    "reconnects",
    "reconnect_attempts",
    "retried",
    "deduped",
    "pings_sent",
    "heartbeat_dead",
    "gave_up",
)
PENDING_LIMIT = 4096
"""Sends awaiting an ack per connection; beyond it the oldest is forgotten (``unacked``)."""
SOURCE_ADDRESS_SPAN = 25_000
"""Connections per loopback source address (about 28,000 ephemeral ports each here)."""
LAG_PERIOD_S = 0.05
PROBE_TICK_NS = 10_000_000
"""Heartbeat probes go out in batches this far apart, spread over the heartbeat interval."""
_TEXT = WSMsgType.TEXT
_BINARY = WSMsgType.BINARY
_CLOSE = WSMsgType.CLOSE
_CHATS = (Kind.CHAT, Kind.SOAK)


class Conn(WSListener):
    """One client connection: picows listener plus its sans-IO state."""

    def __init__(self, worker: Worker, index: int) -> None:
        self.w = worker
        self.index = index
        self.user = worker.plan.user(index)
        self.transport = None
        self.is_open = False
        self.ready = False  # set up once: part of the run
        self.live = False  # open and every room subscribed: sends go out now
        self.setup: asyncio.Future[None] | None = None
        self.want_welcome = False
        self.wait_rooms = True  # setup completes when every room answered (False: at welcome)
        # seqs, resume map, request ids and the outbox of unacked sends (req id ->
        # (payload, (stream, scheduled ns))): the shared client library
        self.session = ClientSession(worker.policy, worker.rng)
        self.ledger = RecipientLedger()
        self.counters: dict[int, int] = {}  # stream -> last counter sent
        self.close_code: int | None = None
        self.probe_round = 0
        self.liveness = new_liveness()
        self.lost_cause = ""  # why we cut it ourselves (heartbeat), when we did
        self.recovering: asyncio.Task[None] | None = None

    # -- picows callbacks --------------------------------------------------------------------------

    def on_ws_connected(self, transport) -> None:  # type: ignore[no-untyped-def]
        self.transport = transport

    def on_ws_frame(self, transport, frame) -> None:  # type: ignore[no-untyped-def]
        kind = frame.msg_type
        if kind is _TEXT or kind is _BINARY:
            self.w.on_payload(self, frame.get_payload_as_bytes())
            return
        self.liveness.last_rx_ns = time.monotonic_ns()  # a pong (or ping) says it is alive
        if kind is _CLOSE:
            code = frame.get_close_code()
            self.close_code = int(getattr(code, "value", code))
            transport.send_close(WSCloseCode.OK)
            transport.disconnect()

    def on_ws_disconnected(self, transport) -> None:  # type: ignore[no-untyped-def]
        self.w.on_closed(self)

    # -- sending -----------------------------------------------------------------------------------

    def send(self, payload: bytes) -> None:
        self.transport.send(self.w.msg_type, payload)
        self.w.c["bytes_sent"] += len(payload)

    def req(self) -> int:
        """A request id unique to this client for the whole run, across reconnects."""
        return self.session.new_id()


class Worker:
    """Everything one process does in a run; driven by the coordinator's messages."""

    def __init__(self, start: wire.Start, emit: callable) -> None:
        self.start = start
        self.scenario = start.scenario
        self.plan = Plan(start.scenario, start.tag)
        self.adapter = make_adapter(start.scenario.protocol, start.scenario.protocol_options)
        self.msg_type = _BINARY if self.adapter.binary else _TEXT
        self.emit = emit
        self.t0 = start.t0_ns
        self.c: dict[str, int] = dict.fromkeys(COUNTERS, 0)
        self.rng = random.Random(
            None if self.scenario.seed is None else self.scenario.seed * 1000 + start.worker
        )
        self.policy = start.scenario.reconnect or ReconnectPolicy(outbox=PENDING_LIMIT)
        self.conns: list[Conn] = [Conn(self, i) for i in self.plan.local(start.worker)]
        self._name_dm_rooms()
        self.open_now = 0
        self.recipients: dict[int, int] = {}
        self.failures: Counter[str] = Counter()
        self.closes: Counter[str] = Counter()
        self.errors: Counter[str] = Counter()
        self.events: Counter[str] = Counter()
        self.sent_by_s: Counter[int] = Counter()
        self.expected_by_s: Counter[int] = Counter()
        self.delivered_by_s: Counter[int] = Counter()
        self.hist = {
            name: LatencyHistogram()
            for name in ("delivery", "ack", "handshake", "send_lag", "heartbeat", "setup")
        }
        self.second_hist = LatencyHistogram()
        self.measuring = False
        self.cpu_samples: list[float] = []
        self.lag_samples: list[float] = []
        self.rss_max = 0
        self.lag_worst_ms = 0.0
        self.held = 0
        self.evicted = 0
        self.last_tick = 0
        self.proc = psutil.Process()
        self.notes: list[str] = []
        self.tasks: set[asyncio.Task] = set()
        self.draining = False
        self.url = start.url
        self.send_lag = self.hist["send_lag"]
        # soak windows, and the losses around each fault, need send-time tallies
        self.by_second = start.scenario.scenario is Kind.SOAK or bool(start.scenario.faults)
        self.reconnector = (
            Reconnector(self, start.scenario.reconnect) if start.scenario.reconnect else None
        )
        self.ontime_ns = int(start.ontime_ms * 1e6) if start.ontime_ms else 0
        self.ontime_by_ds: Counter[int] = Counter()
        self.track_acks = (
            start.scenario.scenario is not Kind.RTT and Feature.ACK in self.adapter.features
        )
        self.queue_while_down = self.reconnector is not None and self.track_acks
        # chat's read receipts: skip their per-send call when the scenario has none
        self.receipts = bool(start.scenario.receipt_share) and start.scenario.scenario in _CHATS
        self.closed_loop = start.scenario.closed_loop
        self.own_replies = start.scenario.scenario is Kind.RTT  # rtt: the reply is the delivery
        self.end_ns = 0
        self.local_addr_for = self._source_addresses(start.url)

    # -- receive path (hot) ------------------------------------------------------------------

    def on_payload(self, conn: Conn, payload: bytes) -> None:
        now = time.monotonic_ns()
        conn.liveness.last_rx_ns = now
        c = self.c
        c["bytes_received"] += len(payload)
        event = self.adapter.parse(payload)
        kind = type(event)
        if kind is Delivery:
            if event.stream == PROBE_STREAM:
                if event.counter == conn.probe_round:
                    c["probes_answered"] += 1
                    conn.probe_round = -conn.probe_round
                    self.hist["heartbeat"].record_us((now - event.sched_ns) // 1000)
                return
            has_seq = event.seq is not None and event.room is not None
            own = event.sender == conn.index and not self.own_replies
            if has_seq and conn.session.item(event.room, event.seq) is SeqOrder.OLD:
                # seen before by seq: the client drops it, but the server did send it
                # again, and ``duplicated`` counts what arrived twice on the wire
                c["deduped"] += 1
                if not own and conn.ledger.seen(event.stream, event.sender, event.counter):
                    c["duplicated"] += 1
                return
            if own:
                # many servers (Socket.IO's io.to(room)) broadcast to the sender too, and a
                # resume replays the client's own messages: nobody's expected delivery
                self.events["own_message"] += 1
                return
            # fast path of RecipientLedger.arrive: the next counter of a known stream
            state = conn.ledger.streams.get((event.stream, event.sender))
            if state is not None and event.counter == state[0] + 1:
                state[0] = event.counter
                arrival = Arrival.NEW
            else:
                arrival = conn.ledger.arrive(event.stream, event.sender, event.counter)
            if arrival is Arrival.DUPLICATE:
                c["duplicated"] += 1
                c["dup_after_dedupe"] += 1  # got past the seq dedupe: the app sees it twice
            else:
                if arrival is Arrival.LATE:
                    c["out_of_order"] += 1
                c["delivered"] += 1
                latency_ns = now - event.sched_ns
                self.second_hist.record_us(latency_ns // 1000)
                if self.by_second:
                    self.delivered_by_s[(event.sched_ns - self.t0) // 1_000_000_000] += 1
                if self.ontime_ns and latency_ns <= self.ontime_ns:
                    self.ontime_by_ds[(now - self.t0) // 100_000_000] += 1
            if not has_seq and self.closed_loop and event.sender == conn.index:
                self._next_round_trip(conn, now)
        elif kind is Ack:
            found = conn.session.settle(event.req_id)
            if found is not None:
                c["acked"] += 1
                self.hist["ack"].record_us((now - found[1]) // 1000)
            if event.seq is not None and event.room is not None:
                conn.session.observe(event.room, event.seq)  # our own item: its seq is seen
        elif kind is Ready:
            session = conn.session
            if event.room is None:
                conn.want_welcome = False
                session.welcomed(now)
                settled = session.settled()
            else:
                settled = session.room_ready(event.room, event.seq)
            setup = conn.setup
            if (
                (settled or not conn.wait_rooms)
                and not conn.want_welcome
                and setup is not None
                and not setup.done()
            ):
                setup.set_result(None)
        elif kind is Rejected:
            c["errors"] += 1
            self.errors[event.code] += 1
            found = conn.session.settle(event.req_id) if event.req_id is not None else None
            if found is not None:
                c["rejected"] += 1
                lost_to = self.recipients.get(found[0], 0)
                c["expected"] -= lost_to
                if self.by_second:
                    self.expected_by_s[(found[1] - self.t0) // 1_000_000_000] -= lost_to
            elif conn.session.room_refused(event.code):
                # one resumed room refused (the others go on); recorded even when it
                # arrives with the welcome, before the setup waits for the rooms
                setup = conn.setup
                if (
                    setup is not None
                    and not setup.done()
                    and not conn.want_welcome
                    and conn.session.settled()
                ):
                    setup.set_result(None)
            elif conn.setup is not None and not conn.setup.done():
                conn.setup.set_exception(_SetupRejected(event.code))
        elif kind is Notice:
            self.events[event.kind] += 1
            if event.seq is not None and event.kind in ITEM_KINDS:  # not a receipt's read marker
                conn.session.observe(event.room, event.seq)
        elif kind is Reply:  # e.g. an Engine.IO pong: the server drops clients that are silent
            conn.send(event.payload)

    def on_closed(self, conn: Conn) -> None:
        conn.live = False
        if conn.is_open:
            conn.is_open = False
            self.open_now -= 1
            self.c["closed"] += 1
            self.closes[str(conn.close_code or 1006)] += 1
        if conn.setup is not None and not conn.setup.done():
            conn.setup.set_exception(_SetupClosed(conn.close_code or 1006))
        if self.reconnector is not None and conn.ready:
            self.reconnector.lost(conn)

    def opened(self, conn: Conn) -> None:
        """A (re)connection's upgrade succeeded."""
        conn.is_open = True
        self.open_now += 1
        conn.close_code = None
        conn.lost_cause = ""
        conn.liveness.reset(time.monotonic_ns())

    def rooms_of(self, conn: Conn) -> list[str]:
        return [self.plan.room_name(r) for r in self.plan.rooms_of(conn.index)]

    def _name_dm_rooms(self) -> None:
        """Tell each client its DM room, if the protocol names it: a client that was away
        when its partner's first DM created the room must still ask for its replay."""
        if not self.scenario.dm_share:
            return
        for conn in self.conns:
            partner = self.plan.partner(conn.index)
            room = (
                self.adapter.dm_room(conn.user, self.plan.user(partner))
                if partner is not None
                else None
            )
            if room is not None:
                conn.session.rooms.add(room)

    # -- connecting --------------------------------------------------------------------------------

    def _source_addresses(self, url: str):  # type: ignore[no-untyped-def]
        """Past ~28,000 connections to one address:port, spread over 127.0.0.2, .3, ..."""
        host = urlparse(url).hostname or ""
        try:
            loopback = (
                ipaddress.ip_address(host).version == 4 and ipaddress.ip_address(host).is_loopback
            )
        except ValueError:
            loopback = host == "localhost"
        if not loopback or self.plan.connections <= SOURCE_ADDRESS_SPAN:
            return lambda index: None
        return lambda index: (
            (f"127.0.0.{1 + index // SOURCE_ADDRESS_SPAN}", 0)
            if index >= SOURCE_ADDRESS_SPAN
            else None
        )

    async def connect_all(self) -> None:
        sc = self.scenario
        total = self.plan.connections
        ramp_ns = int((sc.ramp or 0) * 1e9)
        gate = asyncio.Semaphore(sc.connect_concurrency)
        t_start = time.monotonic_ns()
        opening: set[asyncio.Task] = set()
        for conn in self.conns:
            when = t_start + ramp_ns * conn.index // max(total, 1)
            delay = (when - time.monotonic_ns()) / 1e9
            if delay > 0:
                await asyncio.sleep(delay)
            await gate.acquire()
            task = asyncio.create_task(self._open(conn, gate))
            opening.add(task)
            task.add_done_callback(opening.discard)
        if opening:
            await asyncio.gather(*opening)

    async def _open(self, conn: Conn, gate: asyncio.Semaphore) -> None:
        sc = self.scenario
        c = self.c
        c["attempted"] += 1
        started = time.monotonic_ns()
        deadline = started + int(sc.connect_timeout * 1e9)
        token = self.plan.token(conn.index)
        kwargs = {}
        local = self.local_addr_for(conn.index)
        if local is not None:
            kwargs["local_addr"] = local
        try:
            try:
                await asyncio.wait_for(
                    ws_connect(
                        lambda: conn,
                        self.url,
                        websocket_handshake_timeout=sc.connect_timeout,
                        extra_headers=self.adapter.headers(conn.user, token),
                        max_redirects=0,
                        enable_auto_pong=True,
                        **kwargs,
                    ),
                    sc.connect_timeout,
                )
            except Exception as exc:  # every failure is counted by cause, none is fatal
                self._fail(conn, classify(exc, secure=self.url.startswith("wss:")))
                return
            finally:
                gate.release()
            self.opened(conn)
            c["opened"] += 1
            self.hist["handshake"].record_us((time.monotonic_ns() - started) // 1000)
            conn.setup = asyncio.get_running_loop().create_future()
            conn.want_welcome = self.adapter.expects_welcome
            frames, _ = conn.session.opening_frames(self.adapter, conn.user, token)
            for payload in frames:
                conn.send(payload)
            rooms = self.rooms_of(conn)
            if conn.want_welcome:
                await asyncio.wait_for(conn.setup, (deadline - time.monotonic_ns()) / 1e9)
                conn.setup = asyncio.get_running_loop().create_future()
            if self.adapter.confirms_join:
                conn.session.expect_rooms(rooms)
            for room in rooms:
                conn.send(self.adapter.join(room, conn.req()))
            if not conn.session.settled():
                await asyncio.wait_for(conn.setup, (deadline - time.monotonic_ns()) / 1e9)
            conn.setup = None
            conn.session.ready(time.monotonic_ns())
            conn.ready = True
            conn.live = True
            c["ready"] += 1
            self.hist["setup"].record_us((time.monotonic_ns() - started) // 1000)
        except _SetupRejected as exc:
            self._fail(conn, f"rejected_{exc.args[0]}", disconnect=True)
        except _SetupClosed as exc:
            self._fail(conn, f"closed_{exc.args[0]}")
        except TimeoutError:
            self._fail(conn, "timeout", disconnect=True)

    def _fail(self, conn: Conn, cause: str, disconnect: bool = False) -> None:
        self.c["failed"] += 1
        self.failures[cause] += 1
        conn.setup = None
        if disconnect and conn.transport is not None and conn.is_open:
            conn.transport.disconnect(graceful=False)

    def live_bitmap(self) -> bytes:
        out = bytearray((self.plan.connections + 7) // 8)
        for conn in self.conns:
            if conn.ready and conn.is_open:
                out[conn.index >> 3] |= 1 << (conn.index & 7)
        return bytes(out)

    # -- sending -----------------------------------------------------------------------------------

    async def send_schedule(self, start_ns: int, end_ns: int) -> None:
        """Open loop: one Poisson process per sender, merged; never waits for replies."""
        sc = self.scenario
        senders = [c for c in self.conns if self.plan.is_sender(c.index) and c.ready]
        if self.closed_loop:
            self.end_ns = end_ns
            await self._sleep_until(start_ns)
            for conn in senders:
                self._next_round_trip(conn, time.monotonic_ns())
            await self._sleep_until(end_ns)
            return
        if not senders or not sc.rate:
            await self._sleep_until(end_ns)
            return
        rate = sc.rate * len(senders)
        schedule = OpenLoop(self.send_one, senders, rate, self.rng, start_ns, end_ns)
        try:
            await schedule.done
        finally:
            schedule.close()

    def send_one(self, conn: Conn, when: int) -> None:
        """Send the message scheduled at ``when`` from ``conn`` (plus typing / receipt)."""
        c = self.c
        live = conn.live
        if not live and not (self.queue_while_down and conn.session.recovering):
            c["send_skipped"] += 1
            return
        req = conn.session.new_id()  # (conn.req(), inlined: this runs per message)
        out = compose(self.plan, self.adapter, self.rng, conn.index, conn.counters, when, req)
        stream, payload = out.stream, out.payload
        if live:
            if out.typing is not None:
                conn.send(out.typing)
                c["typing_sent"] += 1
            conn.transport.send(self.msg_type, payload)  # (conn.send, inlined)
            c["bytes_sent"] += len(payload)
            self.send_lag.record_us((time.monotonic_ns() - when) // 1000)
        # else: the connection is being recovered; the send waits in the outbox and goes
        # out (late, measured from ``when``) once every room has resumed
        expect = self.recipients.get(stream, 0)
        c["sent"] += 1
        c["expected"] += expect
        if self.by_second:
            second = (when - self.t0) // 1_000_000_000
            self.sent_by_s[second] += 1
            self.expected_by_s[second] += expect
        if self.track_acks and conn.session.track(req, payload, (stream, when)) is not None:
            self.evicted += 1
        if not self.receipts:
            return
        read = receipt(self.plan, self.adapter, self.rng, conn.index, conn.session.last_seq)
        if read is not None and live:
            conn.send(read)
            c["receipts_sent"] += 1

    def _next_round_trip(self, conn: Conn, now: int) -> None:
        """Closed-loop rtt: the reply to one request sends the next (until the end time)."""
        if now >= self.end_ns or not conn.is_open:
            return
        stream = conn.index
        counter = conn.counters.get(stream, 0) + 1
        conn.counters[stream] = counter
        text = marker(stream, stream, counter, now, self.scenario.message_bytes)
        conn.send(self.adapter.ping(text, conn.req()))
        c = self.c
        c["sent"] += 1
        c["expected"] += 1

    async def hold(self, start_ns: int, end_ns: int) -> None:
        """connect: hold every connection and probe each with a heartbeat round trip every
        ``heartbeat`` seconds, spread evenly over the interval: a burst of thousands of
        probes would measure the generator's own queueing, not the server."""
        interval_ns = int(self.scenario.heartbeat * 1e9)
        conns = [conn for conn in self.conns if conn.ready]
        round_start = start_ns
        while round_start + interval_ns <= end_ns:
            await self._probe_spread(conns, round_start, interval_ns)
            round_start += interval_ns
        await self._sleep_until(end_ns)
        # the last round decides "answering": every connection once more, then wait
        await self._probe_spread(conns, time.monotonic_ns(), min(interval_ns, 1_000_000_000))
        deadline = time.monotonic_ns() + int(min(10.0, self.scenario.connect_timeout) * 1e9)
        while time.monotonic_ns() < deadline:
            if all(conn.probe_round <= 0 for conn in conns if conn.is_open):
                break
            await asyncio.sleep(0.05)

    async def _probe_spread(self, conns: list[Conn], start_ns: int, span_ns: int) -> None:
        """Probe ``conns`` in small batches, one batch every ~10 ms across ``span_ns``."""
        batches = max(1, min(len(conns), span_ns // PROBE_TICK_NS))
        size = math.ceil(len(conns) / batches)
        for k in range(batches):
            when = start_ns + span_ns * k // batches
            await self._sleep_until(when)
            for conn in conns[k * size : (k + 1) * size]:
                if conn.is_open:
                    conn.probe_round = abs(conn.probe_round) + 1
                    text = marker(conn.index, PROBE_STREAM, conn.probe_round, when)
                    conn.send(self.adapter.ping(text, conn.req()))
                    self.c["probes_sent"] += 1

    async def _sleep_until(self, when_ns: int) -> None:
        delay = (when_ns - time.monotonic_ns()) / 1e9
        if delay > 0:
            await asyncio.sleep(delay)

    # -- self-watch and reporting ------------------------------------------------------------------

    def counters(self) -> dict[str, int]:
        return dict(self.c)

    async def watch(self) -> None:
        """Per second: a Tick with counters, the second's latency histogram, CPU and loop lag."""
        self.proc.cpu_percent(None)
        lag_task = asyncio.create_task(self._measure_lag())
        try:
            second = max(0, (time.monotonic_ns() - self.t0) // 1_000_000_000) + 1
            while True:
                await self._sleep_until(self.t0 + second * 1_000_000_000)
                self.tick(second)
                second += 1
        finally:
            lag_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await lag_task

    def tick(self, second: int) -> None:
        """Report one second (the last one may be partial: the run ended inside it)."""
        self.last_tick = second
        cpu = self.proc.cpu_percent(None)
        rss = self.proc.memory_info().rss
        self.rss_max = max(self.rss_max, rss)
        lag_ms, self.lag_worst_ms = self.lag_worst_ms, 0.0
        if self.measuring:
            self.cpu_samples.append(cpu)
            self.lag_samples.append(lag_ms)
        hist = self.second_hist
        self.second_hist = LatencyHistogram()
        self.hist["delivery"].merge(hist)
        self.emit(
            wire.Tick(
                second=second,
                counters=self.counters(),
                open_now=self.open_now,
                delivery_hdr=hist.encode() if hist.count else None,
                cpu_percent=cpu,
                loop_lag_ms=lag_ms,
                rss_bytes=rss,
            )
        )

    async def _measure_lag(self) -> None:
        while True:
            before = time.monotonic()
            await asyncio.sleep(LAG_PERIOD_S)
            lag_ms = max(0.0, (time.monotonic() - before - LAG_PERIOD_S) * 1000)
            if lag_ms > self.lag_worst_ms:
                self.lag_worst_ms = lag_ms

    async def drain_counts(self) -> None:
        """While the coordinator drains, report counters often so it stops as soon as done."""
        while True:
            await asyncio.sleep(0.1)
            self.emit(wire.Counts(counters=self.counters()))

    async def close_all(self) -> None:
        for conn in self.conns:
            if conn.is_open and conn.transport is not None:
                conn.is_open = False
                self.open_now -= 1
                conn.transport.send_close(WSCloseCode.OK)
                conn.transport.disconnect()
        waits = [
            conn.transport.wait_disconnected() for conn in self.conns if conn.transport is not None
        ]
        if waits:
            with contextlib.suppress(TimeoutError, asyncio.TimeoutError):
                await asyncio.wait_for(asyncio.gather(*waits, return_exceptions=True), 3.0)

    def final(self) -> wire.Final:
        self.hist["delivery"].merge(self.second_hist)
        self.second_hist = LatencyHistogram()
        overflow = sum(conn.ledger.gap_overflow for conn in self.conns)
        if overflow:
            self.notes.append(f"{overflow} gaps forgotten past the per-stream limit")
        answering = sum(1 for conn in self.conns if conn.probe_round < 0 and conn.ready)
        return wire.Final(
            counters=self.counters(),
            histograms={k: h.encode() for k, h in self.hist.items() if h.count},
            failures_by_cause=dict(self.failures),
            closes_by_code=dict(self.closes),
            errors_by_code=dict(self.errors),
            events_by_type=dict(self.events),
            sent_by_second=dict(self.sent_by_s),
            expected_by_second=dict(self.expected_by_s),
            delivered_by_second=dict(self.delivered_by_s),
            held=self.held,
            answering=answering,
            cpu_samples=self.cpu_samples,
            lag_samples=self.lag_samples,
            rss_max=self.rss_max,
            notes=self.notes,
            recoveries=self.recoveries(),
            ontime_by_ds=dict(self.ontime_by_ds),
        )

    def recoveries(self) -> list[Recovery]:
        """Every loss of the run; one still being recovered at the end never resumed."""
        out: list[Recovery] = []
        for conn in self.conns:
            out.extend(conn.session.records)
            if conn.session.current is not None:
                out.append(conn.session.current)
        return out

    # -- the run -----------------------------------------------------------------------------------

    async def run(self, inbox: asyncio.Queue) -> None:
        watcher = asyncio.create_task(self.watch())
        try:
            await self.connect_all()
            # Everything allocated so far (connections, their state) lives for the whole run:
            # keep it out of the cyclic GC, whose full passes over it stalled the loop for
            # milliseconds and showed up as latency at p99.
            gc.collect()
            gc.freeze()
            self.emit(wire.Ready(live=self.live_bitmap(), counters=self.counters()))
            go = await inbox.get()
            if isinstance(go, wire.Go):
                await self._measure(go, inbox)
            await _cancel(watcher)
            self.tick(self.last_tick + 1)  # the partial last second
            self.measuring = False
            await self._finish()
        finally:
            await _cancel(watcher)

    async def _measure(self, go: wire.Go, inbox: asyncio.Queue) -> None:
        """Send (or hold) from the go until the end time or a Finish, whichever comes first."""
        self.recipients = self.plan.recipients(go.live)
        end_ns = go.start_ns + int(self.scenario.duration * 1e9)
        # the measured phase starts now: what the ramp cost is not the generator's health
        self.lag_worst_ms = 0.0
        self.proc.cpu_percent(None)
        self.measuring = True
        if self.reconnector is not None:
            self.reconnector.start()
        if self.plan.kind is Kind.CONNECT:
            work = asyncio.create_task(self.hold(go.start_ns, end_ns))
        else:
            work = asyncio.create_task(self.send_schedule(go.start_ns, end_ns))
        finish = asyncio.create_task(inbox.get())
        done, _ = await asyncio.wait({work, finish}, return_when=asyncio.FIRST_COMPLETED)
        if work in done:
            work.result()
            self.held = sum(1 for conn in self.conns if conn.is_open and conn.ready)
            self.emit(wire.SendDone(held=self.held, counters=self.counters()))
            drainer = asyncio.create_task(self.drain_counts())
            try:
                await finish
            finally:
                await _cancel(drainer)
        else:
            await _cancel(work)
            self.held = sum(1 for conn in self.conns if conn.is_open and conn.ready)

    async def _finish(self) -> None:
        if self.reconnector is not None:
            await self.reconnector.stop()  # closing now: nobody comes back
            failed = self.reconnector.failures
            if failed:
                causes = ", ".join(f"{n} {cause}" for cause, n in failed.most_common(4))
                self.notes.append(f"reconnect attempts that failed (and were retried): {causes}")
        unacked = sum(len(conn.session.outbox) for conn in self.conns) + self.evicted
        await self.close_all()
        self.c["unacked"] = unacked
        self.emit(self.final())


async def _cancel(task: asyncio.Task | None) -> None:
    if task is not None and not task.done():
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


class _SetupRejected(Exception):
    """The server answered hello or join with an error frame."""


class _SetupClosed(Exception):
    """The server closed the connection before hello and joins completed."""


# -- process entry point -----------------------------------------------------------------------


def _raise_fd_limit() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


async def _main(channel_out: int) -> None:
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader(limit=2**24)
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin.buffer)
    out = os.fdopen(channel_out, "wb", buffering=0)
    w_transport, _ = await loop.connect_write_pipe(asyncio.Protocol, out)

    def emit(message) -> None:  # type: ignore[no-untyped-def]
        w_transport.write(wire.frame(message))

    emit(wire.Booted(pid=os.getpid()))
    start = await wire.read_message(reader, to_worker=True)
    if not isinstance(start, wire.Start):
        return
    inbox: asyncio.Queue = asyncio.Queue(maxsize=8)

    async def pump() -> None:
        while True:
            message = await wire.read_message(reader, to_worker=True)
            if message is None:
                await inbox.put(wire.Finish())
                return
            await inbox.put(message)

    pumper = asyncio.create_task(pump())
    try:
        worker = Worker(start, emit)
        await worker.run(inbox)
    except Exception as exc:
        emit(wire.Fatal(message=f"{type(exc).__name__}: {exc}"))
        raise
    finally:
        pumper.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await pumper
        # let the last frames reach the coordinator before the process ends
        deadline = time.monotonic() + 5.0
        while w_transport.get_write_buffer_size() and time.monotonic() < deadline:  # noqa: ASYNC110
            await asyncio.sleep(0.01)
        w_transport.close()


def main() -> None:
    """Worker process: messages on fd 0 and a private fd; stray prints go to stderr."""
    _raise_fd_limit()
    # Failed handshakes are counted by cause in the results; asyncio's own log lines about
    # them (one per connection, with uvloop's broken tracebacks) would only bury the summary.
    logging.getLogger("asyncio").setLevel(logging.CRITICAL)
    channel_out = os.dup(1)
    os.dup2(2, 1)
    try:
        import uvloop

        uvloop.run(_main(channel_out))
    except ImportError:  # pragma: no cover - uvloop is a dependency on Linux
        asyncio.run(_main(channel_out))
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
