"""Every bad input gets its stable code and the request id; the connection stays usable.

Protocol violations get their close codes instead (1003, 1007, 1009, 4401, 4408).
"""

from __future__ import annotations

import json
import time

import jwt
import pytest

from tests.support import Client, ServerProcess

LIMITS = {"limits": {"max_rooms": 2, "max_body_chars": 10, "max_frame_bytes": 2048}}


@pytest.fixture(scope="module")
def strict_server(tmp_path_factory) -> ServerProcess:
    server = ServerProcess(
        tmp_path_factory.mktemp("strict"),
        config={**LIMITS, "timing": {"hello_timeout_ms": 400, "sweep_ms": 50}},
    ).start()
    yield server  # type: ignore[misc]
    server.stop("kill")


async def _still_works(c: Client) -> None:
    pong = await c.request({"type": "ping", "ts": "alive"})
    assert pong["type"] == "pong" and pong["ts"] == "alive"


async def _error(c: Client, frame: dict | str, code: str, with_id: bool = True) -> dict:
    if isinstance(frame, str):
        await c.send_raw(frame)
        err = await c.wait_type("error", code=code)
    elif with_id:
        frame = {**frame, "id": "req-7"}
        await c.send(frame)
        err = await c.wait_type("error", code=code)
        assert err["id"] == "req-7", err
    else:
        await c.send(frame)
        err = await c.wait_type("error", code=code)
    assert err["message"], err
    await _still_works(c)
    return err


@pytest.mark.parametrize(
    ("frame", "code", "with_id"),
    [
        ("{not json", "bad_json", False),
        ("[1, 2]", "bad_frame", False),
        ('{"type": 5}', "bad_frame", False),
        ({"type": "shout"}, "unknown_type", True),
        ({"type": "send", "room": "x", "body": "no cid"}, "bad_field", True),
        ({"type": "send", "room": 5, "cid": "c", "body": "b"}, "bad_field", True),
        ({"type": "history", "room": "x", "limit": -1}, "bad_field", True),
        ({"type": "send", "room": "not-joined", "cid": "c", "body": "b"}, "not_member", True),
        ({"type": "typing", "room": "not-joined", "state": "start"}, "not_member", True),
        ({"type": "history", "room": "no-such-room"}, "unknown_room", True),
        ({"type": "members", "room": "no-such-room"}, "unknown_room", True),
        ({"type": "join", "room": "dm:x:y"}, "forbidden", True),
        ({"type": "hello", "token": "again"}, "already_hello", True),
    ],
)
async def test_bad_frames_get_their_code(
    strict_server: ServerProcess, frame: dict | str, code: str, with_id: bool
) -> None:
    async with await Client.connect(strict_server.url, "badinput") as c:
        err = await _error(c, frame, code, with_id)
        if code == "bad_field":
            assert err["ref"] in ("send", "history")


async def test_room_level_errors(strict_server: ServerProcess) -> None:
    async with await Client.connect(strict_server.url, "limits") as c:
        await c.join("l1")
        await c.join("l2")
        await _error(c, {"type": "join", "room": "l3"}, "too_many_rooms")
        await _error(
            c, {"type": "send", "room": "l1", "cid": "c", "body": "x" * 11}, "body_too_long"
        )
        await _error(c, {"type": "history", "room": "l1", "after": 5, "before": 2}, "bad_range")
        await _error(c, {"type": "read", "room": "l1", "seq": 1}, "bad_range")
        ack = await c.send_message("l1", "x" * 10, "fits")
        assert ack["type"] == "ack"


async def test_hello_required_and_unauthorized(strict_server: ServerProcess) -> None:
    async with await Client.connect(strict_server.url, hello=False) as c:
        await c.send({"type": "join", "room": "r", "id": 1})
        assert (await c.wait_type("error", id=1))["code"] == "hello_required"
        bad = await c.request({"type": "hello", "token": "not a valid user!"})
        assert bad["code"] == "unauthorized"
        missing = await c.request({"type": "hello"})
        assert missing["code"] == "unauthorized"
        ok = await c.request({"type": "hello", "token": "fixed"})
        assert ok["type"] == "welcome" and ok["user"] == "fixed"


async def test_insecure_dev_takes_unverified_jwt_sub(strict_server: ServerProcess) -> None:
    token = jwt.encode(
        {"sub": "from-jwt"}, "whatever-key-that-nobody-checks-at-all", algorithm="HS256"
    )
    async with await Client.connect(strict_server.url, token) as c:
        assert c.user == "from-jwt"


async def test_protocol_violations_close_the_connection(strict_server: ServerProcess) -> None:
    c = await Client.connect(strict_server.url, "violator")
    await c.send_raw(json.dumps({"type": "ping", "pad": "x" * 4096}))  # over max_frame_bytes
    assert await c.closed() == 1009
    c = await Client.connect(strict_server.url, "violator")
    await c.send_raw(b"\x00\x01binary")
    assert await c.closed() == 1003
    c = await Client.connect(strict_server.url, "violator")
    await c.ws.send(b'{"type": "ping", "ts": "\xff\xfe"}', text=True)
    assert await c.closed() == 1007


async def test_no_hello_is_closed_4408(strict_server: ServerProcess) -> None:
    c = await Client.connect(strict_server.url, hello=False)
    assert await c.closed(timeout=10) == 4408


async def test_jwt_hs256(start_server) -> None:
    secret = "s3cret-for-tests-only-0123456789abcdef"
    server = start_server(auth=("--jwt-secret", secret))
    good = jwt.encode({"sub": "signed", "exp": int(time.time()) + 60}, secret, algorithm="HS256")
    async with await Client.connect(server.url, good) as c:
        assert c.user == "signed"
    forged = jwt.encode(
        {"sub": "signed", "exp": int(time.time()) + 60},
        "wrong-key-0123456789abcdefghijklmnop",
        algorithm="HS256",
    )
    expired = jwt.encode({"sub": "signed", "exp": int(time.time()) - 60}, secret, algorithm="HS256")
    async with await Client.connect(server.url, hello=False) as c:
        for token, why in ((forged, "invalid"), (expired, "expired"), ("signed", "invalid")):
            err = await c.request({"type": "hello", "token": token})
            assert err["code"] == "unauthorized" and why in err["message"], err
        assert (await c.request({"type": "hello", "token": good}))["type"] == "welcome"
    c = await Client.connect(server.url + f"?token={forged}", hello=False)
    assert await c.closed() == 4401  # a bad token in the handshake closes at once
