"""A Pusher Channels test server (protocol 7), from Pusher's protocol docs and Soketi.

    python -m tests.thirdparty.pusher_server --port 0 [--key K] [--secret S]
        [--activity-timeout S] [--pong-wait S] [--faults JSON]

No Pusher-compatible server (Soketi, Reverb) installs here, so this implements what a
chat over client events needs (pusher.com/docs/channels/library_auth_reference/pusher-
websockets-protocol):

- ``/app/<key>?protocol=7&...``: another key -> ``pusher:error`` 4001 and close; no or
  another protocol -> ``pusher:error`` 4007 and close;
- ``pusher:connection_established`` first, its ``data`` a JSON text with ``socket_id``
  (``<n>.<m>``) and ``activity_timeout``;
- ``pusher:subscribe``: public channels as they are; ``private-`` and ``presence-``
  channels need ``auth`` = ``<key>:<hex HMAC-SHA256 of socket_id:channel[:channel_data]
  with the secret>``, else ``pusher:subscription_error`` (type ``AuthError``, status 401,
  as Soketi sends); success: ``pusher_internal:subscription_succeeded``;
- client events (``client-*``) on a private or presence channel the client is in go to
  the channel's other members, unchanged; anywhere else -> ``pusher:error`` 4301;
- ``pusher:ping`` -> ``pusher:pong``; a client silent for ``--activity-timeout`` seconds
  gets ``pusher:ping``, and is closed with 4201 if still silent ``--pong-wait`` later.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import itertools
import json
import time
from http import HTTPStatus
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from websockets.asyncio.server import ServerConnection
from websockets.http11 import Request

from tests.thirdparty.faults import Outbox
from tests.thirdparty.wsserver import ProtocolServer, base_parser, serve_forever


def error(code: int, message: str) -> dict:
    return {"event": "pusher:error", "data": {"code": code, "message": message}}


class PusherServer(ProtocolServer):
    def __init__(self, args: Any) -> None:
        super().__init__(args)
        self.ids = itertools.count(1)
        self.paths: dict[ServerConnection, tuple[str, dict[str, str]]] = {}

    def check_upgrade(
        self, path: str, query: dict[str, str], request: Request
    ) -> tuple[HTTPStatus, str] | None:
        if not path.startswith("/app/"):
            return HTTPStatus.NOT_FOUND, "no app here"
        return None

    async def opened(self, ws: ServerConnection, out: Outbox, state: dict[str, Any]) -> None:
        parts = urlsplit(ws.request.path if ws.request is not None else "")
        key, query = parts.path.removeprefix("/app/"), dict(parse_qsl(parts.query))
        if key != self.args.key:
            await ws.send(json.dumps(error(4001, f"App key {key} not in this cluster")))
            await ws.close(4001)
            return
        if query.get("protocol") != "7":
            await ws.send(json.dumps(error(4007, "Unsupported protocol version")))
            await ws.close(4007)
            return
        n = next(self.ids)
        state["socket_id"] = f"{n}.{n * 7919 % 1_000_000}"
        state["subs"] = set()
        state["heard"] = time.monotonic()
        info = {"socket_id": state["socket_id"], "activity_timeout": self.args.activity_timeout}
        self.send(out, {"event": "pusher:connection_established", "data": json.dumps(info)})
        state["watch"] = asyncio.create_task(self._watch(ws, out, state))

    async def closed(self, ws: ServerConnection, state: dict[str, Any]) -> None:
        watch = state.get("watch")
        if watch is not None:
            watch.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watch

    async def _watch(self, ws: ServerConnection, out: Outbox, state: dict[str, Any]) -> None:
        """Ping a silent client after the activity timeout; close it if it stays silent."""
        timeout, wait = self.args.activity_timeout, self.args.pong_wait
        while True:
            await asyncio.sleep(max(0.05, state["heard"] + timeout - time.monotonic()))
            if time.monotonic() - state["heard"] < timeout:
                continue
            self.counts["server_pings"] += 1
            self.send(out, {"event": "pusher:ping", "data": {}})
            await asyncio.sleep(wait)
            if time.monotonic() - state["heard"] >= timeout + wait - 0.01:
                self.counts["closed_4201"] += 1
                await ws.close(4201, "Pong reply not received")
                return

    async def on_frame(
        self, ws: ServerConnection, out: Outbox, state: dict[str, Any], raw: str | bytes
    ) -> None:
        state["heard"] = time.monotonic()
        frame = json.loads(raw)
        event, data = frame.get("event"), frame.get("data")
        if event == "pusher:ping":
            self.counts["client_pings"] += 1
            self.send(out, {"event": "pusher:pong", "data": {}})
        elif event == "pusher:pong":
            self.counts["pongs"] += 1
        elif event == "pusher:subscribe":
            self.subscribe(ws, out, state, data)
        elif isinstance(event, str) and event.startswith("client-"):
            channel = frame.get("channel")
            if channel not in state["subs"] or not channel.startswith(("private-", "presence-")):
                self.send(out, error(4301, "Client event rejected"))
                return
            body = data.get("body") if isinstance(data, dict) else None
            item = json.dumps({"event": event, "channel": channel, "data": data})
            self.broadcast(channel, item, ws, body, own=False)

    def subscribe(self, ws: ServerConnection, out: Outbox, state: dict[str, Any], d: Any) -> None:
        channel = d.get("channel") if isinstance(d, dict) else None
        if not isinstance(channel, str) or not channel:
            self.send(out, error(4009, "Bad subscribe"))
            return
        if channel.startswith(("private-", "presence-")):
            text = f"{state['socket_id']}:{channel}"
            if channel.startswith("presence-"):
                text += f":{d.get('channel_data', '')}"
            sig = hmac.new(self.args.secret.encode(), text.encode(), hashlib.sha256).hexdigest()
            if d.get("auth") != f"{self.args.key}:{sig}":
                self.counts["auth_errors"] += 1
                fail = {
                    "type": "AuthError",
                    "error": "The connection is unauthorized.",
                    "status": 401,
                }
                self.send(
                    out, {"event": "pusher:subscription_error", "channel": channel, "data": fail}
                )
                return
        state["subs"].add(channel)
        self.channels[channel].add(ws)
        ok = {"event": "pusher_internal:subscription_succeeded", "channel": channel, "data": "{}"}
        self.send(out, ok)


def main() -> None:
    parser = base_parser(__doc__ or "")
    parser.add_argument("--key", default="app-key")
    parser.add_argument("--secret", default="app-secret")
    parser.add_argument("--activity-timeout", type=float, default=120.0)
    parser.add_argument("--pong-wait", type=float, default=30.0)
    asyncio.run(serve_forever(PusherServer(parser.parse_args())))


if __name__ == "__main__":
    main()
