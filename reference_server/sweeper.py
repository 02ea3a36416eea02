"""One periodic task for every per-connection timer the server needs.

A timer per connection (heartbeat, hello timeout, slow-consumer grace) would
cost memory and loop time for ten thousand idle connections. Instead one sweeper
walks all sessions every ``sweep_ms`` in slices, yielding to the loop between
slices so a large walk never stalls message traffic, and it measures event-loop
lag as the overshoot of its own sleep.
"""

from __future__ import annotations

import asyncio
import time

from reference_server.app import App
from rtbench.protocol import CloseCode

SLICE = 100
"""Sessions looked at between two yields to the loop: up to 100 pings, about 0.3 ms.

With 500 (about 1.5 ms a slice) the sweeper was the loop's longest stall in chat at
10,000 connections, where a 2 s heartbeat pings about 5,000 connections a second: a
commit's callback waited for the loop up to 2-3 ms at p99
(``rtbench_server_store_callback_seconds``, 3 runs of 500 msgs/s in rooms of 10, SQLite
store), 1-2 ms with 100. The cost is 100 yields per sweep of 10,000 connections, a few
microseconds each."""
MAX_CACHED_ROOMS = 50000  # idle rooms beyond this are dropped from memory


async def sweep_forever(app: App) -> None:
    timing, limits = app.config.timing, app.limits
    period = timing.sweep_ms / 1000
    interval = timing.heartbeat_interval_ms / 1000
    dead_after = interval + timing.heartbeat_timeout_ms / 1000
    hello_timeout = timing.hello_timeout_ms / 1000
    idle_timeout = timing.idle_timeout_ms / 1000 or float("inf")  # 0: no idle timeout
    grace = limits.slow_consumer_grace_ms / 1000
    linger = limits.close_linger_ms / 1000
    loop = asyncio.get_running_loop()
    m = app.metrics
    conns = app.connections
    while True:
        before = loop.time()
        await asyncio.sleep(period)
        lag = max(0.0, loop.time() - before - period)
        m.loop_lag = lag
        m.loop_lag_max = max(m.loop_lag_max, lag)
        now = time.monotonic()
        app.expire(now)
        for s in [s for s in conns.closing if s.closing_at and now - s.closing_at > linger]:
            conns.closing.discard(s)
            s.conn.abort()  # its peer never drained the close: cut it
        sessions = list(conns.sessions)
        for start in range(0, len(sessions), SLICE):
            if start:
                await asyncio.sleep(0)
                now = time.monotonic()
            for s in sessions[start : start + SLICE]:
                if s.closed:
                    continue
                if s.user is None and now - s.opened > hello_timeout:
                    conns.close(s, CloseCode.HELLO_TIMEOUT, "no hello within the hello timeout")
                    continue
                if now - s.data_at > idle_timeout:  # pongs do not count: only data frames
                    conns.close(s, CloseCode.HELLO_TIMEOUT, "idle timeout: no frame from you")
                    continue
                if s.over_since is not None:
                    size = s.conn.write_buffer_size()
                    if size > m.queue_high_water:
                        m.queue_high_water = size
                    if size <= limits.send_buffer_bytes:
                        s.over_since = None
                    elif now - s.over_since >= grace or size > limits.slow_consumer_hard_bytes:
                        app.fanout.slow_consumer(s)
                        continue
                idle = now - s.last_rx
                if idle >= dead_after and s.pinged:
                    conns.close(s, CloseCode.INTERNAL_ERROR, "heartbeat timeout")
                    conns.closing.discard(s)
                    s.conn.abort()  # the peer is gone; nothing will drain
                elif idle >= interval and not s.pinged:
                    s.pinged = True
                    m.heartbeat_pings += 1
                    s.conn.ping()
        app.rooms.evict_idle(MAX_CACHED_ROOMS)
