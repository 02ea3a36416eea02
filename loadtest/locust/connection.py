"""One Locust user's realtime connection: set up, send on the clock, account for every frame.

Everything protocol-specific goes through the scenario's adapter
(``loadtest.adapters``): frames out, typed events in. Delivery accounting is the
native engine's (``RecipientLedger``: new, late or duplicate per sender stream), the
markers are the native engine's (sender, stream, counter, scheduled time), so a
message means the same to both engines. What a client remembers across connections
(request ids, the outbox of unacked sends, seqs to resume and dedupe, backoff, the
recovery records) is the shared reconnecting client, ``loadtest.client.ClientSession``,
the same code the native engine and the monitor drive. What is Locust's own here is
the plumbing: gevent greenlets instead of an event loop, and every measured event also
goes into Locust's statistics under a name a person reads (``connect``, ``send→ack``,
``delivery``, ``history fetch``, ``reconnect``), failures with their cause.

Times are wall-clock nanoseconds (``time.time_ns``): a distributed Locust run spans
machines, whose monotonic clocks do not compare (results.json says so).
"""

from __future__ import annotations

import random
import time
from typing import TYPE_CHECKING

import gevent
from gevent.event import Event

from loadtest.adapters import Ack, Delivery, Feature, Notice, Ready, Rejected, marker
from loadtest.adapters import Event as Frame
from loadtest.adapters.base import Page, Reply
from loadtest.client import ClientSession, SessionSetup, SetupClosed, SetupError, Step
from loadtest.ledger import Arrival, RecipientLedger
from loadtest.locust.httplanes import HttpLanesConnection
from loadtest.locust.wsclient import WsConnection, classify
from loadtest.plan import PROBE_STREAM
from loadtest.run.failures import describe
from loadtest.scenarios import Kind
from loadtest.session import ITEM_KINDS

if TYPE_CHECKING:
    from loadtest.locust.node import NodeRun

HISTORY_PAGE = 50
WS = "WS"  # Locust's "Type" column for every realtime entry

CONNECT = "connect"
SEND_ACK = "send→ack"
DELIVERY = "delivery"
HISTORY = "history fetch"
RECONNECT = "reconnect"


class Failure(Exception):
    """A failed realtime operation; Locust groups failures by this text."""


class Conn:
    """A user's connection: the shared client session (``ClientSession``) and the ledger."""

    def __init__(self, run: NodeRun, index: int) -> None:
        self.run = run
        self.index = index
        self.user = run.plan.user(index)
        self.adapter = run.adapter.connection()  # per-connection protocol state, if any
        self.http = self.adapter.transport == "http"  # two TCP lanes, no WebSocket (SSE)
        if self.http:
            self.adapter.bind(run.url)
        self.rooms = [run.plan.room_name(r) for r in run.plan.rooms_of(index)]
        self.ws: WsConnection | HttpLanesConnection | None = None
        self.ready = False  # set up (hello, joins) at least once
        self.in_run = False  # live at the go: its sends and receipts are accounted
        self.stopping = False  # the run or the user is ending: no reconnect
        seed = run.scenario.seed
        self.rng = random.Random(None if seed is None else seed * 1_000_003 + index)
        # seqs, resume map, request ids, backoff, recovery records and the outbox of
        # unacked sends (req id -> (payload, (stream, scheduled ns))): the shared client
        self.session = ClientSession(run.policy, self.rng)
        self.ledger = RecipientLedger()
        # req_id (as the adapter reports it in a Page or an error) -> sent ns
        self.history_pending: dict[int | str, int] = {}
        self.counters: dict[int, int] = {}  # stream -> last counter sent
        # hello, welcome, rooms resumed or joined, backlog: the shared setup steps
        self.setup = SessionSetup(self.session, self.adapter, self.user, self.rooms)
        self.woken = Event()  # set when the setup machine moved (``settle`` looks again)
        self.probe_round = 0
        self.reconnecting: gevent.Greenlet | None = None
        self.beating: gevent.Greenlet | None = None  # the protocol's keepalive, if any

    # -- helpers -------------------------------------------------------------------------

    @property
    def is_open(self) -> bool:
        return self.ws is not None and self.ws.is_open

    @property
    def live(self) -> bool:
        """Open and every room subscribed: sends go out now."""
        return self.session.live and self.is_open

    def req(self) -> int:
        """A request id unique to this client for the whole run, across reconnects."""
        return self.session.new_id()

    # -- the setup wait (loadtest.tally.Peer) ---------------------------------------------

    def wake(self) -> None:
        """The setup machine moved: end ``settle``'s wait, which looks again."""
        self.woken.set()

    def settle(self) -> None:
        """Move the setup's frames until every room is back; raises its ``SetupError``.
        Waits only (on the reader greenlet's ``wake``): the machine decides."""
        setup = self.setup
        while True:
            self.woken.clear()  # (before the sends, which may yield: an answer may come)
            for payload in setup.take():
                self.send(payload)
            setup.check()
            if setup.step >= Step.READY:
                return
            if not self.woken.wait(setup.wait_s(time.time_ns())):
                setup.expire(time.time_ns())

    def send(self, payload: bytes) -> bool:
        ws = self.ws
        if ws is None or not ws.is_open:
            return False
        try:
            ws.send(payload)
        except Exception:  # the socket died under us: the reader reports the close
            return False
        self.run.c["bytes_sent"] += len(payload)
        return True

    # -- opening -------------------------------------------------------------------------

    def open(self) -> bool:
        """Connect, say hello, join the rooms (and page history): True when ready."""
        run = self.run
        run.c["attempted"] += 1
        started = time.perf_counter()
        cause = self._session(started, run.scenario.connect_timeout)
        elapsed_ms = (time.perf_counter() - started) * 1000
        if cause is not None:
            run.c["failed"] += 1
            run.failures[cause] += 1
            run.fire(CONNECT, elapsed_ms, Failure(f"{cause}: {describe(cause)}"))
            return False
        self.setup.finish(time.time_ns())  # (a first connect has no backlog)
        self.ready = True
        run.c["ready"] += 1
        run.hist["setup"].record_us(int(elapsed_ms * 1000))
        run.fire(CONNECT, elapsed_ms)
        if run.plan.kind in (Kind.CHAT, Kind.SOAK):
            self.fetch_history()
        return True

    def _session(
        self, started: float, welcome_s: float, rooms_s: float | None = None
    ) -> str | None:
        """Open the socket, hello (resuming the rooms when reconnecting) and every room
        back; None when ready, else a failure cause. ``welcome_s`` bounds the upgrade and
        the welcome from ``started``; ``rooms_s`` the rooms after it, replays included
        (None: the rooms too must be back within ``welcome_s``, the first setup's
        ``connect_timeout``)."""
        run = self.run
        adapter = self.adapter
        setup = self.setup
        token = run.plan.token(self.index)
        # the machine's clock is the session's (wall clock, like every time here); the
        # welcome's deadline counts from ``started``, as the upgrade's does
        setup.begin(time.time_ns() - int((time.perf_counter() - started) * 1e9), welcome_s, rooms_s)
        ws: WsConnection | HttpLanesConnection
        if self.http:
            ws = HttpLanesConnection(
                run.url, adapter, self._on_payload, self._on_reply, self._on_closed
            )
        else:
            ws = WsConnection(run.url, self._on_payload, self._on_closed, binary=adapter.binary)
        try:
            with gevent.Timeout(welcome_s):
                ws.connect(welcome_s, adapter.headers(self.user, token), adapter.subprotocols)
        except gevent.Timeout:
            setup.abandon()
            return "timeout"
        except Exception as exc:
            setup.abandon()
            return classify(exc, secure=run.url.startswith("wss:"))
        self.ws = ws
        if adapter.heartbeat_interval_s and (self.beating is None or self.beating.dead):
            self.beating = gevent.spawn(self._heartbeat, adapter.heartbeat_interval_s)
        run.open_now += 1
        run.c["opened"] += 1
        run.hist["handshake"].record_us(int((time.perf_counter() - started) * 1e6))
        try:
            # first the welcome; with resume, the hello names every room with the last seq
            # seen and each comes back by itself (maybe in the same read as the welcome)
            setup.upgraded(time.time_ns(), token)
            self.settle()
            return None
        except SetupError as exc:
            if type(exc) is not SetupClosed:  # (a close ended it already)
                ws.drop(quiet=True)
            return exc.cause

    def fetch_history(self) -> None:
        """Page the newest history of each room, as a client opening a room does.

        Runs before the go (the measured load is the native engine's); only for
        protocols whose adapter can page history.
        """
        adapter = self.adapter
        if Feature.HISTORY not in adapter.features:
            return
        for room in self.rooms:
            req = self.req()
            self.history_pending[req] = time.time_ns()
            self.send(adapter.history(room, req, None, HISTORY_PAGE))

    # -- receiving (the reader greenlet) ---------------------------------------------------

    def _on_payload(self, payload: bytes) -> None:
        now = time.time_ns()
        run = self.run
        run.c["bytes_received"] += len(payload)
        event = self.adapter.parse(payload)
        if isinstance(event, list):  # a frame that carries several packets (MQTT)
            for one in event:
                self._on_event(one, now, len(payload))
        elif event is not None:
            self._on_event(event, now, len(payload))

    def _on_reply(self, payload: bytes) -> None:
        """Bytes of the request lane (``Adapter.transport == "http"``)."""
        now = time.time_ns()
        self.run.c["bytes_received"] += len(payload)
        events = self.adapter.parse_reply(payload)
        for one in events if isinstance(events, list) else (events,):
            if one is not None:
                self._on_event(one, now, 0)

    def _on_event(self, event: Frame, now: int, size: int) -> None:
        """Account one event of a received frame (``type(event) is``: what narrows it)."""
        run = self.run
        if type(event) is Delivery:
            arrival = run.delivery(self, event, now)
            if arrival is None:
                return
            latency_ms = max(0.0, (now - event.sched_ns) / 1e6)
            if arrival is Arrival.DUPLICATE:
                run.fire(DELIVERY, latency_ms, Failure("duplicate: a message arrived again"))
                return
            run.fire(DELIVERY, latency_ms)
            if run.answers(self, event, arrival):
                self._round_trip(now)
        elif type(event) is Ack:
            latency = run.ack(self, event, now)
            if latency is not None:
                run.fire(SEND_ACK, latency / 1e6)
        elif type(event) is Ready:
            run.ready(self, event, now)
        elif type(event) is Rejected:
            self._rejected(event)
        elif type(event) is Notice:
            run.events[event.kind] += 1
            room, seq = event.room, event.seq
            # a receipt's seq is a read marker, not an item of the room
            if room is not None and seq is not None and event.kind in ITEM_KINDS:
                self.session.item(room, seq)
        elif type(event) is Reply:
            self.send(event.payload)
        elif type(event) is Page:
            req = event.req_id
            sent = self.history_pending.pop(req, None) if req is not None else None
            if sent is not None:
                run.hist["history"].record_us((now - sent) // 1000)
                run.fire(HISTORY, (now - sent) / 1e6, length=size)

    def _rejected(self, event: Rejected) -> None:
        run = self.run
        req = event.req_id
        if run.rejected(self, event):
            run.fire(SEND_ACK, 0.0, Failure(f"rejected: {event.code}"))
        elif req is not None and self.history_pending.pop(req, None) is not None:
            run.fire(HISTORY, 0.0, Failure(f"rejected: {event.code}"))
        else:
            run.refused_setup(self, event.code)

    def _on_closed(self, ws: WsConnection | HttpLanesConnection, code: int) -> None:
        run = self.run
        run.open_now -= 1
        if ws is not self.ws:
            return  # an earlier connection of this user, already given up on
        setup = self.setup
        # (while upgrading, ``self.ws`` is still the connection before: not this setup's)
        if setup.active and setup.step is not Step.UPGRADE:
            if setup.closed(code):
                self.wake()
            return
        if self.stopping or ws.closing:
            return
        run.c["closed"] += 1
        run.closes[str(code)] += 1
        if not self.ready or run.finishing:
            return
        cause = "dropped" if code == 1006 else f"close_{code}"  # 1006: no close frame
        if not self.session.lost(time.time_ns(), cause):
            return
        if code in self.adapter.fatal_close_codes:  # reconnecting cannot help
            self.session.give_up()
            run.c["gave_up"] += 1
            return
        if self.reconnecting is None or self.reconnecting.dead:
            self.reconnecting = gevent.spawn(self._reconnect)

    # -- reconnect -------------------------------------------------------------------------

    def _reconnect(self) -> None:
        """Back with the shared client's backoff, resuming the rooms from the last seq seen
        when the protocol can, then the outbox of unacked sends (same request ids).

        The time from the loss to every room back (re-subscribed, replay received) is the
        ``reconnect`` entry, and each loss's record is a sample of the recovery target.
        """
        run = self.run
        session = self.session
        policy = session.policy
        while not (self.stopping or run.finishing) and session.recovering:
            gevent.sleep(session.retry_delay_s())
            if self.stopping or run.finishing:
                return
            if not session.attempt(time.time_ns()):
                run.c["gave_up"] += 1
                return
            run.c["reconnect_attempts"] += 1
            record = session.current
            started = time.perf_counter()
            cause = self._session(
                started, policy.attempt_timeout_ms / 1000, policy.resume_timeout_ms / 1000
            )
            now = time.time_ns()
            lost_ns = record.lost_ns if record is not None else now
            if cause is None:
                backlog = self.setup.finish(now)
                for payload in backlog:
                    self.send(payload)
                run.c["retried"] += len(backlog)
                run.c["reconnects"] += 1
                run.hist["reconnect"].record_us((now - lost_ns) // 1000)
                run.fire(RECONNECT, (now - lost_ns) / 1e6)
                continue  # lost again meanwhile (its close saw this loop running): retry
            if self.ws is not None and self.ws.is_open:
                self.ws.drop(quiet=True)  # half set up: the next attempt starts afresh
            session.lost(now, cause)
            run.fire(RECONNECT, (now - lost_ns) / 1e6, Failure(f"{cause}: {describe(cause)}"))

    # -- sending ---------------------------------------------------------------------------

    def send_schedule(self, start_ns: int, end_ns: int) -> None:
        """Open loop: a Poisson process for this user, latency from the scheduled time."""
        run = self.run
        sc = run.scenario
        if run.closed_loop:
            sleep_until(start_ns)
            self._round_trip(time.time_ns())
            sleep_until(end_ns)
            return
        rate = sc.rate or 0.0
        if rate <= 0 or not run.plan.is_sender(self.index):
            return
        expo = self.rng.expovariate
        when = start_ns + int(expo(rate) * 1e9)
        while when < end_ns and not self.stopping:
            sleep_until(when)
            self.send_one(when)
            when += int(expo(rate) * 1e9)

    def send_one(self, when: int) -> None:
        """The message scheduled at ``when`` (plus typing / receipt). The node's tally
        decides and counts (``Tally.scheduled``, ``Tally.went``), as in the native engine;
        this moves the bytes and says which went (a send fails on a socket that just died,
        and the typing indicator and read receipt count only when they went)."""
        run = self.run
        out = run.scheduled(self, when)
        if out is None:
            return  # skipped, or queued in the outbox while the connection is recovered
        typed = out.typing is not None and self.send(out.typing)
        self.send(out.payload)
        now = time.time_ns()
        read = out.read is not None and self.send(out.read)
        run.went(out, when, now, typing=typed, read=read)

    def _round_trip(self, now: int) -> None:
        """Closed-loop rtt: the reply to one request sends the next (``Tally.round_trip``
        decides and counts it: none past the end time or on a closed connection)."""
        payload = self.run.round_trip(self, now)
        if payload is not None:
            self.send(payload)

    def probe(self, when: int) -> None:
        """connect: one heartbeat round trip (answered by the reader)."""
        if self.is_open:
            self.probe_round = abs(self.probe_round) + 1
            text = marker(self.index, PROBE_STREAM, self.probe_round, when)
            if self.send(self.adapter.ping(text, self.req())):
                self.run.c["probes_sent"] += 1

    # -- ending ----------------------------------------------------------------------------

    def _heartbeat(self, interval_s: float) -> None:
        """The protocol's own keepalive (``Adapter.heartbeat``) while the user lives."""
        while not self.stopping:
            gevent.sleep(interval_s)
            payload = self.adapter.heartbeat() if self.is_open else None
            if payload is not None:
                self.send(payload)

    def begin_close(self) -> None:
        self.stopping = True
        if self.reconnecting is not None:
            self.reconnecting.kill(block=False)
        if self.beating is not None:
            self.beating.kill(block=False)
        if self.ws is not None:
            self.ws.begin_close()


def sleep_until(when_ns: int) -> None:
    """Sleep this greenlet until a wall-clock instant (never wakes early on purpose)."""
    delay = (when_ns - time.time_ns()) / 1e9
    if delay > 0:
        gevent.sleep(delay)
