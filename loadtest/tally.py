"""One process's delivery bookkeeping, shared by the native engine and the Locust users.

The native engine's worker (asyncio, picows) and a Locust process (gevent) count the
same fates with the same names: deliveries new, late or duplicate per sender stream,
acks and their latency, refusals by code, setup answers. Keeping that in one place
means a message is counted the same way by both engines (their results merge and are
judged by the same code), and a fix to the accounting lands in both at once.

What differs between the two stays at the edges: a connection's setup answers go to its
step machine (``loadtest.client.setup.SessionSetup``), and the connection's ``wake``
ends its driver's wait (an asyncio future or a gevent ``Event``) when the machine says
there is something to look at; each engine adds its own side effects (Locust
statistics, the closed-loop next request) from what these handlers return.

Sending is decided here too: ``scheduled`` says what a scheduled send puts on the wire
(or that it is skipped, or queued while the connection is recovered) and counts it,
``went`` counts what the driver then sent, and ``round_trip`` is closed-loop rtt's next
request. A driver only moves the bytes between the two calls, so both engines skip,
queue and count a message the same way.
"""

from __future__ import annotations

from array import array
from collections import Counter
from collections.abc import Iterable
from typing import TYPE_CHECKING, Protocol

import psutil

from loadtest.adapters import Ack, Delivery, Ready, Rejected
from loadtest.client.reconnect import ClientSession, Recovery
from loadtest.client.setup import SessionSetup
from loadtest.cpumeter import CpuMeter
from loadtest.delay import corrected_us
from loadtest.ledger import Arrival, RecipientLedger
from loadtest.plan import PROBE_STREAM, Outgoing, Plan, compose, receipt
from loadtest.run import report
from loadtest.scenarios import Kind
from loadtest.session import SeqOrder
from rtbench.histogram import LatencyHistogram

if TYPE_CHECKING:
    import random

    from loadtest.adapters import Adapter

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
    # recovery (loadtest.engine.recovery, the Locust user's reconnect)
    "reconnects",
    "reconnect_attempts",
    "retried",
    "deduped",
    "pings_sent",
    "heartbeat_dead",
    "gave_up",
)
HISTOGRAMS = ("delivery", "ack", "handshake", "send_lag", "heartbeat", "setup", "loop_delay")
_NEW = Arrival.NEW
_LATE = Arrival.LATE
_DUPLICATE = Arrival.DUPLICATE
_OLD = SeqOrder.OLD
_CHATS = (Kind.CHAT, Kind.SOAK)


class Peer(Protocol):
    """What the handlers need of a connection (both engines' ``Conn`` have it)."""

    index: int
    session: ClientSession
    ledger: RecipientLedger
    probe_round: int
    setup: SessionSetup

    @property
    def in_run(self) -> bool:
        """Deliveries to it are counted (Locust: it was live at the go)."""

    def wake(self) -> None:
        """Its setup machine moved: end the driver's wait, which looks again."""


class Sender(Protocol):
    """What deciding a send needs of a connection (both engines' ``Conn`` have it)."""

    index: int
    session: ClientSession
    adapter: Adapter
    counters: dict[int, int]  # stream -> last counter sent
    rng: random.Random  # its draws (DM, typing, receipt): the native engine's is per process

    @property
    def live(self) -> bool:
        """Open and every room subscribed: a send goes out now."""

    @property
    def is_open(self) -> bool:
        """The socket is open (closed-loop rtt needs no rooms)."""


class Tally:
    """Counters, latency histograms and per-second tallies of one process's connections."""

    def __init__(
        self,
        t0: int,
        *,
        plan: Plan,
        by_second: bool,
        own_replies: bool,
        histograms: Iterable[str] = HISTOGRAMS,
        ontime_ns: int = 0,
    ) -> None:
        self.t0 = t0
        self.plan = plan
        self.c: dict[str, int] = dict.fromkeys(COUNTERS, 0)
        self.hist = {name: LatencyHistogram() for name in histograms}
        self.send_lag = self.hist["send_lag"]
        # send lags (us) appended raw, one C call each per message, and folded into
        # ``send_lag`` by ``fold_lag`` (every tick, the end, a live snapshot)
        self.lag_us: array[int] = array("q")
        self.second_hist = LatencyHistogram()  # deliveries of the current second
        self.failures: Counter[str] = Counter()
        self.closes: Counter[str] = Counter()
        self.errors: Counter[str] = Counter()
        self.events: Counter[str] = Counter()
        self.sent_by_s: Counter[int] = Counter()
        self.expected_by_s: Counter[int] = Counter()
        self.delivered_by_s: Counter[int] = Counter()
        # soak windows, and the losses around each fault, need send-time tallies
        self.by_second = by_second
        self.own_replies = own_replies  # rtt: the reply to one's own message is the delivery
        self.ontime_ns = ontime_ns
        self.ontime_by_ds: Counter[int] = Counter()
        self.recipients: dict[int, int] = {}  # stream -> expected recipients (at the go)
        self.notes: list[str] = []
        self.cpu_samples: list[float] = []
        self.cpus_busy_samples: list[float] = []  # its CPUs' busy share, all their work
        self.lag_samples: list[float] = []
        self.rss_max = 0
        self.proc = psutil.Process()
        self.cpu = CpuMeter(self.proc)
        self.measuring = False  # the measured phase (after the go): samples count
        self.lag_worst_ms = 0.0  # worst loop lag since the last tick (the engine measures it)
        self.evicted = 0  # unacked sends forgotten past the outbox limit
        self.track_acks = False  # sends wait for an ack (set by the engine for its protocol)
        # a send due while its connection is recovered waits in the outbox (set by the
        # engine: it recovers lost connections and its sends are acked), else it is skipped
        self.queue_while_down = False
        # chat's read receipts: the per-send draw is skipped when the scenario has none
        self.receipts = bool(plan.scenario.receipt_share) and plan.kind in _CHATS
        self.end_ns = 0  # the end of the send window (closed-loop rtt stops there)
        self.closed_loop = plan.scenario.closed_loop  # rtt: each reply sends the next request
        self.live_export = False  # ticks carry every histogram (loadtest.export)

    # -- events ------------------------------------------------------------------------

    def delivery(self, conn: Peer, event: Delivery, now: int) -> Arrival | None:
        """Account one delivery; its arrival when it reached the ledger, else None (a
        probe answer, a seq duplicate, one's own message, or not part of the run)."""
        c = self.c
        if event.stream == PROBE_STREAM:
            if event.counter == conn.probe_round:
                c["probes_answered"] += 1
                conn.probe_round = -conn.probe_round
                self.hist["heartbeat"].record_us((now - event.sched_ns) // 1000)
            return None
        room, seq = event.room, event.seq
        own = event.sender == conn.index and not self.own_replies
        if seq is not None and room is not None and conn.session.item(room, seq) is _OLD:
            # seen before by seq: the client drops it, but the server did send it again,
            # and ``duplicated`` counts what arrived twice on the wire
            c["deduped"] += 1
            if not own and conn.ledger.seen(event.stream, event.sender, event.counter):
                c["duplicated"] += 1
            return None
        if own:
            # many servers (Socket.IO's io.to(room)) broadcast to the sender too, and a
            # resume replays the client's own messages: nobody's expected delivery
            self.events["own_message"] += 1
            return None
        if not conn.in_run:
            return None  # connected after the go: no message was expected here
        # fast path of RecipientLedger.arrive: the next counter of a known stream
        state = conn.ledger.streams.get((event.stream, event.sender))
        if state is not None and event.counter == state[0] + 1:
            state[0] = event.counter
            arrival = _NEW
        else:
            arrival = conn.ledger.arrive(event.stream, event.sender, event.counter)
        if arrival is _DUPLICATE:
            c["duplicated"] += 1
            c["dup_after_dedupe"] += 1  # got past the seq dedupe: the app sees it twice
            return arrival
        if arrival is _LATE:
            c["out_of_order"] += 1
        self.delivered(event.sched_ns, now)
        return arrival

    def answers(self, conn: Peer, event: Delivery, arrival: Arrival | None) -> bool:
        """Closed-loop rtt: this delivery is the reply to ``conn``'s request in flight, so
        its next one goes now (``round_trip``).

        Only a first arrival of one's own message that is not a room's item answers: a
        duplicate, or one's own message replayed by seq on a resume, would start a second
        request chain on the connection and double its load.
        """
        return (
            self.closed_loop
            and event.sender == conn.index
            and (arrival is _NEW or arrival is _LATE)
            and (event.seq is None or event.room is None)
        )

    def delivered(self, sched_ns: int, now: int) -> None:
        """One unique delivery, latency from its scheduled send time."""
        self.c["delivered"] += 1
        latency_ns = now - sched_ns
        self.second_hist.record_us(latency_ns // 1000)
        if self.by_second:
            self.delivered_by_s[(sched_ns - self.t0) // 1_000_000_000] += 1
        if self.ontime_ns and latency_ns <= self.ontime_ns:
            self.ontime_by_ds[(now - self.t0) // 100_000_000] += 1

    def sent(
        self, session: ClientSession, req: int, payload: bytes, stream: int, when: int
    ) -> None:
        """One send scheduled at ``when``: its expected recipients (known since the go),
        and, when acks are tracked, its place in the outbox until acked."""
        expect = self.recipients.get(stream, 0)
        c = self.c
        c["sent"] += 1
        c["expected"] += expect
        if self.by_second:
            second = (when - self.t0) // 1_000_000_000
            self.sent_by_s[second] += 1
            self.expected_by_s[second] += expect
        if self.track_acks and session.track(req, payload, (stream, when)) is not None:
            self.evicted += 1

    # -- sends (the driver moves the bytes: ``scheduled``, send, ``went``) ----------------

    def scheduled(self, conn: Sender, when: int) -> Outgoing | None:
        """The frames ``conn`` sends now for its message scheduled at ``when``, counted as
        sent (``sent``); None when nothing goes out now.

        Not live: when it is being recovered and sends are acked (``queue_while_down``)
        the message is composed and counted all the same, and waits in the outbox for the
        backlog (late, its latency counted from ``when``); otherwise it is skipped
        (``send_skipped``: nobody could have received it). Counted before the driver
        sends, so an ack that comes while a send yields finds it in the outbox. The read
        receipt (chat) is drawn after the message, as the ``rng`` order wants."""
        live = conn.live
        session = conn.session
        if not live and not (self.queue_while_down and session.recovering):
            self.c["send_skipped"] += 1
            return None
        req = session.new_id()
        out = compose(self.plan, conn.adapter, conn.rng, conn.index, conn.counters, when, req)
        self.sent(session, req, out.payload, out.stream, when)
        if self.receipts:
            read = receipt(self.plan, conn.adapter, conn.rng, conn.index, session.last_seq)
            if read is not None:
                out = out._replace(read=read)
        return out if live else None

    def went(
        self, out: Outgoing, when: int, now: int, typing: bool = True, read: bool = True
    ) -> None:
        """The driver sent ``out`` (from ``scheduled``); ``now``, its clock right after the
        message, gives the send lag. The typing indicator and read receipt count only when
        they went: a driver whose send can fail says so in ``typing`` and ``read``."""
        self.lag_us.append((now - when) // 1000)
        if out.typing is not None and typing:
            self.c["typing_sent"] += 1
        if out.read is not None and read:
            self.c["receipts_sent"] += 1

    def round_trip(self, conn: Sender, now: int) -> bytes | None:
        """Closed-loop rtt: the next request, sent at ``now`` when the last one's reply
        came, counted as sent; None past the send window or on a closed connection (the
        loop of that connection ends there)."""
        if now >= self.end_ns or not conn.is_open:
            return None
        session = conn.session
        req = session.new_id()
        out = compose(self.plan, conn.adapter, conn.rng, conn.index, conn.counters, now, req)
        self.sent(session, req, out.payload, out.stream, now)
        return out.payload

    def fold_lag(self) -> None:
        """Move the raw send lags into the ``send_lag`` histogram (before it is read)."""
        if self.lag_us:
            self.send_lag.record_many_us(self.lag_us)
            del self.lag_us[:]

    def ack(self, conn: Peer, event: Ack, now: int) -> int | None:
        """Settle an acked send: its send→ack latency in ns, or None for an unknown id."""
        found = conn.session.settle(event.req_id)
        latency = None
        if found is not None:
            self.c["acked"] += 1
            latency = now - found[1]
            self.hist["ack"].record_us(latency // 1000)
        if event.seq is not None and event.room is not None:
            conn.session.observe(event.room, event.seq)  # our own item: its seq is seen
        return latency

    def ready(self, conn: Peer, event: Ready, now: int) -> None:
        """The welcome (room None) or a room's join/resume answer: the setup machine's."""
        if conn.setup.ready(event, now):
            conn.wake()

    def rejected(self, conn: Peer, event: Rejected) -> bool:
        """An error frame: True when it refused one of our sends (which then expects no
        recipients); otherwise the caller decides what it answered (``refused_setup``)."""
        c = self.c
        c["errors"] += 1
        self.errors[event.code] += 1
        found = conn.session.settle(event.req_id) if event.req_id is not None else None
        if found is None:
            return False
        c["rejected"] += 1
        lost_to = self.recipients.get(found[0], 0)
        c["expected"] -= lost_to
        if self.by_second:
            self.expected_by_s[(found[1] - self.t0) // 1_000_000_000] -= lost_to
        return True

    @staticmethod
    def refused_setup(conn: Peer, code: str) -> None:
        """An error that answered no send: a resumed room refused (the others go on), or
        the hello or a join refused; the setup machine tells which."""
        if conn.setup.rejected(code):
            conn.wake()

    def loop_late(self, late_ms: float) -> None:
        """The delay meter's timer (``loadtest.delay``) woke ``late_ms`` after it was due:
        the generator's own delay at that moment, whatever its cause (its own work, a
        neighbour on its core, a GC pause, a stopped process). Every frame that arrived,
        and every send that was due, meanwhile waited as long. Recorded into ``loop_delay``
        as if a wake-up had been due every period through the stall
        (``loadtest.delay.corrected_us``), so the distribution is that of a moment taken at
        random: what a delivery landing at a random time waits for the generator."""
        if late_ms > self.lag_worst_ms:
            self.lag_worst_ms = late_ms
        if not self.measuring:
            return
        self.hist["loop_delay"].record_many_us(corrected_us(late_ms))

    def second_tick(
        self, second: int, open_now: int, recoveries: list[Recovery] | None = None
    ) -> report.Tick:
        """One second's report (the last may be partial): counters, the second's deliveries
        (folded into the run's; the next second starts empty), CPU, loop lag and RSS.

        With ``live_export`` on it also carries the other histograms, cumulative (encoding one
        costs about 0.2 ms), and ``recoveries``, the losses that ended since the last tick.
        """
        self.fold_lag()
        cpu, cpus_busy, judged = self.cpu.read()
        rss = self.proc.memory_info().rss
        self.rss_max = max(self.rss_max, rss)
        lag_ms, self.lag_worst_ms = self.lag_worst_ms, 0.0
        if self.measuring:
            if judged:
                self.cpu_samples.append(cpu)
                if cpus_busy is not None:
                    self.cpus_busy_samples.append(cpus_busy)
            self.lag_samples.append(lag_ms)
        hist, self.second_hist = self.second_hist, LatencyHistogram()
        self.hist["delivery"].merge(hist)
        return report.Tick(
            second=second,
            counters=dict(self.c),
            open_now=open_now,
            delivery_hdr=hist.encode() if hist.count else None,
            cpu_percent=cpu,
            loop_lag_ms=lag_ms,
            rss_bytes=rss,
            cpus_busy_percent=cpus_busy,
            histograms=self._live_histograms() if self.live_export else {},
            recoveries=recoveries or [],
        )

    def _live_histograms(self) -> dict[str, str]:
        return {name: h.encode() for name, h in self.hist.items() if name != "delivery" and h.count}

    # -- the end -----------------------------------------------------------------------

    def final(self, conns: Iterable[Peer], *, held: int, answering: int) -> report.Final:
        """The process's whole run (the last second's deliveries included)."""
        conns = list(conns)
        self.fold_lag()
        self.hist["delivery"].merge(self.second_hist)
        self.second_hist = LatencyHistogram()
        overflow = sum(conn.ledger.gap_overflow for conn in conns)
        if overflow:
            self.notes.append(f"{overflow} gaps forgotten past the per-stream limit")
        return report.Final(
            counters=dict(self.c),
            histograms={k: h.encode() for k, h in self.hist.items() if h.count},
            failures_by_cause=dict(self.failures),
            closes_by_code=dict(self.closes),
            errors_by_code=dict(self.errors),
            events_by_type=dict(self.events),
            sent_by_second=dict(self.sent_by_s),
            expected_by_second=dict(self.expected_by_s),
            delivered_by_second=dict(self.delivered_by_s),
            held=held,
            answering=answering,
            cpu_samples=self.cpu_samples,
            cpus=self.cpu.cpus,
            cpus_busy_samples=self.cpus_busy_samples,
            lag_samples=self.lag_samples,
            rss_max=self.rss_max,
            notes=self.notes,
            recoveries=recoveries(conns),
            ontime_by_ds=dict(self.ontime_by_ds),
        )


def recoveries(conns: Iterable[Peer]) -> list[Recovery]:
    """Every loss of the run; one still being recovered at the end never resumed."""
    out: list[Recovery] = []
    for conn in conns:
        out.extend(conn.session.records)
        if conn.session.current is not None:
            out.append(conn.session.current)
    return out
