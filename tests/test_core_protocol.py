"""The protocol codec: every way a frame can be wrong maps onto one stable error code."""

import pytest

from rtbench.protocol import ErrorCode, FrameError, decode_client, decode_server, dm_room, encode
from rtbench.protocol import messages as m


def test_valid_send_decodes_to_struct():
    frame = decode_client(b'{"type":"send","room":"lobby","cid":"c1","body":"hi","id":7}')
    assert isinstance(frame, m.Send)
    assert (frame.room, frame.cid, frame.body, frame.id) == ("lobby", "c1", "hi", 7)


@pytest.mark.parametrize(
    ("payload", "code", "request_id"),
    [
        (b"not json", ErrorCode.BAD_JSON, None),
        (b"[1, 2]", ErrorCode.BAD_FRAME, None),
        (b'{"room": "x", "id": 3}', ErrorCode.BAD_FRAME, 3),
        (b'{"type": "fly", "id": "r9"}', ErrorCode.UNKNOWN_TYPE, "r9"),
        (b'{"type": "send", "room": 5, "cid": "a", "body": "b", "id": 4}', ErrorCode.BAD_FIELD, 4),
        (b'{"type": "join", "room": ""}', ErrorCode.BAD_FIELD, None),
        (b'{"type": "history", "room": "r", "limit": 0, "id": 1}', ErrorCode.BAD_FIELD, 1),
        (b'{"type": "hello", "resume": {"r": -1}}', ErrorCode.BAD_FIELD, None),
        (b'{"type": "dm", "to": "has space", "cid": "a", "body": "b"}', ErrorCode.BAD_FIELD, None),
    ],
)
def test_bad_frames_get_stable_codes(payload, code, request_id):
    with pytest.raises(FrameError) as caught:
        decode_client(payload)
    assert caught.value.code is code
    assert caught.value.request_id == request_id
    assert caught.value.message  # a person can read why


def test_server_frames_round_trip_with_from_field():
    raw = encode(m.Message(room="r", seq=3, sender="alice", body="x", ts=1))
    assert b'"from":"alice"' in raw
    assert b"cid" not in raw  # omitted defaults cost nothing on the wire
    back = decode_server(raw)
    assert isinstance(back, m.Message) and back.sender == "alice" and back.seq == 3


def test_dm_room_is_order_independent():
    assert dm_room("bob", "alice") == dm_room("alice", "bob") == "dm:alice:bob"
