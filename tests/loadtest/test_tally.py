"""The shared delivery bookkeeping (``loadtest.tally``) and the worker's echo fast path.

The fast path of ``Worker.on_payload`` counts the common echo case without the adapter's
event; it must count exactly what the general path counts, for every kind of arrival.
"""

from __future__ import annotations

import time

import pytest

from loadtest.adapters import Ready, Rejected, marker
from loadtest.client.setup import SessionSetup, SetupRejected, Step
from loadtest.engine import wire
from loadtest.engine.worker import Worker
from loadtest.plan import PROBE_STREAM
from loadtest.scenarios import Kind, Scenario


def _worker(fast: bool, **options: object) -> Worker:
    scenario = Scenario(
        scenario=Kind.RTT,
        protocol="echo",
        users=2,
        rate=1.0,
        target="ws://127.0.0.1:1",
        **options,
    ).resolved()
    start = wire.Start(scenario=scenario, worker=0, tag="t", url=scenario.target, t0_ns=0)
    worker = Worker(start, emit=lambda message: None)
    worker.raw_markers = fast
    return worker


def _frames(now: int) -> list[bytes]:
    """In order, a gap, the late one, a duplicate, another stream, a probe, junk."""
    out = [marker(0, 0, n, now - 5_000_000).encode() for n in (1, 2, 3, 5, 4, 5, 6)]
    out.append(marker(1, 1, 1, now - 1_000_000, 64).encode())  # someone else's, padded
    out.append(marker(0, PROBE_STREAM, 1, now - 2_000_000).encode())
    out += [b"rtb1.x.y", b"hello", marker(0, 0, 7, now).encode()]
    return out


def _feed(worker: Worker) -> dict:
    conn = worker.conns[0]
    conn.probe_round = 1
    now = time.monotonic_ns()
    for payload in _frames(now):
        worker.on_payload(conn, payload)
    final = worker.final_report()
    return {
        "counters": final.counters,
        "events": final.events_by_type,
        "hist": {name: worker.hist[name].count for name in worker.hist},
        "probe_round": conn.probe_round,
    }


def test_echo_fast_path_counts_exactly_as_the_general_path() -> None:
    fast, general = _feed(_worker(True)), _feed(_worker(False))
    assert fast == general  # (fast_hits: 1, 2 and 8 were counted by the fast path)
    c = fast["counters"]
    assert (c["delivered"], c["out_of_order"], c["duplicated"]) == (8, 1, 1)
    assert c["probes_answered"] == 1 and fast["probe_round"] == -1
    assert fast["events"] == {"unmarked": 2}
    assert fast["hist"]["delivery"] == 8 and fast["hist"]["heartbeat"] == 1


class _Peer:
    """A connection as the tally sees it: its setup machine, and a count of its wakes."""

    def __init__(self, worker: Worker) -> None:
        conn = worker.conns[0]
        self.index, self.session, self.ledger = 0, conn.session, conn.ledger
        self.probe_round, self.in_run = 0, True
        self.setup = SessionSetup(self.session, conn.adapter, "u", [])
        self.wakes = 0

    def wake(self) -> None:
        self.wakes += 1


def test_setup_answers_go_to_the_peer_setup_machine() -> None:
    worker = _worker(False)
    peer = _Peer(worker)
    now = time.monotonic_ns()
    peer.setup.begin(now, 1.0)
    peer.setup.upgraded(now, None)  # echo: no welcome, no rooms: ready at once
    worker.ready(peer, Ready(room=None, session="s1"), now)
    assert peer.setup.step is Step.READY and peer.setup.welcome_id == "s1"
    assert peer.wakes == 0  # (nothing moved: it was ready already)
    refused = _Peer(worker)
    refused.setup.begin(now, 1.0)
    assert not worker.rejected(refused, Rejected(code="unauthorized", req_id=None))
    worker.refused_setup(refused, "unauthorized")
    assert refused.wakes == 1 and refused.setup.step is Step.FAILED
    with pytest.raises(SetupRejected) as failed:
        refused.setup.check()
    assert failed.value.cause == "rejected_unauthorized"
    assert worker.c["errors"] == 1 and worker.errors == {"unauthorized": 1}


class _Sent:
    """A picows transport that keeps what was sent."""

    def __init__(self) -> None:
        self.payloads: list[bytes] = []

    def send(self, msg_type: object, payload: bytes) -> None:
        self.payloads.append(payload)


class _Recorder:
    """An array('q') whose append goes through ``append`` (to count the fast path's hits)."""

    def __init__(self, values: object, append: object) -> None:
        self.values, self.append = values, append

    def __bool__(self) -> bool:
        return bool(self.values)

    def __len__(self) -> int:
        return len(self.values)

    def __iter__(self):  # type: ignore[no-untyped-def]
        return iter(self.values)

    def __delitem__(self, key: slice) -> None:
        del self.values[key]


class _Frame:
    def __init__(self, payload: bytes) -> None:
        from picows import WSMsgType

        self.msg_type = WSMsgType.TEXT
        self.payload = payload

    def get_payload_as_bytes(self) -> bytes:
        return self.payload


def _echo_run(fast: bool, t: int) -> tuple[dict, list[bytes]]:
    """Sends and echoes of one connection: in order, two in flight, reordered, a duplicate,
    a lost one, junk; through the fast path (``send_echo`` and ``EchoConn``) or the
    general one (``send_one`` and ``on_payload``)."""
    worker = _worker(True)
    assert worker.echo_rtt
    transport = _Sent()
    for conn in worker.conns:
        conn.transport, conn.is_open, conn.ready, conn.live = transport, True, True, True
    worker.recipients = worker.plan.recipients(b"\x03")
    conn = worker.conns[0]
    if fast:
        worker.prepare_echo(worker.conns)
        send = worker.send_echo
        fast_hits = [0]
        counted = worker.rtt_us.append

        def count_fast(value: int) -> None:
            fast_hits[0] += 1
            counted(value)

        worker.rtt_us = _Recorder(worker.rtt_us, count_fast)

        def echo(n: int) -> None:
            conn.on_ws_frame(None, _Frame(transport.payloads[n - 1]))
    else:
        send = worker.send_one

        def echo(n: int) -> None:
            worker.on_payload(conn, transport.payloads[n - 1])

    plan: list[tuple[str, int]] = [
        ("send", 1), ("echo", 1),  # in order
        ("send", 2), ("send", 3), ("echo", 2), ("echo", 3),  # two in flight
        ("send", 4), ("send", 5), ("echo", 5), ("echo", 4),  # reordered: 4 is late
        ("echo", 4),  # a duplicate
        ("send", 6), ("send", 7), ("echo", 7),  # 6 is lost
        ("send", 8), ("echo", 8), ("echo", 1),  # in order again, an old duplicate
    ]  # fmt: skip
    for step, n in plan:
        if step == "send":
            send(conn, t + n * 1_000_000)
        else:
            echo(n)
    conn.on_ws_frame(None, _Frame(b"hello"))
    final = worker.final_report()
    figures = {
        "fast_hits": fast_hits[0] if fast else 3,
        "counters": final.counters,
        "events": final.events_by_type,
        "hist": {name: worker.hist[name].count for name in worker.hist},
        "missing": conn.ledger.missing(),
    }
    return figures, transport.payloads


def test_echo_rtt_fast_path_sends_and_counts_as_the_general_path() -> None:
    t = time.monotonic_ns() - 50_000_000
    fast, fast_sent = _echo_run(True, t)
    general, general_sent = _echo_run(False, t)
    assert fast_sent == general_sent  # byte for byte the same markers
    assert fast_sent[0] == marker(0, 0, 1, t + 1_000_000, 100).encode()
    assert fast == general  # (fast_hits: 1, 2 and 8 were counted by the fast path)
    c = fast["counters"]
    assert (c["sent"], c["expected"], c["bytes_sent"]) == (8, 8, 800)
    assert (c["delivered"], c["out_of_order"], c["duplicated"]) == (7, 1, 2)
    assert fast["missing"] == 1  # 6, lost
    assert fast["hist"]["delivery"] == 7 and fast["hist"]["send_lag"] == 8
    assert fast["events"] == {"unmarked": 1}


def test_the_delay_meter_counts_a_stall_as_every_moment_in_it() -> None:
    """A timer that woke 50 ms late stands for the whole stall: one 10 ms period's worth
    of moments at each of 50, 40, 30, 20, 10 and 0 ms (the coordinated-omission
    correction), so the distribution is what a delivery landing at random waits for."""
    worker = _worker(fast=False)
    worker.loop_late(3.0)  # before the go: the worst is kept, nothing is recorded
    assert worker.lag_worst_ms == 3.0 and worker.hist["loop_delay"].count == 0
    worker.measuring = True
    for _ in range(94):
        worker.loop_late(0.0)  # on time
    worker.loop_late(50.0)
    delay = worker.hist["loop_delay"]
    assert delay.count == 100 and worker.lag_worst_ms == 50.0
    assert delay.max_ms() == pytest.approx(50.0, rel=0.01)
    assert delay.percentile_ms(95.0) == pytest.approx(0.0, abs=0.001)  # (1 us: HDR's floor)
    assert delay.percentile_ms(96.0) == pytest.approx(10.0, rel=0.01)
