"""One client flooding at its limit, another far past it: the others keep their p99.

A small run of ``tests/security/abuse.py`` (the same code makes the figures in
docs/SECURITY.md at a bigger size). It measures latency, so it takes the machine
lock like any load run, waiting a bounded time for it.
"""

from __future__ import annotations

import asyncio

import pytest

from tests.security.abuse import measure
from tests.support.machine import machine_lock

TARGET_P99_MS = 100.0  # the delivery target (rtbench.slo default)


@pytest.mark.slow
def test_a_flooder_does_not_push_others_past_the_delivery_target(start_server, capsys) -> None:
    server = start_server()  # SQLite store, default limits (200 frames/s per connection)
    attempts = []
    with machine_lock():
        # Other test suites take no lock and share the two cores: one noisy run gets a
        # second chance, and both are printed. Correctness is checked on every run.
        for _ in range(2):
            calm, abuse = asyncio.run(
                measure(server.url, clients=20, room_size=5, rate=5.0, seconds=4.0, limit=200.0)
            )
            attempts.append(abuse)
            with capsys.disabled():
                for phase in (calm, abuse):
                    print("\n" + " ".join(f"{k}={v}" for k, v in phase.summary().items()), end="")
                print()
            for phase in (calm, abuse):
                assert phase.expected > 0 and phase.delivered == phase.expected, phase.summary()
                assert phase.duplicates == 0
            assert abuse.flood_sent >= 700 and abuse.flood_refused == 0  # at its limit: all in
            # past it: warned, then closed 1008, each time (the spammer may lose the close
            # frame to the TCP reset its own unread frames cause: 0; the server counts exactly)
            assert len(abuse.spam_closes) == 3 and set(abuse.spam_closes) <= {1008, 0}
            if abuse.ms(99) < TARGET_P99_MS:
                break
    assert min(a.ms(99) for a in attempts) < TARGET_P99_MS, [a.summary() for a in attempts]
    assert server.metric("rtbench_server_closes_total", 'code="1008"') == 3 * len(attempts)
    assert server.metric("rtbench_server_frames_rate_limited_total") >= 3 * 1000 * len(attempts)
