"""Adapter for Rails Action Cable (``actioncable-v1-json``).

Its defaults follow the Rails guide's chat ("Action Cable Overview": ``ChatChannel``
with ``stream_from "chat_#{params[:room]}"`` and ``receive(data)`` broadcasting the
data back to the stream), so that server needs no options:

- connect to ``/cable`` offering the subprotocols ``actioncable-v1-json`` and
  ``actioncable-unsupported`` (what ``@rails/actioncable`` offers); the server's
  ``{"type":"welcome"}`` is the welcome;
- join: ``{"command":"subscribe","identifier":"{\\"channel\\":\\"ChatChannel\\",
  \\"room\\":\\"<room>\\"}"}``, the identifier being the JSON text of the channel params
  (as ``JSON.stringify`` writes it); ``confirm_subscription`` confirms it,
  ``reject_subscription`` refuses it;
- send: ``{"command":"message","identifier":ID,"data":"{\\"body\\":\\"<marker>\\"}"}``
  (``subscription.send(data)``, handled by ``receive``); with ``action = "speak"`` the
  data carries ``"action":"speak"`` (``subscription.perform("speak", data)``);
- a delivery is a broadcast ``{"identifier":ID,"message":{"body":...}}``: it reaches the
  sender too (``own_message``);
- the server pings every 3 s (``{"type":"ping","message":<unix time>}``): counted as
  ``ping``; the client answers nothing. (``@rails/actioncable`` reconnects when two pings
  in a row are missed; here a dead connection is found by the drivers' own WebSocket
  heartbeats.) Action Cable has no acks and no resume: a reconnecting client subscribes
  again.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import msgspec
from msgspec import Struct, field

from loadtest.adapters.base import (
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
from rtbench.bounded import BoundedDict

_encode = msgspec.json.encode
_decode = msgspec.json.decode

SUBPROTOCOLS = ("actioncable-v1-json", "actioncable-unsupported")
MAX_IDENTIFIERS = 65_536
"""Identifiers remembered (one per room of the run; past it the oldest is forgotten)."""


class ActionCableOptions(Struct, forbid_unknown_fields=True, kw_only=True):
    """``protocol_options`` of ``--protocol actioncable`` (docs/ADAPTERS.md)."""

    path: str = "/cable"
    channel: str = "ChatChannel"
    params: dict[str, Any] = field(default_factory=lambda: {"room": "{room}"})
    data: Any = field(default_factory=lambda: {"body": "{body}"})
    action: str | None = None  # perform(action, data) instead of send(data)


class ActionCableAdapter(Adapter):
    """Rails Action Cable: channel subscriptions, message commands, broadcasts, pings."""

    name = "actioncable"
    features = frozenset({Feature.ROOMS, Feature.PUBLISH})
    default_path = "/cable"
    expects_welcome = True
    subprotocols = SUBPROTOCOLS

    def __init__(self, options: Mapping[str, Any] | None = None) -> None:
        super().__init__(options)
        where = "protocol_options"
        o: ActionCableOptions = convert_options(options, ActionCableOptions, where)
        if not o.path.startswith("/"):
            raise AdapterError(f"{where}.path: {o.path!r} must start with /")
        if "channel" in o.params:
            raise AdapterError(f"{where}.params: give the channel as channel, not in params")
        self.default_path = o.path
        self._params = Template(
            {"channel": o.channel, **o.params}, ALLOWED["join"], f"{where}.params"
        )
        if "room" not in self._params.names:
            raise AdapterError(f"{where}.params: must hold {{room}} (which room to subscribe)")
        self._data = PayloadTemplate(o.data, f"{where}.data")
        self._action = o.action
        self._ids: BoundedDict[str, str] = BoundedDict(MAX_IDENTIFIERS)  # room -> identifier
        self._rooms: dict[str, str] = {}  # identifier -> room

    def identifier(self, room: str) -> str:
        """The channel identifier of a room: its params as JSON text (cached: one per room)."""
        found = self._ids.get(room)
        if found is None:
            found = _encode(self._params.render({"room": room, "req": 0})).decode()
            forgotten = self._ids.put(room, found)
            if forgotten is not None:
                self._rooms.pop(forgotten[1], None)
            self._rooms[found] = room
        return found

    def join(self, room: str, req_id: int) -> bytes:
        return _encode({"command": "subscribe", "identifier": self.identifier(room)})

    def send(self, room: str, body: str, req_id: int) -> bytes:
        data = self._data.render(body, req_id, room=room)
        if self._action is not None:
            data = {**data, "action": self._action} if isinstance(data, dict) else data
        text = _encode(data).decode()
        return _encode({"command": "message", "identifier": self.identifier(room), "data": text})

    def publish(self, room: str, event: str, data: str, req_id: int) -> bytes:
        return self.send(room, data, req_id)

    def parse(self, payload: bytes) -> Event | None:
        try:
            frame = _decode(payload)
        except msgspec.DecodeError:
            return Notice("unparsed")
        if not isinstance(frame, dict):
            return Notice("unparsed")
        kind = frame.get("type")
        if kind is None and "message" in frame:
            identifier = frame.get("identifier")
            room = self._rooms.get(identifier) if isinstance(identifier, str) else None
            found = self._data.marker(frame["message"])
            return Delivery(*found, room=room) if found is not None else Notice("message", room)
        if kind == "ping":
            return Notice("ping")
        if kind == "welcome":
            return Ready(None, 0)
        identifier = frame.get("identifier")
        room = self._rooms.get(identifier) if isinstance(identifier, str) else None
        if kind == "confirm_subscription" and room is not None:
            return Ready(room, 0)
        if kind == "reject_subscription":
            return Rejected(None, "reject_subscription", f"subscription to {identifier} rejected")
        if kind == "disconnect":
            return Rejected(None, str(frame.get("reason") or "disconnect"), "disconnected")
        return Notice(str(kind) if kind else "other")
