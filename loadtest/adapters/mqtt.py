"""Adapter for MQTT 3.1.1 and MQTT 5 brokers over WebSocket (subprotocol ``mqtt``).

Its defaults follow the getting-started example of the MQTT clients (paho-mqtt, MQTT.js):
connect with a clean session and a 60 s keepalive, subscribe to a topic at QoS 0,
publish to it at QoS 0. Rooms are topics (``topic = "{room}"`` by default); a delivery
is a PUBLISH whose payload is the marker, so latency, loss, duplicates and order are
measured from what the adapter put in the payload.

- ``qos = 1``: publishes ask for a PUBACK, which is the ``Ack`` (send -> ack latency,
  unacked sends retried after a reconnect with the same packet id); received QoS 1
  PUBLISHes are PUBACKed at once (a ``Reply``), as every client must.
- ``keepalive``: the broker drops a client silent for 1.5 x keepalive; the adapter's
  ``heartbeat`` (PINGREQ every keepalive / 2) is sent by every driver.
- ``clean_session = false`` (MQTT 5: clean start off plus a session expiry): the broker
  keeps the subscriptions and queues QoS 1 messages while the client is away. That is
  MQTT's own resume: a reconnect sends CONNECT with the same client id and, when the
  CONNACK says the session is present, every room is back at once and the queued
  messages follow (a broker that lost the session gets the rooms subscribed again).

Why the packet codec is written here rather than taken from a library: the MQTT
libraries on PyPI are clients that own their socket (paho-mqtt, gmqtt, aiomqtt) or
decode from an asyncio stream (amqtt); the sans-IO ones are unmaintained (mqtt-codec,
2019) or MQTT 5 only (moat-lib-mqtt). The handful of packets a load client needs fits
in a few small functions, and the receive path is the generator's hot path.

Over WebSocket, MQTT is a byte stream: one frame may carry several packets and a packet
may span frames (MQTT 5.0 section 6, 3.1.1 section 6). Each connection therefore has its
own adapter (``connection()``) holding its receive buffer, its packet ids and the rooms
its session holds.
"""

from __future__ import annotations

import copy
import secrets
from collections.abc import Mapping
from typing import Any

from msgspec import Struct

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
    parse_marker_bytes,
)
from loadtest.adapters.rules import convert_options
from loadtest.adapters.templates import ALLOWED, Template

# control packet types (the high nibble of the first byte)
CONNECT = 1
CONNACK = 2
PUBLISH = 3
PUBACK = 4
SUBSCRIBE = 8
SUBACK = 9
PINGREQ = 12
PINGRESP = 13
DISCONNECT = 14

PINGREQ_PACKET = b"\xc0\x00"
VERSIONS = {"3.1.1": 4, "5": 5}
"""Option value -> the protocol level byte of CONNECT."""
SESSION_EXPIRY = 0x11
"""MQTT 5 property: how long the broker keeps a session after the connection ends."""
CLIENT_ID_ALLOWED = ALLOWED["hello"] | {"conn"}
"""``{conn}``: a random id of one logical client, the same on each of its reconnects (the
broker finds a persistent session by client id, and drops the older of two clients that
share one)."""
MAX_PACKET = 1 << 24
"""Refuse to buffer a packet larger than this (a corrupt length would eat memory)."""

CONNACK_CODES = {
    1: "unacceptable_protocol_version",
    2: "identifier_rejected",
    3: "server_unavailable",
    4: "bad_username_or_password",
    5: "not_authorized",
}
"""MQTT 3.1.1 CONNACK return codes (MQTT 5 reason codes are reported in hex)."""


# -- the codec -------------------------------------------------------------------------------


def varint(n: int) -> bytes:
    """MQTT's Variable Byte Integer (remaining length, property lengths)."""
    out = bytearray()
    while True:
        byte = n & 0x7F
        n >>= 7
        if n:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def read_varint(data: bytes, i: int) -> tuple[int, int]:
    """(value, index after it); raises IndexError when the bytes end inside it."""
    value = 0
    shift = 0
    while True:
        byte = data[i]
        i += 1
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return value, i
        shift += 7
        if shift > 21:
            raise ValueError("malformed variable byte integer")


def utf8(text: str) -> bytes:
    """An MQTT UTF-8 string: two-byte length, then the bytes."""
    raw = text.encode()
    return len(raw).to_bytes(2, "big") + raw


def packet(first: int, body: bytes) -> bytes:
    """A control packet: first byte, remaining length, body."""
    return bytes((first,)) + varint(len(body)) + body


def connect_packet(
    level: int,
    client_id: str,
    keepalive: int,
    clean: bool,
    username: str | None = None,
    password: str | None = None,
    session_expiry: int = 0,
) -> bytes:
    """CONNECT (3.1.1: level 4; 5: level 5 with a Session Expiry Interval when > 0)."""
    flags = (0x02 if clean else 0) | (0x80 if username is not None else 0)
    flags |= 0x40 if password is not None else 0
    body = utf8("MQTT") + bytes((level, flags)) + keepalive.to_bytes(2, "big")
    if level == 5:
        props = (
            bytes((SESSION_EXPIRY,)) + session_expiry.to_bytes(4, "big") if session_expiry else b""
        )
        body += varint(len(props)) + props
    body += utf8(client_id)
    if username is not None:
        body += utf8(username)
    if password is not None:
        body += utf8(password)
    return packet(CONNECT << 4, body)


def subscribe_packet(level: int, packet_id: int, topics: list[str], qos: int) -> bytes:
    """SUBSCRIBE of every topic filter at ``qos`` (fixed header flags 0b0010)."""
    body = packet_id.to_bytes(2, "big") + (b"\x00" if level == 5 else b"")
    for topic in topics:
        body += utf8(topic) + bytes((qos,))
    return packet((SUBSCRIBE << 4) | 0x02, body)


def publish_packet(level: int, topic: str, payload: bytes, qos: int, packet_id: int) -> bytes:
    """PUBLISH at QoS 0 (no packet id) or 1."""
    head = utf8(topic)
    if qos:
        head += packet_id.to_bytes(2, "big")
    if level == 5:
        head += b"\x00"  # no properties
    return packet((PUBLISH << 4) | (qos << 1), head + payload)


def puback_packet(packet_id: int) -> bytes:
    """PUBACK (MQTT 5 allows the same 2-byte form: reason Success, no properties)."""
    return b"\x40\x02" + packet_id.to_bytes(2, "big")


class StreamDecoder:
    """Splits a byte stream into control packets, whatever the frames' boundaries."""

    __slots__ = ("buf",)

    def __init__(self) -> None:
        self.buf = b""

    def reset(self) -> None:
        self.buf = b""

    def feed(self, data: bytes) -> list[tuple[int, bytes]]:
        """Every complete packet now available, as (first byte, body); the rest waits."""
        if self.buf:
            data = self.buf + data
            self.buf = b""
        out: list[tuple[int, bytes]] = []
        i = 0
        end = len(data)
        while i < end:
            try:
                length, start = read_varint(data, i + 1)
            except IndexError:  # the remaining length itself is split
                break
            if length > MAX_PACKET:
                raise ValueError(f"MQTT packet of {length} bytes")
            stop = start + length
            if stop > end:
                break
            out.append((data[i], data[start:stop]))
            i = stop
        if i < end:
            self.buf = data[i:]
        return out


# -- options ----------------------------------------------------------------------------------


class MqttOptions(Struct, forbid_unknown_fields=True, kw_only=True):
    """``protocol_options`` of ``--protocol mqtt`` (docs/ADAPTERS.md explains each)."""

    version: str = "3.1.1"  # "3.1.1" or "5"
    path: str = "/mqtt"  # the broker's WebSocket path, when the target URL has none
    topic: str = "{room}"  # the topic of a room
    qos: int = 0  # 0, or 1: PUBACK as the ack, received QoS 1 messages PUBACKed
    keepalive: int = 60  # seconds; a PINGREQ goes out every keepalive / 2 (0: none)
    clean_session: bool = True  # false: a persistent session, resumed on reconnect
    session_expiry: int = 3600  # MQTT 5, persistent session: seconds the broker keeps it
    client_id: str = "{user}-{conn}"  # {user}, {token}, {conn}: unique per connection
    username: str | None = None  # {user}, {token}
    password: str | None = None  # {user}, {token}


# -- the adapter ------------------------------------------------------------------------------


class MqttAdapter(Adapter):
    """MQTT 3.1.1 / 5 over WebSocket: topics as rooms, QoS 0/1, keepalive, persistent
    sessions as resume."""

    name = "mqtt"
    features = frozenset({Feature.ROOMS, Feature.PUBLISH})  # more with options, per instance
    default_path = "/mqtt"
    expects_welcome = True  # CONNACK
    binary = True
    subprotocols = ("mqtt",)

    def __init__(self, options: Mapping[str, Any] | None = None) -> None:
        super().__init__(options)
        where = "protocol_options"
        o: MqttOptions = convert_options(options, MqttOptions, where)
        if o.version not in VERSIONS:
            raise AdapterError(f'{where}.version: {o.version!r} must be "3.1.1" or "5"')
        if o.qos not in (0, 1):
            raise AdapterError(f"{where}.qos: {o.qos} must be 0 or 1 (QoS 2 is not supported)")
        if not 0 <= o.keepalive <= 65_535:
            raise AdapterError(f"{where}.keepalive: {o.keepalive} must be 0 .. 65535 seconds")
        if not 0 <= o.session_expiry < 2**32:
            raise AdapterError(f"{where}.session_expiry: {o.session_expiry} out of range")
        if not o.path.startswith("/"):
            raise AdapterError(f"{where}.path: {o.path!r} must start with /")
        if o.topic.count("{room}") != 1 or any(c in o.topic for c in "+#"):
            raise AdapterError(
                f"{where}.topic: {o.topic!r} must hold {{room}} once and no wildcard (+ #)"
            )
        Template(o.topic, ALLOWED["join"], f"{where}.topic")  # no other placeholder
        self.level = VERSIONS[o.version]
        self.qos = o.qos
        self.keepalive = o.keepalive
        self.clean = o.clean_session
        self.session_expiry = 0 if o.clean_session else o.session_expiry
        self.default_path = o.path
        self.topic_head, _, self.topic_tail = o.topic.partition("{room}")
        hello = ALLOWED["hello"]
        self._client_id = Template(o.client_id, CLIENT_ID_ALLOWED, f"{where}.client_id")
        self._username = Template(o.username, hello, f"{where}.username") if o.username else None
        self._password = Template(o.password, hello, f"{where}.password") if o.password else None
        self.heartbeat_interval_s = o.keepalive / 2 if o.keepalive else None
        have = {Feature.ROOMS, Feature.PUBLISH}
        if o.qos:
            have.add(Feature.ACK)
        if not o.clean_session:
            have.add(Feature.RESUME)
        self.features = frozenset(have)
        self._reset_connection_state()

    def _reset_connection_state(self) -> None:
        self._decoder = StreamDecoder()
        self._acks: dict[int, int] = {}  # packet id -> req id of a QoS 1 publish
        self._subs: dict[int, list[str]] = {}  # packet id -> rooms of a SUBSCRIBE
        self._rooms: set[str] = set()  # rooms the session holds (resubscribed if lost)
        self._resuming = False
        self._next_sub = 0
        self._conn = secrets.token_hex(4)  # {conn}: this client's, kept across reconnects

    def connection(self) -> MqttAdapter:
        clone = copy.copy(self)
        clone._reset_connection_state()
        return clone

    # -- frames out ------------------------------------------------------------------------

    def _connect(self, user: str, token: str | None, clean: bool) -> bytes:
        self._decoder.reset()
        values = {"user": user, "token": token or user, "conn": self._conn}
        username = str(self._username.render(values)) if self._username else None
        password = str(self._password.render(values)) if self._password else None
        return connect_packet(
            self.level,
            str(self._client_id.render(values)),
            self.keepalive,
            clean,
            username,
            password,
            self.session_expiry,
        )

    def open(self, user: str, token: str | None) -> list[bytes]:
        self._resuming = False
        return [self._connect(user, token, self.clean)]

    def resume(self, user: str, token: str | None, last_seq: Mapping[str, int]) -> list[bytes]:
        """CONNECT with the same client id and the session kept (MQTT has no seqs: the
        broker queued what the client missed and sends it after the CONNACK)."""
        self._resuming = True
        self._rooms.update(last_seq)
        return [self._connect(user, token, False)]

    def topic(self, room: str) -> str:
        return f"{self.topic_head}{room}{self.topic_tail}"

    def join(self, room: str, req_id: int) -> bytes:
        packet_id = _packet_id(req_id)
        self._subs[packet_id] = [room]
        self._rooms.add(room)
        return subscribe_packet(self.level, packet_id, [self.topic(room)], self.qos)

    def send(self, room: str, body: str, req_id: int) -> bytes:
        packet_id = 0
        if self.qos:
            packet_id = _packet_id(req_id)
            self._acks[packet_id] = req_id
        return publish_packet(self.level, self.topic(room), body.encode(), self.qos, packet_id)

    def publish(self, room: str, event: str, data: str, req_id: int) -> bytes:
        return self.send(room, data, req_id)

    def heartbeat(self) -> bytes | None:
        return PINGREQ_PACKET

    # -- frames in -------------------------------------------------------------------------

    def parse(self, payload: bytes) -> Event | list[Event] | None:
        try:
            packets = self._decoder.feed(payload)
        except ValueError:
            self._decoder.reset()
            return Notice("unparsed")
        events: list[Event] = []
        for first, body in packets:
            try:
                if first >> 4 == PUBLISH and not first & 0x06:  # the hot path: QoS 0
                    events.append(self._publish(first, body))
                else:
                    self._packet(first, body, events)
            except (IndexError, ValueError):
                events.append(Notice("unparsed"))
        if len(events) == 1:
            return events[0]
        return events or None

    def _packet(self, first: int, body: bytes, events: list[Event]) -> None:
        kind = first >> 4
        if kind == PUBLISH:
            qos = (first >> 1) & 0x03
            events.append(self._publish(first, body))
            if qos == 1:  # a QoS 1 message must be PUBACKed, or the broker sends it again
                i = 2 + int.from_bytes(body[:2], "big")
                events.append(Reply(puback_packet(int.from_bytes(body[i : i + 2], "big"))))
        elif kind == PUBACK:
            req = self._acks.pop(int.from_bytes(body[:2], "big"), None)
            if len(body) > 2 and body[2] >= 0x80:  # MQTT 5: a refused publish
                events.append(Rejected(req, f"puback_{body[2]:#04x}"))
            elif req is not None:
                events.append(Ack(req))
            else:
                events.append(Notice("puback_unknown"))
        elif kind == SUBACK:
            self._suback(body, events)
        elif kind == CONNACK:
            self._connack(body, events)
        elif kind == PINGRESP:
            events.append(Notice("pingresp"))
        elif kind == DISCONNECT:
            code = body[0] if body else 0
            events.append(Notice(f"disconnect_{code:#04x}"))
        else:
            events.append(Notice(f"mqtt_{kind}"))

    def _publish(self, first: int, body: bytes) -> Event:
        size = int.from_bytes(body[:2], "big")
        i = 2 + size
        topic = body[2:i].decode("utf-8", "replace")
        if first & 0x06:
            i += 2  # packet id
        if self.level == 5:
            length, i = read_varint(body, i)
            i += length
        found = parse_marker_bytes(body[i:])
        if found is None:
            return Notice("unmarked")
        head, tail = self.topic_head, self.topic_tail
        room = topic[len(head) : len(topic) - len(tail)] if tail else topic[len(head) :]
        return Delivery(*found, room=room)

    def _suback(self, body: bytes, events: list[Event]) -> None:
        rooms = self._subs.pop(int.from_bytes(body[:2], "big"), None) or []
        i = 2
        if self.level == 5:
            length, i = read_varint(body, i)
            i += length
        for room, code in zip(rooms, body[i:], strict=False):
            if code >= 0x80:
                events.append(Rejected(None, "subscribe_refused", f"SUBACK {code:#04x} for {room}"))
            else:
                events.append(Ready(room, 0))

    def _connack(self, body: bytes, events: list[Event]) -> None:
        session_present = bool(body[0] & 0x01)
        code = body[1]
        if code:
            name = CONNACK_CODES.get(code, "") if self.level == 4 else ""
            events.append(Rejected(None, f"connack_{code:#04x}", name or "CONNECT refused"))
            return
        events.append(Ready(None, 0))
        if not self._resuming or not self._rooms:
            return
        rooms = sorted(self._rooms)
        if session_present:  # the broker kept the subscriptions: every room is back
            events.append(Notice("session_present"))
            events.extend(Ready(room, 0) for room in rooms)
            return
        # the session is gone (expired, broker restarted): subscribe again
        events.append(Notice("session_lost"))
        self._next_sub = self._next_sub % 0xFFFF + 1
        packet_id = 0x10000 - self._next_sub  # the top of the id space, apart from sends
        self._subs[packet_id] = rooms
        topics = [self.topic(room) for room in rooms]
        events.append(Reply(subscribe_packet(self.level, packet_id, topics, self.qos)))


def _packet_id(req_id: int) -> int:
    """A 16-bit packet id (1 .. 65535) from a request id unique to the connection."""
    return req_id % 0xFFFF + 1
