"""A Server-Sent Events pub/sub server on sse-starlette (PyPI) and uvicorn, for the SSE adapter.

    python -m tests.thirdparty.sse_server --port 0 [--ping S]

sse-starlette's ``EventSourceResponse`` writes the event stream (``id:``/``event:``/
``data:`` lines, ``: ping`` comments every ``--ping`` seconds); this file only adds the
pub/sub a chat needs, the shape of most SSE servers:

- ``GET /events/{room}``: the room's stream; every message is an event ``message`` whose
  ``id`` is its per-room seq and whose data is the published body, as posted; with a
  ``Last-Event-ID`` header the messages after that id are replayed first (then live);
- ``POST /publish/{room}``: the body is stored with the room's next seq and sent to every
  stream of the room (the publisher's too); the answer is ``{"id": seq}``. A POST whose
  ``Idempotency-Key`` was seen before is a retry: answered with its seq, not stored again;
- ``GET /json/{room}``: a 200 that is not an event stream; ``GET /junk/{room}``: an event
  stream whose first line never ends (both for the malformed-stream tests);
- ``GET /stats``: what the server did (``publishes``, ``retries``, ``deliveries`` sent live,
  ``resumed`` streams, ``replayed`` events, ``streams`` opened).
"""

from __future__ import annotations

import argparse
import asyncio
import socket
from collections import Counter
from typing import Any

import uvicorn
from sse_starlette.sse import EventSourceResponse, ServerSentEvent
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route


class Room:
    def __init__(self) -> None:
        self.history: list[str] = []  # seq n is history[n - 1]
        self.subscribers: set[asyncio.Queue[tuple[int, str]]] = set()
        self.keys: dict[str, int] = {}  # Idempotency-Key -> the seq it was stored as


def build(ping: float) -> Starlette:
    rooms: dict[str, Room] = {}
    stats: Counter[str] = Counter()

    def room_of(request: Request) -> Room:
        return rooms.setdefault(request.path_params["room"], Room())

    async def events(request: Request) -> Response:
        room = room_of(request)
        queue: asyncio.Queue[tuple[int, str]] = asyncio.Queue()
        room.subscribers.add(queue)  # before the replay: nothing falls between the two
        stats["streams"] += 1
        last = request.headers.get("last-event-id")
        after = int(last) if last and last.isdigit() else None
        if after is not None:
            stats["resumed"] += 1

        async def stream() -> Any:
            try:
                top = 0
                if after is not None:
                    backlog = list(enumerate(room.history, 1))[after:]
                    for seq, body in backlog:
                        stats["replayed"] += 1
                        top = seq
                        yield ServerSentEvent(data=body, id=str(seq), event="message")
                while True:
                    seq, body = await queue.get()
                    if seq <= top:
                        continue  # already in the replay
                    stats["deliveries"] += 1
                    yield ServerSentEvent(data=body, id=str(seq), event="message")
            finally:
                room.subscribers.discard(queue)

        return EventSourceResponse(stream(), ping=ping or None)

    async def publish(request: Request) -> Response:
        room = room_of(request)
        body = (await request.body()).decode()
        key = request.headers.get("idempotency-key")
        if key is not None and key in room.keys:
            stats["retries"] += 1
            return JSONResponse({"id": room.keys[key]})  # a retry: stored already
        room.history.append(body)
        seq = len(room.history)
        if key is not None:
            room.keys[key] = seq
        stats["publishes"] += 1
        for queue in room.subscribers:
            queue.put_nowait((seq, body))
        return JSONResponse({"id": seq})

    async def not_a_stream(request: Request) -> Response:
        return JSONResponse({"room": request.path_params["room"]})

    async def junk(request: Request) -> Response:
        async def endless() -> Any:
            yield b"data: "
            for _ in range(300):
                yield b"x" * 4096  # no line end, ever
                await asyncio.sleep(0)

        return StreamingResponse(endless(), media_type="text/event-stream")

    async def get_stats(request: Request) -> Response:
        return JSONResponse(dict(stats))

    return Starlette(
        routes=[
            Route("/events/{room}", events),
            Route("/publish/{room}", publish, methods=["POST"]),
            Route("/json/{room}", not_a_stream),
            Route("/junk/{room}", junk),
            Route("/stats", get_stats),
        ]
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--ping", type=float, default=15.0, help="seconds between : ping comments")
    args = parser.parse_args()
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", args.port))
    sock.listen(4096)  # before the line below: a client may connect at once
    config = uvicorn.Config(
        build(args.ping),
        log_level="warning",
        timeout_keep_alive=60,
        timeout_graceful_shutdown=1,
        backlog=4096,
    )
    server = uvicorn.Server(config)
    print(f"listening on 127.0.0.1:{sock.getsockname()[1]}", flush=True)
    server.run(sockets=[sock])


if __name__ == "__main__":
    main()
