"""The setup step machine (``loadtest.client.setup``), sans-IO: every step and failure.

The four drivers (the worker's first connect, its reconnector, the Locust user, the
monitor's held connection) only wait and move bytes through this machine, so what a
setup sends, when it is ready and why it failed are pinned here without a socket:
timeouts are inputs (``expire`` at a given instant), answers are the adapters' events.
The socket-level behaviour is in the engine, Locust, monitor, recovery and third-party
tests against real servers.
"""

from __future__ import annotations

import random

import pytest

from loadtest.adapters import Ready, make_adapter
from loadtest.adapters.pusher import signature
from loadtest.client import (
    ClientSession,
    Phase,
    ReconnectPolicy,
    SessionSetup,
    SetupClosed,
    SetupError,
    SetupRejected,
    SetupTimeout,
    Step,
)
from loadtest.engine.recovery import _cause
from rtbench.protocol import ErrorCode, decode_client
from rtbench.protocol import messages as m

S = 1_000_000_000


def _setup(protocol: str = "reference", rooms: tuple[str, ...] = ("a", "b"), **options: object):
    session = ClientSession(ReconnectPolicy(), random.Random(1))
    adapter = make_adapter(protocol, options or None).connection()
    return session, SessionSetup(session, adapter, "alice", list(rooms))


def _live(setup: SessionSetup, seqs: dict[str, int]) -> None:
    """A first connect of the reference protocol, every room joined at its seq."""
    setup.begin(0, 5.0)
    setup.upgraded(0, None)
    setup.ready(Ready(room=None, session="c1"), 1)
    setup.take()
    for room, seq in seqs.items():
        setup.ready(Ready(room=room, seq=seq), 2)
    assert setup.step is Step.READY
    assert setup.finish(3) == []


def _resuming(setup: SessionSetup, seqs: dict[str, int], welcome_ns: int = 1) -> None:
    """Live in ``seqs``, lost at 0, and reconnected (1 s to the welcome, 5 s for the
    rooms after it) up to the welcome at ``welcome_ns``: the rooms are resuming."""
    _live(setup, seqs)
    setup.session.lost(0, "dropped")
    setup.begin(0, 1.0, 5.0)
    setup.upgraded(0, None)
    assert setup.ready(Ready(room=None), welcome_ns)
    assert setup.step is Step.ROOMS  # the hello resumed every room: no join follows
    assert [decode_client(frame).resume for frame in setup.take()] == [seqs]


def test_first_connect_hello_then_welcome_then_joins_then_ready() -> None:
    session, setup = _setup()
    assert setup.step is Step.IDLE and not setup.active
    setup.begin(0, 5.0)
    assert setup.active and setup.step is Step.UPGRADE and setup.take() == []
    setup.upgraded(1, "tok")
    (hello,) = setup.take()
    decoded = decode_client(hello)
    assert isinstance(decoded, m.Hello) and decoded.token == "tok" and decoded.resume is None
    assert setup.step is Step.WELCOME and not setup.over
    assert setup.ready(Ready(room=None, session="c1"), 2)  # the driver looks again
    assert setup.step is Step.ROOMS and setup.welcome_id == "c1"
    joins = [decode_client(frame) for frame in setup.take()]
    assert [(j.room, j.id) for j in joins] == [("a", 1), ("b", 2)]  # the client's own ids
    assert not setup.ready(Ready(room="a", seq=3), 3)  # one of two: nothing to look at
    assert setup.ready(Ready(room="b", seq=0), 4)
    assert setup.step is Step.READY and setup.over
    setup.check()  # nothing to raise
    assert setup.finish(5) == []  # a first connect has no backlog
    assert setup.step is Step.IDLE and session.phase is Phase.LIVE
    assert session.last_seq == {"a": 3} and session.rooms == {"a", "b"}


def test_a_welcome_before_the_upgrade_returns_is_kept() -> None:
    # Pusher welcomes first, possibly in the 101's read; a private channel's subscribe
    # is signed with the socket id that welcome named
    _, setup = _setup("pusher", rooms=("r",))
    setup.begin(0, 5.0)
    assert not setup.ready(Ready(room=None, session="123.456"), 1)
    assert setup.step is Step.UPGRADE
    setup.upgraded(2, None)
    assert setup.step is Step.ROOMS  # no second wait for the welcome
    (join,) = setup.take()
    assert signature("app-secret", "123.456", "private-r").encode() in join


def test_a_protocol_without_welcome_joins_at_once() -> None:
    session, setup = _setup("phoenix", rooms=("r",))
    setup.begin(0, 5.0)
    setup.upgraded(1, None)
    assert setup.step is Step.ROOMS
    assert len(setup.take()) == 1  # the join (Phoenix opens with nothing)
    assert setup.ready(Ready(room="r", seq=0), 2)
    assert setup.finish(3) == [] and session.live


def test_joins_the_server_never_confirms_are_done_once_sent() -> None:
    _, setup = _setup("graphql-ws", rooms=("r1", "r2"))
    setup.begin(0, 5.0)
    setup.upgraded(1, None)
    assert len(setup.take()) == 1  # connection_init
    assert setup.ready(Ready(room=None), 2)
    assert len(setup.take()) == 2  # the two subscriptions...
    assert setup.step is Step.READY  # ... and no answer to wait for


def test_no_rooms_is_ready_at_the_welcome() -> None:
    _, setup = _setup(rooms=())
    setup.begin(0, 5.0)
    setup.upgraded(1, None)
    assert setup.ready(Ready(room=None), 2)
    assert setup.step is Step.READY and len(setup.take()) == 1  # the hello only


def test_a_reconnect_resumes_in_the_hello_and_sends_the_backlog() -> None:
    session, setup = _setup()
    _live(setup, {"a": 3, "b": 0})
    adapter = setup.adapter
    req = session.new_id()
    session.track(req, adapter.send("a", "unacked", req))
    assert session.lost(10 * S, "close_1012") and session.attempt(11 * S)
    setup.begin(11 * S, 1.0, 5.0)
    setup.upgraded(11 * S, None)
    (hello,) = setup.take()
    assert decode_client(hello).resume == {"a": 3, "b": 0}
    assert setup.ready(Ready(room=None), 12 * S)
    assert setup.step is Step.ROOMS and setup.take() == []  # resumed by the hello: no join
    setup.ready(Ready(room="a", seq=5), 12 * S)
    assert setup.ready(Ready(room="b", seq=0), 13 * S)
    backlog = setup.finish(14 * S)
    assert [decode_client(frame).cid for frame in backlog] == [str(req)]  # same id
    (record,) = session.records
    assert (record.reconnected_ns, record.resumed_ns) == (12 * S, 14 * S)
    assert not record.complete  # a: 4 and 5 were never replayed


def test_rooms_resumed_before_the_welcome_is_read_count() -> None:
    session, setup = _setup(rooms=("a",))
    _live(setup, {"a": 1})
    session.lost(0, "dropped")
    setup.begin(0, 1.0)
    setup.upgraded(0, None)
    setup.ready(Ready(room="a", seq=1), 1)  # (one read held the room before the welcome)
    assert setup.step is Step.WELCOME
    assert setup.ready(Ready(room=None), 2)
    assert setup.step is Step.READY


def test_a_reconnect_without_resume_joins_again() -> None:
    session, setup = _setup("phoenix", rooms=("r",))
    setup.begin(0, 5.0)
    setup.upgraded(0, None)
    setup.take()
    setup.ready(Ready(room="r", seq=0), 1)
    setup.finish(1)
    session.lost(2, "dropped")
    setup.begin(3, 1.0, 5.0)
    setup.upgraded(3, None)
    assert len(setup.take()) == 1 and setup.step is Step.ROOMS  # the join, again
    assert setup.ready(Ready(room="r", seq=0), 4)


def test_a_refused_room_lets_the_others_resume_any_other_error_fails() -> None:
    session, setup = _setup()
    _resuming(setup, {"a": 0, "b": 0})
    assert not setup.rejected(ErrorCode.UNKNOWN_ROOM)  # one room gone: go on
    assert setup.step is Step.ROOMS
    assert setup.ready(Ready(room="b", seq=0), 2)  # the other one: done
    assert setup.step is Step.READY

    session.lost(3, "dropped")
    setup.begin(3, 1.0, 5.0)
    setup.upgraded(3, None)
    setup.ready(Ready(room=None), 4)
    assert setup.rejected(ErrorCode.RATE_LIMITED)
    assert setup.step is Step.FAILED and setup.over and not setup.active
    with pytest.raises(SetupRejected) as failed:
        setup.check()
    assert failed.value.cause == f"rejected_{ErrorCode.RATE_LIMITED}"


def test_a_refused_last_room_ends_the_wait() -> None:
    _, setup = _setup(rooms=("a",))
    _resuming(setup, {"a": 0})
    assert setup.rejected(ErrorCode.FORBIDDEN) and setup.step is Step.READY


@pytest.mark.parametrize("step", [Step.UPGRADE, Step.WELCOME, Step.ROOMS])
def test_a_refused_hello_or_join_fails_at_every_step(step: Step) -> None:
    _, setup = _setup()
    setup.begin(0, 5.0)
    if step >= Step.WELCOME:
        setup.upgraded(0, None)
    if step >= Step.ROOMS:
        setup.ready(Ready(room=None), 1)
    assert setup.step is step
    assert setup.rejected("unauthorized")
    with pytest.raises(SetupRejected, match="rejected_unauthorized"):
        setup.check()


def test_a_close_during_the_setup_fails_it_with_its_code() -> None:
    _, setup = _setup()
    setup.begin(0, 5.0)
    setup.upgraded(0, None)
    assert setup.closed(4401)
    with pytest.raises(SetupClosed) as failed:
        setup.check()
    assert failed.value.cause == "closed_4401" and failed.value.code == 4401
    assert not setup.closed(1006)  # the first failure stands


def test_the_welcome_timeout_is_an_input() -> None:
    _, setup = _setup()
    setup.begin(10 * S, 2.0)
    setup.upgraded(10 * S, None)
    assert setup.wait_s(11 * S) == 1.0
    assert not setup.expire(11 * S)  # a wait that woke early: not yet
    assert setup.step is Step.WELCOME
    assert setup.wait_s(13 * S) == 0.0
    assert setup.expire(12 * S)
    with pytest.raises(SetupTimeout) as failed:
        setup.check()
    assert failed.value.cause == "timeout" and failed.value.step is Step.WELCOME


def test_a_first_connect_has_one_deadline_for_welcome_and_rooms() -> None:
    _, setup = _setup()
    setup.begin(0, 2.0)
    setup.upgraded(0, None)
    setup.ready(Ready(room=None), int(1.5 * S))
    assert setup.wait_s(int(1.5 * S)) == 0.5  # the rooms get what is left
    assert setup.expire(2 * S)
    with pytest.raises(SetupTimeout) as failed:
        setup.check()
    assert failed.value.step is Step.ROOMS


def test_a_reconnect_gives_the_rooms_their_own_time_from_the_welcome() -> None:
    _, setup = _setup()
    _resuming(setup, {"a": 0, "b": 0}, welcome_ns=int(0.9 * S))
    assert not setup.expire(5 * S)  # past the attempt's 1 s: the replays have 5 s more
    assert setup.wait_s(5 * S) == pytest.approx(0.9)
    assert setup.expire(int(5.9 * S)) and setup.step is Step.FAILED


def test_events_after_the_setup_belong_to_no_setup() -> None:
    _, setup = _setup()
    _live(setup, {"a": 0, "b": 0})
    assert not setup.closed(1006)  # a live connection's close is the reconnector's
    assert not setup.rejected("rate_limited")  # a refusal of something else
    assert not setup.expire(100 * S)
    setup.check()
    assert setup.ready(Ready(room=None, session="c2"), 5) is False
    assert setup.welcome_id == "c2"  # still the last name heard
    setup.begin(0, 1.0)
    setup.abandon()  # the driver's upgrade failed: its socket's close is nobody's
    assert not setup.closed(1006) and setup.step is Step.IDLE


def test_a_new_attempt_forgets_the_last_failure() -> None:
    _, setup = _setup()
    setup.begin(0, 1.0)
    setup.closed(1006)
    setup.begin(S, 1.0)
    setup.check()  # nothing to raise
    assert setup.step is Step.UPGRADE


def test_one_public_hierarchy_every_driver_counts_by_class() -> None:
    failures = [SetupRejected("forbidden"), SetupClosed(1011), SetupTimeout(Step.ROOMS)]
    assert all(isinstance(failure, SetupError) for failure in failures)
    # the native reconnector names a failure by its class, never by a name string
    assert [_cause(failure) for failure in failures] == [
        "rejected_forbidden",
        "closed_1011",
        "timeout",
    ]
    assert str(failures[0]) == "rejected_forbidden"  # (the monitor logs it as it is)
