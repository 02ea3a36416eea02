"""Adapter for GraphQL over WebSocket: the graphql-transport-ws protocol (``graphql-ws``).

The protocol of the graphql-ws library (Apollo Server 4, GraphQL Yoga, Hasura, ...):
https://github.com/enisdenjo/graphql-ws/blob/master/PROTOCOL.md. The upgrade names the
subprotocol ``graphql-transport-ws`` (a server closes with 4406 otherwise); the client
sends ``connection_init`` and waits for ``connection_ack``. Its defaults follow the
graphql-ws README's getting-started server grown into a chat, so such a server needs no
options:

- join a room: ``subscribe`` to ``subscription ($room: String!) { messages(room: $room)
  { room body } }`` with the operation id ``s:<room>``, so every ``next`` of it names its
  room without any state in the adapter (one adapter serves every connection);
- send: ``subscribe`` to the mutation ``sendMessage(room, body)`` with the request id as
  the operation id; its result (``next``) is the send's ack, an ``errors`` result or an
  ``error`` message its refusal;
- a delivery is a ``next`` of a room subscription whose ``data.messages.body`` carries
  the marker; the server's ``ping`` is answered with ``pong`` (a ``Reply``), and a
  ``ping`` of ours with a payload comes back in the ``pong`` (round trips).

The protocol has no subscription confirmation, so a room counts as joined once its
subscribe is sent, and no resume. Documents, variables, the ``connection_init`` payload
and where the marker sits are ``protocol_options`` (docs/ADAPTERS.md).
:mod:`loadtest.adapters.graphql_legacy` is the older subscriptions-transport-ws protocol,
with the same options.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

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
    Reply,
)
from loadtest.adapters.rules import FieldPath, convert_options, find_marker
from loadtest.adapters.templates import ALLOWED, Template, frame_values, render_headers

_encode = msgspec.json.encode
_decode = msgspec.json.decode

SUBSCRIBE_QUERY = "subscription ($room: String!) { messages(room: $room) { room body } }"
SEND_QUERY = (
    "mutation ($room: String!, $body: String!) { sendMessage(room: $room, body: $body) { room } }"
)
DEFAULT_VARIABLES: dict[str, dict[str, str]] = {
    "subscribe": {"room": "{room}"},
    "send": {"room": "{room}", "body": "{body}"},
}
ROOM_ID = "s:"
"""Operation ids of room subscriptions start with this; the room name follows."""
PING_KEY = "rtb"
"""The field of a ping's payload that carries the marker (the server's pong echoes it)."""


class Operation(Struct, forbid_unknown_fields=True, kw_only=True):
    """A GraphQL operation: its document and its variables (a template)."""

    query: str | None = None
    variables: dict[str, Any] | None = None


class GraphQLOptions(Struct, forbid_unknown_fields=True, kw_only=True):
    """``protocol_options`` of ``graphql-ws`` and ``graphql-legacy`` (docs/ADAPTERS.md)."""

    path: str = "/graphql"  # the endpoint, when the target URL has no path
    init: Any = None  # connection_init payload template ({user}, {token})
    headers: dict[str, str] = {}  # extra upgrade headers ({user}, {token})
    subscribe: Operation = field(default_factory=Operation)  # joining a room
    send: Operation = field(default_factory=Operation)  # a chat message (a mutation)
    publish: Operation | None = None  # fanout events (default: send)
    marker: str = "messages.body"  # where in a delivery's data the message text sits
    ack: bool = True  # the mutation's result acks the send (send -> ack latency)


class _Op:
    """A compiled operation: the frame's constant head, variables rendered per frame."""

    __slots__ = ("head", "marked", "variables")

    def __init__(self, kind: str, op: Operation, default_query: str, start: str, where: str):
        query = op.query if op.query is not None else default_query
        if not query.strip():
            raise AdapterError(f"{where}.query: is empty (a GraphQL document)")
        variables = (
            op.variables
            if op.variables is not None
            else DEFAULT_VARIABLES[kind.replace("publish", "send")]
        )
        allowed = ALLOWED["join" if kind == "subscribe" else kind]
        self.variables = Template(variables, allowed, f"{where}.variables")
        self.marked = self.variables.marked
        self.head = b'{"type":"%s","payload":{"query":%s,"variables":' % (
            start.encode(),
            _encode(query),
        )
        if kind != "subscribe" and "body" not in self.variables.names:
            raise AdapterError(
                f"{where}.variables: carry no {{body}}, so no delivery can be recognised; "
                "put {body} in the variable the server relays"
            )

    def render(self, values: Mapping[str, Any], op_id: str) -> bytes:
        return b'%s%s},"id":%s}' % (
            self.head,
            _encode(self.variables.render(values)),
            _encode(op_id),
        )


class GraphQLWSAdapter(Adapter):
    """graphql-transport-ws: connection_init/ack, subscribe/next/error/complete, ping/pong."""

    name = "graphql-ws"
    features = frozenset({Feature.ROOMS, Feature.PUBLISH, Feature.ACK, Feature.PING})
    default_path = "/graphql"
    expects_welcome = True  # connection_ack
    confirms_join = False  # a subscription is never confirmed: joined once it is sent

    subprotocols: ClassVar[tuple[str, ...]] = ("graphql-transport-ws",)
    # message types (the legacy protocol names them differently)
    INIT: ClassVar[str] = "connection_init"
    ACK: ClassVar[str] = "connection_ack"
    START: ClassVar[str] = "subscribe"
    DATA: ClassVar[str] = "next"
    has_ping: ClassVar[bool] = True

    def __init__(self, options: Mapping[str, Any] | None = None) -> None:
        super().__init__(options)
        where = "protocol_options"
        o: GraphQLOptions = convert_options(options, GraphQLOptions, where)
        if not o.path.startswith("/"):
            raise AdapterError(f"{where}.path: {o.path!r} must start with /")
        self.default_path = o.path
        self._subscribe = _Op(
            "subscribe", o.subscribe, SUBSCRIBE_QUERY, self.START, f"{where}.subscribe"
        )
        self._send = _Op("send", o.send, SEND_QUERY, self.START, f"{where}.send")
        self._publish = (
            _Op("publish", o.publish, SEND_QUERY, self.START, f"{where}.publish")
            if o.publish is not None
            else self._send
        )
        self._marker = FieldPath(o.marker, f"{where}.marker")
        self._init = Template(o.init, ALLOWED["hello"], f"{where}.init") if o.init else None
        self._headers = {
            k: Template(v, ALLOWED["hello"], f"{where}.headers.{k}") for k, v in o.headers.items()
        }
        have = {Feature.ROOMS, Feature.PUBLISH}
        if o.ack:
            have.add(Feature.ACK)
        if self.has_ping:
            have.add(Feature.PING)
        self.features = frozenset(have)

    # -- frames out -------------------------------------------------------------------------

    def headers(self, user: str, token: str | None) -> dict[str, str] | None:
        return render_headers(self._headers, user, token)

    def open(self, user: str, token: str | None) -> list[bytes]:
        frame: dict[str, Any] = {"type": self.INIT}
        if self._init is not None:
            frame["payload"] = self._init.render({"user": user, "token": token or user})
        else:
            frame["payload"] = {}
        return [_encode(frame)]

    def join(self, room: str, req_id: int) -> bytes:
        return self._subscribe.render({"room": room, "req": req_id}, ROOM_ID + room)

    def send(self, room: str, body: str, req_id: int) -> bytes:
        t = self._send
        return t.render(frame_values(t.marked, body, req_id, room=room), str(req_id))

    def publish(self, room: str, event: str, data: str, req_id: int) -> bytes:
        t = self._publish
        values = frame_values(t.marked, data, req_id, room=room, event=event)
        return t.render(values, str(req_id))

    def ping(self, text: str, req_id: int) -> bytes:
        return _encode({"type": "ping", "payload": {PING_KEY: text}})

    # -- frames in --------------------------------------------------------------------------

    def parse(self, payload: bytes) -> Event | None:
        try:
            frame = _decode(payload)
        except msgspec.DecodeError:
            return Notice("unparsed")
        if type(frame) is not dict:
            return Notice("unparsed")
        kind = frame.get("type")
        op_id = frame.get("id")
        if kind == self.DATA and type(op_id) is str:
            return self._result(op_id, frame.get("payload"))
        return self._control(kind, op_id, frame)

    def _result(self, op_id: str, result: Any) -> Event | None:
        """A ``next`` (``data``): a room's item, or the result of one of our mutations."""
        if type(result) is not dict:
            return Notice("unparsed")
        errors = result.get("errors")
        if op_id.startswith(ROOM_ID):
            if errors:
                return Rejected(None, _error_code(errors), _error_message(errors))
            found = find_marker(self._marker.get(result.get("data")))
            if found is None:
                return Notice("unmarked")
            return Delivery(*found, room=op_id[len(ROOM_ID) :])
        req = int(op_id) if op_id.isdigit() else op_id
        if errors:
            return Rejected(req, _error_code(errors), _error_message(errors))
        return Ack(req)

    def _control(self, kind: Any, op_id: Any, frame: dict[str, Any]) -> Event | None:
        if kind == "ping":
            return Reply(b'{"type":"pong"}')
        if kind == "pong":
            body = frame.get("payload")
            found = find_marker(body.get(PING_KEY)) if type(body) is dict else None
            return Delivery(*found) if found is not None else Notice("pong")
        if kind == self.ACK:
            return Ready(None, 0)
        if kind == "error":
            errors = frame.get("payload")
            req = int(op_id) if isinstance(op_id, str) and op_id.isdigit() else None
            return Rejected(req, _error_code(errors), _error_message(errors))
        if kind == "complete":
            # a room subscription the server ended counts; our mutations all complete
            return Notice("complete") if str(op_id).startswith(ROOM_ID) else None
        return Notice(str(kind) if isinstance(kind, str) else "other")


def _first_error(errors: Any) -> Any:
    if isinstance(errors, list) and errors:
        return errors[0]
    return errors


def _error_code(errors: Any) -> str:
    """``extensions.code`` of the first GraphQL error (Apollo's convention), else generic."""
    first = _first_error(errors)
    if isinstance(first, dict):
        ext = first.get("extensions")
        if isinstance(ext, dict) and isinstance(ext.get("code"), str):
            return ext["code"]
    return "graphql_error"


def _error_message(errors: Any) -> str:
    first = _first_error(errors)
    if isinstance(first, dict):
        return str(first.get("message", ""))
    return str(first or "")
