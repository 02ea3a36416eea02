"""The refused-connect path: one probe per worker, clients released when the port listens.

A real listening socket on loopback comes and goes; no server protocol is involved
because the watch only asks whether TCP connects.
"""

from __future__ import annotations

import asyncio
import random
import time

from loadtest.client.policy import Backoff, ReconnectPolicy
from loadtest.engine.recovery import ListenWatch
from loadtest.faults.server import free_port


async def test_waiters_go_as_soon_as_the_port_listens() -> None:
    port = free_port()
    watch = ListenWatch(f"ws://127.0.0.1:{port}/ws", interval_s=0.02)
    try:
        watch.refused()
        watch.refused()  # a second refusal does not start a second probe
        first = watch.task
        waiters = [asyncio.create_task(watch.wait(5.0)) for _ in range(50)]
        await asyncio.sleep(0.15)
        assert not any(w.done() for w in waiters)
        assert watch.task is first and watch.probes >= 3  # polling, one prober
        probes_before = watch.probes
        server = await asyncio.start_server(lambda r, w: w.close(), "127.0.0.1", port)
        opened = time.monotonic()
        async with server:
            await asyncio.wait_for(asyncio.gather(*waiters), 1.0)
            assert time.monotonic() - opened < 0.2  # within a probe interval or so
            assert watch.open.is_set()
            assert watch.probes - probes_before <= 12  # 50 waiters, one probe stream
    finally:
        await watch.stop()


async def test_a_wait_ends_by_itself_when_nothing_comes() -> None:
    port = free_port()
    watch = ListenWatch(f"ws://127.0.0.1:{port}", interval_s=0.02)
    try:
        watch.refused()
        started = time.monotonic()
        await watch.wait(0.1)
        assert 0.09 <= time.monotonic() - started < 0.5
        assert not watch.open.is_set()
    finally:
        await watch.stop()
    assert watch.task is None


def test_refused_retries_do_not_climb_the_ladder() -> None:
    """The spread after the port is back stays within first_spread_ms, whatever the
    number of refusals, and the exponential ladder is left where it was."""
    policy = ReconnectPolicy(first_spread_ms=50)
    backoff = Backoff(policy, random.Random(3))
    backoff.next_delay_s()  # the first attempt after the loss
    for _ in range(100):
        assert 0.0 <= backoff.spread_s() <= 0.05
    assert backoff.attempt == 1
    assert ReconnectPolicy().jitter == 1.0  # full jitter by default


def test_listen_watch_reads_host_and_port() -> None:
    watch = ListenWatch("wss://example.test/ws", 0.02)
    assert (watch.host, watch.port) == ("example.test", 443)
