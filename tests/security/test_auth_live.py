"""Signed identities against the live server: where a token may travel, and how it is refused.

Three ways in (``Authorization: Bearer``, ``?token=`` and ``hello.token``), two
verifiers (HS256 secret, RS256 public key), and the two refusal paths: a bad token
in the handshake closes 4401 right after the upgrade with the reason; a bad token in
``hello`` is an ``unauthorized`` error and the client may try again (a refreshed
token), until too many tries close it 4401. The identity is the token's ``sub``,
whatever a frame says.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path

import jwt
import pytest

from tests.security.conftest import SECRET, RsaKeys, hs256
from tests.support import Client

# the commands' own environment variables would change what these tests ask for
CLEAN_ENV = {
    k: v for k, v in os.environ.items() if not k.startswith(("RTBENCH_JWT", "RTBENCH_MET"))
}
SERVE = [sys.executable, "-c", "from rtbench.entry import run; run()", "serve", "--port", "0"]
TOKEN = [sys.executable, "-c", "from rtbench.entry import run; run()", "token"]


def _close_reason(c: Client) -> str:
    rcvd = c.ws.protocol.close_rcvd
    return rcvd.reason if rcvd is not None else ""


@pytest.fixture
def rs256_server(start_server, rsa_keys: RsaKeys):
    return start_server(store="memory", auth=("--jwt-public-key", str(rsa_keys.public_pem)))


async def test_rs256_token_in_header_query_or_hello(rs256_server, rsa_keys: RsaKeys) -> None:
    url = rs256_server.url
    header = {"Authorization": f"Bearer {rsa_keys.token('hdr')}"}
    async with await Client.connect(url, additional_headers=header) as c:
        assert c.user == "hdr"
    async with await Client.connect(f"{url}?token={rsa_keys.token('qry')}") as c:
        assert c.user == "qry"
    async with await Client.connect(url, rsa_keys.token("hel")) as c:
        assert c.user == "hel"
    # hello.token wins over the handshake's
    async with await Client.connect(url, rsa_keys.token("second"), additional_headers=header) as c:
        assert c.user == "second"


@pytest.mark.parametrize("where", ["header", "query"])
async def test_bad_handshake_token_closes_4401_with_the_reason(
    rs256_server, rsa_keys: RsaKeys, where: str
) -> None:
    expired = rsa_keys.token("late", ttl=-30)
    other_key = RsaKeys(Path(rs256_server.workdir)).token("forger")
    for token, why in ((expired, "expired"), (other_key, "invalid"), (hs256("x"), "invalid")):
        if where == "header":
            kwargs = {"additional_headers": {"Authorization": f"Bearer {token}"}}
            c = await Client.connect(rs256_server.url, hello=False, **kwargs)
        else:
            c = await Client.connect(f"{rs256_server.url}?token={token}", hello=False)
        assert await c.closed() == 4401
        assert why in _close_reason(c), _close_reason(c)


async def test_bad_hello_token_is_an_error_then_a_retry_then_4401(
    rs256_server, rsa_keys: RsaKeys
) -> None:
    async with await Client.connect(rs256_server.url, hello=False) as c:
        for token, why in ((None, "no token"), (rsa_keys.token("u", ttl=-5), "expired")):
            frame = {"type": "hello"} | ({"token": token} if token else {})
            err = await c.request(frame)
            assert err["code"] == "unauthorized" and why in err["message"], err
        welcome = await c.request({"type": "hello", "token": rsa_keys.token("retry")})
        assert welcome["type"] == "welcome" and welcome["user"] == "retry"
    c = await Client.connect(rs256_server.url, hello=False)
    for _ in range(4):
        assert (await c.request({"type": "hello", "token": "forged"}))["code"] == "unauthorized"
    await c.send({"type": "hello", "token": "forged"})
    assert await c.closed() == 4401
    assert "too many tries" in _close_reason(c)


async def test_the_sender_is_the_token_never_the_frame(start_server) -> None:
    server = start_server(store="memory", auth=("--jwt-secret", SECRET))
    async with (
        await Client.connect(server.url, hs256("mallory")) as mallory,
        await Client.connect(server.url, hs256("alice")) as alice,
    ):
        await mallory.join("town")
        await alice.join("town")
        spoof = {"from": "alice", "user": "alice", "sender": "alice", "sub": "alice"}
        ack = await mallory.send_message("town", "it was me, alice", cid="m1", **spoof)
        assert ack["type"] == "ack"
        got = await alice.wait_type("message", room="town")
        assert got["from"] == "mallory"
        await mallory.request({"type": "publish", "room": "town", "event": "e", **spoof})
        assert (await alice.wait_type("event", room="town"))["from"] == "mallory"
        await mallory.send({"type": "typing", "room": "town", "state": "start", **spoof})
        assert (await alice.wait_type("typing", room="town"))["user"] == "mallory"


async def test_hs256_server_refuses_a_short_secret_and_rs256_tokens(
    start_server, rsa_keys: RsaKeys
) -> None:
    server = start_server(store="memory", auth=("--jwt-secret", SECRET))
    async with await Client.connect(server.url, hello=False) as c:
        err = await c.request({"type": "hello", "token": rsa_keys.token("rsa")})
        assert err["code"] == "unauthorized"
        unsigned = jwt.encode({"sub": "root", "exp": 2**40}, None, algorithm="none")
        err = await c.request({"type": "hello", "token": unsigned})
        assert err["code"] == "unauthorized"


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (("--jwt-secret", "too-short"), "at least 32"),
        (("--jwt-public-key", "PRIVATE"), "private key"),
        (("--jwt-public-key", "/nonexistent/key.pem"), "cannot read"),
        (("--jwt-secret", SECRET, "--jwt-public-key", "PUBLIC"), "not both"),
        (("--insecure-dev", "--jwt-public-key", "PUBLIC"), "not both"),
        ((), "--jwt-public-key"),
    ],
)
def test_serve_refuses_unusable_keys_with_one_line(
    tmp_path: Path, rsa_keys: RsaKeys, args: tuple[str, ...], needle: str
) -> None:
    swap = {"PRIVATE": str(rsa_keys.private_pem), "PUBLIC": str(rsa_keys.public_pem)}
    argv = [*SERVE, "--store", "memory", *(swap.get(a, a) for a in args)]
    result = subprocess.run(
        argv,
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
        stdin=subprocess.DEVNULL,
        env=CLEAN_ENV,
    )
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and needle in lines[0], result.stderr


def _rtbench_token(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*TOKEN, *args],
        capture_output=True,
        text=True,
        timeout=60,
        stdin=subprocess.DEVNULL,
        env=CLEAN_ENV,
    )


async def test_rtbench_token_mints_what_the_servers_accept(start_server, rsa_keys: RsaKeys) -> None:
    async def mint(*args: str) -> str:
        result = await asyncio.to_thread(_rtbench_token, *args)
        assert result.returncode == 0, result.stderr
        return result.stdout.strip()

    hs = start_server(store="memory", auth=("--jwt-secret", SECRET))
    rs = start_server(store="memory", auth=("--jwt-public-key", str(rsa_keys.public_pem)))
    token = await mint("--user", "minted", "--secret", SECRET, "--rooms", "team-*", "--ttl", "5m")
    async with await Client.connect(hs.url, token) as c:
        assert c.user == "minted"
        assert (await c.request({"type": "join", "room": "lobby"}))["code"] == "forbidden"
        assert (await c.request({"type": "join", "room": "team-1"}))["type"] == "joined"
    token = await mint("--user", "rsa-minted", "--private-key", str(rsa_keys.private_pem))
    async with await Client.connect(rs.url, token) as c:
        assert c.user == "rsa-minted"


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (("--user", "x", "--private-key", "PUBLIC"), "private key"),
        (("--user", "x", "--secret", "short"), "at least 32"),
        (("--user", "x"), "no signing key"),
        (("--user", "not ok", "--secret", SECRET), "--user"),
        (("--user", "x", "--secret", SECRET, "--ttl", "soon"), "--ttl"),
    ],
)
def test_rtbench_token_usage_errors(rsa_keys: RsaKeys, args: tuple[str, ...], needle: str) -> None:
    result = _rtbench_token(*(str(rsa_keys.public_pem) if a == "PUBLIC" else a for a in args))
    assert result.returncode == 2 and needle in result.stderr, result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
