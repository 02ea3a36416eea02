"""Adapter for Socket.IO v4 servers (Engine.IO 4 over WebSocket; no long-polling).

Its defaults follow the Socket.IO chat example, so a plain chat server needs no options:

- connect to the namespace (``/``), with an ``auth`` payload when one is configured;
- join a room by emitting ``join`` with the room name;
- chat by emitting ``chat message`` with ``{"room": ROOM, "body": TEXT}``, which the
  server broadcasts to the room;
- a delivery is a ``chat message`` whose ``body`` carries the marker (sender, stream,
  per-sender counter and scheduled send time), so latency, loss, duplicates and order are
  measured from what the adapter put in the payload, whatever the server adds to it.

Event names, argument templates, acks and delivery rules are ``protocol_options``
(docs/ADAPTERS.md). The server's Engine.IO pings are answered with a ``Reply`` (pong),
which every driver of an adapter sends back; a client that did not would be dropped
after ``pingInterval + pingTimeout``.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import msgspec
from msgspec import Struct, field

from loadtest.adapters import engineio as eio
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
    Reply,
)
from loadtest.adapters.rules import (
    JOIN_ID_BASE,
    DeliveryRule,
    ErrorRule,
    Recogniser,
    convert_options,
    find_marker,
    one_or_many,
    pending_joins,
    remember_join,
)
from loadtest.adapters.templates import ALLOWED, Template, frame_values, render_headers

_encode = msgspec.json.encode
_decode = msgspec.json.decode

PING_ID_BASE = 1 << 41
"""Ack ids of round-trip emits: their ack carries the marker back (a delivery, not an ack)."""

DEFAULT_EMITS: dict[str, tuple[str | None, list[Any]]] = {
    "join": ("join", ["{room}"]),
    "send": ("chat message", [{"room": "{room}", "body": "{body}"}]),
    "publish": ("chat message", [{"room": "{room}", "body": "{body}"}]),  # as send
    "dm": (None, [{"to": "{to}", "body": "{body}"}]),
    "typing": (None, ["{room}"]),
    "read": (None, [{"room": "{room}", "seq": "{seq}"}]),
    "ping": (None, ["{body}"]),
}
"""Event name and argument templates of each emit when the options leave them out."""


class Emit(Struct, forbid_unknown_fields=True, kw_only=True):
    """One emitted event: its name and its argument templates."""

    event: str | None = None
    args: list[Any] | None = None


class SocketIOOptions(Struct, forbid_unknown_fields=True, kw_only=True):
    """``protocol_options`` of ``--protocol socketio`` (docs/ADAPTERS.md explains each)."""

    path: str = "/socket.io/"  # the server's Socket.IO path, when the target URL has none
    namespace: str = "/"
    auth: Any = None  # CONNECT payload template ({user}, {token}), e.g. {token = "{token}"}
    headers: dict[str, str] = {}  # upgrade headers ({user}, {token})
    join: Emit = field(default_factory=Emit)
    join_ack: bool = False  # the server acks the join emit: wait for it (else joined when sent)
    send: Emit = field(default_factory=Emit)
    ack: bool = False  # ask the server to ack every message emit (send -> ack latency)
    publish: Emit | None = None  # fanout events (default: the send emit)
    dm: Emit | None = None
    typing: Emit | None = None
    read: Emit | None = None
    ping: Emit | None = None  # a round trip: the server acks it with its first argument
    delivery: DeliveryRule | list[DeliveryRule] | None = None  # default: from the send emit
    error: ErrorRule | None = None  # an event the server emits to refuse a request


class _EmitTemplate:
    """A compiled emit: ``[event, *args]`` rendered into a Socket.IO EVENT packet."""

    __slots__ = ("args", "event", "head", "marked")

    def __init__(self, kind: str, emit: Emit, namespace: str, where: str) -> None:
        default_event, default_args = DEFAULT_EMITS[kind]
        event = emit.event or default_event
        if not event:
            raise AdapterError(f"{where}: needs event (the event name to emit)")
        self.event = event
        self.head = eio.encode(eio.EVENT, namespace)
        args = emit.args if emit.args is not None else default_args
        self.args = Template(args, ALLOWED[kind], f"{where}.args")
        self.marked = self.args.marked

    def render(self, values: Mapping[str, Any], ack_id: int | None = None) -> bytes:
        data = _encode([self.event, *self.args.render(values)])
        if ack_id is None:
            return self.head + data
        return b"%s%d%s" % (self.head, ack_id, data)


def _find(value: Any, test: Any, prefix: str) -> str | None:
    """The path of the first string in a template for which ``test`` holds."""
    if isinstance(value, str):
        return prefix if test(value) else None
    items = value.items() if isinstance(value, dict) else enumerate(value or [])
    if not isinstance(value, dict | list):
        return None
    for key, inner in items:
        found = _find(inner, test, f"{prefix}.{key}")
        if found is not None:
            return found
    return None


def default_delivery(send: Emit) -> DeliveryRule:
    """Recognise what the send emit sends, relayed unchanged: same event, same places."""
    event = send.event or DEFAULT_EMITS["send"][0]
    args = send.args if send.args is not None else DEFAULT_EMITS["send"][1]
    marker = _find(args, lambda s: "{body}" in s, "args")
    if marker is None:
        raise AdapterError(
            "protocol_options.send: its args carry no {body}, so no delivery can be "
            "recognised; put {body} in them (or give delivery rules)"
        )
    room = _find(args, lambda s: s == "{room}", "args")
    return DeliveryRule(match={"event": event}, marker=marker, room=room)


class SocketIOAdapter(Adapter):
    """Socket.IO v4: namespaces, auth, configurable events, acks, Engine.IO heartbeats."""

    name = "socketio"
    features = frozenset({Feature.ROOMS, Feature.PUBLISH})  # more with options, per instance
    default_path = "/socket.io/"
    expects_welcome = True  # the namespace CONNECT answer
    schemes = {"ws": "ws", "wss": "wss", "http": "ws", "https": "wss"}  # as io("http://...")

    def __init__(self, options: Mapping[str, Any] | None = None) -> None:
        super().__init__(options)
        where = "protocol_options"
        o: SocketIOOptions = convert_options(options, SocketIOOptions, where)
        if not o.namespace.startswith("/"):
            raise AdapterError(f"{where}.namespace: {o.namespace!r} must start with /")
        if not o.path.startswith("/"):
            raise AdapterError(f"{where}.path: {o.path!r} must start with /")
        self.namespace = o.namespace
        self._event_head = eio.encode(eio.EVENT, o.namespace, None, b"[")
        self.default_path = o.path
        self.confirms_join = o.join_ack
        self._ack = o.ack
        self._joins = pending_joins()
        self._join_ids = itertools.count(JOIN_ID_BASE)
        self._ping_ids = itertools.count(PING_ID_BASE)

        def emit(kind: str, value: Emit) -> _EmitTemplate:
            return _EmitTemplate(kind, value, o.namespace, f"{where}.{kind}")

        def optional(kind: str, value: Emit | None) -> _EmitTemplate | None:
            return None if value is None else emit(kind, value)

        self._join = emit("join", o.join)
        self._send = emit("send", o.send)
        self._publish = emit("publish", o.publish or o.send)
        self._dm = optional("dm", o.dm)
        self._typing = optional("typing", o.typing)
        self._read = optional("read", o.read)
        self._ping = optional("ping", o.ping)
        self._auth = Template(o.auth, ALLOWED["hello"], f"{where}.auth") if o.auth else None
        self._headers = {
            k: Template(v, ALLOWED["hello"], f"{where}.headers.{k}") for k, v in o.headers.items()
        }
        deliveries = one_or_many(o.delivery) if o.delivery is not None else []
        if not deliveries:
            deliveries = [default_delivery(o.send)]
        self._recognise = Recogniser(
            delivery=deliveries,
            ack=None,
            joined=None,
            welcome=None,
            error=o.error,
            reply=[],
            kind="event",
            joins=self._joins,
            where=where,
        )
        have = {Feature.ROOMS, Feature.PUBLISH}
        for feature, present in (
            (Feature.ACK, o.ack),
            (Feature.DM, o.dm),
            (Feature.TYPING, o.typing),
            (Feature.RECEIPTS, o.read),
            (Feature.PING, o.ping),
        ):
            if present:
                have.add(feature)
        self.features = frozenset(have)

    # -- frames out -------------------------------------------------------------------------

    def url(self, target: str) -> str:
        """``ws://host:port`` (or ``http://host:port``, as Socket.IO users write it) ->
        ``ws://host:port/socket.io/?EIO=4&transport=websocket``."""
        parts = urlsplit(self.ws_scheme(target))
        path = parts.path if parts.path not in ("", "/") else self.default_path
        query = parts.query
        if "EIO=" not in query:
            query = f"{query}&{eio.QUERY}" if query else eio.QUERY
        return urlunsplit((parts.scheme, parts.netloc, path, query, ""))

    def headers(self, user: str, token: str | None) -> dict[str, str] | None:
        return render_headers(self._headers, user, token)

    def open(self, user: str, token: str | None) -> list[bytes]:
        data = b""
        if self._auth is not None:
            data = _encode(self._auth.render({"user": user, "token": token or user}))
        return [eio.encode(eio.CONNECT, self.namespace, None, data)]

    def join(self, room: str, req_id: int) -> bytes:
        ack_id = remember_join(self._joins, self._join_ids, room) if self.confirms_join else None
        return self._join.render({"room": room, "req": req_id}, ack_id)

    def send(self, room: str, body: str, req_id: int) -> bytes:
        t = self._send
        values = frame_values(t.marked, body, req_id, room=room)
        return t.render(values, req_id if self._ack else None)

    def publish(self, room: str, event: str, data: str, req_id: int) -> bytes:
        t = self._publish
        values = frame_values(t.marked, data, req_id, room=room, event=event)
        return t.render(values, req_id if self._ack else None)

    def dm(self, to_user: str, body: str, req_id: int) -> bytes:
        t = self._dm
        assert t is not None  # called only with Feature.DM, which the dm emit gives
        values = frame_values(t.marked, body, req_id, to=to_user)
        return t.render(values, req_id if self._ack else None)

    def typing(self, room: str, started: bool) -> bytes:
        t = self._typing
        assert t is not None  # called only with Feature.TYPING
        return t.render({"room": room, "state": "start" if started else "stop"})

    def read(self, room: str, seq: int) -> bytes:
        t = self._read
        assert t is not None  # called only with Feature.RECEIPTS
        return t.render({"room": room, "seq": seq})

    def ping(self, text: str, req_id: int) -> bytes:
        t = self._ping
        assert t is not None  # called only with Feature.PING
        return t.render(frame_values(t.marked, text, req_id), next(self._ping_ids))

    # -- frames in --------------------------------------------------------------------------

    def parse(self, payload: bytes) -> Event | None:
        first = payload[:1]
        if first == b"4":
            return self._packet(payload)
        if first == b"2" and len(payload) <= 16:
            return Reply(eio.pong(payload))
        if first in (b"0", b"6"):  # Engine.IO open (handshake data) and noop
            return None
        if first == b"1":
            return Notice("close")
        return Notice("unparsed")

    def _packet(self, payload: bytes) -> Event | None:
        if payload.startswith(self._event_head):  # the hot path: an event, no ack id
            return self._event(payload[len(self._event_head) - 1 :])
        packet = eio.decode(payload)
        if packet is None:
            return Notice("unparsed")
        if packet.namespace != self.namespace:
            return Notice("other_namespace")
        kind = packet.type
        if kind == eio.EVENT:
            return self._event(packet.data)
        if kind == eio.ACK:
            return self._on_ack(packet)
        if kind == eio.CONNECT:
            return Ready(None, 0)
        if kind == eio.CONNECT_ERROR:
            return Rejected(None, "connect_error", _error_message(packet.data))
        if kind == eio.DISCONNECT:
            return Notice("disconnect")
        return Notice("binary")

    def _event(self, data: bytes) -> Event:
        """An event's ``["name", *args]``, as the rules see it: ``{event, args}``."""
        try:
            value = _decode(data)
        except msgspec.DecodeError:
            return Notice("unparsed")
        if not isinstance(value, list) or not value or not isinstance(value[0], str):
            return Notice("unparsed")
        return self._recognise({"event": value[0], "args": value[1:]})

    def _on_ack(self, packet: eio.Packet) -> Event | None:
        ack_id = packet.id
        if ack_id is None:
            return Notice("unparsed")
        if ack_id >= PING_ID_BASE:
            try:
                args = _decode(packet.data) if packet.data else []
            except msgspec.DecodeError:
                args = []
            found = find_marker(args[0]) if isinstance(args, list) and args else None
            return Delivery(*found) if found is not None else Notice("pong")
        if ack_id >= JOIN_ID_BASE:
            room = self._joins.pop(ack_id, None)
            return Ready(room, 0) if room is not None else None
        return Ack(ack_id)


def _error_message(data: bytes) -> str:
    """The text of a CONNECT_ERROR: ``{"message": ...}`` (v4) or a bare JSON string."""
    try:
        value = _decode(data) if data else ""
    except msgspec.DecodeError:
        return data.decode("utf-8", "replace")
    if isinstance(value, dict):
        value = value.get("message", value)
    return str(value)
