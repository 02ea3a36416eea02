"""Frames of the reference wire protocol, as typed msgspec structs.

One JSON object per WebSocket text frame, tagged by its ``type`` field. The
structs are the executable form of docs/PROTOCOL.md: the server decodes client
frames into them (so validation and its error messages come from one place),
and load generators and the monitor use them to speak the protocol without
knowing anything of the server's internals.

Server frames use ``omit_defaults`` so optional fields cost nothing on the wire.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

import msgspec
from msgspec import Meta, Struct

RoomId = Annotated[str, Meta(min_length=1, max_length=128)]
UserId = Annotated[str, Meta(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.@-]+$")]
RequestId = int | Annotated[str, Meta(max_length=64)] | None
ClientMsgId = Annotated[str, Meta(min_length=1, max_length=64)]
Seq = Annotated[int, Meta(ge=0)]
EventName = Annotated[str, Meta(min_length=1, max_length=64)]

# --------------------------------------------------------------------------
# client -> server


class _Client(Struct, tag_field="type", forbid_unknown_fields=False, kw_only=True):
    id: RequestId = None  # echoed on the reply and on any error for this request


class Hello(_Client, tag="hello", kw_only=True):
    token: str | None = None  # identity; may instead come with the handshake
    resume: dict[RoomId, Seq] | None = None  # room -> last seq seen, to resume after a drop
    client: Annotated[str, Meta(max_length=128)] | None = None  # free-form client name/version


class Join(_Client, tag="join", kw_only=True):
    room: RoomId
    since: Seq | None = None  # replay messages after this seq before live traffic
    private: bool = False  # create the room as a private group (only when it does not exist)
    members: list[UserId] | None = None  # initial members of a new private group


class Leave(_Client, tag="leave", kw_only=True):
    room: RoomId


class Members(_Client, tag="members", kw_only=True):
    room: RoomId


class Send(_Client, tag="send", kw_only=True):
    room: RoomId
    cid: ClientMsgId  # client message id: a retry with the same cid is acked, never stored twice
    body: str
    meta: dict[str, Any] | None = None


class Direct(_Client, tag="dm", kw_only=True):
    to: UserId
    cid: ClientMsgId
    body: str
    meta: dict[str, Any] | None = None


class Typing(_Client, tag="typing", kw_only=True):
    room: RoomId
    state: Literal["start", "stop"]


class Read(_Client, tag="read", kw_only=True):
    room: RoomId
    seq: Seq


class History(_Client, tag="history", kw_only=True):
    room: RoomId
    before: Seq | None = None  # messages with seq < before (newest first page if neither)
    after: Seq | None = None  # messages with seq > after
    limit: Annotated[int, Meta(ge=1)] = 50


class Publish(_Client, tag="publish", kw_only=True):
    room: RoomId
    event: EventName
    data: Any = None
    store: bool = False  # stored events take a seq and are replayed on resume
    cid: ClientMsgId | None = None


class Rooms(_Client, tag="rooms", kw_only=True):
    pass


class Ping(_Client, tag="ping", kw_only=True):
    ts: Any = None  # echoed untouched in the pong


ClientMessage = (
    Hello
    | Join
    | Leave
    | Members
    | Send
    | Direct
    | Typing
    | Read
    | History
    | Publish
    | Rooms
    | Ping
)
CLIENT_TYPES: frozenset[str] = frozenset(t.__struct_config__.tag for t in ClientMessage.__args__)

# --------------------------------------------------------------------------
# server -> client


class _Server(Struct, tag_field="type", omit_defaults=True, kw_only=True):
    pass


class HeartbeatInfo(Struct, omit_defaults=True, kw_only=True):
    interval_ms: int
    timeout_ms: int


class Limits(Struct, omit_defaults=True, kw_only=True):
    max_frame_bytes: int
    max_body_chars: int
    max_rooms: int
    max_history: int


class Welcome(_Server, tag="welcome", kw_only=True):
    id: RequestId = None
    session: str
    user: UserId
    server: str
    heartbeat: HeartbeatInfo
    limits: Limits


class Message(_Server, tag="message", kw_only=True):
    room: RoomId
    seq: int
    sender: UserId = msgspec.field(name="from")
    body: str
    ts: int  # server time the message became durable, ms since the epoch
    cid: str | None = None
    meta: dict[str, Any] | None = None


class Ack(_Server, tag="ack", kw_only=True):
    id: RequestId = None
    cid: str | None = None
    room: RoomId
    seq: int | None = None
    ts: int
    duplicate: bool = False  # true when this cid was already stored (an idempotent retry)


class Joined(_Server, tag="joined", kw_only=True):
    id: RequestId = None
    room: RoomId
    seq: int  # the room's latest seq: every message up to it has now been sent to you
    private: bool = False
    members: int = 0
    read: int = 0  # your read-up-to seq in this room
    replayed: int = 0  # messages replayed before this frame (join.since or hello.resume)
    resumed: bool = False  # true when this answers hello.resume
    recovered: bool = True  # false when the gap was too old to replay in full


class Left(_Server, tag="left", kw_only=True):
    id: RequestId = None
    room: RoomId


class Member(Struct, omit_defaults=True, kw_only=True):
    user: UserId
    online: bool = False


class MemberList(_Server, tag="members", kw_only=True):
    id: RequestId = None
    room: RoomId
    members: list[Member]


class TypingNotice(_Server, tag="typing", kw_only=True):
    room: RoomId
    user: UserId
    state: Literal["start", "stop"]


class Receipt(_Server, tag="receipt", kw_only=True):
    room: RoomId
    user: UserId
    seq: int


class Presence(_Server, tag="presence", kw_only=True):
    room: RoomId | None = None  # absent for online/offline
    user: UserId
    state: Literal["joined", "left", "online", "offline"]


class HistoryItem(Struct, omit_defaults=True, kw_only=True):
    seq: int
    sender: UserId = msgspec.field(name="from")
    ts: int
    kind: Literal["message", "event"] = "message"
    body: str | None = None
    cid: str | None = None
    meta: dict[str, Any] | None = None
    event: str | None = None
    data: Any = None


class HistoryPage(_Server, tag="history", kw_only=True):
    id: RequestId = None
    room: RoomId
    messages: list[HistoryItem]
    has_more: bool = False


class Event(_Server, tag="event", kw_only=True):
    room: RoomId
    event: EventName
    data: Any = None
    sender: UserId = msgspec.field(name="from")
    ts: int
    seq: int | None = None  # only for stored events


class RoomInfo(Struct, omit_defaults=True, kw_only=True):
    room: RoomId
    seq: int
    read: int = 0
    unread: int = 0
    private: bool = False


class RoomList(_Server, tag="rooms", kw_only=True):
    id: RequestId = None
    rooms: list[RoomInfo]


class Pong(_Server, tag="pong", kw_only=True):
    id: RequestId = None
    ts: Any = None


class Error(_Server, tag="error", kw_only=True):
    id: RequestId = None
    code: str  # an rtbench.protocol.codes.ErrorCode value
    message: str  # for people: what was wrong and how to fix it
    ref: str | None = None  # the type of the request it answers, when known


ServerMessage = (
    Welcome
    | Message
    | Ack
    | Joined
    | Left
    | MemberList
    | TypingNotice
    | Receipt
    | Presence
    | HistoryPage
    | Event
    | RoomList
    | Pong
    | Error
)


def dm_room(user_a: str, user_b: str) -> str:
    """The stable id of the direct-message room of two users (order-independent)."""
    first, second = sorted((user_a, user_b))
    return f"dm:{first}:{second}"
