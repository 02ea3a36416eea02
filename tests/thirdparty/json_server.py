"""A plain JSON-over-WebSocket broadcast server for the tests (``websockets``, a subprocess).

    python -m tests.thirdparty.json_server --port 0 [--faults '{"dup_every": 5}']
        [--echo-sender] [--silent-subscribe] [--no-ack] [--login] [--app-ping S]

Its protocol is deliberately not the reference one, so the generic adapter must be
configured to speak it:

    -> {"action": "login", "user": U}
           <- {"event": "welcome", "user": U}
    -> {"action": "subscribe", "channel": C, "ref": N}
           <- {"event": "subscribed", "channel": C, "ref": N}
    -> {"action": "publish", "channel": C, "ref": N, "data": X}
           <- {"event": "ok", "ref": N}                    (to the sender, unless --no-ack)
           <- {"event": "message", "channel": C, "data": X}   (to the channel's others)
    -> {"action": "echo", "data": X}
           <- {"event": "echo", "data": X}
    <- {"event": "error", "ref": N, "code": "not_subscribed", "reason": "..."}

``--login`` refuses everything before a login; ``--silent-subscribe`` never confirms a
subscribe; ``--echo-sender`` broadcasts to the sender too; ``--app-ping S`` sends
``{"event": "ping"}`` every S seconds and closes (4000) a client that has not answered
``{"action": "pong"}`` for 4 periods. Deliveries go through ``FanOut`` (faults,
truth); ``GET /stats`` and ``GET /faults?...`` as in ``sio_server``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import signal
import time
from collections import defaultdict
from http import HTTPStatus
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from websockets.asyncio.server import ServerConnection, serve

from tests.thirdparty.faults import FanOut, Faults, Outbox, Stats

PONG_GRACE = 4
"""A client silent to pings for this many ping periods is closed (a busy test machine may
stall a client for a period; it never stalls one for four)."""


class JsonServer:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.faults = Faults(**json.loads(args.faults))
        self.stats = Stats()
        self.fan = FanOut(self.faults, self.stats)
        self.channels: dict[str, set[ServerConnection]] = defaultdict(set)
        self.outboxes: dict[ServerConnection, Outbox] = {}
        self.pongs = 0

    def process_request(self, connection: ServerConnection, request: Any) -> Any:
        parts = urlsplit(request.path)
        if parts.path == "/faults":
            self.faults.update(dict(parse_qsl(parts.query)))
        elif parts.path != "/stats":
            return None  # a WebSocket upgrade
        body = json.dumps({**self.stats.as_dict(), "pongs": self.pongs})
        return connection.respond(HTTPStatus.OK, body + "\n")

    async def handler(self, ws: ServerConnection) -> None:
        out = Outbox(ws.send, self.stats)
        self.outboxes[ws] = out
        state = {"user": None if self.args.login else "anonymous", "ponged": time.monotonic()}
        pinger = asyncio.create_task(self._ping(ws, out, state)) if self.args.app_ping else None
        try:
            async for raw in ws:
                reply = self.on_frame(ws, json.loads(raw), state)
                if reply is not None:
                    out.put(json.dumps(reply), 0.0, None)
        except Exception:
            pass
        finally:
            if pinger is not None:
                pinger.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await pinger
            await out.close()
            for members in self.channels.values():
                members.discard(ws)
            self.outboxes.pop(ws, None)

    def on_frame(self, ws: ServerConnection, f: dict, state: dict) -> dict | None:
        action, ref = f.get("action"), f.get("ref")
        if action == "pong":
            state["ponged"] = time.monotonic()
            self.pongs += 1
            return None
        if action == "login":
            state["user"] = f.get("user")
            return {"event": "welcome", "user": state["user"]}
        if state["user"] is None:
            return self._error(ref, "login_required", "log in first")
        if action == "subscribe":
            self.channels[f["channel"]].add(ws)
            if self.args.silent_subscribe:
                return None
            return {"event": "subscribed", "channel": f["channel"], "ref": ref}
        if action == "publish":
            channel = f.get("channel")
            members = self.channels.get(channel, set())
            if ws not in members:
                return self._error(ref, "not_subscribed", f"subscribe to {channel} first")
            text = json.dumps({"event": "message", "channel": channel, "data": f.get("data")})
            data = f.get("data")
            marker_text = data.get("text") if isinstance(data, dict) else data
            targets = [self.outboxes[m] for m in members if m is not ws and m in self.outboxes]
            self.fan.deliver(targets, text, (channel, id(ws)), marker_text)
            if self.args.echo_sender:
                self.fan.echo(self.outboxes[ws], text)
            return None if self.args.no_ack else {"event": "ok", "ref": ref}
        if action == "echo":
            return {"event": "echo", "data": f.get("data")}
        return self._error(ref, "unknown_action", f"unknown action {action!r}")

    @staticmethod
    def _error(ref: Any, code: str, reason: str) -> dict:
        return {"event": "error", "ref": ref, "code": code, "reason": reason}

    async def _ping(self, ws: ServerConnection, out: Outbox, state: dict) -> None:
        period = self.args.app_ping
        while True:
            await asyncio.sleep(period)
            if time.monotonic() - state["ponged"] > PONG_GRACE * period:
                await ws.close(4000, "no pong")
                return
            out.put(json.dumps({"event": "ping"}), 0.0, None)


async def main(args: argparse.Namespace) -> None:
    server = JsonServer(args)
    async with serve(
        server.handler,
        "127.0.0.1",
        args.port,
        process_request=server.process_request,
        compression=None,
        max_queue=None,
    ) as ws_server:
        port = ws_server.sockets[0].getsockname()[1]
        print(f"listening on 127.0.0.1:{port}", flush=True)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await stop.wait()


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--faults", default="{}")
    parser.add_argument("--echo-sender", action="store_true")
    parser.add_argument("--silent-subscribe", action="store_true")
    parser.add_argument("--no-ack", action="store_true")
    parser.add_argument("--login", action="store_true")
    parser.add_argument("--app-ping", type=float, default=0.0)
    return parser.parse_args(argv)


if __name__ == "__main__":
    asyncio.run(main(parse_args()))
