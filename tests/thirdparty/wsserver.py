"""What every protocol test server here shares: a ``websockets`` server on port 0 that
prints ``listening on 127.0.0.1:PORT``, ``GET /stats`` and ``GET /faults?...`` (as
``json_server``), fan-out through ``FanOut`` (faults and the truth), one ``Outbox`` per
connection, and an idle timeout: a client silent for ``--idle`` seconds is closed, the
way Phoenix's ``timeout`` or Pusher's ``activity_timeout`` treat a client that stopped
sending heartbeats.

A protocol server subclasses ``ProtocolServer`` and writes ``on_frame``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
from collections import Counter, defaultdict
from http import HTTPStatus
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from websockets.asyncio.server import ServerConnection, serve
from websockets.http11 import Request, Response

from tests.thirdparty.faults import FanOut, Faults, Outbox, Stats


class ProtocolServer:
    """Base of the protocol test servers: channels of connections, stats, faults."""

    subprotocols: list[str] | None = None  # offered subprotocols this server accepts

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.faults = Faults(**json.loads(args.faults))
        self.stats = Stats()
        self.counts: Counter[str] = Counter()  # protocol-specific counts, in /stats
        self.fan = FanOut(self.faults, self.stats)
        self.channels: dict[str, set[ServerConnection]] = defaultdict(set)
        self.outboxes: dict[ServerConnection, Outbox] = {}

    # -- HTTP ---------------------------------------------------------------------------

    def process_request(self, connection: ServerConnection, request: Request) -> Any:
        parts = urlsplit(request.path)
        if parts.path == "/faults":
            self.faults.update(dict(parse_qsl(parts.query)))
        elif parts.path != "/stats":
            refused = self.check_upgrade(parts.path, dict(parse_qsl(parts.query)), request)
            if refused is not None:
                status, text = refused
                return connection.respond(status, text + "\n")
            return None  # a WebSocket upgrade
        body = json.dumps({**self.stats.as_dict(), **self.counts})
        return connection.respond(HTTPStatus.OK, body + "\n")

    def check_upgrade(
        self, path: str, query: dict[str, str], request: Request
    ) -> tuple[HTTPStatus, str] | None:
        """(status, text) to refuse an upgrade with; None to accept it."""
        return None

    def process_response(
        self, connection: ServerConnection, request: Request, response: Response
    ) -> Response:
        return response

    # -- WebSocket -----------------------------------------------------------------------

    async def handler(self, ws: ServerConnection) -> None:
        out = Outbox(ws.send, self.stats)
        self.outboxes[ws] = out
        state: dict[str, Any] = {"ws": ws, "out": out}
        idle = self.args.idle or None
        try:
            await self.opened(ws, out, state)
            while True:
                try:
                    raw = await asyncio.wait_for(ws.recv(), idle)
                except TimeoutError:
                    self.counts["idle_closed"] += 1
                    await ws.close(self.idle_code, "idle")
                    return
                self.counts["frames_in"] += 1
                await self.on_frame(ws, out, state, raw)
        except Exception:  # the client went away (or sent garbage): end its session
            pass
        finally:
            await out.close()
            for members in self.channels.values():
                members.discard(ws)
            self.outboxes.pop(ws, None)
            await self.closed(ws, state)

    idle_code = 1000

    async def opened(self, ws: ServerConnection, out: Outbox, state: dict[str, Any]) -> None:
        """After the upgrade (a welcome frame, a ping task)."""

    async def closed(self, ws: ServerConnection, state: dict[str, Any]) -> None:
        """After the connection ended."""

    async def on_frame(
        self, ws: ServerConnection, out: Outbox, state: dict[str, Any], raw: str | bytes
    ) -> None:
        raise NotImplementedError

    def send(self, out: Outbox, frame: Any) -> None:
        """One frame to one client, in order with its deliveries (JSON unless text)."""
        out.put(frame if isinstance(frame, str) else json.dumps(frame), 0.0, None)

    def broadcast(
        self, channel: str, item: str, sender: ServerConnection | None, text: Any, own: bool
    ) -> None:
        """``item`` to the channel's members (the sender too when ``own``), through the
        faults; ``text`` holds the marker (the truth's latency)."""
        members = self.channels.get(channel, set())
        targets = [self.outboxes[m] for m in members if m is not sender and m in self.outboxes]
        self.fan.deliver(targets, item, (channel, id(sender)), text)
        if own and sender is not None and sender in members and sender in self.outboxes:
            self.fan.echo(self.outboxes[sender], item)


def base_parser(doc: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=doc.splitlines()[0])
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--faults", default="{}")
    parser.add_argument("--idle", type=float, default=0.0, help="close clients silent this long")
    return parser


async def serve_forever(server: ProtocolServer) -> None:
    """Serve on 127.0.0.1:--port until SIGTERM/SIGINT; print the port first."""
    async with serve(
        server.handler,
        "127.0.0.1",
        server.args.port,
        process_request=server.process_request,
        process_response=server.process_response,
        subprotocols=server.subprotocols,  # type: ignore[arg-type]
        compression=None,
        max_queue=None,
        ping_interval=None,  # each protocol has its own heartbeat
    ) as ws_server:
        port = ws_server.sockets[0].getsockname()[1]
        print(f"listening on 127.0.0.1:{port}", flush=True)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await stop.wait()


__all__ = ["ProtocolServer", "base_parser", "serve_forever"]
