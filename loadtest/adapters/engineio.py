"""Engine.IO 4 / Socket.IO 5 framing over a WebSocket (no HTTP long-polling), sans-IO.

Socket.IO v3 and v4 servers speak Engine.IO protocol 4 underneath. Over a WebSocket each
text frame is one Engine.IO packet: a type digit, then its data. A Socket.IO packet rides
in an Engine.IO ``message`` (``4``) as ``<type>[<attachments>-][/<namespace>,][<ack id>]
[<json>]``, for example ``42["chat message",{"room":"r1"}]`` or ``43/chat,7[]``.

The server sends ``0{"sid":...,"pingInterval":25000,...}`` at once, then pings (``2``)
every ``pingInterval``; a client that does not answer ``3`` within ``pingTimeout`` is
dropped. Binary attachments (``45``/``46``) are not decoded: the load scenarios send text.
"""

from __future__ import annotations

from typing import NamedTuple

# Engine.IO packet types (first byte of a text frame)
EIO_OPEN = 0x30  # "0"
EIO_CLOSE = 0x31
EIO_PING = 0x32
EIO_PONG = 0x33
EIO_MESSAGE = 0x34
EIO_NOOP = 0x36

# Socket.IO packet types (first byte of an Engine.IO message's data)
CONNECT = 0
DISCONNECT = 1
EVENT = 2
ACK = 3
CONNECT_ERROR = 4
BINARY_EVENT = 5
BINARY_ACK = 6

QUERY = "EIO=4&transport=websocket"
"""Query string of the WebSocket endpoint: protocol 4, WebSocket from the start."""

_DIGITS = frozenset(b"0123456789")


class Packet(NamedTuple):
    """A decoded Socket.IO packet: type, namespace ("/" by default), ack id, JSON data."""

    type: int
    namespace: str
    id: int | None
    data: bytes  # the JSON text (empty when the packet has none)


def pong(ping: bytes) -> bytes:
    """The answer to an Engine.IO ping frame: ``3`` plus the ping's data (usually none)."""
    return b"3" + ping[1:]


def encode(
    packet_type: int, namespace: str = "/", ack_id: int | None = None, data: bytes = b""
) -> bytes:
    """One Engine.IO message frame carrying a Socket.IO packet."""
    head = f"4{packet_type}"
    if namespace != "/":
        head += f"{namespace},"
    if ack_id is not None:
        head += str(ack_id)
    return head.encode() + data


def decode(payload: bytes) -> Packet | None:
    """The Socket.IO packet in an Engine.IO message frame; None if the frame is not one."""
    if len(payload) < 2 or payload[0] != EIO_MESSAGE:
        return None
    kind = payload[1] - 0x30
    if not 0 <= kind <= BINARY_ACK:
        return None
    i = 2
    end = len(payload)
    if kind in (BINARY_EVENT, BINARY_ACK):
        dash = payload.find(b"-", i)
        if dash < 0:
            return None
        i = dash + 1
    namespace = "/"
    if i < end and payload[i] == 0x2F:  # "/"
        comma = payload.find(b",", i)
        stop = end if comma < 0 else comma
        namespace = payload[i:stop].decode("utf-8", "replace")
        i = stop + 1
    start = i
    while i < end and payload[i] in _DIGITS:
        i += 1
    ack_id = int(payload[start:i]) if i > start else None
    return Packet(kind, namespace, ack_id, payload[i:])
