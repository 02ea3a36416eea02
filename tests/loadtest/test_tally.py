"""The shared delivery bookkeeping (``loadtest.tally``) and the worker's echo fast path.

The fast path of ``Worker.on_payload`` counts the common echo case without the adapter's
event; it must count exactly what the general path counts, for every kind of arrival.
"""

from __future__ import annotations

import time

from loadtest.adapters import Ready, Rejected, marker
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
    final = worker.final()
    return {
        "counters": final.counters,
        "events": final.events_by_type,
        "hist": {name: worker.hist[name].count for name in worker.hist},
        "probe_round": conn.probe_round,
    }


def test_echo_fast_path_counts_exactly_as_the_general_path() -> None:
    fast, general = _feed(_worker(True)), _feed(_worker(False))
    assert fast == general
    c = fast["counters"]
    assert (c["delivered"], c["out_of_order"], c["duplicated"]) == (8, 1, 1)
    assert c["probes_answered"] == 1 and fast["probe_round"] == -1
    assert fast["events"] == {"unmarked": 2}
    assert fast["hist"]["delivery"] == 8 and fast["hist"]["heartbeat"] == 1


class _Peer:
    """A connection as the tally sees it, with a plain flag for the setup wait."""

    def __init__(self, worker: Worker) -> None:
        conn = worker.conns[0]
        self.index, self.session, self.ledger = 0, conn.session, conn.ledger
        self.probe_round, self.want_welcome, self.wait_rooms, self.in_run = 0, True, True, True
        self.outcome: str | None = None

    def setup_pending(self) -> bool:
        return self.outcome is None

    def setup_ok(self) -> None:
        self.outcome = "ok"

    def setup_fail(self, code: str) -> None:
        self.outcome = f"refused {code}"


def test_setup_ends_through_the_peer_callbacks() -> None:
    worker = _worker(False)
    peer = _Peer(worker)
    peer.wait_rooms = False
    worker.ready(peer, Ready(room=None), time.monotonic_ns())
    assert peer.outcome == "ok" and not peer.want_welcome
    refused = _Peer(worker)
    assert not worker.rejected(refused, Rejected(code="unauthorized", req_id=None))
    worker.refused_setup(refused, "unauthorized")
    assert refused.outcome == "refused unauthorized"
    assert worker.c["errors"] == 1 and worker.errors == {"unauthorized": 1}
