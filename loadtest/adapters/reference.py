"""Adapter for the rtbench reference protocol (docs/PROTOCOL.md, ``rtbench.protocol``).

Frames are built from the protocol's own msgspec structs and parsed with its decoder,
so this adapter cannot drift from the normative spec. Markers ride in ``body`` (send,
dm), ``data`` (publish) and ``ts`` (ping), fields the server relays untouched.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import cast

import msgspec

from loadtest.adapters.base import (
    Ack,
    Adapter,
    Delivery,
    Event,
    Feature,
    Notice,
    Page,
    Ready,
    Rejected,
    parse_marker,
)
from rtbench.protocol import WS_PATH, CloseCode, ErrorCode, decode_server, dm_room, encode
from rtbench.protocol import messages as m

_CLIENT_NAME = "rtbench-loadtest"


class ReferenceAdapter(Adapter):
    """The reference protocol: hello/welcome, rooms with seqs, acks, DMs, typing, receipts."""

    name = "reference"
    features = frozenset(
        {
            Feature.ROOMS,
            Feature.DM,
            Feature.TYPING,
            Feature.RECEIPTS,
            Feature.PUBLISH,
            Feature.ACK,
            Feature.PING,
            Feature.HISTORY,
            Feature.RESUME,
        }
    )
    default_path = WS_PATH
    expects_welcome = True
    fatal_close_codes = frozenset(
        {
            CloseCode.UNSUPPORTED_DATA,
            CloseCode.INVALID_PAYLOAD,
            CloseCode.POLICY_VIOLATION,
            CloseCode.MESSAGE_TOO_BIG,
            CloseCode.UNAUTHORIZED,
            CloseCode.FORBIDDEN,
        }
    )  # the same frames or identity would be refused again; SERVICE_RESTART: come back
    refused_room_codes = frozenset(
        {ErrorCode.UNKNOWN_ROOM, ErrorCode.FORBIDDEN, ErrorCode.TOO_MANY_ROOMS}
    )  # a resumed room the server will not resume; it resumes the others

    def open(self, user: str, token: str | None) -> list[bytes]:
        return [encode(m.Hello(token=token or user, client=_CLIENT_NAME))]

    def join(self, room: str, req_id: int) -> bytes:
        return encode(m.Join(room=room, id=req_id))

    def send(self, room: str, body: str, req_id: int) -> bytes:
        return encode(m.Send(room=room, cid=str(req_id), body=body, id=req_id))

    def dm(self, to_user: str, body: str, req_id: int) -> bytes:
        return encode(m.Direct(to=to_user, cid=str(req_id), body=body, id=req_id))

    def typing(self, room: str, started: bool) -> bytes:
        return encode(m.Typing(room=room, state="start" if started else "stop"))

    def read(self, room: str, seq: int) -> bytes:
        return encode(m.Read(room=room, seq=seq))

    def publish(self, room: str, event: str, data: str, req_id: int) -> bytes:
        return encode(m.Publish(room=room, event=event, data=data, cid=str(req_id), id=req_id))

    def history(self, room: str, req_id: int, after: int | None, limit: int) -> bytes:
        return encode(m.History(room=room, after=after, limit=limit, id=req_id))

    def resume(self, user: str, token: str | None, last_seq: Mapping[str, int]) -> list[bytes]:
        hello = m.Hello(token=token or user, resume=dict(last_seq), client=_CLIENT_NAME)
        return [encode(hello)]

    def dm_room(self, user: str, other: str) -> str | None:
        return dm_room(user, other)

    def ping(self, text: str, req_id: int) -> bytes:
        return encode(m.Ping(ts=text, id=req_id))

    def parse(self, payload: bytes) -> Event | None:
        try:
            msg = decode_server(payload)
        except msgspec.DecodeError:  # ValidationError included: unknown type, bad fields
            return Notice("unparsed")
        if type(msg) is m.Message:
            found = parse_marker(msg.body)
            if found is None:
                return Notice("message", msg.room, msg.seq)
            return Delivery(*found, room=msg.room, seq=msg.seq)
        if type(msg) is m.Ack:
            return Ack(msg.id, msg.room, msg.seq)
        if type(msg) is m.Event:
            found = parse_marker(msg.data) if isinstance(msg.data, str) else None
            if found is None:
                return Notice("event", msg.room, msg.seq)
            return Delivery(*found, room=msg.room, seq=msg.seq)
        if type(msg) is m.Pong:
            found = parse_marker(msg.ts) if isinstance(msg.ts, str) else None
            if found is None:
                return Notice("pong")
            return Delivery(*found)
        if type(msg) is m.HistoryPage:
            return Page(msg.id, msg.room, len(msg.messages), msg.has_more)
        if type(msg) is m.Joined:
            return Ready(msg.room, msg.seq)
        if type(msg) is m.Welcome:
            return Ready(None, 0)
        if type(msg) is m.Error:
            return Rejected(msg.id, msg.code, msg.message)
        room = getattr(msg, "room", None)
        tag = cast(str, msg.__struct_config__.tag)  # every server frame is tagged by a string
        return Notice(tag, room, getattr(msg, "seq", None))
