"""Stable error codes and WebSocket close codes of the reference protocol.

These strings and numbers are the protocol's contract (docs/PROTOCOL.md):
clients branch on them, so they never change meaning once published.
"""

from enum import IntEnum, StrEnum


class ErrorCode(StrEnum):
    """The ``code`` of an ``error`` frame. The connection stays open after each."""

    BAD_JSON = "bad_json"  # the frame is not valid JSON text
    BAD_FRAME = "bad_frame"  # JSON, but not an object with a string "type"
    UNKNOWN_TYPE = "unknown_type"  # "type" names no client message
    BAD_FIELD = "bad_field"  # a field is missing, of the wrong type or out of range
    HELLO_REQUIRED = "hello_required"  # anything but hello before the hello
    ALREADY_HELLO = "already_hello"  # a second hello on one connection
    UNAUTHORIZED = "unauthorized"  # token missing, malformed, forged or expired
    FORBIDDEN = "forbidden"  # the user may not do this in this room
    UNKNOWN_ROOM = "unknown_room"  # the room does not exist
    NOT_MEMBER = "not_member"  # the connection has not joined the room
    BAD_RANGE = "bad_range"  # history bounds or read seq out of range
    TOO_MANY_ROOMS = "too_many_rooms"  # per-connection room limit reached
    BODY_TOO_LONG = "body_too_long"  # message body over the configured limit
    RATE_LIMITED = "rate_limited"  # the per-connection rate limit was hit
    STORE_UNAVAILABLE = "store_unavailable"  # the store cannot make the send durable; not acked
    BROKER_UNAVAILABLE = "broker_unavailable"  # cross-worker fan-out is down; not acked
    INTERNAL = "internal"  # a server bug; the request was not carried out


class CloseCode(IntEnum):
    """WebSocket close codes the reference server sends, and why."""

    NORMAL = 1000
    GOING_AWAY = 1001
    UNSUPPORTED_DATA = 1003  # a binary frame: the protocol is JSON text only
    INVALID_PAYLOAD = 1007  # text frame that is not valid UTF-8
    POLICY_VIOLATION = 1008  # persistent flooding past the rate limit, forbidden origin
    MESSAGE_TOO_BIG = 1009  # frame over the size limit
    INTERNAL_ERROR = 1011
    SERVICE_RESTART = 1012  # graceful shutdown: reconnect and resume
    TRY_AGAIN_LATER = 1013  # slow consumer: outgoing buffer stayed over its limit
    UNAUTHORIZED = 4401  # missing, forged or expired token
    FORBIDDEN = 4403  # authenticated, but not allowed (origin, banned user)
    HELLO_TIMEOUT = 4408  # no hello within the hello timeout
    TOO_MANY_CONNECTIONS = 4429  # per-user or per-IP connection limit
