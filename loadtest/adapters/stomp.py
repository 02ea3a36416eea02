"""Adapter for STOMP 1.2 brokers over WebSocket (RabbitMQ Web STOMP, ActiveMQ, Artemis...).

Its defaults follow the getting-started example of STOMP.js (``@stomp/stompjs``), whose
README connects to RabbitMQ's Web STOMP plugin at ``ws://localhost:15674/ws``: CONNECT
with ``accept-version:1.2`` and heart-beats of 10 s both ways, SUBSCRIBE to a
destination, SEND to it. Rooms are destinations (``destination = "/topic/{room}"``,
RabbitMQ's topic exchange); a delivery is a MESSAGE whose body is the marker.

- A SUBSCRIBE carries a ``receipt`` header by default, so the room counts as joined when
  its RECEIPT arrives (messages sent before that could not reach the new member).
- ``receipts = true``: every SEND asks for a RECEIPT, which is the ``Ack``.
- ERROR frames are ``Rejected`` (the broker closes the connection after one).
- Heart-beating: the client offers ``heart_beat = [cx, cy]``; the adapter's ``heartbeat``
  (an EOL) goes out every ``cx`` ms from every driver, and the broker's EOLs are
  ignored (receiving them keeps the connection's liveness fresh).

STOMP frames are text (``COMMAND``, headers, a blank line, the body, a NUL). A frame may
span WebSocket frames and several may share one, with EOL heart-beats in between, so
each connection has its own adapter (``connection()``) holding its receive buffer.
The few frames a load client needs are written here: the STOMP libraries on PyPI own
their transport (stomp.py) or are unmaintained (stomper 2019, stompest 2017).
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any

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
    parse_marker_bytes,
)
from loadtest.adapters.rules import convert_options
from loadtest.adapters.templates import ALLOWED, Template

HEARTBEAT_FRAME = b"\n"
JOIN_RECEIPT = "join-"
"""Receipt ids of SUBSCRIBEs: ``join-<room>`` (a send's receipt id is its request id)."""
MAX_FRAME = 1 << 24
"""Refuse to buffer a frame larger than this (a missing NUL would eat memory)."""

_ESCAPE = str.maketrans({"\\": "\\\\", "\r": "\\r", "\n": "\\n", ":": "\\c"})
_UNESCAPE = (("\\r", "\r"), ("\\n", "\n"), ("\\c", ":"), ("\\\\", "\\"))


def frame(command: str, headers: Mapping[str, str], body: bytes = b"") -> bytes:
    """One STOMP 1.2 frame (header values escaped, except in CONNECT as the spec says)."""
    escape = command not in ("CONNECT", "STOMP")
    lines = [command]
    for key, value in headers.items():
        lines.append(f"{key}:{value.translate(_ESCAPE) if escape else value}")
    return ("\n".join(lines) + "\n\n").encode() + body + b"\x00"


def _unescape(value: str) -> str:
    if "\\" not in value:
        return value
    out = []
    i = 0
    while i < len(value):
        pair = value[i : i + 2]
        for escaped, plain in _UNESCAPE:
            if pair == escaped:
                out.append(plain)
                i += 2
                break
        else:
            out.append(value[i])
            i += 1
    return "".join(out)


class StompFrame(Struct, gc=False):
    command: str
    headers: dict[str, str]
    body: bytes


class FrameDecoder:
    """Splits a STOMP byte stream into frames, skipping EOL heart-beats between them."""

    __slots__ = ("buf",)

    def __init__(self) -> None:
        self.buf = b""

    def reset(self) -> None:
        self.buf = b""

    def feed(self, data: bytes) -> list[StompFrame]:
        """Every complete frame now available; a partial one waits for the next data."""
        if self.buf:
            data = self.buf + data
            self.buf = b""
        out: list[StompFrame] = []
        i = 0
        end = len(data)
        while i < end:
            while i < end and data[i] in (0x0A, 0x0D):  # heart-beats (EOLs)
                i += 1
            if i >= end:
                break
            head_end = data.find(b"\n\n", i)
            crlf = data.find(b"\r\n\r\n", i)
            if crlf >= 0 and (head_end < 0 or crlf < head_end):
                head_end, body_start = crlf, crlf + 4
            else:
                body_start = head_end + 2
            if head_end < 0:
                break
            lines = data[i:head_end].decode("utf-8", "replace").split("\n")
            command = lines[0].rstrip("\r")
            headers: dict[str, str] = {}
            for line in lines[1:]:
                key, _, value = line.rstrip("\r").partition(":")
                if key not in headers:  # the first of repeated headers wins (1.2)
                    headers[_unescape(key)] = _unescape(value)
            length = headers.get("content-length")
            if length is not None and length.isdigit():
                body_end = body_start + int(length)
                if body_end + 1 > end:
                    break
            else:
                body_end = data.find(b"\x00", body_start)
                if body_end < 0:
                    break
            out.append(StompFrame(command, headers, data[body_start:body_end]))
            i = body_end + 1
        if i < end:
            if end - i > MAX_FRAME:
                raise ValueError(f"STOMP frame over {MAX_FRAME} bytes")
            self.buf = data[i:]
        return out


class StompOptions(Struct, forbid_unknown_fields=True, kw_only=True):
    """``protocol_options`` of ``--protocol stomp`` (docs/ADAPTERS.md explains each)."""

    path: str = "/ws"  # the broker's WebSocket path, when the target URL has none
    destination: str = "/topic/{room}"  # the destination of a room
    host: str | None = "/"  # the CONNECT host header (RabbitMQ: the virtual host)
    login: str | None = None  # {user}, {token}
    passcode: str | None = None  # {user}, {token}
    heart_beat: list[int] = field(default_factory=lambda: [10_000, 10_000])  # [send, receive] ms
    join_receipt: bool = True  # a SUBSCRIBE asks for a RECEIPT: joined when it comes
    receipts: bool = False  # every SEND asks for a RECEIPT (the ack: send -> ack latency)
    content_type: str = "text/plain"
    headers: dict[str, str] = {}  # extra CONNECT headers ({user}, {token})


class StompAdapter(Adapter):
    """STOMP 1.2 over WebSocket: destinations as rooms, receipts as acks, heart-beats."""

    name = "stomp"
    features = frozenset({Feature.ROOMS, Feature.PUBLISH})  # more with options, per instance
    default_path = "/ws"
    expects_welcome = True  # CONNECTED
    subprotocols = ("v12.stomp",)

    def __init__(self, options: Mapping[str, Any] | None = None) -> None:
        super().__init__(options)
        where = "protocol_options"
        o: StompOptions = convert_options(options, StompOptions, where)
        if not o.path.startswith("/"):
            raise AdapterError(f"{where}.path: {o.path!r} must start with /")
        if o.destination.count("{room}") != 1:
            raise AdapterError(f"{where}.destination: {o.destination!r} must hold {{room}} once")
        Template(o.destination, ALLOWED["join"], f"{where}.destination")  # no other placeholder
        if len(o.heart_beat) != 2 or min(o.heart_beat) < 0:
            raise AdapterError(
                f"{where}.heart_beat: {o.heart_beat} must be [send ms, receive ms], each >= 0"
            )
        self.default_path = o.path
        self.dest_head, _, self.dest_tail = o.destination.partition("{room}")
        self.host = o.host
        self.heart_beat = o.heart_beat
        self.content_type = o.content_type
        self.receipts = o.receipts
        self.confirms_join = o.join_receipt
        hello = ALLOWED["hello"]
        self._connect_headers = {
            k: Template(v, hello, f"{where}.headers.{k}") for k, v in o.headers.items()
        }
        for key, value in (("login", o.login), ("passcode", o.passcode)):
            if value is not None:
                self._connect_headers[key] = Template(value, hello, f"{where}.{key}")
        self.heartbeat_interval_s = o.heart_beat[0] / 1000 if o.heart_beat[0] else None
        have = {Feature.ROOMS, Feature.PUBLISH}
        if o.receipts:
            have.add(Feature.ACK)
        self.features = frozenset(have)
        self._decoder = FrameDecoder()

    def connection(self) -> StompAdapter:
        clone = copy.copy(self)
        clone._decoder = FrameDecoder()
        return clone

    # -- frames out ------------------------------------------------------------------------

    def open(self, user: str, token: str | None) -> list[bytes]:
        self._decoder.reset()
        headers = {"accept-version": "1.2"}
        if self.host is not None:
            headers["host"] = self.host
        values = {"user": user, "token": token or user}
        for key, template in self._connect_headers.items():
            headers[key] = str(template.render(values))
        headers["heart-beat"] = f"{self.heart_beat[0]},{self.heart_beat[1]}"
        return [frame("CONNECT", headers)]

    def destination(self, room: str) -> str:
        return f"{self.dest_head}{room}{self.dest_tail}"

    def join(self, room: str, req_id: int) -> bytes:
        headers = {"id": f"sub-{room}", "destination": self.destination(room), "ack": "auto"}
        if self.confirms_join:
            headers["receipt"] = f"{JOIN_RECEIPT}{room}"
        return frame("SUBSCRIBE", headers)

    def send(self, room: str, body: str, req_id: int) -> bytes:
        data = body.encode()
        headers = {
            "destination": self.destination(room),
            "content-type": self.content_type,
            "content-length": str(len(data)),
        }
        if self.receipts:
            headers["receipt"] = str(req_id)
        return frame("SEND", headers, data)

    def publish(self, room: str, event: str, data: str, req_id: int) -> bytes:
        return self.send(room, data, req_id)

    def heartbeat(self) -> bytes | None:
        return HEARTBEAT_FRAME

    # -- frames in -------------------------------------------------------------------------

    def parse(self, payload: bytes) -> Event | list[Event] | None:
        try:
            frames = self._decoder.feed(payload)
        except ValueError:
            self._decoder.reset()
            return Notice("unparsed")
        if len(frames) == 1:
            return self._event(frames[0])
        if not frames:
            return None  # a heart-beat, or the first part of a frame
        return [self._event(f) for f in frames]

    def _event(self, f: StompFrame) -> Event:
        command = f.command
        if command == "MESSAGE":
            found = parse_marker_bytes(f.body)
            if found is None:
                return Notice("unmarked")
            dest = f.headers.get("destination", "")
            head, tail = self.dest_head, self.dest_tail
            room = dest[len(head) : len(dest) - len(tail)] if dest.startswith(head) else None
            return Delivery(*found, room=room)
        if command == "RECEIPT":
            rid = f.headers.get("receipt-id", "")
            if rid.startswith(JOIN_RECEIPT):
                return Ready(rid[len(JOIN_RECEIPT) :], 0)
            return Ack(int(rid)) if rid.isdigit() else Notice("receipt_unknown")
        if command == "CONNECTED":
            return Ready(None, 0)
        if command == "ERROR":
            rid = f.headers.get("receipt-id", "")
            message = f.headers.get("message", "")
            detail = f.body.decode("utf-8", "replace").strip()
            return Rejected(
                int(rid) if rid.isdigit() else None,
                _code(message),
                f"{message}: {detail}" if detail else message,
            )
        return Notice(command.lower() or "unparsed")


def _code(message: str) -> str:
    """A stable error code from an ERROR frame's ``message`` header: RabbitMQ's "Unknown
    destination" is ``stomp_unknown_destination`` (at most 48 characters)."""
    words = "".join(c if c.isalnum() else " " for c in message.lower()).split()
    return ("stomp_" + "_".join(words))[:48] if words else "stomp_error"
