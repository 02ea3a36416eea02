"""Adapter for NATS over WebSocket (nats-server's ``websocket`` listener, as nats.ws uses it).

The NATS client protocol (https://docs.nats.io/reference/reference-protocols/nats-protocol)
is a text stream of commands, carried over the WebSocket in binary frames. Its defaults
follow the nats.ws getting-started example (``connect({servers})``, ``subscribe``,
``publish``), with subjects as rooms:

- the server greets with ``INFO``; the client sends ``CONNECT {...}`` and ``PING``, and
  the server's ``PONG`` is the welcome (it proves CONNECT was accepted; a refusal is
  ``-ERR 'Authorization Violation'``);
- join: ``SUB <room> <sid>``; core NATS never confirms a subscription, so the join also
  sends a message to a fresh inbox of this adapter (``SUB``, ``UNSUB <sid> 1``, ``PUB``)
  whose payload is the room name: the server handles one connection's commands in order,
  so when that message comes back the room subscription is in place (``Ready(room)``);
- send: ``PUB <room> <n>`` with the marker as the payload; a delivery is a ``MSG`` on a
  room's subject carrying a marker (NATS echoes a message to its publisher too: that
  copy is counted as ``own_message``; CONNECT keeps ``echo`` on, which the join
  confirmation needs);
- round trip: the marker published to a fresh inbox the client subscribed to;
- the server's ``PING`` is answered with ``PONG`` (a ``Reply``): a client that leaves
  ``ping_max`` of them unanswered is dropped as a stale connection.

nats-server puts everything pending for a connection into one frame, so a frame can hold
several commands; ``parse`` then returns them all, in order. Core NATS has no
acknowledgements and no resume (JetStream has both; it is not used here).
"""

from __future__ import annotations

import itertools
import re
import secrets
from collections.abc import Mapping
from typing import Any

import msgspec
from msgspec import Struct

from loadtest.adapters.base import (
    Adapter,
    AdapterError,
    Delivery,
    Event,
    Feature,
    Notice,
    Ready,
    Rejected,
    Reply,
    parse_marker_bytes,
)
from loadtest.adapters.rules import convert_options
from loadtest.adapters.templates import ALLOWED, Template, render_headers

CRLF = b"\r\n"
PONG = b"PONG\r\n"
_SUBJECT_TOKEN = re.compile(r"^[^\s*>.]+(\.[^\s*>.]+)*$")


class NatsOptions(Struct, forbid_unknown_fields=True, kw_only=True):
    """``protocol_options`` of ``--protocol nats`` (docs/ADAPTERS.md explains each)."""

    subject_prefix: str = ""  # a room's subject is prefix + room name, e.g. "chat."
    connect: dict[str, Any] = {}  # extra CONNECT fields ({user}, {token}), e.g. auth_token
    headers: dict[str, str] = {}  # extra upgrade headers ({user}, {token})
    name: str = "rtbench"  # the connection name the server shows (CONNECT name)


class NatsAdapter(Adapter):
    """NATS: CONNECT/INFO, SUB/UNSUB, PUB, MSG, PING/PONG, -ERR; subjects are rooms."""

    name = "nats"
    features = frozenset({Feature.ROOMS, Feature.PUBLISH, Feature.PING})
    binary = True  # as nats.ws sends; the server answers in binary frames too
    expects_welcome = True  # the PONG to the PING sent after CONNECT

    def __init__(self, options: Mapping[str, Any] | None = None) -> None:
        super().__init__(options)
        where = "protocol_options"
        o: NatsOptions = convert_options(options, NatsOptions, where)
        prefix = o.subject_prefix
        if prefix and not _SUBJECT_TOKEN.match(prefix.rstrip(".")):
            raise AdapterError(
                f"{where}.subject_prefix: {prefix!r} is not a subject prefix (tokens joined "
                "by dots, no spaces or wildcards, e.g. chat.)"
            )
        self._prefix = prefix.encode()
        self._connect = Template(o.connect, ALLOWED["hello"], f"{where}.connect")
        self._base = {
            "verbose": False,
            "pedantic": False,
            "lang": "python",
            "version": "rtbench",
            "protocol": 1,
            "echo": True,  # the join confirmation comes back through it
            "name": o.name,
        }
        self._headers = {
            k: Template(v, ALLOWED["hello"], f"{where}.headers.{k}") for k, v in o.headers.items()
        }
        # this adapter's inboxes: random, so workers and monitors never share one
        self._inbox = f"_INBOX.{secrets.token_hex(8)}".encode()
        self._joined = self._inbox + b".j."
        self._echo = self._inbox + b".p."
        self._sids = itertools.count(1)

    # -- frames out -------------------------------------------------------------------------

    def headers(self, user: str, token: str | None) -> dict[str, str] | None:
        return render_headers(self._headers, user, token)

    def open(self, user: str, token: str | None) -> list[bytes]:
        fields = {**self._base, **self._connect.render({"user": user, "token": token or user})}
        return [b"CONNECT %s\r\nPING\r\n" % msgspec.json.encode(fields)]

    def _subject(self, room: str) -> bytes:
        subject = self._prefix + room.encode()
        if b" " in subject or b"\t" in subject or not subject:
            raise AdapterError(f"room {room!r} cannot be a NATS subject")
        return subject

    def _to_self(self, inbox: bytes, payload: bytes) -> bytes:
        """A message to a fresh inbox of ours that only this connection subscribes to."""
        sid = next(self._sids)
        subject = b"%s%d" % (inbox, sid)
        return b"SUB %s i%d\r\nUNSUB i%d 1\r\nPUB %s %d\r\n%s\r\n" % (
            subject,
            sid,
            sid,
            subject,
            len(payload),
            payload,
        )

    def join(self, room: str, req_id: int) -> bytes:
        subject = self._subject(room)
        sub = b"SUB %s r%d\r\n" % (subject, next(self._sids))
        return sub + self._to_self(self._joined, room.encode())

    def send(self, room: str, body: str, req_id: int) -> bytes:
        data = body.encode()
        return b"PUB %s%s %d\r\n%s\r\n" % (self._prefix, room.encode(), len(data), data)

    def publish(self, room: str, event: str, data: str, req_id: int) -> bytes:
        return self.send(room, data, req_id)

    def ping(self, text: str, req_id: int) -> bytes:
        return self._to_self(self._echo, text.encode())

    # -- frames in --------------------------------------------------------------------------

    def parse(self, payload: bytes) -> Event | list[Event] | None:
        if payload.startswith(b"MSG ") and payload.count(b"\r\n") == 2:
            return self._msg_alone(payload)  # the hot path: one message in the frame
        events: list[Event] = []
        pos, end = 0, len(payload)
        while pos < end:
            eol = payload.find(CRLF, pos)
            if eol < 0:
                events.append(Notice("partial"))
                break
            line = payload[pos:eol]
            pos = eol + 2
            if line.startswith(b"MSG "):
                head = line.split(b" ")
                try:
                    size = int(head[-1])
                except ValueError:
                    events.append(Notice("unparsed"))
                    break
                event = self._msg(head[1], payload[pos : pos + size])
                pos += size + 2
            elif line.startswith(b"HMSG "):
                try:
                    pos += int(line.rsplit(b" ", 1)[1]) + 2  # headers + payload: not ours
                except ValueError:
                    events.append(Notice("unparsed"))
                    break
                event = Notice("hmsg")
            else:
                event = self._command(line)
            if event is not None:
                events.append(event)
        if len(events) == 1:
            return events[0]
        return events or None

    def _msg_alone(self, payload: bytes) -> Event | None:
        eol = payload.find(CRLF)
        head = payload[:eol].split(b" ")
        try:
            size = int(head[-1])
        except ValueError:
            return Notice("unparsed")
        return self._msg(head[1], payload[eol + 2 : eol + 2 + size])

    def _msg(self, subject: bytes, data: bytes) -> Event | None:
        prefix = self._prefix
        if subject.startswith(self._inbox):
            if subject.startswith(self._joined):
                return Ready(data.decode("utf-8", "replace"), 0)
            found = parse_marker_bytes(data)
            return Delivery(*found) if found is not None else Notice("inbox")
        found = parse_marker_bytes(data)
        if found is None:
            return Notice("unmarked")
        if prefix and not subject.startswith(prefix):
            return Delivery(*found, room=None)
        return Delivery(*found, room=subject[len(prefix) :].decode("utf-8", "replace"))

    @staticmethod
    def _command(line: bytes) -> Event | None:
        if line == b"PING":
            return Reply(PONG)
        if line == b"PONG":
            return Ready(None, 0)
        if line == b"+OK":
            return None
        if line.startswith(b"INFO "):
            return Notice("info")
        if line.startswith(b"-ERR"):
            message = line[4:].strip().strip(b"'").decode("utf-8", "replace")
            code = re.sub(r"[^a-z0-9]+", "_", message.lower()).strip("_") or "error"
            return Rejected(None, code, message)
        return Notice("unparsed")
