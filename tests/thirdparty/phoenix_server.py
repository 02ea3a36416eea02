"""A Phoenix Channels test server (V2 JSON serializer), written from Phoenix's docs.

    python -m tests.thirdparty.phoenix_server --port 0 [--reply] [--idle S] [--faults JSON]

No Phoenix (Elixir) runs on these machines, so this implements what the Phoenix Channels
guide's chat needs, from ``Phoenix.Socket.V2.JSONSerializer`` and ``phoenix.js``:

- ``/socket/websocket?vsn=2.0.0`` (another ``vsn`` is refused: this server has only V2);
- frames ``[join_ref, ref, topic, event, payload]``;
- ``phx_join`` on ``room:*`` -> ``[join_ref, ref, topic, "phx_reply",
  {"status": "ok", "response": {}}]``; another topic -> status ``error``,
  ``{"reason": "unmatched topic"}`` (what Phoenix answers a topic no channel matches);
- ``new_msg`` ``{"body": B}`` -> ``broadcast!``: ``[null, null, topic, "new_msg",
  {"body": B}]`` to every member, the sender too; ``--reply``: the channel answers the
  push ``{:reply, :ok, socket}`` (``phx_reply`` ok); a push to a topic not joined ->
  ``phx_reply`` error ``unmatched topic``;
- ``[null, ref, "phoenix", "heartbeat", {}]`` -> ``phx_reply`` ok on topic ``phoenix``;
- ``--idle S``: a socket that sends nothing for S seconds is closed (Phoenix's
  transport ``timeout``, 60 s by default).
"""

from __future__ import annotations

import asyncio
import json
from http import HTTPStatus
from typing import Any

from websockets.asyncio.server import ServerConnection
from websockets.http11 import Request

from tests.thirdparty.faults import Outbox
from tests.thirdparty.wsserver import ProtocolServer, base_parser, serve_forever


def reply(join_ref: Any, ref: Any, topic: str, status: str, response: Any) -> list[Any]:
    return [join_ref, ref, topic, "phx_reply", {"status": status, "response": response}]


class PhoenixServer(ProtocolServer):
    def check_upgrade(
        self, path: str, query: dict[str, str], request: Request
    ) -> tuple[HTTPStatus, str] | None:
        if path != "/socket/websocket":
            return HTTPStatus.NOT_FOUND, "no socket here"
        if query.get("vsn") != "2.0.0":
            return HTTPStatus.BAD_REQUEST, "this server speaks vsn=2.0.0 only"
        return None

    async def on_frame(
        self, ws: ServerConnection, out: Outbox, state: dict[str, Any], raw: str | bytes
    ) -> None:
        join_ref, ref, topic, event, payload = json.loads(raw)
        joined: dict[str, Any] = state.setdefault("joined", {})
        if topic == "phoenix" and event == "heartbeat":
            self.counts["heartbeats"] += 1
            self.send(out, reply(None, ref, "phoenix", "ok", {}))
        elif event == "phx_join":
            if not topic.startswith("room:"):
                self.send(out, reply(join_ref, ref, topic, "error", {"reason": "unmatched topic"}))
                return
            joined[topic] = join_ref
            self.channels[topic].add(ws)
            self.send(out, reply(join_ref, ref, topic, "ok", {}))
        elif topic not in joined or joined[topic] != join_ref:
            self.send(out, reply(join_ref, ref, topic, "error", {"reason": "unmatched topic"}))
        elif event == "new_msg":
            body = payload.get("body") if isinstance(payload, dict) else None
            frame = json.dumps([None, None, topic, "new_msg", {"body": body}])
            self.broadcast(topic, frame, ws, body, own=True)
            if self.args.reply:
                self.send(out, reply(join_ref, ref, topic, "ok", {}))
        elif event == "phx_leave":
            self.channels[topic].discard(ws)
            joined.pop(topic, None)
            self.send(out, reply(join_ref, ref, topic, "ok", {}))
        else:
            self.send(out, reply(join_ref, ref, topic, "error", {"reason": "unknown event"}))


def main() -> None:
    parser = base_parser(__doc__ or "")
    parser.add_argument("--reply", action="store_true", help="reply ok to every push")
    asyncio.run(serve_forever(PhoenixServer(parser.parse_args())))


if __name__ == "__main__":
    main()
