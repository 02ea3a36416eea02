"""A real Socket.IO v4 chat server for the tests: python-socketio on aiohttp, a subprocess.

    python -m tests.thirdparty.sio_server --port 0 [--namespace /chat] [--token T]
        [--faults '{"drop_every": 7}'] [--echo-sender] [--plain] [--ping-interval S]

It speaks the Socket.IO chat example the adapter defaults to: ``join`` (room name) puts
the client in a room, ``chat message`` ({room, body}) is broadcast to the room's other
members, and the handlers' return values ack when the client asks for an ack (that is
what python-socketio does). ``ping`` acks with its argument (a round trip). With
``--token`` the namespace refuses a connect whose auth payload lacks ``{"token": T}``.

Deliveries go out one recipient at a time through ``tests.thirdparty.faults.FanOut``, so
faults are applied and counted exactly; ``--plain`` instead broadcasts with
``sio.emit(..., room=..., skip_sid=...)``, as the chat example does (no faults then).
``GET /stats`` returns the counts, ``GET /faults?drop_every=0&delay_ms=5`` changes the
faults. The first stdout line is ``listening on 127.0.0.1:PORT``; SIGTERM stops it.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
from collections import defaultdict
from typing import Any

import socketio
from aiohttp import web

from tests.thirdparty.faults import FanOut, Faults, Outbox, Stats


def build_app(args: argparse.Namespace) -> tuple[web.Application, Stats]:
    ns = args.namespace
    faults = Faults(**json.loads(args.faults))
    stats = Stats()
    fan = FanOut(faults, stats)
    sio = socketio.AsyncServer(
        async_mode="aiohttp",
        ping_interval=args.ping_interval,
        ping_timeout=args.ping_timeout,
        logger=False,
        engineio_logger=False,
    )
    rooms: dict[str, set[str]] = defaultdict(set)
    outboxes: dict[str, Outbox] = {}

    async def connect(sid: str, environ: dict, auth: Any = None) -> None:
        if args.token and (not isinstance(auth, dict) or auth.get("token") != args.token):
            raise socketio.exceptions.ConnectionRefusedError("bad token")

        async def write(item: tuple[str, Any]) -> None:
            await sio.emit(item[0], item[1], to=sid, namespace=ns)

        outboxes[sid] = Outbox(write, stats)

    async def disconnect(sid: str, *reason: Any) -> None:
        for members in rooms.values():
            members.discard(sid)
        out = outboxes.pop(sid, None)
        if out is not None:
            await out.close()

    async def join(sid: str, room: str) -> str:
        rooms[room].add(sid)
        await sio.enter_room(sid, room, namespace=ns)
        return room

    async def chat_message(sid: str, data: dict) -> dict:
        room = data.get("room")
        members = rooms.get(room, set())
        if args.plain:
            stats.sends += 1
            stats.deliveries += len(members - {sid})
            stats.own += int(args.echo_sender and sid in members)
            skip = None if args.echo_sender else sid
            await sio.emit("chat message", data, room=room, skip_sid=skip, namespace=ns)
        else:
            targets = [outboxes[s] for s in members if s != sid and s in outboxes]
            fan.deliver(targets, ("chat message", data), (room, sid), data.get("body"))
            if args.echo_sender and sid in members:
                fan.echo(outboxes[sid], ("chat message", data))
        return {"ok": True}

    async def ping(sid: str, value: Any) -> Any:
        return value

    for event, handler in (
        ("connect", connect),
        ("disconnect", disconnect),
        ("join", join),
        ("chat message", chat_message),
        ("ping", ping),
    ):
        sio.on(event, handler, namespace=ns)

    app = web.Application()
    sio.attach(app)

    async def get_stats(request: web.Request) -> web.Response:
        return web.json_response(stats.as_dict())

    async def set_faults(request: web.Request) -> web.Response:
        faults.update(dict(request.query))
        return web.json_response(stats.as_dict())

    app.router.add_get("/stats", get_stats)
    app.router.add_get("/faults", set_faults)
    return app, stats


async def main(args: argparse.Namespace) -> None:
    app, _ = build_app(args)
    runner = web.AppRunner(app, handle_signals=False)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", args.port)
    await site.start()
    port = runner.addresses[0][1]
    print(f"listening on 127.0.0.1:{port}", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await runner.cleanup()


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--namespace", default="/")
    parser.add_argument("--token", default="")
    parser.add_argument("--faults", default="{}")
    parser.add_argument("--echo-sender", action="store_true")
    parser.add_argument("--plain", action="store_true")
    parser.add_argument("--ping-interval", type=float, default=25.0)
    parser.add_argument("--ping-timeout", type=float, default=20.0)
    return parser.parse_args(argv)


if __name__ == "__main__":
    asyncio.run(main(parse_args()))
