"""Frame rules: how a decoded server frame is recognised and what it means to the engine.

A rule has a ``match`` (field paths and the values they must hold) and paths saying where
the room, the marker (or the sender, counter and timestamp), the request id or the error
code sit. ``Recogniser`` tries the configured rules in order and returns the engine's
event: ``Delivery``, ``Ack``, ``Ready``, ``Rejected``, ``Reply`` or a ``Notice``. Paths
are names and list indexes joined by dots (``data.items.0.text``).
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Mapping
from typing import Any

import msgspec
from msgspec import Struct

from loadtest.adapters.base import (
    MARKER_PREFIX,
    Ack,
    AdapterError,
    Delivery,
    Event,
    Notice,
    Ready,
    Rejected,
    Reply,
    parse_marker,
)
from loadtest.adapters.templates import ALLOWED, Template
from rtbench.bounded import BoundedDict

_MISSING: Any = object()

JOIN_ID_BASE = 1 << 40
"""Request ids the adapter gives joins itself (above any per-connection id of the engine),
so a join confirmation that carries only the id still names its room: one adapter serves
every connection of a worker, and per-connection ids would collide between them."""
PENDING_JOINS = 65_536
"""Joins awaiting confirmation remembered at once; beyond it the oldest is forgotten."""


class FieldPath:
    """Where a value sits in a decoded frame: names and list indexes joined by dots."""

    __slots__ = ("steps", "text")

    def __init__(self, text: str, where: str) -> None:
        if not isinstance(text, str) or not text or "" in text.split("."):
            raise AdapterError(
                f"{where}: {text!r} is not a field path (names and list indexes joined "
                "by dots, e.g. data.items.0.text)"
            )
        self.text = text
        # per segment: the key in an object, and the index in an array (digits only)
        self.steps = tuple((s, int(s) if s.isdigit() else -1) for s in text.split("."))

    def get(self, obj: Any) -> Any:
        """The value at this path, or ``_MISSING`` (every received frame passes here)."""
        for key, index in self.steps:
            kind = type(obj)
            if kind is dict:
                obj = obj.get(key, _MISSING)
                if obj is _MISSING:
                    return _MISSING
            elif kind is list and 0 <= index < len(obj):
                obj = obj[index]
            else:
                return _MISSING
        return obj


def _path(text: str | None, where: str) -> FieldPath | None:
    return None if text is None else FieldPath(text, where)


def _as_int(value: Any) -> int | None:
    """An integer field as a server may relay it: a number, or digits in a string."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str) and value.lstrip("-").isdigit():
        return int(value)
    return None


def _text_at(path: FieldPath | None, frame: Any) -> str | None:
    """The value at an optional path as text, or None."""
    value = path.get(frame) if path is not None else None
    return None if value is None or value is _MISSING else str(value)


def _int_at(path: FieldPath | None, frame: Any) -> int | None:
    """The value at an optional path as an integer, or None."""
    return _as_int(path.get(frame)) if path is not None else None


def _req_id(value: Any) -> int | str | None:
    if value is _MISSING or value is None:
        return None
    number = _as_int(value)
    return number if number is not None else str(value)


def find_marker(text: Any) -> tuple[int, int, int, int] | None:
    """The marker in a text, at its start or anywhere in it (a server may decorate it)."""
    if not isinstance(text, str):
        return None
    if text.startswith(MARKER_PREFIX):
        return parse_marker(text)
    at = text.find(MARKER_PREFIX)
    return parse_marker(text[at:]) if at > 0 else None


class FrameRule(Struct, forbid_unknown_fields=True, kw_only=True):
    """Recognises one kind of server frame: every ``match`` path must hold its value."""

    match: dict[str, Any] = {}


class DeliveryRule(FrameRule, kw_only=True):
    """A measured message: ``marker`` (the text carrying ``{body}``) or ``sender`` +
    ``counter`` + ``timestamp`` (fields carrying ``{sender}``, ``{counter}``, ``{ts}``)."""

    room: str | None = None
    marker: str | None = None
    sender: str | None = None
    counter: str | None = None
    timestamp: str | None = None
    stream: str | None = None
    seq: str | None = None


class JoinedRule(FrameRule, kw_only=True):
    """The server confirmed a join: ``room`` names it, or ``id`` carries the join's ``{req}``."""

    room: str | None = None
    id: str | None = None
    seq: str | None = None


class AckRule(FrameRule, kw_only=True):
    """The server acknowledged a send: ``id`` carries the send's ``{req}``."""

    id: str
    room: str | None = None
    seq: str | None = None


class ErrorRule(FrameRule, kw_only=True):
    """The server refused a request: ``id`` (the ``{req}``), ``code`` and ``message`` paths."""

    id: str | None = None
    code: str | None = None
    message: str | None = None


class ReplyRule(FrameRule, kw_only=True):
    """The server expects an answer to this frame (an application-level ping): ``send``."""

    send: Any


def matcher(match: dict[str, Any], where: str) -> Callable[[Any], bool]:
    """The compiled ``match`` of a rule: a test of a decoded frame (every frame passes
    through it, so the usual one-field match is one call and one comparison)."""
    checks = [(FieldPath(k, f"{where}.match").get, v) for k, v in match.items()]
    if not checks:
        return lambda frame: True
    if len(checks) == 1:
        get, value = checks[0]
        return lambda frame: get(frame) == value
    return lambda frame: all(get(frame) == value for get, value in checks)


class Recogniser:
    """Turns a decoded frame into an event with the configured rules, first match wins.

    Order: deliveries (the hot path), acks, joins, the welcome, errors, replies; a frame
    no rule takes becomes ``Notice`` named by the ``kind`` path (or ``other``).
    """

    def __init__(
        self,
        *,
        delivery: list[DeliveryRule],
        ack: AckRule | None,
        joined: JoinedRule | None,
        welcome: FrameRule | None,
        error: ErrorRule | None,
        reply: list[ReplyRule],
        kind: str | None,
        joins: dict[int, str],
        where: str,
    ) -> None:
        self.joins = joins
        self.rules: list[Callable[[Any], Event | None]] = []
        for i, rule in enumerate(delivery):
            self.rules.append(self._delivery(rule, f"{where}.delivery.{i}"))
        if ack is not None:
            self.rules.append(self._ack(ack, f"{where}.ack"))
        if joined is not None:
            self.rules.append(self._joined(joined, f"{where}.joined"))
        if welcome is not None:
            match = matcher(welcome.match, f"{where}.welcome")
            self.rules.append(lambda frame: Ready(None, 0) if match(frame) else None)
        if error is not None:
            self.rules.append(self._error(error, f"{where}.error"))
        for i, reply_rule in enumerate(reply):
            self.rules.append(self._reply(reply_rule, f"{where}.reply.{i}"))
        self.kind = _path(kind, f"{where}.kind")

    def __call__(self, frame: Any) -> Event:
        for rule in self.rules:
            event = rule(frame)
            if event is not None:
                return event
        name = self.kind.get(frame) if self.kind is not None else _MISSING
        return Notice(str(name) if isinstance(name, str | int) else "other")

    @staticmethod
    def _delivery(rule: DeliveryRule, where: str) -> Callable[[Any], Event | None]:
        match = matcher(rule.match, where)
        room = _path(rule.room, f"{where}.room")
        seq = _path(rule.seq, f"{where}.seq")
        if rule.marker is not None:
            if rule.sender or rule.counter or rule.timestamp or rule.stream:
                raise AdapterError(
                    f"{where}: give marker, or sender + counter + timestamp, not both"
                )
            marker = FieldPath(rule.marker, f"{where}.marker")

            def fields(frame: Any) -> tuple[int, int, int, int] | None:
                return find_marker(marker.get(frame))

        else:
            sender_at, counter_at, stamp_at = rule.sender, rule.counter, rule.timestamp
            if not (sender_at and counter_at and stamp_at):
                missing = [n for n in ("sender", "counter", "timestamp") if not getattr(rule, n)]
                raise AdapterError(
                    f"{where}: needs marker (the field holding {{body}}), or sender, counter "
                    f"and timestamp paths (missing: {', '.join(missing)})"
                )
            sender = FieldPath(sender_at, f"{where}.sender")
            counter = FieldPath(counter_at, f"{where}.counter")
            stamp = FieldPath(stamp_at, f"{where}.timestamp")
            stream = _path(rule.stream, f"{where}.stream")

            def fields(frame: Any) -> tuple[int, int, int, int] | None:
                s, c, t = _as_int(sender.get(frame)), _as_int(counter.get(frame)), None
                if s is None or c is None:
                    return None
                t = _as_int(stamp.get(frame))
                if t is None:
                    return None
                k = _as_int(stream.get(frame)) if stream is not None else 0
                return s, 0 if k is None else k, c, t

        def recognise(frame: Any) -> Event | None:
            if not match(frame):
                return None
            found = fields(frame)
            if found is None:
                return None
            return Delivery(*found, room=_text_at(room, frame), seq=_int_at(seq, frame))

        return recognise

    @staticmethod
    def _ack(rule: AckRule, where: str) -> Callable[[Any], Event | None]:
        match = matcher(rule.match, where)
        rid = FieldPath(rule.id, f"{where}.id")
        room = _path(rule.room, f"{where}.room")
        seq = _path(rule.seq, f"{where}.seq")

        def recognise(frame: Any) -> Event | None:
            if not match(frame):
                return None
            req = _req_id(rid.get(frame))
            if req is None:
                return None
            return Ack(req, _text_at(room, frame), _int_at(seq, frame))

        return recognise

    def _joined(self, rule: JoinedRule, where: str) -> Callable[[Any], Event | None]:
        if rule.room is None and rule.id is None:
            raise AdapterError(
                f"{where}: needs room (the path naming the joined room) or id (the path "
                "carrying the join's {req})"
            )
        match = matcher(rule.match, where)
        room = _path(rule.room, f"{where}.room")
        rid = _path(rule.id, f"{where}.id")
        seq = _path(rule.seq, f"{where}.seq")
        joins = self.joins

        def recognise(frame: Any) -> Event | None:
            if not match(frame):
                return None
            name = _text_at(room, frame)
            if name is None and rid is not None:
                req = _as_int(rid.get(frame))
                name = joins.pop(req, None) if req is not None else None
            if name is None:
                return None
            return Ready(name, _int_at(seq, frame) or 0)

        return recognise

    @staticmethod
    def _error(rule: ErrorRule, where: str) -> Callable[[Any], Event | None]:
        match = matcher(rule.match, where)
        rid = _path(rule.id, f"{where}.id")
        code = _path(rule.code, f"{where}.code")
        message = _path(rule.message, f"{where}.message")

        def recognise(frame: Any) -> Event | None:
            if not match(frame):
                return None
            req = _req_id(rid.get(frame)) if rid is not None else None
            return Rejected(req, _text_at(code, frame) or "error", _text_at(message, frame) or "")

        return recognise

    @staticmethod
    def _reply(rule: ReplyRule, where: str) -> Callable[[Any], Event | None]:
        match = matcher(rule.match, where)
        payload = msgspec.json.encode(
            Template(rule.send, ALLOWED["reply"], f"{where}.send").render({})
        )
        return lambda frame: Reply(payload) if match(frame) else None


def one_or_many(value: Any) -> list[Any]:
    """A rule given as one table or as a list of them."""
    return value if isinstance(value, list) else [value]


def convert_options(options: Mapping[str, Any] | None, type_: type, where: str) -> Any:
    """Typed options from the scenario's ``protocol_options``; one line on a bad field."""
    try:
        return msgspec.convert(dict(options or {}), type_)
    except msgspec.ValidationError as exc:
        raise AdapterError(f"{where}: {exc}") from None


def pending_joins() -> BoundedDict[int, str]:
    """The bounded memory of joins not yet confirmed: join id -> room."""
    return BoundedDict(PENDING_JOINS)


def remember_join(joins: BoundedDict[int, str], ids: itertools.count, room: str) -> int:
    """A fresh join id for ``room`` (bounded memory of joins not yet confirmed)."""
    join_id = next(ids)
    joins.put(join_id, room)
    return join_id
