"""Encoding and decoding of reference-protocol frames.

Decoding maps every way a frame can be wrong onto one stable error code
(docs/PROTOCOL.md) and a message a person can act on, and recovers the request
``id`` even from a frame that failed validation, so the error can name it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import msgspec

from rtbench.protocol.codes import ErrorCode
from rtbench.protocol.messages import CLIENT_TYPES, ClientMessage, ServerMessage

_client_decoder = msgspec.json.Decoder(ClientMessage)
_server_decoder = msgspec.json.Decoder(ServerMessage)
_encoder = msgspec.json.Encoder()
_any_decoder = msgspec.json.Decoder()

encode = _encoder.encode
"""Encode any protocol struct (or plain JSON value) to bytes."""


@dataclass(frozen=True, slots=True)
class FrameError(Exception):
    """A client frame that cannot be carried out; becomes an ``error`` frame."""

    code: ErrorCode
    message: str
    request_id: int | str | None = None
    ref: str | None = None

    def __str__(self) -> str:
        return f"{self.code.value}: {self.message}"


def decode_client(payload: bytes | str) -> ClientMessage:
    """Decode one client frame, raising FrameError with a stable code when it is bad."""
    try:
        return _client_decoder.decode(payload)
    except msgspec.ValidationError as exc:
        raise _classify(payload, str(exc)) from None
    except msgspec.DecodeError as exc:
        raise FrameError(ErrorCode.BAD_JSON, f"frame is not valid JSON: {exc}") from None
    except RecursionError:  # msgspec's nesting limit: found by fuzzing (tests/security)
        raise FrameError(ErrorCode.BAD_JSON, "frame is nested too deeply") from None


def decode_server(payload: bytes | str) -> ServerMessage:
    """Decode one server frame (for clients: load generators, monitor, tests)."""
    return _server_decoder.decode(payload)


def _classify(payload: bytes | str, detail: str) -> FrameError:
    """Work out why a well-formed JSON frame failed validation."""
    try:
        raw: Any = _any_decoder.decode(payload)
    except (msgspec.DecodeError, RecursionError):  # e.g. a number no JSON decoder can hold
        return FrameError(ErrorCode.BAD_FIELD, f"invalid frame: {detail}")
    if not isinstance(raw, dict):
        return FrameError(ErrorCode.BAD_FRAME, 'frame must be a JSON object with a "type" field')
    request_id = raw.get("id")
    if not _valid_request_id(request_id):
        request_id = None
    msg_type = raw.get("type")
    if not isinstance(msg_type, str):
        return FrameError(ErrorCode.BAD_FRAME, 'frame must have a string "type" field', request_id)
    if msg_type not in CLIENT_TYPES:
        known = ", ".join(sorted(CLIENT_TYPES))
        return FrameError(
            ErrorCode.UNKNOWN_TYPE,
            f"unknown message type {msg_type!r}; known types: {known}",
            request_id,
        )
    return FrameError(
        ErrorCode.BAD_FIELD, f"invalid {msg_type!r} frame: {detail}", request_id, msg_type
    )


def _valid_request_id(value: Any) -> bool:
    if isinstance(value, bool):
        return False
    return isinstance(value, int) or (isinstance(value, str) and len(value) <= 64)
