"""Fuzzing the live server: random and malformed frames never crash it, leak, or stall others.

Four generators against one real server (SQLite store, default limits):

1. protocol-shaped frames: every message type (and unknown ones) with any subset of
   the protocol's fields holding random JSON (hypothesis);
2. raw text and raw bytes in text frames, and deeply nested JSON (hypothesis);
3. WebSocket framing: random opcodes, reserved bits, fragments, unmasked and
   oversized control frames, bad close codes, on a bare socket (hypothesis);
4. mutations of valid frames (bit flips, cuts, splices, huge numbers), thousands
   per connection (seeded, so a failure replays).

After each input the connection must answer a ping, or have been closed with a code
the protocol names for what was sent. Meanwhile a bystander in another thread pings
the server every 20 ms: every ping must be answered (no stall). At the end the
server must be alive, have logged no traceback and answered no ``internal`` error,
and be back to its baseline: one connection (the bystander), one user, only the
rooms the fuzzers legitimately created, and RSS within a bound.

The number of inputs is printed; RTBENCH_FUZZ_SCALE=10 runs ten times as many.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import random
import struct
import threading
import time
from collections.abc import Coroutine
from typing import Any, TypeVar

import msgspec
import pytest
import websockets
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rtbench.protocol import decode_client, dm_room
from rtbench.protocol import messages as p
from tests.support.rawws import CLOSE, PONG, TEXT, RawWebSocket

T = TypeVar("T")
SCALE = max(1, int(os.environ.get("RTBENCH_FUZZ_SCALE", "1")))
# close codes a connection may get for what a fuzzer sends (docs/PROTOCOL.md)
ALLOWED_CLOSES = {1002, 1003, 1007, 1008, 1009, 4401, 4408}
TYPES = sorted(p.CLIENT_TYPES)
ROOMS = ["lobby", "fz-a", "fz-b", "dm:fz1:fz2", "dm:x", "dm:a:b:c", "", "x" * 129, "ü\u0000\ud7ff"]
FIELDS = [
    "id", "token", "resume", "client", "room", "since", "private", "members", "cid", "body",
    "meta", "to", "state", "seq", "before", "after", "limit", "event", "data", "store", "ts",
    "from", "user", "sender", "type",
]  # fmt: skip

json_leaf = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=40)
    | st.sampled_from(ROOMS)
)
json_value = st.recursive(
    json_leaf,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=10,
)
field_value = st.one_of(
    json_value,
    st.sampled_from(ROOMS),
    st.integers(min_value=-5, max_value=60),
    st.sampled_from(["start", "stop", "fz1", "fz2", "a" * 65]),
    st.dictionaries(st.sampled_from(ROOMS), st.integers(min_value=-1, max_value=2**63 - 1)),
)
frame_dict = st.builds(
    lambda kind, extra: {"type": kind, **extra},
    st.one_of(st.sampled_from(TYPES), json_leaf),
    st.dictionaries(st.sampled_from(FIELDS), field_value, max_size=7),
)


class Tally:
    """What the fuzzers sent, and what the server did with it (shared by the phases)."""

    def __init__(self) -> None:
        self.inputs = 0
        self.by_phase: dict[str, int] = {}
        self.closes: dict[int, int] = {}
        self.created: set[str] = set()  # rooms the server confirmed (joined, dm ack)
        self.may_create: set[str] = set()  # rooms a valid join/dm could have created
        self.users: set[str] = set(USERS)  # who a hello may have made a connection
        self.directs: set[str] = set()  # users a valid dm went to
        self.internal: list[Any] = []
        self.rss_rounds: list[int] = []

    def sent(self, phase: str, data: bytes | str) -> None:
        self.inputs += 1
        self.by_phase[phase] = self.by_phase.get(phase, 0) + 1
        with contextlib.suppress(Exception):
            msg = decode_client(data)
            if isinstance(msg, p.Join):
                self.may_create.add(msg.room)
            elif isinstance(msg, p.Direct):
                self.directs.add(msg.to)
            elif isinstance(msg, p.Hello) and msg.token:
                self.users.add(msg.token)

    def room_ceiling(self) -> set[str]:
        """Every room the valid frames sent could have created."""
        dms = {dm_room(u, to) for u in self.users for to in self.directs}
        return self.may_create | dms | self.created

    def received(self, frame: dict[str, Any]) -> None:
        kind = frame.get("type")
        if kind == "joined" or (kind == "ack" and str(frame.get("room", "")).startswith("dm:")):
            self.created.add(frame["room"])
        if kind == "error" and frame.get("code") == "internal":
            self.internal.append(frame)


USERS = ["fz1", "fz2"]


class Bystander(threading.Thread):
    """Pings the server from its own thread and event loop, every 20 ms, and times it."""

    def __init__(self, url: str) -> None:
        super().__init__(daemon=True, name="bystander")
        self.url = url
        self.rtts: list[float] = []
        self.unanswered = 0
        self.error: BaseException | None = None
        self.ready = threading.Event()
        self._halt = threading.Event()

    def run(self) -> None:
        try:
            asyncio.run(self._main())
        except BaseException as exc:  # surfaced by stop()
            self.error = exc
            self.ready.set()

    async def _main(self) -> None:
        async with websockets.connect(self.url, ping_interval=None) as ws:
            await ws.send(json.dumps({"type": "hello", "token": "bystander"}))
            await ws.recv()
            self.ready.set()
            n = 0
            while not self._halt.is_set():
                n += 1
                sent = time.perf_counter()
                await ws.send(json.dumps({"type": "ping", "id": n}))
                try:
                    async with asyncio.timeout(5):
                        while json.loads(await ws.recv()).get("id") != n:
                            pass
                    self.rtts.append(time.perf_counter() - sent)
                except TimeoutError:
                    self.unanswered += 1
                await asyncio.sleep(0.02)

    def stop(self) -> None:
        self._halt.set()
        self.join(15)
        if self.error is not None:
            raise self.error


@pytest.fixture(scope="module")
def target(tmp_path_factory: pytest.TempPathFactory):
    from tests.support.server import ServerProcess

    server = ServerProcess(tmp_path_factory.mktemp("fuzz")).start()
    bystander = Bystander(server.url)
    bystander.start()
    assert bystander.ready.wait(20) and bystander.error is None
    loop = asyncio.new_event_loop()
    try:
        yield server, bystander, loop, Tally()
    finally:
        loop.close()
        with contextlib.suppress(Exception):
            bystander.stop()
        server.stop("kill" if server.alive() else "term")


def _run(loop: asyncio.AbstractEventLoop, coro: Coroutine[Any, Any, T]) -> T:
    return loop.run_until_complete(asyncio.wait_for(coro, 60))


def _server_closes(server: Any) -> float:
    """Connections the server closed so far, all codes together (from /metrics)."""
    _, body = server.get("/metrics")
    lines = body.decode().splitlines()
    return sum(float(x.split()[-1]) for x in lines if x.startswith("rtbench_server_closes_total{"))


async def _exchange(server: Any, frames: list[bytes | str], tally: Tally, phase: str, hello: bool):
    """Send ``frames`` on a fresh connection, then a ping: a pong, or an allowed close.

    A client that keeps writing after the server's close frame can get a TCP reset that
    discards that frame (1006 here); then the server's own count of closes must show it.
    """
    closes_before = await asyncio.to_thread(_server_closes, server)
    async with websockets.connect(server.url, ping_interval=None, max_size=2**24) as ws:
        if hello:
            await ws.send(json.dumps({"type": "hello", "token": random.choice(USERS)}))
        for data in frames:
            tally.sent(phase, data)
            with contextlib.suppress(websockets.ConnectionClosed):
                await ws.send(data, text=True)
        try:
            await ws.send(json.dumps({"type": "ping", "id": "end"}))
            async with asyncio.timeout(20):
                while True:
                    frame = json.loads(await ws.recv())
                    tally.received(frame)
                    if frame.get("id") == "end":  # pong, or hello_required: it answered
                        return
        except websockets.ConnectionClosed as exc:
            code = exc.rcvd.code if exc.rcvd is not None else 1006
            tally.closes[code] = tally.closes.get(code, 0) + 1
            if code == 1006:
                closed = await asyncio.to_thread(_server_closes, server)
                assert closed > closes_before, f"cut without a close after {frames!r:.300}"
            else:
                assert code in ALLOWED_CLOSES, f"closed {code} after {frames!r:.300}"


def _check_server(server: Any, tally: Tally) -> None:
    assert server.alive(), "the server died:\n" + "\n".join(server.lines[-30:])
    assert not tally.internal, tally.internal[:3]
    bad = [line for line in server.lines if "Traceback" in line or "internal error" in line]
    assert not bad, "\n".join(server.lines[-40:])


def test_protocol_shaped_frames(target) -> None:
    server, _, loop, tally = target

    @settings(max_examples=250 * SCALE, deadline=None, suppress_health_check=list(HealthCheck))
    @given(frames=st.lists(frame_dict, min_size=1, max_size=8), hello=st.booleans())
    def fuzz(frames: list[dict[str, Any]], hello: bool) -> None:
        data = [json.dumps(f) for f in frames]
        _run(loop, _exchange(server, data, tally, "shaped", hello))

    fuzz()
    _check_server(server, tally)


def test_raw_text_bytes_and_deep_nesting(target) -> None:
    server, _, loop, tally = target
    nested = st.integers(min_value=1, max_value=20_000).map(
        lambda n: '{"type":"publish","room":"lobby","event":"e","data":' + "[" * n + "]" * n + "}"
    )
    payload = st.one_of(
        st.text(max_size=300),
        st.binary(max_size=300),  # invalid UTF-8 in a text frame: 1007
        nested,
        st.binary(min_size=1, max_size=64).map(lambda b: b'{"type":"send","body":"' + b + b'"}'),
    )

    @settings(max_examples=200 * SCALE, deadline=None, suppress_health_check=list(HealthCheck))
    @given(frames=st.lists(payload, min_size=1, max_size=5))
    def fuzz(frames: list[str | bytes]) -> None:
        _run(loop, _exchange(server, frames, tally, "raw", True))

    fuzz()
    _check_server(server, tally)


def _frame(opcode: int, payload: bytes, *, fin: bool, rsv: int, masked: bool) -> bytes:
    head = (0x80 if fin else 0) | (rsv << 4) | opcode
    n = len(payload)
    mask_bit = 0x80 if masked else 0
    if n < 126:
        out = struct.pack("!BB", head, mask_bit | n)
    elif n < 65536:
        out = struct.pack("!BBH", head, mask_bit | 126, n)
    else:
        out = struct.pack("!BBQ", head, mask_bit | 127, n)
    if not masked:
        return out + payload
    mask = os.urandom(4)
    return out + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))


ws_frame = st.builds(
    _frame,
    st.integers(min_value=0, max_value=15),
    st.one_of(
        st.binary(max_size=200),
        st.just(b'{"type":"ping"}'),
        st.integers(0, 5000).map(lambda code: struct.pack("!H", code) + b"bye"),
    ),
    fin=st.booleans(),
    rsv=st.integers(min_value=0, max_value=7),
    masked=st.booleans(),
)


def test_websocket_framing(target) -> None:
    server, _, loop, tally = target

    async def attempt(frames: list[bytes]) -> None:
        raw = await RawWebSocket.connect("127.0.0.1", server.port)
        said_close = any(f[0] & 0x0F == CLOSE for f in frames)  # the server echoes its code
        try:
            raw.send(json.dumps({"type": "hello", "token": "fz1"}).encode())
            for data in frames:
                tally.sent("framing", data)
                raw.writer.write(data)
            raw.send(b'{"type":"ping","id":"end"}', opcode=TEXT)
            with contextlib.suppress(ConnectionError):
                await raw.writer.drain()
            async with asyncio.timeout(10):
                while True:
                    try:
                        opcode, body = await raw.read_frame()
                    except (asyncio.IncompleteReadError, ConnectionError):
                        return  # the server cut the socket: a protocol error it would not frame
                    if opcode == CLOSE:
                        code = struct.unpack("!H", body[:2])[0] if len(body) >= 2 else 1005
                        if said_close:  # our own close frame, echoed: any code goes
                            return
                        tally.closes[code] = tally.closes.get(code, 0) + 1
                        assert code in ALLOWED_CLOSES, (code, frames)
                        return
                    if opcode == TEXT and b'"end"' in body:
                        return
                    if opcode not in (PONG, TEXT):
                        continue
        except TimeoutError:
            pass  # a fragment still open or a length promised: the server waits, rightly
        finally:
            raw.close()

    @settings(max_examples=150 * SCALE, deadline=None, suppress_health_check=list(HealthCheck))
    @given(frames=st.lists(ws_frame, min_size=1, max_size=4))
    def fuzz(frames: list[bytes]) -> None:
        _run(loop, attempt(frames))

    fuzz()
    _check_server(server, tally)


TEMPLATES: list[dict[str, Any]] = [
    {"type": "join", "room": "fz-a", "since": 0, "id": 1},
    {"type": "join", "room": "fz-p", "private": True, "members": ["fz2"]},
    {"type": "send", "room": "fz-a", "cid": "c1", "body": "hello", "meta": {"k": [1, 2]}},
    {"type": "dm", "to": "fz2", "cid": "d1", "body": "psst"},
    {"type": "typing", "room": "fz-a", "state": "start"},
    {"type": "read", "room": "fz-a", "seq": 1},
    {"type": "history", "room": "fz-a", "before": 10, "after": 0, "limit": 5},
    {"type": "publish", "room": "fz-a", "event": "e", "data": {"x": 1}, "store": True},
    {"type": "members", "room": "fz-a"},
    {"type": "rooms"},
    {"type": "leave", "room": "fz-a"},
    {"type": "hello", "token": "fz1", "resume": {"fz-a": 0}},
    {"type": "ping", "ts": 1},
]


def _mutate(rng: random.Random, data: bytes) -> bytes:
    out = bytearray(data)
    for _ in range(rng.randint(1, 4)):
        op = rng.randrange(6)
        i = rng.randrange(len(out) + 1)
        if op == 0 and out:  # flip a bit
            j = rng.randrange(len(out))
            out[j] ^= 1 << rng.randrange(8)
        elif op == 1:  # cut
            del out[i : i + rng.randint(1, 8)]
        elif op == 2:  # insert random bytes
            out[i:i] = rng.randbytes(rng.randint(1, 6))
        elif op == 3:  # splice JSON tokens
            out[i:i] = rng.choice([b"{", b"}", b"[", b"]", b",", b":", b'"', b"null", b"\\u0000"])
        elif op == 4:  # a huge or odd number
            out[i:i] = rng.choice([b"1e400", b"-0", b"99999999999999999999999", b"1.5", b"NaN"])
        else:  # another frame's piece
            other = json.dumps(rng.choice(TEMPLATES)).encode()
            start = rng.randrange(len(other))
            out[i:i] = other[start : start + rng.randint(1, 20)]
    return bytes(out)


def test_mutated_frames(target) -> None:
    server, _, loop, tally = target
    rng = random.Random(9)  # seeded: a failure replays
    connections, per_connection = 20 * SCALE, 500
    rss: list[int] = []
    for round_ in range(2):  # two equal rounds: a leak grows in the second as in the first
        for _ in range(connections // 2):
            frames = [
                _mutate(rng, json.dumps(rng.choice(TEMPLATES)).encode())
                for _ in range(per_connection)
            ]
            # valid UTF-8, so the whole batch is read; some batches end in raw bytes (1007)
            frames = [f.decode("utf-8", "replace") for f in frames[:-1]] + frames[-1:]
            _run(loop, _exchange(server, frames, tally, f"mutations-{round_}", True))
        _, health = server.health()
        rss.append(health["rss_bytes"])
    _check_server(server, tally)
    tally.rss_rounds = rss


def test_after_fuzzing_no_crash_no_leak_no_stall(target, capsys) -> None:
    server, bystander, _, tally = target
    _check_server(server, tally)
    deadline = time.monotonic() + 30
    while True:  # closed fuzz connections leave; presence settles
        _, health = server.health()
        if health["connections"] == 1 and health["users"] == 1:
            break
        assert time.monotonic() < deadline, f"not back to baseline: {health}"
        time.sleep(0.2)
    rooms = health["rooms"]
    assert len(tally.created) <= rooms <= len(tally.room_ceiling()), (rooms, len(tally.created))
    assert server.metric("rtbench_server_errors_total", 'code="internal"') == 0
    rss = tally.rss_rounds
    bystander.stop()
    rtts = sorted(bystander.rtts)
    assert bystander.unanswered == 0, f"{bystander.unanswered} bystander pings went unanswered"
    assert len(rtts) > 50, "the bystander hardly ran"
    p99 = rtts[int(len(rtts) * 0.99)] * 1000
    phases = ", ".join(f"{k} {v:,}" for k, v in tally.by_phase.items())
    handled = server.metric("rtbench_server_messages_in_total")
    line = (
        f"fuzz: {tally.inputs:,} inputs ({phases}); the server decoded {handled:,.0f} frames; "
        f"closes {dict(sorted(tally.closes.items()))}; rooms created {rooms}; "
        f"bystander {len(rtts):,} pings, p99 {p99:.1f} ms, max {rtts[-1] * 1000:.1f} ms, 0 lost"
    )
    if rss:
        growth = (rss[1] - rss[0]) / 2**20
        line += (
            f"; RSS {rss[0] / 2**20:.1f} -> {rss[1] / 2**20:.1f} MB over the second mutation round"
        )
        assert growth < 16, line  # a per-input leak would grow by as much as the first round did
    with capsys.disabled():
        print("\n" + line)
    assert msgspec.json.encode(health)  # the health answer itself is still well-formed JSON
