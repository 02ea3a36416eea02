"""Messages between the coordinator and its worker processes, over the worker's stdin/stdout.

Length-prefixed msgpack (msgspec), one tagged struct per message. The control messages
(``Start``, ``Go``, ``Finish``; ``Booted``, ``Fatal``) are this engine's own; what a
worker reports (``Ready``, ``Tick``, ``Counts``, ``SendDone``, ``Final``) is every
driver's format (``loadtest.run.report``), named here too so the engine speaks one
vocabulary.
"""

from __future__ import annotations

import asyncio
import struct

import msgspec
from msgspec import Struct

from loadtest.run.report import Counts, Final, Ready, SendDone, Tick
from loadtest.scenarios import Scenario

__all__ = [
    "Booted",
    "Counts",
    "Fatal",
    "Final",
    "Finish",
    "FromWorker",
    "Go",
    "Ready",
    "SendDone",
    "Start",
    "Tick",
    "ToWorker",
    "frame",
    "read_message",
]

_LEN = struct.Struct("!I")


class Start(Struct, tag=True):
    scenario: Scenario
    worker: int
    tag: str
    url: str
    t0_ns: int  # run start on the machine-wide monotonic clock
    ontime_ms: float | None = None  # fault runs: deliveries this fast count in the message flow
    live: bool = False  # the run's metrics are exported live: ticks carry every histogram


class Go(Struct, tag=True):
    start_ns: int  # first scheduled send / start of the hold
    live: bytes  # bitmap of connections that are up and joined, over the whole run


class Finish(Struct, tag=True):
    """Stop sending (if still), close every connection, send Final and exit."""


class Booted(Struct, tag=True):
    pid: int


class Fatal(Struct, tag=True):
    message: str


ToWorker = Start | Go | Finish
FromWorker = Booted | Tick | Counts | Ready | SendDone | Final | Fatal

_enc = msgspec.msgpack.Encoder()
_to_worker = msgspec.msgpack.Decoder(ToWorker)
_from_worker = msgspec.msgpack.Decoder(FromWorker)


def frame(message: Struct) -> bytes:
    body = _enc.encode(message)
    return _LEN.pack(len(body)) + body


async def read_message(reader: asyncio.StreamReader, to_worker: bool) -> Struct | None:
    """The next message, or None at end of stream."""
    try:
        head = await reader.readexactly(_LEN.size)
        body = await reader.readexactly(_LEN.unpack(head)[0])
    except asyncio.IncompleteReadError:
        return None
    return (_to_worker if to_worker else _from_worker).decode(body)
