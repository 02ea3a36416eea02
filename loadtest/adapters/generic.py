"""Adapter for any JSON-over-WebSocket server, configured in the scenario file alone.

A user describes their protocol in ``protocol_options`` (docs/ADAPTERS.md): frame
*templates* for what the client sends (``loadtest.adapters.templates``) and *rules* for
what the server sends (``loadtest.adapters.rules``: a ``match`` of field values, plus
field paths saying where the room, the marker or the sender/counter/timestamp sit).
Nothing here is specific to one server, so testing your own needs no Python.

Every option is checked when the adapter is made: a bad template or path is one line
of ``AdapterError`` (``rtbench run`` exits 2), never a failure in the middle of a run.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping
from typing import Any

import msgspec
from msgspec import Struct

from loadtest.adapters.base import Adapter, AdapterError, Event, Feature, Notice
from loadtest.adapters.rules import (
    JOIN_ID_BASE,
    AckRule,
    DeliveryRule,
    ErrorRule,
    FrameRule,
    JoinedRule,
    Recogniser,
    ReplyRule,
    convert_options,
    one_or_many,
    pending_joins,
    remember_join,
)
from loadtest.adapters.templates import ALLOWED, Template, frame_values, render_headers

_encode = msgspec.json.encode
_decode = msgspec.json.decode


class GenericOptions(Struct, forbid_unknown_fields=True, kw_only=True):
    """``protocol_options`` of ``--protocol generic`` (docs/ADAPTERS.md explains each)."""

    path: str = ""  # appended to a target URL that has no path
    headers: dict[str, str] = {}  # upgrade headers ({user}, {token})
    hello: list[Any] = []  # frames sent right after the upgrade ({user}, {token})
    welcome: FrameRule | None = None  # the server's answer to hello; wait for it
    join: Any = None  # template ({room}, {req})
    joined: JoinedRule | None = None  # the server's confirmation of a join (else none comes)
    send: Any = None  # template of a chat message ({room}, {body}, {req}, ...)
    publish: Any = None  # fanout: an event into a room (default: the send template)
    dm: Any = None  # a direct message ({to}, {body}, ...)
    typing: Any = None  # a typing indicator ({room}, {state})
    read: Any = None  # a read receipt ({room}, {seq})
    ping: Any = None  # a round trip whose reply a delivery rule recognises ({body}, ...)
    delivery: DeliveryRule | list[DeliveryRule] = []
    ack: AckRule | None = None
    error: ErrorRule | None = None
    reply: ReplyRule | list[ReplyRule] = []
    kind: str | None = None  # path naming other frames (counted by it in events_by_type)


class GenericAdapter(Adapter):
    """Any JSON-over-WebSocket protocol, from templates and rules in the scenario file."""

    name = "generic"
    features = frozenset(
        {Feature.ROOMS, Feature.PUBLISH, Feature.DM, Feature.TYPING, Feature.RECEIPTS}
        | {Feature.ACK, Feature.PING}
    )  # what it can do when configured; an instance has what its options give

    def __init__(self, options: Mapping[str, Any] | None = None) -> None:
        super().__init__(options)
        where = "protocol_options"
        o: GenericOptions = convert_options(options, GenericOptions, where)
        self.default_path = o.path
        self._joins = pending_joins()
        self._join_ids = itertools.count(JOIN_ID_BASE)

        def template(kind: str, value: Any, allowed: str | None = None) -> Template | None:
            if value is None:
                return None
            return Template(value, ALLOWED[allowed or kind], f"{where}.{kind}")

        self._headers = {
            k: Template(v, ALLOWED["hello"], f"{where}.headers.{k}") for k, v in o.headers.items()
        }
        self._hello = [
            Template(v, ALLOWED["hello"], f"{where}.hello.{i}") for i, v in enumerate(o.hello)
        ]
        self._join = template("join", o.join)
        self._send = template("send", o.send)
        self._publish = template("publish", o.publish) or (
            template("send", o.send, "publish") if o.send is not None else None
        )
        self._dm = template("dm", o.dm)
        self._typing = template("typing", o.typing)
        self._read = template("read", o.read)
        self._ping = template("ping", o.ping)
        deliveries = one_or_many(o.delivery)
        self._recognise = Recogniser(
            delivery=deliveries,
            ack=o.ack,
            joined=o.joined,
            welcome=o.welcome,
            error=o.error,
            reply=one_or_many(o.reply),
            kind=o.kind,
            joins=self._joins,
            where=where,
        )
        if self._dm is not None and any(d.marker is None and d.stream is None for d in deliveries):
            raise AdapterError(
                f"{where}.delivery: with a dm template, a delivery rule without a marker "
                "needs a stream path (the field carrying {stream})"
            )
        self.expects_welcome = o.welcome is not None
        self.confirms_join = o.joined is not None
        have = set()
        if self._join is not None and self._send is not None and deliveries:
            have |= {Feature.ROOMS, Feature.PUBLISH}
        if self._dm is not None and deliveries:
            have.add(Feature.DM)
        if self._typing is not None:
            have.add(Feature.TYPING)
        if self._read is not None:
            have.add(Feature.RECEIPTS)
        if self._ping is not None and deliveries:
            have.add(Feature.PING)
        if o.ack is not None:
            have.add(Feature.ACK)
        if not have - {Feature.ACK}:
            raise AdapterError(
                f"{where}: the generic protocol needs join + send + delivery (rooms) or "
                "ping + delivery (round trips); see docs/ADAPTERS.md"
            )
        self.features = frozenset(have)

    # -- frames out -------------------------------------------------------------------------

    def headers(self, user: str, token: str | None) -> dict[str, str] | None:
        return render_headers(self._headers, user, token)

    def open(self, user: str, token: str | None) -> list[bytes]:
        values = {"user": user, "token": token or user}
        return [_encode(t.render(values)) for t in self._hello]

    def join(self, room: str, req_id: int) -> bytes:
        t = self._join
        assert t is not None  # called only with Feature.ROOMS, which needs the join template
        join_id = remember_join(self._joins, self._join_ids, room) if self.confirms_join else req_id
        return _encode(t.render({"room": room, "req": join_id}))

    def send(self, room: str, body: str, req_id: int) -> bytes:
        t = self._send
        assert t is not None  # called only with Feature.ROOMS, which needs the send template
        return _encode(t.render(frame_values(t.marked, body, req_id, room=room)))

    def publish(self, room: str, event: str, data: str, req_id: int) -> bytes:
        t = self._publish
        assert t is not None  # called only with Feature.PUBLISH (a publish or send template)
        return _encode(t.render(frame_values(t.marked, data, req_id, room=room, event=event)))

    def dm(self, to_user: str, body: str, req_id: int) -> bytes:
        t = self._dm
        assert t is not None  # called only with Feature.DM
        return _encode(t.render(frame_values(t.marked, body, req_id, to=to_user)))

    def typing(self, room: str, started: bool) -> bytes:
        t = self._typing
        assert t is not None  # called only with Feature.TYPING
        return _encode(t.render({"room": room, "state": "start" if started else "stop"}))

    def read(self, room: str, seq: int) -> bytes:
        t = self._read
        assert t is not None  # called only with Feature.RECEIPTS
        return _encode(t.render({"room": room, "seq": seq}))

    def ping(self, text: str, req_id: int) -> bytes:
        t = self._ping
        assert t is not None  # called only with Feature.PING
        return _encode(t.render(frame_values(t.marked, text, req_id)))

    # -- frames in --------------------------------------------------------------------------

    def parse(self, payload: bytes) -> Event | None:
        try:
            frame = _decode(payload)
        except msgspec.DecodeError:
            return Notice("unparsed")
        return self._recognise(frame)
