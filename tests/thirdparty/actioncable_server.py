"""A Rails Action Cable test server (``actioncable-v1-json``), from the Rails docs.

    python -m tests.thirdparty.actioncable_server --port 0 [--ping S] [--faults JSON]

No Rails runs here, so this implements what the Rails guide's ``ChatChannel`` does
over Action Cable's JSON protocol (``actioncable`` gem; ``@rails/actioncable``):

- ``/cable``; the client must offer ``actioncable-v1-json`` (a client that offers no
  protocol this server speaks is told ``{"type":"disconnect","reason":
  "protocol_unsupported"}`` and closed, as ``@rails/actioncable`` expects);
- ``{"type":"welcome"}`` at once, then ``{"type":"ping","message":<unix time>}`` every
  ``--ping`` seconds (Rails: 3);
- ``subscribe`` with an identifier whose ``channel`` is ``ChatChannel`` and which has a
  ``room`` -> ``{"identifier":ID,"type":"confirm_subscription"}`` (``stream_from
  "chat_<room>"``); another channel -> ``reject_subscription``;
- ``message`` with ``data`` (JSON text): ``receive(data)`` (no ``action``) broadcasts the
  data to ``chat_<room>``; ``action: "speak"`` does the same (``def speak(data)``); each
  subscriber gets ``{"identifier":ID,"message":DATA}``, the sender too.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from http import HTTPStatus
from typing import Any

from websockets.asyncio.server import ServerConnection
from websockets.http11 import Request

from tests.thirdparty.faults import Outbox
from tests.thirdparty.wsserver import ProtocolServer, base_parser, serve_forever


class ActionCableServer(ProtocolServer):
    subprotocols = ["actioncable-v1-json", "actioncable-unsupported"]

    def check_upgrade(
        self, path: str, query: dict[str, str], request: Request
    ) -> tuple[HTTPStatus, str] | None:
        return None if path == "/cable" else (HTTPStatus.NOT_FOUND, "no cable here")

    async def opened(self, ws: ServerConnection, out: Outbox, state: dict[str, Any]) -> None:
        if ws.subprotocol != "actioncable-v1-json":
            self.counts["unsupported"] += 1
            await ws.send(json.dumps({"type": "disconnect", "reason": "protocol_unsupported"}))
            await ws.close(1000)
            return
        self.send(out, {"type": "welcome"})
        if self.args.ping:
            state["pinger"] = asyncio.create_task(self._ping(out))

    async def closed(self, ws: ServerConnection, state: dict[str, Any]) -> None:
        pinger = state.get("pinger")
        if pinger is not None:
            pinger.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await pinger

    async def _ping(self, out: Outbox) -> None:
        while True:
            await asyncio.sleep(self.args.ping)
            self.counts["pings"] += 1
            self.send(out, {"type": "ping", "message": int(time.time())})

    async def on_frame(
        self, ws: ServerConnection, out: Outbox, state: dict[str, Any], raw: str | bytes
    ) -> None:
        frame = json.loads(raw)
        command, identifier = frame.get("command"), frame.get("identifier")
        params = json.loads(identifier)
        stream = f"chat_{params.get('room')}"
        if command == "subscribe":
            if params.get("channel") != "ChatChannel" or "room" not in params:
                self.send(out, {"identifier": identifier, "type": "reject_subscription"})
                return
            state.setdefault("subs", {})[identifier] = stream
            self.channels[stream].add(ws)
            self.send(out, {"identifier": identifier, "type": "confirm_subscription"})
        elif command == "message" and identifier in state.get("subs", {}):
            data = json.loads(frame["data"])
            action = data.pop("action", None)
            if action not in (None, "speak"):
                return  # Rails logs "Unable to process" and answers nothing
            item = json.dumps({"identifier": identifier, "message": data})
            self.broadcast(stream, item, ws, data.get("body"), own=True)


def main() -> None:
    parser = base_parser(__doc__ or "")
    parser.add_argument("--ping", type=float, default=3.0, help="seconds between pings")
    asyncio.run(serve_forever(ActionCableServer(parser.parse_args())))


if __name__ == "__main__":
    main()
