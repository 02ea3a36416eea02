"""A Centrifugo test server (bidirectional JSON client protocol), from Centrifugo's docs.

    python -m tests.thirdparty.centrifugo_server --port 0 [--ping S] [--history N]
        [--secret KEY] [--faults JSON]

No Centrifugo binary installs here, so this implements the part of the client protocol
(centrifugal.dev, "Client protocol"; ``client.proto``) a chat needs:

- ``/connection/websocket``; the first command must be ``connect`` (else the server
  closes with 3501 "bad request"); ``--secret``: its token must be an HS256 JWT with a
  ``sub`` (``token_hmac_secret_key``), else close 3500 "invalid token";
- the connect reply ``{"id":1,"connect":{"client":..,"version":..,"ping":P,"pong":true}}``;
- ``subscribe`` -> ``{"id":N,"subscribe":{"recoverable":true,"epoch":E,"offset":O,
  "positioned":true}}``, with ``recover``/``offset``/``epoch``: the publications after
  that offset from the channel's history, ``recovered`` (true when the epoch matches and
  the history still holds every one of them) and ``was_recovering``;
- ``publish`` (subscribers only, as ``allow_publish_for_subscriber``) -> stored in the
  channel's history with the next offset, pushed to every subscriber (the publisher
  too), replied ``{"id":N,"publish":{}}``; otherwise error 103 "permission denied";
- several commands in one frame (one JSON per line) get their replies in one frame;
- ``--ping S``: an empty ``{}`` every S seconds; a client that has not answered the
  previous ping with ``{}`` by the next is closed with 3012 "no pong".
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import secrets
import uuid
from collections import deque
from http import HTTPStatus
from typing import Any

import jwt
from websockets.asyncio.server import ServerConnection
from websockets.http11 import Request

from tests.thirdparty.faults import Outbox
from tests.thirdparty.wsserver import ProtocolServer, base_parser, serve_forever


class Channel:
    """A channel's stream: its epoch, top offset and bounded history."""

    def __init__(self, size: int) -> None:
        self.epoch = secrets.token_hex(4)
        self.offset = 0
        self.history: deque[dict[str, Any]] = deque(maxlen=size)


class CentrifugoServer(ProtocolServer):
    def __init__(self, args: Any) -> None:
        super().__init__(args)
        self.streams: dict[str, Channel] = {}

    def check_upgrade(
        self, path: str, query: dict[str, str], request: Request
    ) -> tuple[HTTPStatus, str] | None:
        if path != "/connection/websocket":
            return HTTPStatus.NOT_FOUND, "no socket here"
        return None

    def stream(self, name: str) -> Channel:
        found = self.streams.get(name)
        if found is None:
            found = self.streams[name] = Channel(self.args.history)
        return found

    async def opened(self, ws: ServerConnection, out: Outbox, state: dict[str, Any]) -> None:
        state["subs"] = set()
        state["ponged"] = True
        if self.args.ping:
            state["pinger"] = asyncio.create_task(self._ping(ws, out, state))

    async def closed(self, ws: ServerConnection, state: dict[str, Any]) -> None:
        pinger = state.get("pinger")
        if pinger is not None:
            pinger.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await pinger

    async def _ping(self, ws: ServerConnection, out: Outbox, state: dict[str, Any]) -> None:
        while True:
            await asyncio.sleep(self.args.ping)
            if not state["ponged"]:
                self.counts["no_pong"] += 1
                await ws.close(3012, "no pong")
                return
            state["ponged"] = False
            self.send(out, "{}")

    async def on_frame(
        self, ws: ServerConnection, out: Outbox, state: dict[str, Any], raw: str | bytes
    ) -> None:
        text = raw.decode() if isinstance(raw, bytes) else raw
        replies = []
        for line in text.split("\n"):
            if not line.strip():
                continue
            command = json.loads(line)
            if not command:  # {}: the pong
                state["ponged"] = True
                self.counts["pongs"] += 1
                continue
            if "connect" not in command and not state.get("client"):
                await ws.close(3501, "bad request")
                return
            reply = self.command(ws, state, command)
            if reply is None:
                await ws.close(3500, "invalid token")
                return
            replies.append(json.dumps(reply))
        if replies:
            self.send(out, "\n".join(replies))

    def command(self, ws: ServerConnection, state: dict[str, Any], c: dict) -> dict | None:
        cid = c.get("id")
        if "connect" in c:
            if self.args.secret:
                try:
                    claims = jwt.decode(c["connect"].get("token", ""), self.args.secret, ["HS256"])
                except jwt.PyJWTError:
                    return None
                if not claims.get("sub"):
                    return None
            state["client"] = str(uuid.uuid4())
            result = {"client": state["client"], "version": "5.4.9"}
            if self.args.ping:
                result.update(ping=self.args.ping, pong=True)
            return {"id": cid, "connect": result}
        if "subscribe" in c:
            return {"id": cid, **self.subscribe(ws, state, c["subscribe"])}
        if "publish" in c:
            p = c["publish"]
            name = p.get("channel")
            if name not in state["subs"]:
                return {"id": cid, "error": {"code": 103, "message": "permission denied"}}
            stream = self.stream(name)
            stream.offset += 1
            pub = {"data": p.get("data"), "offset": stream.offset}
            stream.history.append(pub)
            item = json.dumps({"push": {"channel": name, "pub": pub}})
            data = p.get("data")
            text = data.get("input") if isinstance(data, dict) else data
            self.broadcast(name, item, ws, text, own=True)
            return {"id": cid, "publish": {}}
        return {"id": cid, "error": {"code": 104, "message": "method not found"}}

    def subscribe(self, ws: ServerConnection, state: dict[str, Any], s: dict) -> dict:
        name = s.get("channel")
        if not isinstance(name, str) or not name:
            return {"error": {"code": 107, "message": "bad request"}}
        if name in state["subs"]:
            return {"error": {"code": 105, "message": "already subscribed"}}
        stream = self.stream(name)
        result: dict[str, Any] = {
            "recoverable": True,
            "epoch": stream.epoch,
            "offset": stream.offset,
            "positioned": True,
        }
        if s.get("recover"):
            since = int(s.get("offset") or 0)
            pubs = [p for p in stream.history if p["offset"] > since]
            whole = since >= stream.offset - len(stream.history)
            recovered = s.get("epoch") == stream.epoch and whole
            self.counts["recovered" if recovered else "not_recovered"] += 1
            result.update(
                was_recovering=True, recovered=recovered, publications=pubs if whole else []
            )
        state["subs"].add(name)
        self.channels[name].add(ws)
        return {"subscribe": result}


def main() -> None:
    parser = base_parser(__doc__ or "")
    parser.add_argument("--ping", type=float, default=0.0, help="seconds between pings")
    parser.add_argument("--history", type=int, default=10_000, help="history per channel")
    parser.add_argument("--secret", default="", help="HS256 key the connect token must match")
    asyncio.run(serve_forever(CentrifugoServer(parser.parse_args())))


if __name__ == "__main__":
    main()
