"""Messages between the coordinator and its worker processes, over the worker's stdin/stdout.

Length-prefixed msgpack (msgspec), one tagged struct per message. Counters travel as
cumulative totals so a lost or late tick never skews a sum; histograms travel in HDR's
own compressed form so the coordinator merges them exactly.
"""

from __future__ import annotations

import asyncio
import struct

import msgspec
from msgspec import Struct

from loadtest.client.reconnect import Recovery
from loadtest.scenarios import Scenario

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


class Tick(Struct, tag=True):
    second: int  # seconds since t0
    counters: dict[str, int]  # cumulative
    open_now: int
    delivery_hdr: str | None  # deliveries received in this second (encoded HDR, us)
    cpu_percent: float
    loop_lag_ms: float
    rss_bytes: int
    # live export only (Start.live): the other histograms, cumulative, and the losses
    # that ended since the last tick (loadtest.export)
    histograms: dict[str, str] = {}
    recoveries: list[Recovery] = []


class Counts(Struct, tag=True):
    """Cumulative counters between ticks (sent often while draining)."""

    counters: dict[str, int]


class Ready(Struct, tag=True):
    live: bytes  # bitmap of this worker's connections that are up and joined
    counters: dict[str, int]


class SendDone(Struct, tag=True):
    held: int  # connections of this worker still open when sending ended
    counters: dict[str, int]


class Final(Struct, tag=True):
    counters: dict[str, int]
    histograms: dict[str, str]  # name -> encoded HDR (us)
    failures_by_cause: dict[str, int]
    closes_by_code: dict[str, int]
    errors_by_code: dict[str, int]
    events_by_type: dict[str, int]
    sent_by_second: dict[int, int]  # by scheduled send second (since t0)
    expected_by_second: dict[int, int]
    delivered_by_second: dict[int, int]  # unique deliveries, by their scheduled send second
    held: int
    answering: int  # connect: connections that answered the last heartbeat probe
    cpu_samples: list[float]  # per second of the measured phase
    lag_samples: list[float]
    rss_max: int
    notes: list[str]
    recoveries: list[Recovery] = []  # every connection loss and its recovery (fault runs)
    ontime_by_ds: dict[int, int] = {}  # on-time deliveries by receive decisecond since t0


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
