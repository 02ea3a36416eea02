"""The shared reconnecting client, sans-IO: seqs, resume, outbox, backoff, heartbeats.

These are the decisions every driver (engine, Locust users, monitor) delegates to the
library, so they are pinned here exactly; the socket-level behaviour is in the fault
tests against the real server.
"""

from __future__ import annotations

import random

import pytest

from loadtest.adapters import (
    ADAPTERS,
    Adapter,
    CentrifugoAdapter,
    EchoAdapter,
    Feature,
    ReferenceAdapter,
)
from loadtest.client import Backoff, ClientSession, Liveness, Phase, Pulse, ReconnectPolicy
from loadtest.faults.schedule import FaultError, FaultKind, parse_fault, parse_faults
from loadtest.ledger import Arrival, RecipientLedger
from loadtest.session import SeqOrder, SessionState
from rtbench.protocol import CloseCode, ErrorCode, decode_client

MS = 1_000_000


def test_dedupe_is_exact_across_an_out_of_order_arrival() -> None:
    state = SessionState()
    state.joined("r", 2)
    assert state.observe("r", 3) is SeqOrder.NEXT
    assert state.observe("r", 6) is SeqOrder.GAP  # 4 and 5 are missing, not seen
    assert state.resume() == {"r": 3}  # resume before the oldest missing one
    assert state.observe("r", 5) is SeqOrder.FILL  # late but new: kept
    assert state.observe("r", 4) is SeqOrder.FILL
    assert state.observe("r", 5) is SeqOrder.OLD  # the replayed copy: dropped
    assert state.resume() == {"r": 6}
    assert state.complete("r", 6) and not state.complete("r", 7)


def test_a_room_first_seen_in_traffic_resumes_from_its_start() -> None:
    state = SessionState()
    assert state.observe("dm:a:b", 3) is SeqOrder.GAP
    assert state.resume() == {"dm:a:b": 0}  # 1 and 2 were sent while we were away


def test_rooms_without_items_are_resumed_too() -> None:
    state = SessionState()
    state.joined("quiet", 0)
    assert state.resume() == {"quiet": 0}


def _session(**policy: float) -> ClientSession:
    return ClientSession(ReconnectPolicy(**policy), random.Random(1))


def _live(session: ClientSession, rooms: dict[str, int]) -> None:
    adapter = ReferenceAdapter()
    frames, with_hello = session.opening_frames(adapter, "alice", None)
    assert not with_hello and decode_client(frames[0]).resume is None
    session.expect_rooms(list(rooms))
    for room, seq in rooms.items():
        session.room_ready(room, seq)
    assert session.settled()
    assert session.ready(0) == []  # a first setup has nothing to resend
    assert session.phase is Phase.LIVE


def test_ids_stay_unique_and_the_outbox_is_resent_with_the_same_ids() -> None:
    adapter = ReferenceAdapter()
    session = _session()
    _live(session, {"r": 0})
    first = session.new_id()
    session.track(first, adapter.send("r", "one", first), "one")
    second = session.new_id()
    session.track(second, adapter.send("r", "two", second), "two")
    assert session.settle(first) == "one"  # acked: forgotten
    assert session.lost(10 * MS, "close_1012")
    assert session.recovering
    queued = session.new_id()  # a send made while away waits in the outbox
    session.track(queued, adapter.send("r", "three", queued), "three")
    assert session.attempt(20 * MS)
    frames, with_hello = session.opening_frames(adapter, "alice", None)
    assert with_hello and decode_client(frames[0]).resume == {"r": 0}
    session.welcomed(30 * MS)
    assert session.room_ready("r", 1)
    backlog = session.ready(40 * MS)
    cids = [decode_client(frame).cid for frame in backlog]
    assert cids == [str(second), str(queued)]  # same ids: the server dedupes a stored one
    assert session.new_id() > queued  # never reused after a reconnect
    (record,) = session.records
    assert (record.lost_ns, record.reconnected_ns, record.resumed_ns) == (10 * MS, 30 * MS, 40 * MS)
    assert record.attempts == 1 and record.cause == "close_1012"


def test_first_ids_can_start_from_a_base() -> None:
    session = ClientSession(first_id=1_000)
    assert session.new_id() == 1_001


def test_a_refused_room_does_not_block_the_resume() -> None:
    session = _session()
    _live(session, {"r": 4})
    session.rooms.add("dm:alice:bob")  # named in advance: it may not exist yet
    session.lost(0, "dropped")
    session.attempt(1)
    session.opening_frames(ReferenceAdapter(), "alice", None)
    assert session.awaiting == {"r", "dm:alice:bob"}
    assert session.room_refused("unknown_room")
    assert not session.settled()
    assert session.room_ready("r", 4)
    assert not session.room_refused("rate_limited")  # any other error fails the attempt


# What a protocol's codes mean is the adapter's to say; the shared client only asks it.
# The sets below are what the client decided on its own before the adapters said it.
_GIVE_UP_BEFORE = frozenset({1003, 1007, 1008, 1009, 4401, 4403})


@pytest.mark.parametrize("name", sorted(ADAPTERS))
def test_every_adapter_gives_up_on_the_same_close_codes_as_before(name: str) -> None:
    final = ADAPTERS[name].fatal_close_codes
    assert final == _GIVE_UP_BEFORE
    for code in (1000, 1001, 1006, 1011, 1012, 1013, 4408, 4429):  # come back and resume
        assert code not in final


def test_the_reference_adapter_names_its_codes_from_the_protocol() -> None:
    final = ReferenceAdapter.fatal_close_codes
    assert CloseCode.UNAUTHORIZED in final and CloseCode.FORBIDDEN in final
    assert CloseCode.SERVICE_RESTART not in final  # a graceful restart: reconnect, resume
    assert ReferenceAdapter.refused_room_codes == {
        ErrorCode.UNKNOWN_ROOM,
        ErrorCode.FORBIDDEN,
        ErrorCode.TOO_MANY_ROOMS,
    }


class _ResumingAdapter(EchoAdapter):
    """A protocol that resumes but names no per-room refusal: every error fails it."""

    features = EchoAdapter.features | {Feature.RESUME, Feature.ROOMS}

    def resume(self, user: str, token: str | None, last_seq: object) -> list[bytes]:
        return [b"resume"]


@pytest.mark.parametrize(
    ("adapter", "refusals"),
    [
        (ReferenceAdapter(), {"unknown_room", "forbidden", "too_many_rooms"}),
        (CentrifugoAdapter(), {"unknown_room", "forbidden"}),  # unknown channel, denied
        (_ResumingAdapter(), set()),
    ],
)
def test_a_resume_takes_the_adapters_refusals_as_one_rooms(
    adapter: Adapter, refusals: set[str]
) -> None:
    for code in ("unknown_room", "forbidden", "too_many_rooms", "rate_limited", "internal"):
        session = _session()
        _live(session, {"r": 4, "s": 1})
        session.lost(0, "dropped")
        session.attempt(1)
        _, with_hello = session.opening_frames(adapter, "alice", None)
        assert with_hello
        assert session.room_refused(code) is (code in refusals), code


def test_a_first_connection_refuses_no_room() -> None:
    session = _session()
    session.opening_frames(ReferenceAdapter(), "alice", None)  # a join, not a resume
    assert not session.room_refused("unknown_room")  # the join's refusal fails the setup


def test_replayed_items_count_and_a_gap_the_server_skipped_marks_it_incomplete() -> None:
    session = _session()
    _live(session, {"r": 2})
    session.lost(0, "dropped")
    session.attempt(1)
    session.opening_frames(ReferenceAdapter(), "alice", None)
    session.welcomed(2)
    assert session.item("r", 3) is SeqOrder.NEXT
    assert session.item("r", 3) is SeqOrder.OLD
    session.room_ready("r", 9)  # joined at 9 with 4..9 never replayed (recovered=false)
    session.ready(3)
    (record,) = session.records
    assert record.replayed == 1 and not record.complete


def test_a_loss_during_the_first_setup_is_not_a_recovery() -> None:
    session = _session()
    session.opening_frames(ReferenceAdapter(), "alice", None)
    assert not session.lost(0, "dropped")
    assert session.current is None


def test_give_up_records_the_recovery_as_never_completed() -> None:
    session = _session(give_up_s=1.0)
    _live(session, {"r": 0})
    session.lost(0, "dropped")
    assert session.attempt(500 * MS)
    assert not session.attempt(1_500 * MS)
    assert session.phase is Phase.GONE
    (record,) = session.records
    assert record.resumed_ns == 0


def test_the_outbox_is_bounded() -> None:
    session = _session(outbox=2)
    for req in (1, 2):
        assert session.track(req, b"x", req) is None
    assert session.track(3, b"x", 3) == (1, 1)  # the oldest goes, and is reported
    assert session.dropped == 1


def test_backoff_first_attempt_is_at_once_and_later_ones_grow_to_the_cap() -> None:
    policy = ReconnectPolicy(first_spread_ms=50, base_ms=100, factor=2, max_ms=400, jitter=0.5)
    backoff = Backoff(policy, random.Random(3))
    delays = [backoff.next_delay_s() for _ in range(6)]
    assert 0 <= delays[0] <= 0.05
    assert 0.05 <= delays[1] <= 0.1
    assert 0.1 <= delays[2] <= 0.2
    assert all(0.2 <= d <= 0.4 for d in delays[4:])
    backoff.reset()
    assert backoff.next_delay_s() <= 0.05


def test_liveness_pings_a_silent_connection_and_needs_two_late_checks_to_declare_it_dead() -> None:
    after, timeout = 500 * MS, 500 * MS
    beat = Liveness(0)
    assert beat.check(400 * MS, after, timeout) is Pulse.OK
    assert beat.check(500 * MS, after, timeout) is Pulse.PING
    assert beat.check(900 * MS, after, timeout) is Pulse.OK
    assert beat.check(1_000 * MS, after, timeout) is Pulse.OK  # late once: suspect only
    assert beat.check(1_100 * MS, after, timeout) is Pulse.DEAD
    answered = Liveness(0)
    answered.check(500 * MS, after, timeout)
    answered.last_rx_ns = 600 * MS  # the pong (or any frame)
    assert answered.check(1_050 * MS, after, timeout) is Pulse.OK
    assert answered.ping_ns == 0


@pytest.mark.parametrize(
    ("spec", "kind", "field", "value"),
    [
        ("restart@10s", FaultKind.RESTART, "signal", "term"),
        ("restart:kill@1.5s", FaultKind.RESTART, "signal", "kill"),
        ("cut@500ms", FaultKind.CUT, "share", 1.0),
        ("cut:30%@5", FaultKind.CUT, "share", 0.3),
        ("cut:0.25@5s", FaultKind.CUT, "share", 0.25),
        ("blackhole:2s@1m", FaultKind.BLACKHOLE, "duration_s", 2.0),
        ("kill-worker:2@3s", FaultKind.KILL_WORKER, "count", 2),
    ],
)
def test_fault_specs(spec: str, kind: FaultKind, field: str, value: object) -> None:
    fault = parse_fault(spec)
    assert fault.kind is kind and getattr(fault, field) == value


@pytest.mark.parametrize(
    ("specs", "message"),
    [
        (["reboot@1s"], "unknown kind"),
        (["cut"], "must look like KIND"),
        (["cut:150%@1s"], "at most 100%"),
        (["restart:hup@1s"], ":term"),
        (["cut@soon"], "must look like"),
        (["restart@1s"], "--server-cmd"),
        (["cut@25s"], "past the 20 s"),
        (["blackhole:5s@1s", "cut@3s"], "inside blackhole"),
    ],
)
def test_bad_fault_specs_are_one_clear_line(specs: list[str], message: str) -> None:
    with pytest.raises(FaultError, match=message):
        parse_faults(specs, duration_s=20.0, server_cmd=None)


def test_the_ledger_can_tell_a_repeat_without_recording_it() -> None:
    """What a seq-dropped item was: a repeat (counted as sent twice) or never seen."""
    ledger = RecipientLedger()
    assert not ledger.seen(0, 1, 1)
    assert ledger.arrive(0, 1, 1) is Arrival.NEW
    assert ledger.arrive(0, 1, 3) is Arrival.NEW  # 2 missing
    assert ledger.seen(0, 1, 1) and ledger.seen(0, 1, 3)
    assert not ledger.seen(0, 1, 2) and not ledger.seen(0, 1, 4)
    assert ledger.arrive(0, 1, 2) is Arrival.LATE  # the look recorded nothing
