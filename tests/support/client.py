"""A small protocol client for tests: the websockets library plus frame bookkeeping.

Every frame received is kept in order; ``wait`` returns the next unconsumed frame
that matches, so a test can wait for a reply while unrelated frames (presence,
typing) pile up without being lost. Waits always have a deadline.
"""

from __future__ import annotations

import asyncio
import itertools
import json
from collections.abc import Callable
from typing import Any

import websockets
from websockets.asyncio.client import ClientConnection

Frame = dict[str, Any]
DEFAULT_TIMEOUT = 10.0


class Client:
    def __init__(self, ws: ClientConnection) -> None:
        self.ws = ws
        self.frames: list[Frame] = []  # everything received, in order
        self._consumed: set[int] = set()
        self._changed = asyncio.Condition()
        self._ids = itertools.count(1)
        self.user: str | None = None
        self.welcome: Frame | None = None
        self._reader = asyncio.get_running_loop().create_task(self._read())

    @classmethod
    async def connect(
        cls,
        url: str,
        token: str | None = None,
        *,
        hello: bool = True,
        resume: dict[str, int] | None = None,
        **ws_options: Any,
    ) -> Client:
        """Connect; with ``hello`` (default) send hello with ``token`` and wait for welcome."""
        ws_options.setdefault("open_timeout", DEFAULT_TIMEOUT)
        ws_options.setdefault("ping_interval", None)
        ws_options.setdefault("max_size", 2**24)
        ws = await websockets.connect(url, **ws_options)
        client = cls(ws)
        if hello:
            frame: Frame = {"type": "hello"}
            if token is not None:
                frame["token"] = token
            if resume is not None:
                frame["resume"] = resume
            client.welcome = await client.request(frame)
            assert client.welcome["type"] == "welcome", client.welcome
            client.user = client.welcome["user"]
        return client

    async def _read(self) -> None:
        try:
            async for raw in self.ws:
                frame = json.loads(raw)
                async with self._changed:
                    self.frames.append(frame)
                    self._changed.notify_all()
        except websockets.ConnectionClosed:
            pass
        finally:
            async with self._changed:
                self._changed.notify_all()

    # ---- sending
    async def send(self, frame: Frame) -> None:
        await self.ws.send(json.dumps(frame))

    async def send_raw(self, data: str | bytes) -> None:
        await self.ws.send(data)

    def next_id(self) -> int:
        return next(self._ids)

    async def request(self, frame: Frame, timeout: float = DEFAULT_TIMEOUT) -> Frame:  # noqa: ASYNC109 - a test helper: every wait has a deadline
        """Send ``frame`` with a fresh id and return the reply (or error) carrying that id."""
        frame = {**frame, "id": frame.get("id", self.next_id())}
        await self.send(frame)
        return await self.wait(lambda f: f.get("id") == frame["id"], timeout)

    # ---- receiving
    async def wait(self, match: Callable[[Frame], bool], timeout: float = DEFAULT_TIMEOUT) -> Frame:  # noqa: ASYNC109
        """The next unconsumed frame for which ``match`` is true."""
        async with asyncio.timeout(timeout), self._changed:
            while True:
                for index, frame in enumerate(self.frames):
                    if index not in self._consumed and match(frame):
                        self._consumed.add(index)
                        return frame
                if self._reader.done():
                    raise ConnectionError(f"connection closed: {self.close_code}")
                await self._changed.wait()

    async def wait_type(self, kind: str, timeout: float = DEFAULT_TIMEOUT, **fields: Any) -> Frame:  # noqa: ASYNC109
        """The next unconsumed frame of ``type`` kind whose fields equal ``fields``."""
        return await self.wait(
            lambda f: f.get("type") == kind and all(f.get(k) == v for k, v in fields.items()),
            timeout,
        )

    def received(self, kind: str, **fields: Any) -> list[Frame]:
        """Every frame of ``type`` kind received so far (consumed or not)."""
        return [
            f
            for f in self.frames
            if f.get("type") == kind and all(f.get(k) == v for k, v in fields.items())
        ]

    async def closed(self, timeout: float = DEFAULT_TIMEOUT) -> int | None:  # noqa: ASYNC109
        """Wait for the server to close the connection; return the close code."""
        async with asyncio.timeout(timeout):
            await asyncio.shield(self._reader)
        return self.close_code

    @property
    def close_code(self) -> int | None:
        rcvd = self.ws.protocol.close_rcvd
        return rcvd.code if rcvd is not None else None

    # ---- protocol helpers
    async def join(self, room: str, **fields: Any) -> Frame:
        reply = await self.request({"type": "join", "room": room, **fields})
        assert reply["type"] == "joined", reply
        return reply

    async def send_message(self, room: str, body: str, cid: str, **fields: Any) -> Frame:
        return await self.request(
            {"type": "send", "room": room, "body": body, "cid": cid, **fields}
        )

    async def close(self) -> None:
        await self.ws.close()
        self._reader.cancel()
        await asyncio.gather(self._reader, return_exceptions=True)

    async def __aenter__(self) -> Client:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()
