"""Frame encode/decode: what every send, delivery and ack costs in ``rtbench.protocol``.

The server decodes each client frame once and encodes each outgoing frame once (for
all recipients); the load generator decodes every delivery. Sizes are those of the
benchmarks' messages (100-byte bodies).
"""

from __future__ import annotations

from rtbench.protocol import decode_client, decode_server, encode
from rtbench.protocol import messages as m

BODY = "x" * 100
SEND = encode(m.Send(room="room-1", cid="c-12345", body=BODY, id=12345))
MESSAGE = m.Message(
    room="room-1", seq=123456, sender="user-42", body=BODY, ts=1_764_000_000_000, cid="c-12345"
)
MESSAGE_FRAME = encode(MESSAGE)


def test_encode_message(benchmark) -> None:  # type: ignore[no-untyped-def]
    out = benchmark(encode, MESSAGE)
    assert out == MESSAGE_FRAME


def test_decode_client_send(benchmark) -> None:  # type: ignore[no-untyped-def]
    out = benchmark(decode_client, SEND)
    assert isinstance(out, m.Send) and out.body == BODY


def test_decode_server_message(benchmark) -> None:  # type: ignore[no-untyped-def]
    out = benchmark(decode_server, MESSAGE_FRAME)
    assert isinstance(out, m.Message) and out.seq == 123456
