"""What workers tell each other over the broker: one small msgpack array per envelope.

Stored items travel as the WebSocket frames the publishing worker already built,
so a receiving worker writes the same bytes to its sockets without decoding or
re-encoding the message. Every envelope names the worker that sent it
(``origin``), so a worker skips its own envelopes when the channel echoes them.
"""

from __future__ import annotations

import msgspec


class Items(msgspec.Struct, tag="i", array_like=True, gc=False):
    """Items of a room made durable by one commit: (seq, WebSocket frame), ascending."""

    origin: str
    room: str
    items: list[tuple[int, bytes]]
    # a sender's resend the store already had (its ack never came): delivered again even
    # where the room already holds these seqs (Broker.publish)
    again: bool = False


class RoomFrame(msgspec.Struct, tag="f", array_like=True, gc=False):
    """A frame for a room's audience that is not stored (typing, presence, live event)."""

    origin: str
    room: str
    frame: bytes
    exclude_user: str | None = None  # typing: never to the typist's own sessions
    chatty: bool = False  # presence chatter: only where the room is small on that worker


class Receipt(msgspec.Struct, tag="r", array_like=True, gc=False):
    """A read marker moved: update it, and tell the room (or in a big room, the reader)."""

    origin: str
    room: str
    user: str
    seq: int
    frame: bytes


class Presence(msgspec.Struct, tag="p", array_like=True, gc=False):
    """A user came online in the cluster (first anywhere) or went offline (gone everywhere)."""

    origin: str
    user: str
    state: str


class Members(msgspec.Struct, tag="m", array_like=True, gc=False):
    """Room membership changed (join, new private group); keeps cached rooms current."""

    origin: str
    room: str
    added: list[str]


class Left(msgspec.Struct, tag="l", array_like=True, gc=False):
    """A user left a room: every worker unsubscribes that user's sessions from it."""

    origin: str
    room: str
    user: str


Envelope = Items | RoomFrame | Receipt | Presence | Members | Left

encode = msgspec.msgpack.Encoder().encode
decode = msgspec.msgpack.Decoder(Envelope).decode
