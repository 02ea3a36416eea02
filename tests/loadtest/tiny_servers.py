"""Tiny WebSocket servers for the engine's tests: a reference-protocol subset with faults, and echo.

They run on loopback port 0 in a thread of the test process, and count what they did
(dropped, duplicated, swapped, the true send time of every delivery), so a test can
compare the engine's figures with the truth. They implement just enough of
docs/PROTOCOL.md for the load scenarios; the real reference server is tested elsewhere.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections import defaultdict
from dataclasses import dataclass, field
from http import HTTPStatus

import msgspec
from websockets.asyncio.server import ServerConnection, serve

from loadtest.adapters import parse_marker
from rtbench.histogram import LatencyHistogram
from rtbench.protocol import dm_room

_dec = msgspec.json.Decoder()
_enc = msgspec.json.Encoder()


@dataclass
class Faults:
    """What the server does wrong, deliberately. Every k-th *delivery* counts server-wide."""

    drop_every: int = 0  # drop every k-th delivery
    dup_every: int = 0  # send every k-th delivery twice
    swap_every: int = 0  # hold every k-th delivery and send it after the next one of its stream
    delay_ms: float = 0.0  # hold every delivery this long
    stall_after_s: float | None = None  # after the first send, stall deliveries ...
    stall_ms: float = 0.0  # ... for this long (then send everything that waited)
    close_code: int | None = None  # close every connection with this code after its hello
    upgrade_status: int | None = None  # refuse every upgrade with this HTTP status


@dataclass
class Stats:
    deliveries: int = 0  # frames that carry a message or event to a recipient (not dups)
    dropped: int = 0
    duplicated: int = 0
    swapped: int = 0
    sends: int = 0
    truth: LatencyHistogram = field(default_factory=LatencyHistogram)  # send time - scheduled


class _Out:
    """A connection's ordered outgoing queue: items leave at their due time, in order."""

    def __init__(self, ws: ServerConnection, stats: Stats) -> None:
        self.ws = ws
        self.stats = stats
        self.queue: asyncio.Queue = asyncio.Queue(maxsize=100_000)
        self.held: dict[tuple[str, str], tuple[bytes, int | None]] = {}
        self.task = asyncio.create_task(self._write())

    async def close(self) -> None:
        self.task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self.task

    def put(self, payload: bytes, due: float = 0.0, sched_ns: int | None = None) -> None:
        self.queue.put_nowait((due, payload, sched_ns))

    async def _write(self) -> None:
        while True:
            due, payload, sched_ns = await self.queue.get()
            delay = due - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            try:
                await self.ws.send(payload.decode())
            except Exception:
                return
            if sched_ns is not None:
                self.stats.truth.record_us((time.monotonic_ns() - sched_ns) // 1000)


class TinyReferenceServer:
    """The reference protocol's chat subset (hello, join, send, dm, typing, read, publish, ping)."""

    def __init__(self, faults: Faults | None = None) -> None:
        self.faults = faults or Faults()
        self.stats = Stats()
        self.rooms: dict[str, set[ServerConnection]] = defaultdict(set)
        self.seq: dict[str, int] = defaultdict(int)
        self.users: dict[str, set[ServerConnection]] = defaultdict(set)
        self.outs: dict[ServerConnection, _Out] = {}
        self.user_of: dict[ServerConnection, str] = {}
        self.first_send: float | None = None
        self.delivery_no = 0
        self.port = 0
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None

    # -- lifecycle (a thread with its own loop) ------------------------------------------------

    def start(self) -> TinyReferenceServer:
        ready = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(ready,), daemon=True)
        self._thread.start()
        if not ready.wait(10):
            raise RuntimeError("tiny server did not start")
        return self

    def stop(self) -> None:
        if self._loop is not None and self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        if self._thread is not None:
            self._thread.join(10)

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}"

    def _run(self, ready: threading.Event) -> None:
        asyncio.run(self._serve(ready))

    async def _serve(self, ready: threading.Event) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        async with serve(
            self._handler,
            "127.0.0.1",
            0,
            process_request=self._process_request,
            compression=None,
            max_queue=None,
            ping_interval=None,
        ) as server:
            self.port = server.sockets[0].getsockname()[1]
            ready.set()
            await self._stop.wait()

    def _process_request(self, connection, request):  # type: ignore[no-untyped-def]
        status = self.faults.upgrade_status
        if status is not None:
            return connection.respond(HTTPStatus(status), "refused by the tiny test server\n")
        return None

    # -- protocol --------------------------------------------------------------------------------

    async def _handler(self, ws: ServerConnection) -> None:
        out = _Out(ws, self.stats)
        self.outs[ws] = out
        try:
            async for raw in ws:
                frame = _dec.decode(raw)
                reply = self._on_frame(ws, frame)
                if reply is not None:
                    out.put(_enc.encode(reply))
                if reply is not None and reply.get("type") == "welcome" and self.faults.close_code:
                    await asyncio.sleep(0.01)
                    await ws.close(self.faults.close_code, "tiny server closes everyone")
                    return
        except Exception:
            pass
        finally:
            await out.close()
            for members in self.rooms.values():
                members.discard(ws)
            user = self.user_of.pop(ws, None)
            if user is not None:
                self.users[user].discard(ws)
            self.outs.pop(ws, None)

    def _on_frame(self, ws: ServerConnection, f: dict) -> dict | None:
        kind = f.get("type")
        rid = f.get("id")
        if kind == "hello":
            user = f.get("token") or "anon"
            self.user_of[ws] = user
            self.users[user].add(ws)
            return {
                "type": "welcome",
                "session": "s",
                "user": user,
                "server": "tiny",
                "heartbeat": {"interval_ms": 30000, "timeout_ms": 30000},
                "limits": {
                    "max_frame_bytes": 65536,
                    "max_body_chars": 4096,
                    "max_rooms": 100,
                    "max_history": 100,
                },
            }
        user = self.user_of.get(ws, "anon")
        if kind == "join":
            self.rooms[f["room"]].add(ws)
            return {"type": "joined", "id": rid, "room": f["room"], "seq": self.seq[f["room"]]}
        if kind in ("send", "dm"):
            if kind == "dm":
                room = dm_room(user, f["to"])
                targets = (self.users[f["to"]] | self.users[user]) - {ws}
            else:
                room = f["room"]
                targets = self.rooms[room] - {ws}
            self._note_send()
            self.seq[room] += 1
            seq = self.seq[room]
            message = {
                "type": "message",
                "room": room,
                "seq": seq,
                "from": user,
                "body": f["body"],
                "ts": int(time.time() * 1000),
                "cid": f.get("cid"),
            }
            self._fan_out(targets, message, (room, user), f["body"])
            return {
                "type": "ack",
                "id": rid,
                "cid": f.get("cid"),
                "room": room,
                "seq": seq,
                "ts": message["ts"],
            }
        if kind == "publish":
            room = f["room"]
            self._note_send()
            event = {
                "type": "event",
                "room": room,
                "event": f["event"],
                "data": f.get("data"),
                "from": user,
                "ts": int(time.time() * 1000),
            }
            self._fan_out(self.rooms[room] - {ws}, event, (room, user), f.get("data"))
            return {"type": "ack", "id": rid, "cid": f.get("cid"), "room": room, "ts": event["ts"]}
        if kind == "typing":
            notice = _enc.encode(
                {"type": "typing", "room": f["room"], "user": user, "state": f["state"]}
            )
            for other in self.rooms[f["room"]] - {ws}:
                self.outs[other].put(notice)
            return None
        if kind == "read":
            receipt = _enc.encode(
                {"type": "receipt", "room": f["room"], "user": user, "seq": f["seq"]}
            )
            for other in self.rooms[f["room"]]:
                self.outs[other].put(receipt)
            return None
        if kind == "ping":
            return {"type": "pong", "id": rid, "ts": f.get("ts")}
        return {"type": "error", "id": rid, "code": "unknown_type", "message": "tiny server"}

    def _note_send(self) -> None:
        self.stats.sends += 1
        if self.first_send is None:
            self.first_send = time.monotonic()

    def _due(self) -> float:
        now = time.monotonic()
        due = now + self.faults.delay_ms / 1000.0
        f = self.faults
        if f.stall_after_s is not None and self.first_send is not None:
            start = self.first_send + f.stall_after_s
            end = start + f.stall_ms / 1000.0
            if start <= now < end:
                due = max(due, end)
        return due

    def _fan_out(self, targets, message: dict, stream: tuple[str, str], text) -> None:  # type: ignore[no-untyped-def]
        payload = _enc.encode(message)
        found = parse_marker(text) if isinstance(text, str) else None
        sched = found[3] if found else None
        f = self.faults
        due = self._due()
        for target in targets:
            out = self.outs.get(target)
            if out is None:
                continue
            self.delivery_no += 1
            n = self.delivery_no
            self.stats.deliveries += 1
            held = out.held.pop(stream, None)
            if f.drop_every and n % f.drop_every == 0:
                self.stats.dropped += 1
                if held is not None:  # the next one is gone: the held one goes now, in order
                    out.put(held[0], due, held[1])
                continue
            if f.swap_every and held is None and n % f.swap_every == 0:
                out.held[stream] = (payload, sched)
                self._loop.call_later(1.0, self._flush_held, out, stream)  # type: ignore[union-attr]
                continue
            out.put(payload, due, sched)
            if f.dup_every and n % f.dup_every == 0:
                self.stats.duplicated += 1
                out.put(payload, due, None)
            if held is not None:
                self.stats.swapped += 1
                out.put(held[0], due, held[1])

    def _flush_held(self, out: _Out, stream: tuple[str, str]) -> None:
        held = out.held.pop(stream, None)
        if held is not None:
            out.put(held[0], self._due(), held[1])


class TinyEchoServer(TinyReferenceServer):
    """Echoes every frame back to its sender (optionally after ``faults.delay_ms``)."""

    async def _handler(self, ws: ServerConnection) -> None:
        out = _Out(ws, self.stats)
        try:
            async for raw in ws:
                text = raw if isinstance(raw, str) else raw.decode()
                found = parse_marker(text)
                self._note_send()
                out.put(text.encode(), self._due(), found[3] if found else None)
        except Exception:
            pass
        finally:
            await out.close()
