"""Adapter for Server-Sent Events: EventSource streams in, HTTP POST out.

SSE is not a WebSocket protocol: a subscriber opens a long-lived ``GET`` whose response
is a ``text/event-stream`` (https://html.spec.whatwg.org/multipage/server-sent-events.html),
and publishing is a plain HTTP request. This adapter speaks HTTP/1.1 itself, sans-IO
(``h11`` parses the responses), so the drivers only move bytes: it declares
``transport = "http"`` and each driver then holds two plain TCP connections per client
(``Adapter.transport``): the *stream* lane carries the event stream's ``GET`` and its
endless response, the *request* lane (keep-alive, pipelined) the ``POST`` of every send.

Its defaults follow the usual pub/sub shape of an SSE server (sse-starlette, Mercure,
Express examples):

- a room is a stream: ``GET /events/<room>`` with ``Accept: text/event-stream``; the
  ``200`` with a ``text/event-stream`` body is the join's ``Ready``; any other answer
  refuses the join (``http_404``, ``not_event_stream``), an HTTP or stream that cannot
  be parsed is ``bad_http`` / ``bad_event_stream``;
- send: ``POST /publish/<room>`` with the marker as the body (``text/plain``; a table
  template posts JSON) and ``Idempotency-Key: <user>.<request id>``, the same on a retry
  after a reconnect (a server that honours it does not publish a retried POST twice; one
  that ignores it shows the retry as a duplicate); a ``2xx`` answer is the ``Ack``, any
  other a ``Rejected`` (``http_<status>``);
- a delivery is an event whose ``data`` holds a marker (the event's ``id`` is the
  message's seq when it is an integer); the sender's own copy is ``own_message``;
- **resume** is SSE's own: a reconnecting client sends ``Last-Event-ID`` (the last id it
  saw, or just before the oldest it is missing) and the server replays what came after;
  the stream's ``200`` then counts ``resumed`` in ``events_by_type``, the replayed events
  are deduplicated by id, and what never came back is counted lost;
- comments (``: ping``, the usual keep-alive) are counted as ``comment``; ``retry:`` is
  kept (``retry_ms``) but the run's own reconnect policy decides when to come back.

The stream parser (``EventStreamParser``) is the WHATWG algorithm: CRLF, LF or CR line
ends, split anywhere across reads; multi-line ``data``; ``id`` (kept as the last event
id, even by an event with no data); ``retry``; comments; a leading BOM.
"""

from __future__ import annotations

import codecs
import copy
from collections import deque
from collections.abc import Mapping
from typing import Any, ClassVar
from urllib.parse import quote, urlsplit

import h11
import msgspec
from msgspec import Struct

from loadtest.adapters.base import (
    Ack,
    Adapter,
    AdapterError,
    Delivery,
    Event,
    Feature,
    Notice,
    Ready,
    Rejected,
)
from loadtest.adapters.payload import PayloadTemplate
from loadtest.adapters.rules import convert_options
from loadtest.adapters.templates import ALLOWED, Template
from rtbench.bounded import BoundedDict

MAX_LINE = 1 << 20
"""Longest line (bytes) of an event stream before it is taken as malformed."""
MAX_REQS = 65_536
"""Sends remembered until answered (their request ids, by payload)."""
_LINE_ENDS = ("\r\n", "\n", "\r")


class StreamError(ValueError):
    """An event stream that cannot be one (a line past ``MAX_LINE``)."""


class SSEvent(Struct, gc=False):
    """One dispatched event: its type, data, and the stream's last event id then."""

    event: str = "message"
    data: str = ""
    id: str | None = None


class EventStreamParser:
    """Bytes of a ``text/event-stream`` in, dispatched events out (sans-IO, incremental)."""

    __slots__ = (
        "_buf",
        "_cr",
        "_data",
        "_decoder",
        "_event",
        "_started",
        "comments",
        "last_id",
        "retry_ms",
    )

    def __init__(self) -> None:
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._buf = ""
        self._cr = False  # the last chunk ended in CR: an LF first thing is its pair
        self._started = False  # past the optional BOM
        self._data: list[str] = []
        self._event = ""
        self.last_id: str | None = None
        self.retry_ms: int | None = None
        self.comments = 0

    def feed(self, chunk: bytes) -> list[SSEvent]:
        """The events completed by ``chunk``; raises StreamError on a runaway line."""
        text = self._decoder.decode(chunk)
        if not self._started and text:
            self._started = True
            if text[0] == "\ufeff":
                text = text[1:]
        if self._cr and text.startswith("\n"):
            text = text[1:]
        self._cr = False
        buf = self._buf + text
        events: list[SSEvent] = []
        start = 0
        end = len(buf)
        while start < end:
            lf = buf.find("\n", start)
            cr = buf.find("\r", start, lf if lf >= 0 else end)
            if cr >= 0:
                line, start = buf[start:cr], cr + 1
                if start < end and buf[start] == "\n":
                    start += 1
                elif start == end:
                    self._cr = True
            elif lf >= 0:
                line, start = buf[start:lf], lf + 1
            else:
                break
            event = self._line(line)
            if event is not None:
                events.append(event)
        self._buf = buf[start:]
        if len(self._buf) > MAX_LINE:
            raise StreamError(f"a line of more than {MAX_LINE} bytes (no line end)")
        return events

    def _line(self, line: str) -> SSEvent | None:
        if not line:  # dispatch
            data, event = self._data, self._event
            self._data, self._event = [], ""
            if not data:
                return None
            return SSEvent(event or "message", "\n".join(data), self.last_id)
        if line[0] == ":":
            self.comments += 1
            return None
        name, colon, value = line.partition(":")
        if colon and value.startswith(" "):
            value = value[1:]
        if name == "data":
            self._data.append(value)
        elif name == "event":
            self._event = value
        elif name == "id":
            if "\0" not in value:
                self.last_id = value
        elif name == "retry" and value.isascii() and value.isdigit():
            self.retry_ms = int(value)
        return None


# -- the adapter ----------------------------------------------------------------------------


class SSEOptions(Struct, forbid_unknown_fields=True, kw_only=True):
    """``protocol_options`` of ``--protocol sse`` (docs/ADAPTERS.md explains each)."""

    stream: str = "/events/{room}"  # GET: a room's event stream ({room}, {user}, {token})
    publish: str = "/publish/{room}"  # POST: a send to a room ({room})
    data: Any = "{body}"  # the POST body: a string is sent as text, a table as JSON
    event: str = ""  # the event type of a delivery ("": any type)
    headers: dict[str, str] = {}  # extra request headers ({user}, {token})
    idempotency_key: str = "Idempotency-Key"  # header naming each POST ("": none)


def _path_template(value: str, allowed: frozenset[str], where: str) -> Template:
    if not value.startswith("/"):
        raise AdapterError(f"{where}: {value!r} must start with /")
    if "{room}" not in value:
        raise AdapterError(f"{where}: {value!r} must hold {{room}}")
    return Template(value, allowed, where)


class SSEAdapter(Adapter):
    """Server-Sent Events: an event stream per room, POSTs to publish, Last-Event-ID resume."""

    name = "sse"
    features = frozenset({Feature.ROOMS, Feature.PUBLISH, Feature.ACK, Feature.RESUME})
    transport: ClassVar[str] = "http"
    schemes: ClassVar[Mapping[str, str]] = {"http": "http", "https": "https"}

    def __init__(self, options: Mapping[str, Any] | None = None) -> None:
        super().__init__(options)
        where = "protocol_options"
        o: SSEOptions = convert_options(options, SSEOptions, where)
        self._stream = _path_template(
            o.stream, frozenset({"room", "user", "token"}), f"{where}.stream"
        )
        self._publish = _path_template(o.publish, frozenset({"room"}), f"{where}.publish")
        self._data = PayloadTemplate(o.data, f"{where}.data")
        self._json = not isinstance(o.data, str)
        self._event = o.event
        self._idempotency = o.idempotency_key
        self._headers = [
            (k, Template(v, ALLOWED["hello"], f"{where}.headers.{k}")) for k, v in o.headers.items()
        ]
        self._host = "localhost"
        self._base = ""  # the target URL's path, before every request path
        self._user = ""
        self._token: str | None = None
        self._fresh_lanes()

    def _fresh_lanes(self) -> None:
        self._room: str | None = None  # the room of the stream (one per connection)
        self._resumed = False
        self._h11 = h11.Connection(h11.CLIENT)
        self._parser = EventStreamParser()
        self._broken = False  # the stream could not be parsed: ignore the rest
        self._reqs: BoundedDict[bytes, int] = BoundedDict(MAX_REQS)  # POST payload -> its id
        self._replies = h11.Connection(h11.CLIENT)
        self._inflight: deque[bytes] = deque()  # POSTs written, oldest first
        self._reply: tuple[int, bytearray] | None = None  # (status, body) being read
        self.last_ids: dict[str, str] = {}  # room -> the last event id its stream saw

    def connection(self) -> SSEAdapter:
        fresh = copy.copy(self)
        fresh._fresh_lanes()
        return fresh

    def bind(self, url: str) -> None:
        parts = urlsplit(url)
        self._host = parts.netloc.rpartition("@")[2] or "localhost"
        self._base = parts.path.rstrip("/")

    # -- requests ---------------------------------------------------------------------------

    def _head(self, extra: list[tuple[str, str]]) -> list[tuple[str, str]]:
        values = {"user": self._user, "token": self._token or self._user}
        return [
            ("Host", self._host),
            *extra,
            *((k, str(t.render(values))) for k, t in self._headers),
        ]

    def _open_stream(self, room: str, last_id: str | None) -> bytes:
        if self._room is not None and self._room != room:
            raise AdapterError(f"an SSE connection follows one room ({self._room}, not {room})")
        self._room = room
        self._h11 = h11.Connection(h11.CLIENT)
        self._parser = EventStreamParser()
        self._broken = False
        self._resumed = last_id is not None
        token = self._token or self._user
        values = {"room": room, "user": self._user, "token": token}
        values = {k: quote(v, safe="") for k, v in values.items()}
        path = self._base + self._stream.render(values)
        extra = [("Accept", "text/event-stream"), ("Cache-Control", "no-cache")]
        if last_id is not None:
            extra.append(("Last-Event-ID", last_id))
        request = h11.Request(method="GET", target=path, headers=self._head(extra))
        return self._h11.send(request) or b""

    def open(self, user: str, token: str | None) -> list[bytes]:
        self._user, self._token = user, token
        return []  # the stream opens with the join (its room is in the URL)

    def join(self, room: str, req_id: int) -> bytes:
        return self._open_stream(room, None)

    def resume(self, user: str, token: str | None, last_seq: Mapping[str, int]) -> list[bytes]:
        self._user, self._token = user, token
        frames = []
        for room, seq in last_seq.items():
            last = str(seq) if seq > 0 else self.last_ids.get(room)
            frames.append(self._open_stream(room, last))
        return frames

    def send(self, room: str, body: str, req_id: int) -> bytes:
        data = self._data.render(body, req_id, room=room)
        if self._json:
            content, kind = msgspec.json.encode(data), "application/json"
        else:
            content, kind = str(data).encode(), "text/plain; charset=utf-8"
        path = self._base + self._publish.render({"room": quote(room, safe="")})
        extra = [(self._idempotency, f"{self._user}.{req_id}")] if self._idempotency else []
        head = "".join(f"{k}: {v}\r\n" for k, v in self._head(extra))
        payload = (
            f"POST {path} HTTP/1.1\r\n{head}Content-Type: {kind}\r\n"
            f"Content-Length: {len(content)}\r\n\r\n"
        ).encode() + content
        self._reqs.put(payload, req_id)
        return payload

    def publish(self, room: str, event: str, data: str, req_id: int) -> bytes:
        return self.send(room, data, req_id)

    def opens_stream(self, payload: bytes) -> bool:
        if payload.startswith(b"GET "):
            return True
        self._inflight.append(payload)
        return False

    # -- the event stream -------------------------------------------------------------------

    def parse(self, payload: bytes) -> Event | list[Event] | None:
        if self._broken:
            return None
        conn = self._h11
        events: list[Event] = []
        try:
            conn.receive_data(payload)
            while True:
                got = conn.next_event()
                if got is h11.NEED_DATA or got is h11.PAUSED:
                    break
                if type(got) is h11.Data:
                    for one in self._parser.feed(bytes(got.data)):
                        events.append(self._event_of(one))
                elif type(got) is h11.Response:
                    events.extend(self._answered(got))
                    if self._broken:
                        break
                elif type(got) is h11.EndOfMessage or type(got) is h11.ConnectionClosed:
                    events.append(Notice("stream_end", self._room))
                    break
        except h11.RemoteProtocolError as exc:
            self._broken = True
            events.append(Rejected(None, "bad_http", f"event stream of {self._room}: {exc}"))
        except StreamError as exc:
            self._broken = True
            events.append(Rejected(None, "bad_event_stream", f"{self._room}: {exc}"))
        return events

    def _answered(self, response: h11.Response) -> list[Event]:
        room = self._room
        if response.status_code != 200:
            self._broken = True
            reason = response.reason.decode(errors="replace")
            return [Rejected(None, f"http_{response.status_code}", f"GET stream {room}: {reason}")]
        kind = dict(response.headers).get(b"content-type", b"").decode(errors="replace")
        if not kind.lower().startswith("text/event-stream"):
            self._broken = True
            what = kind or "no Content-Type"
            return [Rejected(None, "not_event_stream", f"GET stream {room}: {what}")]
        if self._resumed:
            return [Notice("resumed", room), Ready(room, 0)]
        return [Ready(room, 0)]

    def _event_of(self, one: SSEvent) -> Event:
        room = self._room
        if one.id is not None and room is not None:
            self.last_ids[room] = one.id
        seq = int(one.id) if one.id and one.id.isascii() and one.id.isdigit() else None
        if self._event and one.event != self._event:
            return Notice(one.event, room, seq)
        if self._json:
            try:
                data: Any = msgspec.json.decode(one.data)
            except msgspec.DecodeError:
                return Notice("unparsed", room, seq)
        else:
            data = one.data
        found = self._data.marker(data)
        if found is None:
            return Notice(one.event, room, seq)
        return Delivery(*found, room=room, seq=seq)

    @property
    def comments(self) -> int:
        return self._parser.comments

    @property
    def retry_ms(self) -> int | None:
        return self._parser.retry_ms

    # -- the request lane -------------------------------------------------------------------

    def parse_reply(self, data: bytes) -> Event | list[Event] | None:
        conn = self._replies
        events: list[Event] = []
        try:
            conn.receive_data(data)
            while True:
                if conn.our_state is h11.IDLE:  # a response is read against its request
                    conn.send(h11.Request(method="POST", target="/", headers=[("Host", "x")]))
                    conn.send(h11.EndOfMessage())
                got = conn.next_event()
                if got is h11.NEED_DATA or got is h11.PAUSED:
                    break
                if type(got) is h11.Response:
                    self._reply = (got.status_code, bytearray())
                elif type(got) is h11.Data and self._reply is not None:
                    if len(self._reply[1]) < 200:
                        self._reply[1].extend(got.data)
                elif type(got) is h11.EndOfMessage:
                    events.append(self._settled())
                    if conn.their_state is not h11.DONE:  # "Connection: close": it ends
                        break
                    conn.start_next_cycle()
                elif type(got) is h11.ConnectionClosed:
                    break
        except h11.ProtocolError as exc:
            self.reply_lane_closed()
            events.append(Rejected(None, "bad_http", f"POST answer: {exc}"))
        return events

    def _settled(self) -> Event:
        payload = self._inflight.popleft() if self._inflight else b""
        req = self._reqs.pop(payload, None)
        status, body = self._reply or (0, bytearray())
        self._reply = None
        if 200 <= status < 300:
            return Ack(req)
        return Rejected(req, f"http_{status}", body.decode(errors="replace")[:200].strip())

    def reply_lane_closed(self) -> None:
        self._replies = h11.Connection(h11.CLIENT)
        self._inflight.clear()
        self._reply = None
