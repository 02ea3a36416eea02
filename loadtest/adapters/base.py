"""The adapter interface: what the engine needs to know of a server's wire protocol.

An adapter is sans-IO: it turns intentions (say hello, join a room, send a message) into
frame payloads, and frame payloads into a handful of small typed events. It never touches
a socket, so one adapter serves the asyncio engine, the monitor and the Locust users.

Measurement data travels inside the message text as a *marker*: the sender's index, the
stream (room or DM pair) index, a per-(sender, stream) counter and the scheduled send time
on the machine's monotonic clock. Any server that relays the text unchanged can therefore
be measured exactly, whatever its own ids and timestamps look like.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping
from typing import Any, ClassVar
from urllib.parse import urlsplit

from msgspec import Struct

MARKER_PREFIX = "rtb1."
_MARKER_PREFIX_B = MARKER_PREFIX.encode()
_PAD = "x" * 65_536


class Feature:
    """Capabilities an adapter declares; a scenario that needs a missing one is refused."""

    ROOMS = "rooms"  # join a room; a send reaches every other member
    DM = "dm"  # direct messages to one user
    TYPING = "typing"  # typing indicators
    RECEIPTS = "receipts"  # read receipts up to a seq
    PUBLISH = "publish"  # broadcast events into a room
    ACK = "ack"  # the server acknowledges a send (send -> ack latency)
    PING = "ping"  # an application-level round trip (rtt scenario, heartbeat probes)
    HISTORY = "history"  # page a room's stored history (the Locust users' history fetch)
    RESUME = "resume"  # a reconnecting client names its last seq per room and is re-joined


# -- events (what a received frame means to the engine) -------------------------------


class Delivery(Struct, gc=False):
    """A measured message arrived (a chat message, a DM, an event, an echo or a pong)."""

    sender: int
    stream: int
    counter: int
    sched_ns: int
    room: str | None = None
    seq: int | None = None


class Ack(Struct, gc=False):
    """The server acknowledged the request ``req_id`` (durable send, publish)."""

    req_id: int | str | None
    room: str | None = None
    seq: int | None = None


class Ready(Struct, gc=False):
    """The session (``room`` None: welcome) or a room (joined, with its seq) is ready.

    ``session``: the name the server gave this connection in its welcome, for protocols
    whose later frames must carry it (Pusher's ``socket_id``, signed into a private
    channel's subscribe); every driver keeps it per connection and passes it to
    ``Adapter.join_in``."""

    room: str | None = None
    seq: int = 0
    session: str | None = None


class Rejected(Struct, gc=False):
    """The server refused a request (an error frame); ``req_id`` names it when known."""

    req_id: int | str | None
    code: str
    message: str = ""


class Notice(Struct, gc=False):
    """Any other frame, counted by kind (typing, receipt, presence, unmarked message...)."""

    kind: str
    room: str | None = None
    seq: int | None = None


class Reply(Struct, gc=False):
    """A frame the client must send back at once (an Engine.IO pong to the server's ping).

    Whoever drives the socket sends ``payload`` and otherwise ignores the event: a
    protocol with a server-driven heartbeat stays alive without knowing who holds it.
    """

    payload: bytes


class Page(Struct, gc=False):
    """A page of a room's history answering request ``req_id`` (``Feature.HISTORY``)."""

    req_id: int | str | None
    room: str | None = None
    count: int = 0
    has_more: bool = False


Event = Delivery | Ack | Ready | Rejected | Notice | Reply | Page


class AdapterError(ValueError):
    """The protocol name, file or options cannot give an adapter; the message says why in
    one line (``rtbench run`` and ``rtbench monitor`` exit 2 with it)."""


class _class_or_instance:
    """A method bound to the instance when called on one, else to the class.

    ``Adapter.check`` answers for the class (what it declares) and, on an instance, for
    that instance, whose options may have narrowed or widened ``features``.
    """

    def __init__(self, fn: Callable[..., Any]) -> None:
        self.fn = fn
        # a descriptor, not a callable: only the name and docstring are copied onto it
        functools.update_wrapper(self, fn)  # type: ignore[arg-type]

    def __get__(self, obj: object, cls: type) -> Callable[..., Any]:
        return functools.partial(self.fn, cls if obj is None else obj)


# -- markers --------------------------------------------------------------------------------


def marker(sender: int, stream: int, counter: int, sched_ns: int, size: int = 0) -> str:
    """The measurement text of one message, padded with 'x' to ``size`` characters."""
    text = f"{MARKER_PREFIX}{sender}.{stream}.{counter}.{sched_ns} "
    if size > len(text):
        text += _PAD[: size - len(text)]
    return text


def parse_marker(text: str | None) -> tuple[int, int, int, int] | None:
    """(sender, stream, counter, sched_ns) from a marker text, or None when it is not one."""
    if not text or not text.startswith(MARKER_PREFIX):
        return None
    end = text.find(" ", 5)
    try:
        sender, stream, counter, sched = (text[5:end] if end > 0 else text[5:]).split(".")
        return int(sender), int(stream), int(counter), int(sched)
    except ValueError:
        return None


def parse_marker_bytes(payload: bytes) -> tuple[int, int, int, int] | None:
    """Same as :func:`parse_marker` for a raw frame payload (echo servers)."""
    if not payload.startswith(_MARKER_PREFIX_B):
        return None
    end = payload.find(b" ", 5)
    try:
        sender, stream, counter, sched = (payload[5:end] if end > 0 else payload[5:]).split(b".")
        return int(sender), int(stream), int(counter), int(sched)
    except ValueError:
        return None


# -- the adapter ------------------------------------------------------------------------------


class Adapter:
    """Base class of a protocol adapter. Override what your protocol has; leave the rest.

    ``features`` says what the protocol can do; a method of a missing feature is never
    called (the scenario is refused with a clear error instead). Every ``req_id`` is an
    int unique per connection; echo it back in ``Ack``/``Rejected`` events when the
    protocol has request ids, so the engine can measure send -> ack and count refusals.
    """

    name: ClassVar[str] = "base"
    features: frozenset[str] = frozenset()
    default_path: str = ""  # appended to a target URL that has no path
    expects_welcome: bool = False  # wait for Ready(room=None) after open()
    binary: ClassVar[bool] = False  # send binary frames instead of text
    confirms_join: bool = True
    """False: the server answers a join with nothing, so a room counts as joined once the
    join frame is sent (no ``Ready(room)`` will come). An adapter configured from options
    may set this, ``features`` and ``expects_welcome`` per instance in ``__init__``."""
    subprotocols: ClassVar[tuple[str, ...]] = ()
    """WebSocket subprotocols to offer in the upgrade (``Sec-WebSocket-Protocol``), e.g.
    ``("mqtt",)``: some servers refuse an upgrade that does not name theirs. Every driver
    offers them through its own client library, which also checks the server's choice."""
    heartbeat_interval_s: float | None = None
    """A protocol whose server drops a client that stays silent (MQTT keepalive, STOMP
    heart-beating) sets this; every driver then sends ``heartbeat()`` on each open
    connection about this often, from the upgrade to the close. None: no such timer."""

    transport: ClassVar[str] = "websocket"
    """How the drivers carry the bytes. ``"websocket"``: every payload is a frame of one
    WebSocket. ``"http"`` (Server-Sent Events): the adapter speaks HTTP/1.1 itself and
    the driver holds two plain TCP (or TLS) connections per client to the target's host:
    the *stream* lane carries the request that opens an event stream (``opens_stream``
    says which payload it is) and its endless response, whose bytes, chunked as they
    come, go to ``parse``; the *request* lane, kept alive, carries every other payload
    (sends, publishes), and its bytes go to ``parse_reply``. Losing the stream lane is
    losing the connection; a request lane the server closed is opened again for the next
    payload (after ``reply_lane_closed``). There is no ping on a one-way stream."""

    fatal_close_codes: ClassVar[frozenset[int]] = frozenset({1003, 1007, 1008, 1009, 4401, 4403})
    """WebSocket close codes after which reconnecting cannot help, so the client gives
    up instead (every other code, 1012 "service restart" included, means: reconnect and
    resume). The default: RFC 6455's unsupported data, invalid payload, policy violation
    and message too big (a retry would send the same frames), and 4401 / 4403, the
    common "4000 + HTTP status" way to refuse an identity (graphql-ws, the reference
    protocol). A protocol whose server says "do not come back" otherwise names its own."""

    refused_room_codes: ClassVar[frozenset[str]] = frozenset()
    """``Rejected`` codes by which the server refuses one room of a resume while it
    resumes the others (the room is gone, or the user may no longer see it): the resume
    goes on without that room. Any other error during a resume fails the attempt."""

    schemes: ClassVar[Mapping[str, str]] = {"ws": "ws", "wss": "wss"}
    """The URL schemes a target may be given in, each mapped to the WebSocket scheme that
    is dialled. Socket.IO users name their server ``http(s)://`` everywhere (every
    Socket.IO client maps it to ``ws(s)://``), so that adapter adds both."""

    def __init__(self, options: Mapping[str, Any] | None = None) -> None:
        self.options = dict(options or {})

    @classmethod
    def target_problem(cls, target: str) -> str | None:
        """None when ``target`` is a URL this protocol can dial, else a one-line reason
        that lists the schemes that work (the one check ``run``, ``locust``, ``check``
        and ``monitor`` make)."""
        parts = urlsplit(target)
        if parts.scheme.lower() in cls.schemes and parts.hostname:
            return None
        names = [f"{scheme}://" for scheme in cls.schemes]
        listed = names[0] if len(names) == 1 else f"{', '.join(names[:-1])} or {names[-1]}"
        return f"target {target!r} must be a {listed} URL with a host (protocol {cls.name})"

    def ws_scheme(self, target: str) -> str:
        """``target`` with its scheme mapped to the WebSocket one (``http`` -> ``ws``)."""
        scheme, sep, rest = target.partition("://")
        mapped = self.schemes.get(scheme.lower())
        return f"{mapped}://{rest}" if sep and mapped else target

    def connection(self) -> Adapter:
        """The adapter one client connection uses (called once per logical client, which
        keeps it across its reconnects). Stateless adapters, the common case, return
        ``self``; a protocol with per-connection state (a byte stream whose packets span
        frames, 16-bit packet ids, the rooms a resumed session holds) returns a fresh copy
        sharing the checked options. Drivers call every other method on this copy."""
        return self

    def bind(self, url: str) -> None:
        """``transport = "http"``: the URL the driver dials (``url``'s result), whose host
        and path the adapter's requests name. Called once per ``connection()`` copy."""

    def opens_stream(self, payload: bytes) -> bool:
        """``transport = "http"``: called for every payload just before it is written, in
        order; True puts it on the stream lane, False on the request lane."""
        return False

    def parse_reply(self, payload: bytes) -> Event | list[Event] | None:
        """``transport = "http"``: bytes read on the request lane (the answers to sends)."""
        return None

    def reply_lane_closed(self) -> None:
        """``transport = "http"``: the request lane closed; what was in flight on it will
        never be answered."""

    def heartbeat(self) -> bytes | None:
        """The frame to send every ``heartbeat_interval_s`` (None: nothing this time)."""
        return None

    def url(self, target: str) -> str:
        """The WebSocket URL to connect to for a user-supplied target."""
        scheme, sep, rest = self.ws_scheme(target).partition("://")
        if sep and "/" not in rest and self.default_path:
            return f"{scheme}://{rest}{self.default_path}"
        return f"{scheme}{sep}{rest}"

    def headers(self, user: str, token: str | None) -> dict[str, str] | None:
        """Extra HTTP headers for the upgrade request (authentication, usually)."""
        return None

    def open(self, user: str, token: str | None) -> list[bytes]:
        """Frames to send right after the upgrade (a hello, a login)."""
        return []

    def join(self, room: str, req_id: int) -> bytes:
        raise NotImplementedError(f"protocol {self.name} has no rooms")

    def join_in(self, session: str | None, room: str, req_id: int) -> bytes:
        """``join`` on a connection the server named ``session`` in its welcome
        (``Ready.session``; None when it named none). Every driver joins through this;
        override it only when a join must carry the connection's name."""
        return self.join(room, req_id)

    def send(self, room: str, body: str, req_id: int) -> bytes:
        raise NotImplementedError(f"protocol {self.name} cannot send to a room")

    def dm(self, to_user: str, body: str, req_id: int) -> bytes:
        raise NotImplementedError(f"protocol {self.name} has no direct messages")

    def typing(self, room: str, started: bool) -> bytes:
        raise NotImplementedError(f"protocol {self.name} has no typing indicators")

    def read(self, room: str, seq: int) -> bytes:
        raise NotImplementedError(f"protocol {self.name} has no read receipts")

    def publish(self, room: str, event: str, data: str, req_id: int) -> bytes:
        raise NotImplementedError(f"protocol {self.name} cannot publish events")

    def ping(self, text: str, req_id: int) -> bytes:
        """An application-level request whose reply carries ``text`` back (a marker)."""
        raise NotImplementedError(f"protocol {self.name} has no round trip")

    def history(self, room: str, req_id: int, after: int | None, limit: int) -> bytes:
        """A request for a page of ``room``'s history (after a seq, or the newest page);
        the reply parses to ``Page``."""
        raise NotImplementedError(f"protocol {self.name} cannot page history")

    def resume(self, user: str, token: str | None, last_seq: Mapping[str, int]) -> list[bytes]:
        """Frames that reopen a session and re-join its rooms from the last seq seen in
        each (``Feature.RESUME``: each room then answers ``Ready``, missed items first)."""
        raise NotImplementedError(f"protocol {self.name} cannot resume")

    def dm_room(self, user: str, other: str) -> str | None:
        """The room a DM between two users lands in, when the protocol names one (a
        resuming client names it too, so DMs sent while it was away are replayed)."""
        return None

    def parse(self, payload: bytes) -> Event | list[Event] | None:
        """Turn one received frame into an event (None: ignore it), or into a list of
        events when one frame carries several (nats-server puts whatever is pending for a
        connection into one frame; a byte-stream protocol such as MQTT packs packets freely
        into frames); every driver handles the list's events in order, each as if it had
        come alone."""
        raise NotImplementedError

    @_class_or_instance
    def check(self, needed: set[str]) -> str | None:
        """None when every needed feature is there, else a one-line reason.

        Works on the class (declared features) and on a configured instance.
        """
        missing = sorted(needed - self.features)
        if not missing:
            return None
        return f"protocol {self.name!r} lacks {', '.join(missing)}"


def upgrade_headers(adapter: Adapter, user: str, token: str | None) -> dict[str, str] | None:
    """The adapter's upgrade headers plus ``Sec-WebSocket-Protocol`` for its subprotocols,
    for clients that take subprotocols as a plain header (picows, websocket-client)."""
    headers = adapter.headers(user, token)
    if not adapter.subprotocols:
        return headers
    return {**(headers or {}), "Sec-WebSocket-Protocol": ", ".join(adapter.subprotocols)}
