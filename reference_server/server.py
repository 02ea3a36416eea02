"""Process lifecycle: open the store, listen, log one line, drain on SIGINT/SIGTERM.

The listening line is an interface: scripts and test fixtures parse it for the
real port (``--port 0``), so its shape stays
``rtbench reference server listening on ws://HOST:PORT/ws (transport T, store S, pid N)``.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import sys

from reference_server.app import App
from reference_server.auth import make_authenticator
from reference_server.config import ServerConfig
from reference_server.store import make_store
from reference_server.sweeper import sweep_forever
from reference_server.transport import TransportOptions, make_transport

log = logging.getLogger("rtbench.server")


class StartupError(Exception):
    """The server cannot start (port taken, store unusable); one line for the user."""


async def serve(config: ServerConfig, ready: asyncio.Future[int] | None = None) -> None:
    """Run until SIGINT/SIGTERM (or cancellation), then drain and return."""
    store = make_store(config.store.url, config.store.synchronous, config.store.max_batch)
    auth = make_authenticator(config.insecure_dev, config.jwt_secret)
    listen = config.listen
    app = App(config, store, auth, listen.transport)
    try:
        await app.start()
    except OSError as exc:
        raise StartupError(f"cannot open store {config.store.url}: {exc}") from None
    options = TransportOptions(
        max_frame_bytes=config.limits.max_frame_bytes,
        read_buffer_bytes=listen.read_buffer_bytes,
        send_buffer_bytes=config.limits.send_buffer_bytes,
        backlog=listen.backlog,
    )
    transport = make_transport(listen.transport, app, options)
    try:
        port = await transport.start(listen.host, listen.port)
    except OSError as exc:
        await store.close()
        raise StartupError(f"cannot listen on {listen.host}:{listen.port}: {exc}") from None
    sweeper = asyncio.create_task(sweep_forever(app), name="rtbench-sweeper")
    app.tasks.add(sweeper)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    host = f"[{listen.host}]" if ":" in listen.host else listen.host
    print(
        f"rtbench reference server listening on ws://{host}:{port}/ws "
        f"(transport {transport.name}, store {store.url}, pid {os.getpid()})",
        file=sys.stderr,
        flush=True,
    )
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


def run(config: ServerConfig) -> None:
    """Blocking entry point for ``rtbench serve``: uvloop, logging, serve()."""
    import resource

    import uvloop

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:  # one socket per connection: take every descriptor we are allowed
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(message)s")
    logging.getLogger("picows").setLevel(logging.WARNING)  # it logs every accept at INFO
    logging.getLogger("websockets").setLevel(logging.WARNING)
    uvloop.run(serve(config))
