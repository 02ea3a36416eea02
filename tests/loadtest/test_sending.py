"""The send decisions both drivers share (``Tally.scheduled``, ``Tally.went``,
``Tally.round_trip``, ``Tally.answers``), socket-free.

The native engine's ``Worker.send_one`` and the Locust user's ``Conn.send_one`` only move
the bytes between ``scheduled`` and ``went``: whether a send is skipped or queued, what
it counts and when the closed loop stops are decided here, once, so these tests pin
them for both drivers. The client below is a real ``ClientSession`` with the reference
adapter and a real plan; only the socket is missing, which is the point.
"""

from __future__ import annotations

import random

from loadtest.adapters import Adapter, Delivery, make_adapter, parse_marker
from loadtest.client import ClientSession
from loadtest.ledger import Arrival
from loadtest.plan import Plan
from loadtest.scenarios import Kind, Scenario
from loadtest.tally import Tally
from rtbench.protocol import decode_client
from rtbench.protocol import messages as m

T0 = 1_000_000_000
WHEN = T0 + 2_000_000_000


class Client:
    """One connection as the tally's send decisions see it (``loadtest.tally.Sender``)."""

    def __init__(self, index: int, adapter: Adapter, seed: int = 7) -> None:
        self.index = index
        self.rng = random.Random(seed)
        self.session = ClientSession(rng=self.rng)
        self.adapter = adapter
        self.counters: dict[int, int] = {}
        self.live = True
        self.is_open = True


def _tally(kind: Kind = Kind.CHAT, **options: object) -> tuple[Tally, Client]:
    # (chat's defaults mix in DMs, typing and receipts: each test asks for what it needs)
    options = {"rate": 1.0, **options}
    if kind is Kind.CHAT:
        options = {"dm_share": 0.0, "typing_share": 0.0, "receipt_share": 0.0, **options}
    scenario = Scenario(
        scenario=kind, protocol="reference", users=4, target="ws://h:1", **options
    ).resolved()
    plan = Plan(scenario, "t")
    tally = Tally(T0, plan=plan, by_second=True, own_replies=kind is Kind.RTT)
    tally.recipients = plan.recipients(b"\xff")
    tally.track_acks = kind is not Kind.RTT  # the reference protocol acks sends
    client = Client(0, make_adapter("reference"))
    client.session.ready(T0)  # set up: live
    return tally, client


def test_a_live_send_is_counted_before_it_goes_and_its_lag_after() -> None:
    tally, client = _tally()
    out = tally.scheduled(client, WHEN)
    assert out is not None and out.typing is None and out.read is None
    sent = decode_client(out.payload)
    assert isinstance(sent, m.Send) and sent.room == "troom0"
    assert parse_marker(sent.body) == (0, 0, 1, WHEN)
    c = tally.c
    assert (c["sent"], c["expected"], c["send_skipped"]) == (1, 3, 0)  # 3 others in the room
    assert tally.sent_by_s == {2: 1} and tally.expected_by_s == {2: 3}
    # in the outbox before the driver writes it: an ack that comes while the send yields
    # (a gevent switch) finds it
    assert client.session.backlog() == [out.payload]
    tally.went(out, WHEN, WHEN + 250_000)
    tally.fold_lag()
    lag = tally.hist["send_lag"]
    assert lag.count == 1 and lag.max_ms() == 0.25
    assert (c["typing_sent"], c["receipts_sent"]) == (0, 0)


def test_a_send_due_on_a_connection_that_is_down_is_skipped() -> None:
    tally, client = _tally()
    client.live = False
    state = client.rng.getstate()
    assert tally.scheduled(client, WHEN) is None
    c = tally.c
    assert (c["send_skipped"], c["sent"], c["expected"]) == (1, 0, 0)
    assert client.counters == {} and client.session.outbox == {}
    assert client.rng.getstate() == state  # nothing composed: the seeded draws stay put


def test_a_send_due_while_recovering_waits_in_the_outbox_when_sends_are_acked() -> None:
    tally, client = _tally()
    tally.queue_while_down = True
    client.live = False
    client.session.lost(WHEN - 1, "dropped")
    assert client.session.recovering
    assert tally.scheduled(client, WHEN) is None  # nothing to write now ...
    c = tally.c
    assert (c["send_skipped"], c["sent"], c["expected"]) == (0, 1, 3)  # ... but it counts
    (queued,) = client.session.backlog()  # the backlog writes it once the rooms are back
    sent = decode_client(queued)
    assert isinstance(sent, m.Send) and parse_marker(sent.body) == (0, 0, 1, WHEN)
    assert tally.hist["send_lag"].count == 0 and not tally.lag_us  # not sent yet


def test_while_recovering_without_queueing_the_send_is_skipped() -> None:
    """The native engine without reconnects (or an unacked protocol) queues nothing."""
    tally, client = _tally()
    client.live = False
    client.session.lost(WHEN - 1, "dropped")
    assert tally.scheduled(client, WHEN) is None
    assert (tally.c["send_skipped"], tally.c["sent"]) == (1, 0)
    assert client.session.outbox == {}


def test_typing_and_receipts_count_only_when_the_driver_sent_them() -> None:
    tally, client = _tally(typing_share=1.0, receipt_share=1.0)
    client.session.observe("troom0", 4)  # a receipt reads up to the last seq seen
    out = tally.scheduled(client, WHEN)
    assert out is not None and out.typing is not None and out.read is not None
    assert isinstance(decode_client(out.typing), m.Typing)
    read = decode_client(out.read)
    assert isinstance(read, m.Read) and read.seq == 4
    tally.went(out, WHEN, WHEN, typing=False, read=True)  # the typing frame failed to go
    assert (tally.c["typing_sent"], tally.c["receipts_sent"]) == (0, 1)
    out = tally.scheduled(client, WHEN + 1)
    assert out is not None
    tally.went(out, WHEN + 1, WHEN + 1)  # a driver whose send cannot fail: both went
    assert (tally.c["typing_sent"], tally.c["receipts_sent"]) == (1, 2)
    assert tally.c["sent"] == 2


def test_no_receipt_before_anything_was_seen_and_none_without_the_share() -> None:
    tally, client = _tally(receipt_share=1.0)
    out = tally.scheduled(client, WHEN)
    assert out is not None and out.read is None  # no seq seen yet: nothing to mark read
    tally, client = _tally()
    client.session.observe("troom0", 4)
    out = tally.scheduled(client, WHEN)
    assert out is not None and out.read is None and not tally.receipts


def test_a_queued_send_draws_its_receipt_as_a_live_one_would() -> None:
    """The rng's order is part of a seeded run: a send queued while recovering draws the
    same (DM, typing, receipt) as a live one, so the next messages stay the same."""
    live_tally, live = _tally(typing_share=0.5, receipt_share=0.5, dm_share=0.5)
    down_tally, down = _tally(typing_share=0.5, receipt_share=0.5, dm_share=0.5)
    down_tally.queue_while_down = True
    for client in (live, down):
        client.session.observe("troom0", 1)
    down.live = False
    down.session.lost(WHEN - 1, "dropped")
    assert live_tally.scheduled(live, WHEN) is not None
    assert down_tally.scheduled(down, WHEN) is None
    assert live.rng.getstate() == down.rng.getstate()
    assert live.counters == down.counters


def test_the_closed_loop_sends_the_next_request_until_the_end_time() -> None:
    tally, client = _tally(Kind.RTT, closed_loop=True, rate=None)
    tally.end_ns = WHEN + 10
    payload = tally.round_trip(client, WHEN)
    assert payload is not None
    ping = decode_client(payload)
    assert isinstance(ping, m.Ping) and parse_marker(ping.ts) == (0, 0, 1, WHEN)
    payload = tally.round_trip(client, WHEN + 9)
    assert payload is not None
    ping = decode_client(payload)
    assert isinstance(ping, m.Ping) and parse_marker(ping.ts) == (0, 0, 2, WHEN + 9)
    assert (tally.c["sent"], tally.c["expected"]) == (2, 2)  # each comes back to itself
    assert tally.round_trip(client, WHEN + 10) is None  # the end time: the loop stops
    assert tally.round_trip(client, WHEN + 11) is None
    assert (tally.c["sent"], tally.c["expected"]) == (2, 2)
    assert client.counters == {0: 2}


def test_the_closed_loop_stops_on_a_closed_connection() -> None:
    tally, client = _tally(Kind.RTT, closed_loop=True, rate=None)
    tally.end_ns = WHEN + 1_000
    client.is_open = False
    assert tally.round_trip(client, WHEN) is None
    assert (tally.c["sent"], tally.c["expected"], tally.c["send_skipped"]) == (0, 0, 0)
    assert client.counters == {} and client.session.next_id == 0


def test_only_a_first_arrival_of_ones_own_request_sends_the_next() -> None:
    tally, client = _tally(Kind.RTT, closed_loop=True, rate=None)
    mine = Delivery(sender=0, stream=0, counter=1, sched_ns=WHEN)
    assert tally.answers(client, mine, Arrival.NEW)
    assert tally.answers(client, mine, Arrival.LATE)
    # arrived again (a resent reply): the request it answers already sent its next one,
    # and a second chain would double the connection's load
    assert not tally.answers(client, mine, Arrival.DUPLICATE)
    assert not tally.answers(client, mine, None)  # not counted: deduped, or a probe
    theirs = Delivery(sender=1, stream=0, counter=1, sched_ns=WHEN)
    assert not tally.answers(client, theirs, Arrival.NEW)
    # one's own message as a room's item (a replay by seq on resume) answers nothing
    replayed = Delivery(sender=0, stream=0, counter=1, sched_ns=WHEN, room="r", seq=4)
    assert not tally.answers(client, replayed, Arrival.NEW)


def test_without_the_closed_loop_no_reply_sends_anything() -> None:
    tally, client = _tally(Kind.RTT, rate=1.0)
    mine = Delivery(sender=0, stream=0, counter=1, sched_ns=WHEN)
    assert not tally.answers(client, mine, Arrival.NEW)
