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
import os
import random
import resource
import sys
import time
from array import array
from collections.abc import Callable, Coroutine
from typing import Any, cast
from urllib.parse import urlparse

from picows import WSCloseCode, WSFrame, WSListener, WSMsgType, WSTransport, ws_connect

from loadtest.adapters import (
    Ack,
    Delivery,
    EchoAdapter,
    Event,
    Feature,
    Notice,
    Ready,
    Rejected,
    Reply,
    make_adapter,
    marker,
)
from loadtest.adapters.base import MARKER_PREFIX, upgrade_headers
from loadtest.client.policy import ReconnectPolicy
from loadtest.client.reconnect import ClientSession, Recovery
from loadtest.client.setup import SessionSetup, SetupClosed, SetupError, Step
from loadtest.delay import meter as delay_meter
from loadtest.engine import wire
from loadtest.engine.failures import classify
from loadtest.engine.httplanes import HttpLanes
from loadtest.engine.recovery import Reconnector, new_liveness
from loadtest.engine.schedule import OpenLoop
from loadtest.ledger import RecipientLedger
from loadtest.plan import PROBE_STREAM, Plan, spread
from loadtest.scenarios import Kind
from loadtest.session import ITEM_KINDS
from loadtest.tally import COUNTERS, Tally

__all__ = ["COUNTERS", "Worker"]  # COUNTERS: still importable from here

SOURCE_ADDRESS_SPAN = 25_000
"""Connections per loopback source address (about 28,000 ephemeral ports each here)."""
_TEXT = WSMsgType.TEXT
_BINARY = WSMsgType.BINARY
_CLOSE = WSMsgType.CLOSE
_MARKER_B = MARKER_PREFIX.encode()


class Conn(WSListener):
    """One client connection: picows listener plus its sans-IO state."""

    in_run = True  # every delivery counts here (the coordinator knows who was live)

    def __init__(self, worker: Worker, index: int) -> None:
        self.w = worker
        self.index = index
        self.user = worker.plan.user(index)
        self.adapter = worker.adapter.connection()  # per-connection protocol state, if any
        if worker.http:
            self.adapter.bind(worker.start.url)
        self.transport: WSTransport | None = None
        self.is_open = False
        self.ready = False  # set up once: part of the run
        self.live = False  # open and every room subscribed: sends go out now
        # seqs, resume map, request ids and the outbox of unacked sends (req id ->
        # (payload, (stream, scheduled ns))): the shared client library
        self.session = ClientSession(worker.policy, worker.rng)
        self.rng = worker.rng  # the process's draws (``Tally.scheduled``): seeded, one order
        # hello, welcome, rooms resumed or joined, backlog: the shared setup steps
        self.setup = SessionSetup(self.session, self.adapter, self.user, worker.rooms_of(self))
        self.waking: asyncio.Future[None] | None = None  # a setup wait in progress
        self.ledger = RecipientLedger()
        self.counters: dict[int, int] = {}  # stream -> last counter sent
        self.close_code: int | None = None
        self.probe_round = 0
        self.liveness = new_liveness()
        self.lost_cause = ""  # why we cut it ourselves (heartbeat), when we did
        self.recovering: asyncio.Task[None] | None = None

    # -- picows callbacks --------------------------------------------------------------------------

    def on_ws_connected(self, transport: WSTransport) -> None:
        self.transport = transport

    def on_ws_frame(self, transport: WSTransport, frame: WSFrame) -> None:
        kind = frame.msg_type
        if kind is _TEXT or kind is _BINARY:
            self.w.on_payload(self, frame.get_payload_as_bytes())
            return
        self.liveness.last_rx_ns = time.monotonic_ns()  # a pong (or ping) says it is alive
        if kind is _CLOSE:
            code: Any = frame.get_close_code()  # a WSCloseCode, or an int it does not name
            self.close_code = int(getattr(code, "value", code))
            transport.send_close(WSCloseCode.OK)
            transport.disconnect()

    def on_ws_disconnected(self, transport: WSTransport) -> None:
        self.w.on_closed(self)

    # -- sending -----------------------------------------------------------------------------------

    def send(self, payload: bytes) -> None:
        transport = self.transport
        assert transport is not None  # (sent only on an open connection)
        transport.send(self.w.msg_type, payload)
        self.w.c["bytes_sent"] += len(payload)

    def req(self) -> int:
        """A request id unique to this client for the whole run, across reconnects."""
        return self.session.new_id()

    # -- the setup wait (loadtest.tally.Peer) --------------------------------------------------

    def wake(self) -> None:
        """The setup machine moved: end ``settle``'s wait, which looks again."""
        waking = self.waking
        if waking is not None and not waking.done():
            waking.set_result(None)

    async def settle(self, until: Step) -> None:
        """Move the setup's frames until it reaches ``until`` (``Step.ROOMS``: welcomed;
        ``Step.READY``); raises its ``SetupError``. Waits only: the machine decides."""
        setup = self.setup
        loop = asyncio.get_running_loop()
        while True:
            self.waking = loop.create_future()  # (before the sends: an answer may come)
            for payload in setup.take():
                self.send(payload)
            setup.check()
            if setup.step >= until:
                self.waking = None
                return
            try:
                async with asyncio.timeout(setup.wait_s(time.monotonic_ns())):
                    await self.waking
            except TimeoutError:
                setup.expire(time.monotonic_ns())
            finally:
                self.waking = None


class EchoConn(Conn):
    """A connection of an open-loop rtt run against a plain echo server (the fast path).

    The echo of a send is its payload byte for byte, and an echo server answers in order:
    so a frame equal to the oldest send still awaiting its echo (``expect``) *is* that
    message (sender, stream, counter and stamp all match) and needs no parsing. Anything
    else (out of order, a duplicate, a second send in flight, junk) takes the full path.
    """

    expect: bytes | None = None  # the oldest send still awaiting its echo, byte for byte
    expect_n = 0  # its counter
    expect_sched = 0  # its stamp (what its latency is counted from)
    # set at the go by ``Worker.prepare_echo``: the marker's head, the last counter sent,
    # the expected recipients per send, and the ledger's state of its own stream
    head = ""
    sent_n = 0
    fan = 0
    own: list[Any] = []  # (a placeholder until the go: [highest counter, gaps])

    def on_ws_frame(self, transport: WSTransport, frame: WSFrame) -> None:
        kind = frame.msg_type
        if kind is _TEXT or kind is _BINARY:
            payload = frame.get_payload_as_bytes()
            if payload == self.expect:
                self.w.on_echo(self, payload)
            else:
                self.w.on_payload(self, payload)
            return
        Conn.on_ws_frame(self, transport, frame)


class Worker(Tally):
    """Everything one process does in a run; driven by the coordinator's messages."""

    def __init__(self, start: wire.Start, emit: Callable[[Any], None]) -> None:
        self.start = start
        self.scenario = start.scenario
        self.plan = Plan(start.scenario, start.tag)
        self.adapter = make_adapter(start.scenario.protocol, start.scenario.protocol_options)
        self.msg_type = _BINARY if self.adapter.binary else _TEXT
        self.http = self.adapter.transport == "http"  # two TCP lanes, no WebSocket (SSE)
        self.emit = emit
        Tally.__init__(
            self,
            start.t0_ns,
            plan=self.plan,
            # soak windows, and the losses around each fault, need send-time tallies
            by_second=start.scenario.scenario is Kind.SOAK or bool(start.scenario.faults),
            own_replies=start.scenario.scenario is Kind.RTT,  # rtt: the reply is the delivery
            ontime_ns=int(start.ontime_ms * 1e6) if start.ontime_ms else 0,
        )
        self.rng = random.Random(
            None if self.scenario.seed is None else self.scenario.seed * 1000 + start.worker
        )
        self.live_export = start.live
        self.recoveries_seen: dict[int, int] = {}  # live export: conn index -> records sent
        self.policy = start.scenario.reconnect or ReconnectPolicy()
        # echo, open-loop rtt, nothing that stamps per second or recovers: sends and
        # their echoes take the fast path (``send_echo``, ``EchoConn``, ``on_echo``)
        self.echo_rtt = (
            type(self.adapter) is EchoAdapter
            and start.scenario.scenario is Kind.RTT
            and not start.scenario.closed_loop
            and not start.scenario.reconnect
            and not self.by_second
            and not self.ontime_ns
        )
        conn_type = EchoConn if self.echo_rtt else Conn
        self.conns: list[Conn] = [conn_type(self, i) for i in self.plan.local(start.worker)]
        self._name_dm_rooms()
        self.open_now = 0
        self.held = 0
        self.last_tick = 0
        self.tasks: set[asyncio.Task] = set()
        self.draining = False
        self.url = start.url
        # the fast path's latencies (us), appended raw and folded into the HDR histogram
        # once a second (``_fold``): one C call per value instead of a Python one (its
        # send lags go to the tally's ``lag_us`` likewise)
        self.rtt_us: array[int] = array("q")
        self.message_bytes = start.scenario.message_bytes
        self.reconnector = (
            Reconnector(self, start.scenario.reconnect) if start.scenario.reconnect else None
        )
        self.track_acks = (
            start.scenario.scenario is not Kind.RTT and Feature.ACK in self.adapter.features
        )
        self.queue_while_down = self.reconnector is not None and self.track_acks
        # echo: every frame is a bare marker, parsed in place (``on_payload``'s fast path)
        self.raw_markers = type(self.adapter) is EchoAdapter
        self.local_addr_for = self._source_addresses(start.url)

    # -- receive path (hot) ------------------------------------------------------------------

    def on_payload(self, conn: Conn, payload: bytes) -> None:
        now = time.monotonic_ns()
        conn.liveness.last_rx_ns = now
        c = self.c
        c["bytes_received"] += len(payload)
        if self.raw_markers and payload.startswith(_MARKER_B):
            # Fast path (echo: the frame is the marker itself). One parse instead of the
            # adapter's event plus a type dispatch; the common case, the next counter of a
            # known stream that is not a probe nor one's own, is counted right here.
            end = payload.find(b" ", 5)
            event: Event | list[Event] | None
            try:
                sender_b, stream_b, counter_b, sched_b = (
                    payload[5:end] if end > 0 else payload[5:]
                ).split(b".")
                sender, stream, counter = int(sender_b), int(stream_b), int(counter_b)
                sched = int(sched_b)
            except ValueError:
                event = Notice("unmarked")  # what EchoAdapter.parse makes of it
            else:
                if stream != PROBE_STREAM and (self.own_replies or sender != conn.index):
                    state = conn.ledger.streams.get((stream, sender))
                    if state is not None and counter == state[0] + 1:
                        state[0] = counter
                        self.delivered(sched, now)
                        # ``Tally.answers`` for this case, with no event built: a first
                        # arrival (the next counter) of a bare marker, never a room's item
                        if self.closed_loop and sender == conn.index:
                            self._next_round_trip(conn, now)
                        return
                event = Delivery(sender, stream, counter, sched)
        else:
            event = conn.adapter.parse(payload)
            if type(event) is list:  # a frame that carries several packets (MQTT)
                for one in event:
                    self.on_event(conn, one, now)
                return
        if event is not None:
            self.on_event(conn, event, now)  # type: ignore[arg-type]  # (not a list: above)

    def on_reply(self, conn: Conn, payload: bytes) -> None:
        """Bytes of an HTTP client's request lane (``Adapter.transport == "http"``)."""
        now = time.monotonic_ns()
        self.c["bytes_received"] += len(payload)
        parsed = conn.adapter.parse_reply(payload)
        for event in parsed if isinstance(parsed, list) else (parsed,):
            if event is not None:
                self.on_event(conn, event, now)

    def on_event(self, conn: Conn, event: Event, now: int) -> None:
        """Account one event of a received frame (``type(event) is``: what narrows it)."""
        if type(event) is Delivery:
            if self.answers(conn, event, self.delivery(conn, event, now)):
                self._next_round_trip(conn, now)
        elif type(event) is Ack:
            self.ack(conn, event, now)
        elif type(event) is Ready:
            self.ready(conn, event, now)
        elif type(event) is Rejected:
            if not self.rejected(conn, event):
                self.refused_setup(conn, event.code)
        elif type(event) is Notice:
            self.events[event.kind] += 1
            room, seq = event.room, event.seq
            # a receipt's seq is a read marker, not an item of the room
            if seq is not None and room is not None and event.kind in ITEM_KINDS:
                conn.session.item(room, seq)
        elif type(event) is Reply and conn.is_open:  # e.g. an Engine.IO pong, an MQTT PUBACK
            conn.send(event.payload)

    def on_echo(self, conn: EchoConn, payload: bytes) -> None:
        """The echo of ``conn.expect``, the oldest send awaiting one (``EchoConn``)."""
        now = time.monotonic_ns()
        conn.expect = None
        state = conn.own
        counter = conn.expect_n
        if state[0] != counter - 1:  # not the next of its stream: the full accounting
            self.on_payload(conn, payload)
            return
        state[0] = counter
        self.rtt_us.append((now - conn.expect_sched) // 1000)
        c = self.c
        c["delivered"] += 1
        c["bytes_received"] += len(payload)

    def _fold(self) -> None:
        """Move the fast path's raw latencies into their HDR histograms."""
        if self.rtt_us:
            self.second_hist.record_many_us(self.rtt_us)
            del self.rtt_us[:]
        self.fold_lag()

    def on_closed(self, conn: Conn) -> None:
        conn.live = False
        if conn.is_open:
            conn.is_open = False
            self.open_now -= 1
            self.c["closed"] += 1
            self.closes[str(conn.close_code or 1006)] += 1
        if conn.setup.closed(conn.close_code or 1006):
            conn.wake()
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

    def _source_addresses(self, url: str) -> Callable[[int], tuple[str, int] | None]:
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

    def dial(self, conn: Conn, token: str, timeout: float) -> Coroutine[Any, Any, object]:
        """TCP connect and WebSocket upgrade for ``conn`` (the ramp and every reconnect).

        On uvloop's own TCP transport, not aiofastnet (picows' default when installed):
        a connect costs the generator 86 instead of 143 us of CPU (3,000 connects to the
        Node ws echo peer, medians of 4; reports/recovery.md), and at 10,000 x 1 msg/s the
        steady state was no worse (6 of 7 alternating pairs ~1 point of a core lower).
        """
        kwargs: dict[str, Any] = {}
        local = self.local_addr_for(conn.index)
        if self.http:
            return HttpLanes(self, conn, self.url, local).connect()
        if local is not None:
            kwargs["local_addr"] = local
        return ws_connect(
            lambda: conn,
            self.url,
            websocket_handshake_timeout=timeout,
            extra_headers=upgrade_headers(conn.adapter, conn.user, token),
            max_redirects=0,
            enable_auto_pong=True,
            use_aiofastnet=False,
            **kwargs,
        )

    async def _open(self, conn: Conn, gate: asyncio.Semaphore) -> None:
        sc = self.scenario
        c = self.c
        c["attempted"] += 1
        started = time.monotonic_ns()
        token = self.plan.token(conn.index)
        setup = conn.setup
        # before the upgrade: a server that welcomes first (Action Cable, Pusher) may have
        # its welcome in the same read as the 101, handled before ``dial`` returns
        setup.begin(started, sc.connect_timeout)
        try:
            try:
                await asyncio.wait_for(
                    self.dial(conn, token, sc.connect_timeout), sc.connect_timeout
                )
            except Exception as exc:  # every failure is counted by cause, none is fatal
                setup.abandon()
                self._fail(conn, classify(exc, secure=self.url.startswith("wss:")))
                return
            finally:
                gate.release()
            self.opened(conn)
            c["opened"] += 1
            self.hist["handshake"].record_us((time.monotonic_ns() - started) // 1000)
            setup.upgraded(time.monotonic_ns(), token)
            await conn.settle(Step.READY)
            setup.finish(time.monotonic_ns())  # (a first connect has no backlog)
            conn.ready = True
            conn.live = True
            c["ready"] += 1
            self.hist["setup"].record_us((time.monotonic_ns() - started) // 1000)
        except SetupError as exc:  # a close ended it already; a refusal or timeout: end it
            self._fail(conn, exc.cause, disconnect=type(exc) is not SetupClosed)

    def _fail(self, conn: Conn, cause: str, disconnect: bool = False) -> None:
        self.c["failed"] += 1
        self.failures[cause] += 1
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
        send: Callable[[Any, int], None] = self.send_one
        if self.echo_rtt:  # (then every connection is an EchoConn)
            send = self.send_echo
            self.prepare_echo(cast(list[EchoConn], senders))
        schedule = OpenLoop(send, senders, rate, self.rng, start_ns, end_ns)
        try:
            await schedule.done
        finally:
            schedule.close()

    def send_one(self, conn: Conn, when: int) -> None:
        """Send the message scheduled at ``when`` from ``conn`` (plus typing / receipt).
        The tally decides and counts (``Tally.scheduled``, ``Tally.went``); this only
        moves the bytes (a picows send does not fail: every frame went)."""
        out = self.scheduled(conn, when)
        if out is None:
            return  # skipped, or queued in the outbox while the connection is recovered
        if out.typing is not None:
            conn.send(out.typing)
        payload = out.payload
        transport = conn.transport
        assert transport is not None  # (live: open)
        transport.send(self.msg_type, payload)  # (conn.send, inlined: this runs per message)
        self.c["bytes_sent"] += len(payload)
        now = time.monotonic_ns()
        if out.read is not None:
            conn.send(out.read)
        self.went(out, when, now)

    def prepare_echo(self, senders: list[EchoConn]) -> None:
        """The fast path's per-connection state (once, at the go: recipients are known)."""
        for conn in senders:
            i = conn.index
            conn.head = f"{MARKER_PREFIX}{i}.{i}."  # sender.stream: itself
            conn.sent_n = conn.counters.get(i, 0)
            conn.fan = self.recipients.get(i, 0)
            # its own stream's ledger state, as ``RecipientLedger.arrive`` creates it:
            # [highest counter, gaps]
            conn.own = conn.ledger.streams.setdefault((i, i), [0, None])

    def send_echo(self, conn: EchoConn, when: int) -> None:
        """``send_one`` for open-loop rtt on a plain echo server: the same marker, counted
        the same way (sent, expected, bytes, send lag), built and sent in one step."""
        if not conn.live:
            self.c["send_skipped"] += 1
            return
        counter = conn.sent_n + 1
        conn.sent_n = counter
        # (marker(i, i, counter, when, size).encode(): the head is "rtb1.{i}.{i}.")
        payload = f"{conn.head}{counter}.{when} ".encode().ljust(self.message_bytes, b"x")
        transport = conn.transport
        assert transport is not None  # (live: open)
        transport.send(self.msg_type, payload)
        self.lag_us.append((time.monotonic_ns() - when) // 1000)
        if conn.expect is None or conn.expect_n <= conn.own[0]:
            # (the slot also moves on once its message was accounted some other way)
            conn.expect = payload
            conn.expect_n = counter
            conn.expect_sched = when
        c = self.c
        c["sent"] += 1
        c["expected"] += conn.fan
        c["bytes_sent"] += len(payload)

    def _next_round_trip(self, conn: Conn, now: int) -> None:
        """Closed-loop rtt: the reply to one request sends the next (``Tally.round_trip``
        decides and counts it: none past the end time or on a closed connection)."""
        payload = self.round_trip(conn, now)
        if payload is not None:
            conn.send(payload)

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
        for when, batch in spread(len(conns), start_ns, span_ns):
            await self._sleep_until(when)
            for conn in conns[batch]:
                if conn.is_open:
                    conn.probe_round = abs(conn.probe_round) + 1
                    text = marker(conn.index, PROBE_STREAM, conn.probe_round, when)
                    conn.send(conn.adapter.ping(text, conn.req()))
                    self.c["probes_sent"] += 1

    async def heartbeats(self, interval_s: float) -> None:
        """The protocol's own keepalive (``Adapter.heartbeat``) on every open connection,
        from the first upgrade to the close, spread over the interval in small batches."""
        while True:
            start = time.monotonic_ns()
            span_ns = int(interval_s * 1e9)
            conns = self.conns
            for when, batch in spread(len(conns), start, span_ns):
                await self._sleep_until(when)
                for conn in conns[batch]:
                    if conn.is_open and conn.transport is not None:
                        payload = conn.adapter.heartbeat()
                        if payload is not None:
                            conn.send(payload)
            await self._sleep_until(start + span_ns)

    async def _sleep_until(self, when_ns: int) -> None:
        delay = (when_ns - time.monotonic_ns()) / 1e9
        if delay > 0:
            await asyncio.sleep(delay)

    # -- self-watch and reporting ------------------------------------------------------------------

    def counters(self) -> dict[str, int]:
        return dict(self.c)

    async def watch(self) -> None:
        """Per second: a Tick with counters, the second's latency histogram, CPU and loop lag."""
        self.cpu.reset()
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
        self._fold()
        fresh = self._fresh_recoveries() if self.live_export and self.reconnector else None
        self.emit(self.second_tick(second, self.open_now, fresh))

    def _fresh_recoveries(self) -> list[Recovery]:
        """Losses whose recovery ended since the last tick (live export of a fault run)."""
        fresh: list[Recovery] = []
        seen = self.recoveries_seen
        for conn in self.conns:
            records = conn.session.records
            if len(records) > seen.get(conn.index, 0):
                fresh.extend(records[seen.get(conn.index, 0) :])
                seen[conn.index] = len(records)
        return fresh

    async def _measure_lag(self) -> None:
        """The delay meter's timer (``Tally.loop_late`` counts what it says)."""
        await delay_meter(self.loop_late)

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

    def final_report(self) -> wire.Final:
        """The tally's ``final`` over this worker's connections (held, answering)."""
        answering = sum(1 for conn in self.conns if conn.probe_round < 0 and conn.ready)
        self._fold()
        return Tally.final(self, self.conns, held=self.held, answering=answering)

    # -- the run -----------------------------------------------------------------------------------

    async def run(self, inbox: asyncio.Queue) -> None:
        watcher = asyncio.create_task(self.watch())
        interval = self.adapter.heartbeat_interval_s
        beat = asyncio.create_task(self.heartbeats(interval)) if interval else None
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
            await _cancel(beat)

    async def _measure(self, go: wire.Go, inbox: asyncio.Queue) -> None:
        """Send (or hold) from the go until the end time or a Finish, whichever comes first."""
        self.recipients = self.plan.recipients(go.live)
        duration = self.scenario.duration
        assert duration is not None  # (a resolved scenario has one)
        end_ns = go.start_ns + int(duration * 1e9)
        # the measured phase starts now: what the ramp cost is not the generator's health
        self.lag_worst_ms = 0.0
        self.cpu.reset()
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
        self.emit(self.final_report())


async def _cancel(task: asyncio.Task | None) -> None:
    if task is not None and not task.done():
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


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

    def emit(message: Any) -> None:
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
