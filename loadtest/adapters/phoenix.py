"""Adapter for Phoenix Channels (Elixir), the V2 JSON serializer over a WebSocket.

Its defaults follow the Phoenix Channels guide's chat (``channel "room:*"``,
``handle_in("new_msg", %{"body" => body}, socket)`` broadcasting ``new_msg``), so that
server needs no options:

- connect to ``/socket/websocket?vsn=2.0.0`` (the guide's ``socket "/socket"`` with the
  WebSocket transport; ``vsn=2.0.0`` picks the array serializer);
- every frame is ``[join_ref, ref, topic, event, payload]``;
- join: ``["0", "0", "room:<room>", "phx_join", {}]``, confirmed by ``phx_reply`` with
  ``{"status": "ok"}`` (``"error"`` refuses it: ``Rejected`` with the reason);
- send: ``["0", "<req>", "room:<room>", "new_msg", {"body": "<marker>"}]``;
- a delivery is a broadcast ``[null, null, "room:<room>", "new_msg", {"body": ...}]``
  (``broadcast!`` reaches the sender too: its own copy counts as ``own_message``);
- with ``ack = true`` the server replies to each push (``{:reply, :ok, socket}``):
  ``phx_reply`` ok is the send's ``Ack``, error its ``Rejected``;
- heartbeat: ``[null, "<n>", "phoenix", "heartbeat", {}]`` every ``heartbeat_s``
  (phoenix.js: 30 s); the server closes a socket silent for its ``timeout`` (60 s).

The join ref is ``"0"`` on every topic: Phoenix drops a push whose join ref is not its
topic's current one, and one adapter serves every connection of a worker, so the join
ref must be known without per-connection memory. Refs are opaque strings to Phoenix.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlencode, urlsplit, urlunsplit

import msgspec
from msgspec import Struct, field

from loadtest.adapters.base import (
    Ack,
    Adapter,
    AdapterError,
    Delivery,
    Event,
    Feature,
    Notice,
    Ready,
    Rejected,
)
from loadtest.adapters.payload import PayloadTemplate
from loadtest.adapters.rules import convert_options
from loadtest.adapters.templates import ALLOWED, Template

_encode = msgspec.json.encode
_decode = msgspec.json.decode

JOIN_REF = "0"
"""The join ref of every topic (never a request id: those start at 1)."""
VSN = "2.0.0"


class PhoenixOptions(Struct, forbid_unknown_fields=True, kw_only=True):
    """``protocol_options`` of ``--protocol phoenix`` (docs/ADAPTERS.md)."""

    path: str = "/socket/websocket"  # the endpoint's socket path + the transport
    params: dict[str, str] = {}  # connect params, added to the query string as given
    topic: str = "room:{room}"
    join_payload: Any = field(default_factory=dict)  # phx_join payload ({room})
    event: str = "new_msg"
    payload: Any = field(default_factory=lambda: {"body": "{body}"})
    ack: bool = False  # the channel replies to each push: wait for it (send -> ack)
    heartbeat_s: float = 30.0  # 0: send none


class PhoenixAdapter(Adapter):
    """Phoenix Channels, V2 JSON serializer: topics as rooms, heartbeats, push replies."""

    name = "phoenix"
    features = frozenset({Feature.ROOMS, Feature.PUBLISH})
    default_path = "/socket/websocket"

    def __init__(self, options: Mapping[str, Any] | None = None) -> None:
        super().__init__(options)
        where = "protocol_options"
        o: PhoenixOptions = convert_options(options, PhoenixOptions, where)
        if not o.path.startswith("/"):
            raise AdapterError(f"{where}.path: {o.path!r} must start with /")
        if o.heartbeat_s < 0:
            raise AdapterError(f"{where}.heartbeat_s: must be 0 (none) or more seconds")
        if "{room}" not in o.topic:
            raise AdapterError(f"{where}.topic: {o.topic!r} must hold {{room}}")
        prefix, _, suffix = o.topic.partition("{room}")
        if "{" in prefix + suffix:
            raise AdapterError(f"{where}.topic: only {{room}} may appear in {o.topic!r}")
        self.default_path = o.path
        self._prefix, self._suffix = prefix, suffix
        self._params = urlencode(o.params)
        self._join_payload = Template(o.join_payload, ALLOWED["join"], f"{where}.join_payload")
        self.event = o.event
        self._payload = PayloadTemplate(o.payload, f"{where}.payload")
        self._ack = o.ack
        self.heartbeat_interval_s = o.heartbeat_s or None
        self._beats = itertools.count(1)
        if o.ack:
            self.features = frozenset({Feature.ROOMS, Feature.PUBLISH, Feature.ACK})

    # -- frames out ---------------------------------------------------------------------

    def url(self, target: str) -> str:
        """``ws://host:4000`` -> ``ws://host:4000/socket/websocket?vsn=2.0.0``; connect
        params (``params``) go in the query string, as phoenix.js puts them."""
        parts = urlsplit(target)
        path = parts.path if parts.path not in ("", "/") else self.default_path
        query = parts.query
        if "vsn=" not in query:
            query = f"{query}&vsn={VSN}" if query else f"vsn={VSN}"
        if self._params:
            query = f"{query}&{self._params}"
        return urlunsplit((parts.scheme, parts.netloc, path, query, ""))

    def topic(self, room: str) -> str:
        return f"{self._prefix}{room}{self._suffix}"

    def room_of(self, topic: str) -> str | None:
        p, s = self._prefix, self._suffix
        if topic.startswith(p) and topic.endswith(s) and len(topic) >= len(p) + len(s):
            return topic[len(p) : len(topic) - len(s)]
        return None

    def join(self, room: str, req_id: int) -> bytes:
        payload = self._join_payload.render({"room": room, "req": req_id})
        return _encode([JOIN_REF, JOIN_REF, self.topic(room), "phx_join", payload])

    def send(self, room: str, body: str, req_id: int) -> bytes:
        payload = self._payload.render(body, req_id, room=room)
        return _encode([JOIN_REF, str(req_id), self.topic(room), self.event, payload])

    def publish(self, room: str, event: str, data: str, req_id: int) -> bytes:
        return self.send(room, data, req_id)

    def heartbeat(self) -> bytes | None:
        return b'[null,"%d","phoenix","heartbeat",{}]' % next(self._beats)

    # -- frames in ----------------------------------------------------------------------

    def parse(self, payload: bytes) -> Event | None:
        try:
            frame = _decode(payload)
        except msgspec.DecodeError:
            return Notice("unparsed")
        if not isinstance(frame, list) or len(frame) != 5:
            return Notice("unparsed")
        _join_ref, ref, topic, event, data = frame
        if not isinstance(topic, str):
            return Notice("unparsed")
        if event == self.event:
            found = self._payload.marker(data)
            if found is not None:
                return Delivery(*found, room=self.room_of(topic))
            return Notice(event)
        if event == "phx_reply":
            return self._reply(ref, topic, data)
        return Notice(event if isinstance(event, str) else "other")

    def _reply(self, ref: Any, topic: str, data: Any) -> Event | None:
        status = data.get("status") if isinstance(data, dict) else None
        if topic == "phoenix":
            return Notice("heartbeat")
        if ref == JOIN_REF:
            room = self.room_of(topic)
            if status == "ok" and room is not None:
                return Ready(room, 0)
            return Rejected(None, _reason(data), f"join {topic} refused")
        req: int | str | None = int(ref) if isinstance(ref, str) and ref.isdigit() else ref
        if status == "ok":
            return Ack(req, self.room_of(topic))
        return Rejected(req, _reason(data), f"push to {topic} refused")


def _reason(data: Any) -> str:
    """The ``response.reason`` of an error reply (Phoenix's convention), else "error"."""
    response = data.get("response") if isinstance(data, dict) else None
    reason = response.get("reason") if isinstance(response, dict) else None
    return str(reason) if reason else "error"
