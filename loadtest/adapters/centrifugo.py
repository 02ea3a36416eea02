"""Adapter for Centrifugo (v4, v5, v6): its bidirectional JSON client protocol.

Its defaults follow Centrifugo's client protocol docs and quickstart:

- connect to ``/connection/websocket``; the first command is
  ``{"id":1,"connect":{"token":"<JWT>","name":"rtbench"}}`` (the token: ``--token``, or
  an HS256 JWT with ``sub`` = the user from ``--jwt-secret``, as Centrifugo's
  ``token_hmac_secret_key`` wants); its reply ``{"id":1,"connect":{...}}`` is the welcome;
- a room is a channel: ``{"id":N,"subscribe":{"channel":"<room>"}}``, confirmed by
  ``{"id":N,"subscribe":{...,"epoch":E,"offset":O}}``;
- send: ``{"id":N,"publish":{"channel":C,"data":{"input":"<marker>"}}}``; its reply
  ``{"id":N,"publish":{}}`` is the ``Ack``; ``{"id":N,"error":{"code":..}}`` a refusal;
- a delivery is a push ``{"push":{"channel":C,"pub":{"data":{...},"offset":O}}}``, the
  offset being the message's seq in its channel (Centrifugo publishes to the publisher
  too: its own copy counts as ``own_message``);
- the server pings with an empty ``{}`` every ``ping`` seconds (25) and expects ``{}``
  back: answered with ``Reply``;
- several replies may come in one frame, one JSON per line: ``parse`` returns them all;
- **resume** is Centrifugo's offset/epoch recovery: a reconnecting client sends connect,
  then ``subscribe`` with ``recover: true``, the last ``offset`` it saw and the channel's
  ``epoch``; the reply's ``publications`` are the missed messages (deliveries, with their
  offsets, so the client's seq dedupe and recovery accounting apply), ``recovered``
  says whether the server could fill the gap (counted as ``recovered`` /
  ``not_recovered``). The channel's namespace needs history and recovery enabled
  (``history_size``, ``history_ttl``, ``force_recovery``).

Command ids are ``uint32`` in Centrifugo. Subscribes take ids from 2^31 up (unique in
the adapter, so a reply names its channel whichever connection it came on), other
requests keep theirs below 2^31; a larger request id (the monitor's come from the
clock) is mapped into the subscribe range and back.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping
from typing import Any

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
from loadtest.adapters.payload import PayloadTemplate
from loadtest.adapters.rules import PENDING_JOINS, convert_options
from loadtest.adapters.templates import ALLOWED, Template
from rtbench.bounded import BoundedDict

_encode = msgspec.json.encode
_decode = msgspec.json.decode

CONNECT_ID = 1
HIGH_IDS = 1 << 31
"""Ids from here to 2^32 are the adapter's own (subscribes, mapped large request ids)."""
PONG = b"{}"
ERROR_CODES = {
    100: "internal",
    101: "unauthorized",
    102: "unknown_room",  # "unknown channel": a resume takes it as that room's refusal
    103: "forbidden",  # "permission denied": likewise (``refused_room_codes``)
    104: "method_not_found",
    105: "already_subscribed",
    106: "limit_exceeded",
    107: "bad_request",
    108: "not_available",
    109: "token_expired",
    110: "expired",
    111: "too_many_requests",
    112: "unrecoverable_position",
}
"""Centrifugo's client error codes, named (``errors_by_code`` in results.json)."""


class CentrifugoOptions(Struct, forbid_unknown_fields=True, kw_only=True):
    """``protocol_options`` of ``--protocol centrifugo`` (docs/ADAPTERS.md)."""

    path: str = "/connection/websocket"
    connect: Any = field(default_factory=lambda: {"token": "{token}", "name": "rtbench"})
    channel: str = "{room}"
    data: Any = field(default_factory=lambda: {"input": "{body}"})  # publish data


class CentrifugoAdapter(Adapter):
    """Centrifugo's JSON protocol: channels, publish acks, server pings, recovery."""

    name = "centrifugo"
    features = frozenset({Feature.ROOMS, Feature.PUBLISH, Feature.ACK, Feature.RESUME})
    refused_room_codes = frozenset({ERROR_CODES[102], ERROR_CODES[103]})
    """"unknown channel" and "permission denied" answer one channel of a resume."""
    default_path = "/connection/websocket"
    expects_welcome = True  # the connect reply

    def __init__(self, options: Mapping[str, Any] | None = None) -> None:
        super().__init__(options)
        where = "protocol_options"
        o: CentrifugoOptions = convert_options(options, CentrifugoOptions, where)
        if not o.path.startswith("/"):
            raise AdapterError(f"{where}.path: {o.path!r} must start with /")
        if not isinstance(o.connect, dict):
            raise AdapterError(f"{where}.connect: must be a table (the connect request)")
        if "{room}" not in o.channel:
            raise AdapterError(f"{where}.channel: {o.channel!r} must hold {{room}}")
        prefix, _, suffix = o.channel.partition("{room}")
        if "{" in prefix + suffix:
            raise AdapterError(f"{where}.channel: only {{room}} may appear in {o.channel!r}")
        self.default_path = o.path
        self._prefix, self._suffix = prefix, suffix
        self._connect = Template(o.connect, ALLOWED["hello"], f"{where}.connect")
        self._data = PayloadTemplate(o.data, f"{where}.data")
        self._ids = itertools.cycle(range(HIGH_IDS, 1 << 32))
        # high id -> ("join", room) / ("req", id), the oldest forgotten first
        self._pending: BoundedDict[int, tuple[str, Any]] = BoundedDict(PENDING_JOINS)
        self.epochs: dict[str, str] = {}  # room -> its stream's epoch (a channel property)

    # -- ids ------------------------------------------------------------------------------

    def _high(self, kind: str, value: Any) -> int:
        wire = next(self._ids)
        self._pending.put(wire, (kind, value))
        return wire

    def _wire_id(self, req_id: int) -> int:
        return req_id if 0 < req_id < HIGH_IDS else self._high("req", req_id)

    # -- frames out -----------------------------------------------------------------------

    def channel(self, room: str) -> str:
        return f"{self._prefix}{room}{self._suffix}"

    def room_of(self, channel: str) -> str | None:
        p, s = self._prefix, self._suffix
        if channel.startswith(p) and channel.endswith(s) and len(channel) >= len(p) + len(s):
            return channel[len(p) : len(channel) - len(s)]
        return None

    def open(self, user: str, token: str | None) -> list[bytes]:
        connect = self._connect.render({"user": user, "token": token or user})
        return [_encode({"id": CONNECT_ID, "connect": connect})]

    def join(self, room: str, req_id: int) -> bytes:
        wire = self._high("join", room)
        return _encode({"id": wire, "subscribe": {"channel": self.channel(room)}})

    def resume(self, user: str, token: str | None, last_seq: Mapping[str, int]) -> list[bytes]:
        frames = self.open(user, token)
        for room, offset in last_seq.items():
            wire = self._high("join", room)
            sub = {
                "channel": self.channel(room),
                "recover": True,
                "offset": offset,
                "epoch": self.epochs.get(room, ""),
            }
            frames.append(_encode({"id": wire, "subscribe": sub}))
        return frames

    def send(self, room: str, body: str, req_id: int) -> bytes:
        data = self._data.render(body, req_id, room=room)
        publish = {"channel": self.channel(room), "data": data}
        return _encode({"id": self._wire_id(req_id), "publish": publish})

    def publish(self, room: str, event: str, data: str, req_id: int) -> bytes:
        return self.send(room, data, req_id)

    # -- frames in ------------------------------------------------------------------------

    def parse(self, payload: bytes) -> Event | list[Event] | None:
        if b"\n" in payload.strip():  # several replies in one frame (JSON streaming)
            events: list[Event] = []
            for line in payload.split(b"\n"):
                if line.strip():
                    one = self._one(line)
                    if isinstance(one, list):
                        events.extend(one)
                    elif one is not None:
                        events.append(one)
            return events
        return self._one(payload)

    def _one(self, payload: bytes) -> Event | list[Event] | None:
        if payload.strip() == PONG:  # the server's ping
            return Reply(PONG)
        try:
            reply = _decode(payload)
        except msgspec.DecodeError:
            return Notice("unparsed")
        if not isinstance(reply, dict):
            return Notice("unparsed")
        push = reply.get("push")
        if push is not None:
            return self._push(push)
        wire = reply.get("id")
        if not isinstance(wire, int):
            return Notice("other")
        error = reply.get("error")
        if error is not None:
            return self._error(wire, error)
        if "connect" in reply:
            return Ready(None, 0)
        if "subscribe" in reply:
            return self._subscribed(wire, reply["subscribe"])
        if "publish" in reply:
            return Ack(self._req_of(wire))
        return Notice(next(iter(k for k in reply if k != "id"), "other"))

    def _req_of(self, wire: int) -> int | str | None:
        if wire < HIGH_IDS:
            return wire
        found = self._pending.pop(wire, None)
        return found[1] if found is not None and found[0] == "req" else None

    def _push(self, push: Any) -> Event:
        if not isinstance(push, dict):
            return Notice("unparsed")
        pub = push.get("pub")
        if pub is None:
            kind = next((k for k in push if k != "channel"), "push")
            return Notice(kind)
        channel = push.get("channel")
        room = self.room_of(channel) if isinstance(channel, str) else None
        return self._publication(pub, room)

    def _publication(self, pub: Any, room: str | None) -> Event:
        data = pub.get("data") if isinstance(pub, dict) else None
        found = self._data.marker(data)
        offset = pub.get("offset") if isinstance(pub, dict) else None
        seq = offset if isinstance(offset, int) and offset > 0 else None
        if found is None:
            return Notice("publication", room, seq)
        return Delivery(*found, room=room, seq=seq)

    def _subscribed(self, wire: int, result: Any) -> Event | list[Event] | None:
        found = self._pending.pop(wire, None)
        if found is None or found[0] != "join":
            return Notice("subscribe")
        room: str = found[1]
        result = result if isinstance(result, dict) else {}
        epoch = result.get("epoch")
        if isinstance(epoch, str) and epoch:
            self.epochs[room] = epoch
        offset = result.get("offset")
        ready = Ready(room, offset if isinstance(offset, int) else 0)
        if not result.get("was_recovering"):
            return ready
        events: list[Event] = [self._publication(p, room) for p in result.get("publications", ())]
        events.append(Notice("recovered" if result.get("recovered") else "not_recovered", room))
        events.append(ready)
        return events

    def _error(self, wire: int, error: Any) -> Event:
        code = error.get("code") if isinstance(error, dict) else None
        name = ERROR_CODES.get(code, str(code)) if isinstance(code, int) else "error"
        message = str(error.get("message", "")) if isinstance(error, dict) else ""
        if wire == CONNECT_ID:  # (a publish with id 1 is refused the same way)
            return Rejected(None, name, f"connect: {message}")
        if wire >= HIGH_IDS:
            found = self._pending.pop(wire, None)
            if found is not None and found[0] == "join":
                return Rejected(None, name, f"subscribe {found[1]}: {message}")
            return Rejected(found[1] if found is not None else None, name, message)
        return Rejected(wire, name, message)
