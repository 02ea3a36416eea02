"""Adapter for the Pusher Channels protocol (Pusher, Soketi, Laravel Reverb), version 7.

Defaults: Soketi's default app (key ``app-key``, secret ``app-secret``) and the Pusher
protocol docs' frames, with private channels because only they carry client events:

- connect to ``/app/<key>?protocol=7&client=js&version=8.4.0&flash=false`` (what
  pusher-js asks for); the server's ``pusher:connection_established`` (data: a JSON
  text holding ``socket_id`` and ``activity_timeout``) is the welcome, and its
  ``socket_id`` the connection's name (``Ready.session``);
- a room is the channel ``private-<room>``; its ``pusher:subscribe`` carries
  ``auth = "<key>:<signature>"``, the signature being the hex HMAC-SHA256 of
  ``<socket_id>:<channel>`` with the app secret (``presence-`` channels sign
  ``<socket_id>:<channel>:<channel_data>`` and send ``channel_data``, the user being the
  socket id); public channels send ``auth = ""``, as pusher-js does;
  ``pusher_internal:subscription_succeeded`` confirms it,
  ``pusher:subscription_error`` or ``pusher:error`` refuses it;
- send: a client event ``{"event":"client-message","channel":C,"data":{"body":...}}``
  (only on private and presence channels; the server relays it to the channel's other
  members, never back to the sender);
- a delivery is that event as relayed (its ``data`` an object, or a JSON text as the
  HTTP trigger API's events carry);
- heartbeats: the server's ``pusher:ping`` is answered ``pusher:pong``; the client
  pings (``pusher:ping``) every ``activity_timeout_s`` (pusher-js: 120 s) so a quiet
  connection is not closed (4201).

Publishing through the server-side HTTP trigger API is not done here (an adapter does
no HTTP); Pusher has no acks and no resume (a reconnecting client subscribes again).
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlencode, urlsplit, urlunsplit

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
    Reply,
)
from loadtest.adapters.payload import PayloadTemplate
from loadtest.adapters.rules import convert_options

_encode = msgspec.json.encode
_decode = msgspec.json.decode

PROTOCOL = 7
PONG = b'{"event":"pusher:pong","data":{}}'
PING = b'{"event":"pusher:ping","data":{}}'


class PusherOptions(Struct, forbid_unknown_fields=True, kw_only=True):
    """``protocol_options`` of ``--protocol pusher`` (docs/ADAPTERS.md)."""

    key: str = "app-key"
    secret: str = "app-secret"
    channel: str = "private-{room}"
    event: str = "client-message"
    data: Any = field(default_factory=lambda: {"body": "{body}"})
    client: str = "js"
    version: str = "8.4.0"
    activity_timeout_s: float = 120.0  # 0: send no pings of our own


def signature(secret: str, socket_id: str, channel: str, channel_data: str | None = None) -> str:
    """The hex HMAC-SHA256 a private or presence subscribe carries (Pusher's auth)."""
    text = (
        f"{socket_id}:{channel}"
        if channel_data is None
        else f"{socket_id}:{channel}:{channel_data}"
    )
    return hmac.new(secret.encode(), text.encode(), hashlib.sha256).hexdigest()


class PusherAdapter(Adapter):
    """Pusher Channels protocol 7: signed private channels, client events, pings."""

    name = "pusher"
    features = frozenset({Feature.ROOMS, Feature.PUBLISH})
    expects_welcome = True  # pusher:connection_established

    def __init__(self, options: Mapping[str, Any] | None = None) -> None:
        super().__init__(options)
        where = "protocol_options"
        o: PusherOptions = convert_options(options, PusherOptions, where)
        if not o.key:
            raise AdapterError(f"{where}.key: the app key is needed (it is in the URL)")
        if "{room}" not in o.channel:
            raise AdapterError(f"{where}.channel: {o.channel!r} must hold {{room}}")
        prefix, _, suffix = o.channel.partition("{room}")
        if "{" in prefix + suffix:
            raise AdapterError(f"{where}.channel: only {{room}} may appear in {o.channel!r}")
        self.private = prefix.startswith(("private-", "presence-"))
        if not o.event.startswith("client-"):
            raise AdapterError(f"{where}.event: {o.event!r}: client events start with client-")
        if not self.private:
            raise AdapterError(
                f"{where}.channel: {o.channel!r}: client events need a private- or presence- "
                "channel"
            )
        if o.activity_timeout_s < 0:
            raise AdapterError(f"{where}.activity_timeout_s: must be 0 (none) or more seconds")
        self.presence = prefix.startswith("presence-")
        self.o = o
        self._prefix, self._suffix = prefix, suffix
        self.default_path = f"/app/{o.key}"
        self._query = urlencode(
            {"protocol": PROTOCOL, "client": o.client, "version": o.version, "flash": "false"}
        )
        self.event = o.event
        self._data = PayloadTemplate(o.data, f"{where}.data")
        self.heartbeat_interval_s = o.activity_timeout_s or None

    # -- frames out -----------------------------------------------------------------------

    def url(self, target: str) -> str:
        """``ws://host:6001`` -> ``ws://host:6001/app/<key>?protocol=7&client=js&...``."""
        parts = urlsplit(target)
        path = parts.path if parts.path not in ("", "/") else self.default_path
        query = parts.query or self._query
        return urlunsplit((parts.scheme, parts.netloc, path, query, ""))

    def channel(self, room: str) -> str:
        return f"{self._prefix}{room}{self._suffix}"

    def room_of(self, channel: Any) -> str | None:
        p, s = self._prefix, self._suffix
        if (
            isinstance(channel, str)
            and channel.startswith(p)
            and channel.endswith(s)
            and len(channel) >= len(p) + len(s)
        ):
            return channel[len(p) : len(channel) - len(s)]
        return None

    def join(self, room: str, req_id: int) -> bytes:
        raise AdapterError("pusher: a subscribe needs the connection's socket_id (join_in)")

    def join_in(self, session: str | None, room: str, req_id: int) -> bytes:
        channel = self.channel(room)
        data: dict[str, Any] = {"auth": ""}
        if self.private:
            if session is None:
                raise AdapterError("pusher: no socket_id yet: the welcome has not come")
            channel_data = None
            if self.presence:
                channel_data = _encode({"user_id": session, "user_info": {}}).decode()
                data["channel_data"] = channel_data
            sig = signature(self.o.secret, session, channel, channel_data)
            data["auth"] = f"{self.o.key}:{sig}"
        data["channel"] = channel
        return _encode({"event": "pusher:subscribe", "data": data})

    def send(self, room: str, body: str, req_id: int) -> bytes:
        data = self._data.render(body, req_id, room=room)
        return _encode({"event": self.event, "channel": self.channel(room), "data": data})

    def publish(self, room: str, event: str, data: str, req_id: int) -> bytes:
        return self.send(room, data, req_id)

    def heartbeat(self) -> bytes | None:
        return PING

    # -- frames in ------------------------------------------------------------------------

    def parse(self, payload: bytes) -> Event | None:
        try:
            frame = _decode(payload)
        except msgspec.DecodeError:
            return Notice("unparsed")
        if not isinstance(frame, dict):
            return Notice("unparsed")
        event = frame.get("event")
        data = frame.get("data")
        if event == self.event:
            room = self.room_of(frame.get("channel"))
            found = self._data.marker(_json_text(data))
            return Delivery(*found, room=room) if found is not None else Notice(event, room)
        if event == "pusher:ping":
            return Reply(PONG)
        if event == "pusher:connection_established":
            info = _json_text(data)
            socket_id = info.get("socket_id") if isinstance(info, dict) else None
            return Ready(None, 0, session=str(socket_id) if socket_id is not None else None)
        if event == "pusher_internal:subscription_succeeded":
            room = self.room_of(frame.get("channel"))
            return Ready(room, 0) if room is not None else Notice(event)
        if event == "pusher:subscription_error":
            info = _json_text(data)
            kind = info.get("type") if isinstance(info, dict) else None
            return Rejected(None, str(kind or "subscription_error"), str(info))
        if event == "pusher:error":
            info = _json_text(data)
            code = info.get("code") if isinstance(info, dict) else None
            message = info.get("message") if isinstance(info, dict) else None
            return Rejected(None, str(code or "error"), str(message or ""))
        return Notice(str(event) if event else "other")


def _json_text(data: Any) -> Any:
    """Pusher's ``data``: an object, or the JSON text of one (its server events)."""
    if isinstance(data, str):
        try:
            return _decode(data)
        except msgspec.DecodeError:
            return data
    return data
