"""One Locust process's share of a realtime run: its users' connections and their figures.

Every Locust process that runs users (a worker, or the single process of a plain
``locust`` run) has one ``Node``. Users claim their connection index from the master
(through the node, in batches), and the node keeps one ``NodeRun`` per run: the
counters, HDR histograms and failure tallies of its connections (the native engine's
names, so the same merge and the same verdict code serve both engines), a ticker that
reports each second, and the end of the run: close every connection, send the final.
"""

from __future__ import annotations

import contextlib
import time
from collections import Counter, defaultdict, deque
from typing import Any

import gevent
from gevent.event import AsyncResult, Event

from loadtest.adapters import Feature, make_adapter
from loadtest.client import ReconnectPolicy
from loadtest.delay import DELAY_PERIOD_S, lateness_ms
from loadtest.locust import messages
from loadtest.locust.connection import Conn, sleep_until
from loadtest.plan import Plan, spread
from loadtest.run.report import Final
from loadtest.scenarios import Kind
from loadtest.tally import HISTOGRAMS, Tally

CLAIM_BATCH_S = 0.02
"""Claims made within this long go to the master in one message."""
READY_BATCH_S = 0.05
COUNTS_PERIOD_S = 0.2
CLOSE_WAIT_S = 3.0
DONE_GRACE_S = 10.0
"""After the send window, how long senders may still be finishing before the node reports
done anyway (a sender killed by Locust never says so)."""
LOCUST_HISTOGRAMS = (*HISTOGRAMS, "history", "reconnect")
DELAY_HISTOGRAMS = ("send_lag", "loop_delay")
"""The generator's own delay (``loadtest.judge.DELAY_PARTS``), in each live snapshot."""


class Node:
    """The realtime side of one Locust process: index claims and the current run."""

    def __init__(self, environment: Any) -> None:
        self.env = environment
        self.run: NodeRun | None = None
        self.waiting: dict[str, deque[AsyncResult[tuple[NodeRun, int] | None]]] = defaultdict(deque)
        self.asked: Counter[str] = Counter()  # indices requested and not yet granted
        self.wake = Event()
        self.claimer = gevent.spawn(self._claim_loop)

    def send(self, kind: str, data: dict) -> None:
        """To the master (in a single-process run the runner hands it over directly)."""
        self.env.runner.send_message(kind, data)

    # -- claims --------------------------------------------------------------------------

    def claim(self, role: str) -> tuple[NodeRun, int] | None:
        """Block this user until the master grants it a connection index (None: no more)."""
        result: AsyncResult[tuple[NodeRun, int] | None] = AsyncResult()
        self.waiting[role].append(result)
        self.wake.set()
        return result.get()

    def _claim_loop(self) -> None:
        while True:
            self.wake.wait()
            self.wake.clear()
            gevent.sleep(CLAIM_BATCH_S)
            for role, queue in self.waiting.items():
                wanted = len(queue) - self.asked[role]
                if wanted > 0:
                    self.asked[role] += wanted
                    self.send(messages.CLAIM, {"role": role, "n": wanted})

    def on_message(self, environment: Any, msg: Any) -> None:
        """The master's messages (Locust custom messages; direct calls in one process)."""
        kind, data = msg.type, msg.data
        if kind == messages.GRANT:
            self.on_grant(data)
        elif self.run is None or self.run.tag != data.get("tag"):
            return  # a message of an earlier run
        elif kind == messages.GO:
            self.run.on_go(data["start_ns"], data["live"])
        elif kind == messages.FINISH:
            self.run.finish_greenlet = gevent.spawn(self.run.finish)

    def on_grant(self, data: dict) -> None:
        spec = messages.decode_run(data["run"])
        if self.run is None or self.run.tag != spec.tag:
            if self.run is not None:
                self.run.abandon()
            self.run = NodeRun(self, spec)
        role = data["role"]
        self.asked[role] = max(0, self.asked[role] - data["asked"])
        queue = self.waiting[role]
        for index in data["indices"]:
            if queue:
                queue.popleft().set((self.run, index))
        for _ in range(data["asked"] - len(data["indices"])):
            if queue:
                queue.popleft().set(None)  # the plan has no more connections of this role

    def snapshot(self) -> dict | None:
        return self.run.snapshot() if self.run is not None else None

    def close(self) -> None:
        self.claimer.kill(block=False)
        if self.run is not None:
            self.run.abandon()


class NodeRun(Tally):
    """This process's connections in one run and everything they measured (the counting
    itself is the native engine's: ``loadtest.tally``)."""

    def __init__(self, node: Node, spec: messages.RunSpec) -> None:
        self.node = node
        self.env = node.env
        self.tag = spec.tag
        self.scenario = spec.scenario
        self.plan = Plan(spec.scenario, spec.tag)
        self.adapter = make_adapter(
            spec.scenario.protocol, getattr(spec.scenario, "protocol_options", None)
        )
        self.url = spec.url
        kind = self.plan.kind
        Tally.__init__(
            self,
            spec.t0_ns,
            plan=self.plan,
            by_second=kind is Kind.SOAK,
            own_replies=kind is Kind.RTT,
            histograms=LOCUST_HISTOGRAMS,
        )
        self.live_export = spec.live  # the master exports live metrics (loadtest.export)
        # Locust users always come back after a loss (a Locust run has no fault switch
        # to turn reconnects on); the scenario's [reconnect] table tunes how
        self.policy = spec.scenario.reconnect or ReconnectPolicy()
        self.track_acks = kind is not Kind.RTT and Feature.ACK in self.adapter.features
        self.queue_while_down = self.track_acks  # (a Locust user always comes back)
        self.conns: dict[int, Conn] = {}
        self.open_now = 0
        self.go = Event()
        self.ended = Event()
        self.start_ns = 0
        self.finishing = False
        self.active_senders = 0
        self.held: int | None = None
        self.ready_batch: list[int] = []
        self.failed_batch: list[int] = []
        self.last_second = 0
        self.finish_greenlet: gevent.Greenlet | None = None
        self.greenlets = [gevent.spawn(self._ticker), gevent.spawn(self._lag_meter)]
        self.flusher: gevent.Greenlet | None = None

    # -- Locust statistics -------------------------------------------------------------------

    def fire(
        self, name: str, ms: float, exception: Exception | None = None, length: int = 0
    ) -> None:
        self.env.events.request.fire(
            request_type="WS",
            name=name,
            response_time=ms,
            response_length=length,
            exception=exception,
            context={},
        )

    # -- the user's lifetime ------------------------------------------------------------------

    def connect(self, index: int) -> Conn:
        """Open connection ``index`` (in the user's greenlet) and report ready or failed."""
        conn = Conn(self, index)
        self.conns[index] = conn
        ok = conn.open()
        (self.ready_batch if ok else self.failed_batch).append(index)
        if self.flusher is None or self.flusher.dead:
            self.flusher = gevent.spawn_later(READY_BATCH_S, self._flush_ready)
        return conn

    def _flush_ready(self) -> None:
        ready, failed = self.ready_batch, self.failed_batch
        self.ready_batch, self.failed_batch = [], []
        self.node.send(messages.READY, {"tag": self.tag, "ready": ready, "failed": failed})

    def live(self, conn: Conn) -> None:
        """The user's task: wait for the go, send on the schedule, then hold until the end."""
        self.go.wait()
        if conn.in_run and self._sends(conn):
            try:
                conn.send_schedule(self.start_ns, self.end_ns)
            finally:
                self.active_senders -= 1
        self.ended.wait()

    def _sends(self, conn: Conn) -> bool:
        return self.plan.kind is not Kind.CONNECT and self.plan.is_sender(conn.index)

    def on_go(self, start_ns: int, live: bytes) -> None:
        self.recipients = self.plan.recipients(live)
        self.start_ns = start_ns
        self.end_ns = start_ns + int((self.scenario.duration or 0) * 1e9)
        for index, conn in self.conns.items():
            conn.in_run = conn.ready and bool(live[index >> 3] & (1 << (index & 7)))
        self.active_senders = sum(1 for c in self.conns.values() if c.in_run and self._sends(c))
        self.lag_worst_ms = 0.0
        self.cpu.reset()  # the first measured second starts now
        self.measuring = True
        self.go.set()
        if self.plan.kind is Kind.CONNECT:
            self.greenlets.append(gevent.spawn(self._hold))
        else:
            self.greenlets.append(gevent.spawn(self._await_senders))

    def _await_senders(self) -> None:
        sleep_until(self.end_ns)
        deadline = time.monotonic() + DONE_GRACE_S
        while self.active_senders > 0 and time.monotonic() < deadline:
            gevent.sleep(0.05)
        self._done()

    def _hold(self) -> None:
        """connect: probe every connection with a heartbeat round trip each ``heartbeat``
        seconds, spread over the interval (a burst would measure our own queueing)."""
        interval_ns = int(self.scenario.heartbeat * 1e9)
        conns = [conn for conn in self.conns.values() if conn.in_run]
        round_start = self.start_ns
        while round_start + interval_ns <= self.end_ns:
            self._probe_spread(conns, round_start, interval_ns)
            round_start += interval_ns
        sleep_until(self.end_ns)
        # the last round decides "answering": every connection once more, then wait
        self._probe_spread(conns, time.time_ns(), min(interval_ns, 1_000_000_000))
        deadline = time.monotonic() + min(10.0, self.scenario.connect_timeout)
        while time.monotonic() < deadline:
            if all(conn.probe_round <= 0 for conn in conns if conn.is_open):
                break
            gevent.sleep(0.05)
        self._done()

    def _probe_spread(self, conns: list[Conn], start_ns: int, span_ns: int) -> None:
        for when, batch in spread(len(conns), start_ns, span_ns):
            sleep_until(when)
            for conn in conns[batch]:
                conn.probe(when)

    def _done(self) -> None:
        self.held = sum(1 for conn in self.conns.values() if conn.in_run and conn.is_open)
        self.node.send(messages.DONE, {"tag": self.tag, "held": self.held})
        while not self.finishing:
            self.node.send(messages.COUNTS, {"tag": self.tag, "counters": dict(self.c)})
            gevent.sleep(COUNTS_PERIOD_S)

    # -- self-watch and reports ----------------------------------------------------------------

    def _ticker(self) -> None:
        """Each second of the run: counters, the second's deliveries, CPU, loop lag."""
        self.cpu.reset()
        second = max(0, (time.time_ns() - self.t0) // 1_000_000_000) + 1
        while True:
            sleep_until(self.t0 + second * 1_000_000_000)
            self.tick(second)
            second += 1

    def tick(self, second: int) -> None:
        self.last_second = second
        tick = self.second_tick(second, self.open_now)
        self.node.send(messages.TICK, {"tag": self.tag, "tick": messages.encode(tick)})

    def _lag_meter(self) -> None:
        """How late the gevent hub wakes a sleeper: the Locust process's own delay
        (``Tally.loop_late`` counts it, as for the native engine's workers)."""
        while True:
            before = time.monotonic()
            gevent.sleep(DELAY_PERIOD_S)
            self.loop_late(lateness_ms(before, time.monotonic()))

    def missing(self) -> int:
        """Deliveries known to be missing so far: gaps in the sender streams received."""
        return sum(conn.ledger.missing() for conn in self.conns.values())

    def snapshot(self) -> dict:
        """Cumulative realtime figures for Locust's stats report (the Realtime SLO tab)."""
        self.fold_lag()
        delivery = self.hist["delivery"].copy()
        delivery.merge(self.second_hist)
        reconnect = self.hist["reconnect"]
        return {
            "tag": self.tag,
            "counters": dict(self.c),
            "open_now": self.open_now,
            "missing": self.missing(),
            "delivery": delivery.encode() if delivery.count else None,
            "reconnect": reconnect.encode() if reconnect.count else None,
            # the generator's own delay so far: the tab bounds each latency verdict by it
            **{
                name: self.hist[name].encode() for name in DELAY_HISTOGRAMS if self.hist[name].count
            },
            "cpu_max": max(self.cpu_samples, default=0.0),
        }

    # -- the end ------------------------------------------------------------------------------

    def finish(self) -> None:
        """Close every connection (close frames first, then wait), then send the final."""
        self.finishing = True
        for greenlet in self.greenlets:
            greenlet.kill(block=False)
        if self.held is None:
            self.held = sum(1 for conn in self.conns.values() if conn.in_run and conn.is_open)
        self.tick(self.last_second + 1)  # the partial last second
        self.measuring = False
        unacked = sum(len(conn.session.outbox) for conn in self.conns.values()) + self.evicted
        for conn in self.conns.values():
            conn.begin_close()
        readers = [c.ws.reader for c in self.conns.values() if c.ws is not None and c.ws.reader]
        gevent.joinall(readers, timeout=CLOSE_WAIT_S)
        for conn in self.conns.values():
            if conn.ws is not None:
                conn.ws.finish_close()
        self.c["unacked"] = unacked
        self.ended.set()
        self.node.send(
            messages.FINAL, {"tag": self.tag, "final": messages.encode(self.final_report())}
        )

    def final_report(self) -> Final:
        """This process's ``Final``: the tally's, with what only the node knows."""
        conns = self.conns.values()
        answering = sum(1 for c in conns if c.probe_round < 0 and c.in_run)
        return Tally.final(self, conns, held=self.held or 0, answering=answering)

    def abandon(self) -> None:
        """A newer run replaced this one (or the process ends): stop its greenlets, close."""
        self.finishing = True
        for greenlet in self.greenlets:
            greenlet.kill(block=False)
        for conn in self.conns.values():
            with contextlib.suppress(Exception):
                conn.begin_close()
        self.go.set()
        self.ended.set()
