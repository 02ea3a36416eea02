"""Process lifecycle: open the store, listen, log one line, drain on SIGINT/SIGTERM.

The listening line is an interface: scripts and test fixtures parse it for the
real port (``--port 0``), so its shape stays
``rtbench reference server listening on ws://HOST:PORT/ws (transport T, store S, pid N)``.
A worker of ``rtbench serve --workers N`` (``workers.WorkerSpec``) prints no such
line (its supervisor does, once); it accepts on the supervisor's socket and
publishes its numbers for the machine-wide /metrics and /healthz.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import sys
from typing import TYPE_CHECKING

from reference_server.app import App
from reference_server.auth import make_authenticator
from reference_server.broker import BrokerError, make_broker
from reference_server.config import ServerConfig
from reference_server.store import make_store
from reference_server.sweeper import sweep_forever
from reference_server.transport import TransportOptions, make_transport

if TYPE_CHECKING:
    from reference_server.workers import WorkerSpec

log = logging.getLogger("rtbench.server")


def announce(host: str, port: int, transport: str, store: str) -> None:
    """Print the listening line (once per server, whatever its number of workers)."""
    shown = f"[{host}]" if ":" in host else host
    print(
        f"rtbench reference server listening on ws://{shown}:{port}/ws "
        f"(transport {transport}, store {store}, pid {os.getpid()})",
        file=sys.stderr,
        flush=True,
    )


class StartupError(Exception):
    """The server cannot start (port taken, store unusable); one line for the user."""


async def serve(
    config: ServerConfig,
    ready: asyncio.Future[int] | None = None,
    worker: WorkerSpec | None = None,
) -> None:
    """Run until SIGINT/SIGTERM (or cancellation), then drain and return."""
    store = make_store(config.store.url, config.store.synchronous, config.store.max_batch)
    auth = make_authenticator(
        config.insecure_dev, config.jwt_secret, config.security.jwt_public_key or None
    )
    listen = config.listen
    cluster = config.cluster
    broker = make_broker(cluster.broker, cluster.prefix, cluster.lease_ms)
    label = f"{worker.index}/{worker.count}" if worker is not None else ""
    app = App(config, store, auth, listen.transport, broker=broker, worker=label)
    try:
        await app.start()
    except BrokerError as exc:
        await store.close()
        raise StartupError(str(exc)) from None
    except OSError as exc:
        raise StartupError(f"cannot open store {store.url}: {exc}") from None
    options = TransportOptions(
        max_frame_bytes=config.limits.max_frame_bytes,
        read_buffer_bytes=listen.read_buffer_bytes,
        send_buffer_bytes=config.limits.send_buffer_bytes,
        backlog=listen.backlog,
        sock=worker.sock if worker is not None else None,
    )
    transport = make_transport(listen.transport, app, options)
    try:
        port = await transport.start(listen.host, listen.port)
    except OSError as exc:
        await app.stop()
        raise StartupError(f"cannot listen on {listen.host}:{listen.port}: {exc}") from None
    sweeper = asyncio.create_task(sweep_forever(app), name="rtbench-sweeper")
    app.tasks.add(sweeper)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    if worker is not None:
        publish_stats(app, worker)
        worker.ready()
    else:
        announce(listen.host, port, transport.name, store.url)
    if ready is not None:
        ready.set_result(port)
    try:
        await stop.wait()
        open_now = len(app.connections.sessions)
        log.info("rtbench: draining: closing %d connections with 1012", open_now)
    finally:
        transport.stop_accepting()
        flushed = await app.drain()
        if not flushed:
            log.error("rtbench: the store did not finish its writes within the drain timeout")
        await app.stop()
        await transport.wait_closed()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)
    log.info("rtbench: stopped")


def publish_stats(app: App, worker: WorkerSpec) -> None:
    """Share this worker's numbers with the others; answer /metrics, /healthz for all."""
    from reference_server.cluster.stats import SlotFile, WorkerStats

    slots = SlotFile(worker.stats_path, worker.count)
    health = app.health
    stats = WorkerStats(slots, worker.index, app.metrics, health.gauges, health.brief)
    health.cluster = stats
    task = asyncio.get_running_loop().create_task(stats.publish_forever(), name="rtbench-stats")
    app.tasks.add(task)
    task.add_done_callback(app.tasks.discard)


GC_THRESHOLDS = (10_000, 20, 100)
"""The collector's thresholds (CPython's default is 700, 10, 10).

Every connection keeps a few hundred tracked objects alive for its whole life, so with
10,000 connections each full collection walked millions of objects and found nothing:
gen-2 pauses of 71 and 108 ms (``collected=0``) were the delivery p99 of 10,000 users
chatting at 500 msgs/s (p99 67 ms, ack p99 66 ms: the loop was stopped). With these,
young collections run 14x less often (~2-4 ms each) and full ones rarely: p99 13 ms in
the same run (reports/BENCHMARKS.md, "What limits each figure"). Garbage without cycles
goes by reference counting as before; cycles wait longer, bounded by the same counts.
"""


def run(config: ServerConfig, worker: WorkerSpec | None = None) -> None:
    """Blocking entry point for ``rtbench serve``: uvloop, logging, serve()."""
    import gc
    import resource

    import uvloop

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:  # one socket per connection: take every descriptor we are allowed
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    prefix = f"[worker {worker.index}] " if worker is not None else ""
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format=prefix + "%(message)s")
    logging.getLogger("picows").setLevel(logging.WARNING)  # it logs every accept at INFO
    logging.getLogger("websockets").setLevel(logging.WARNING)
    gc.set_threshold(*GC_THRESHOLDS)
    uvloop.run(serve(config, worker=worker))
