"""Frame templates: JSON values whose strings hold ``{placeholders}``, compiled once.

The generic and Socket.IO adapters build every frame they send from a template the user
wrote in ``protocol_options`` (docs/ADAPTERS.md). Each kind of frame may use only the
placeholders the engine knows when it sends one (a join has a room but no message), and
a template that names another is refused with one line when the adapter is made, never
in the middle of a run.
"""

from __future__ import annotations

import operator
import string
from collections.abc import Callable, Mapping
from typing import Any

from loadtest.adapters.base import AdapterError, parse_marker

PLACEHOLDERS: dict[str, str] = {
    "user": "the connection's user id",
    "token": "its token (--token, a JWT with --jwt-secret, or the user id)",
    "room": "the room name",
    "body": "the message text: the measurement marker, padded to message_bytes",
    "sender": "the sender's connection index (integer)",
    "stream": "the stream index: room, or DM pair (integer)",
    "counter": "the per-(sender, stream) counter 1, 2, 3, ... (integer)",
    "ts": "the scheduled send time in ns (integer; the engine's clock: monotonic, Locust: wall)",
    "req": "the request id (integer)",
    "to": "the DM recipient's user id",
    "event": "the event name of a publish",
    "state": "typing state: start or stop",
    "seq": "the seq a read receipt goes up to (integer)",
}
_MARKED = frozenset({"body", "sender", "stream", "counter", "ts", "req"})
ALLOWED: dict[str, frozenset[str]] = {
    "hello": frozenset({"user", "token"}),
    "join": frozenset({"room", "req"}),
    "send": _MARKED | {"room"},
    "publish": _MARKED | {"room", "event"},
    "dm": _MARKED | {"to"},
    "typing": frozenset({"room", "state"}),
    "read": frozenset({"room", "seq"}),
    "ping": _MARKED,
    "reply": frozenset(),
}
"""Which placeholders each kind of frame may use (what the engine knows at that moment)."""


class Template:
    """A JSON value whose strings hold ``{placeholders}``, compiled once, rendered per frame.

    A string that is exactly one placeholder becomes the value itself (so ``"{counter}"``
    is a JSON number); otherwise placeholders are formatted into the text. ``{{`` and
    ``}}`` are literal braces.
    """

    __slots__ = ("allowed", "marked", "names", "render")

    def __init__(self, value: Any, allowed: frozenset[str], where: str) -> None:
        self.names: set[str] = set()
        self.allowed = allowed
        self.render: Callable[[Mapping[str, Any]], Any] = self._compile(value, where)
        self.marked = bool(self.names & {"sender", "stream", "counter", "ts"})

    def _compile(self, value: Any, where: str) -> Callable[[Mapping[str, Any]], Any]:
        if isinstance(value, dict):
            items = [(str(k), self._compile(v, f"{where}.{k}")) for k, v in value.items()]
            return lambda values: {k: f(values) for k, f in items}
        if isinstance(value, list):
            parts = [self._compile(v, f"{where}.{i}") for i, v in enumerate(value)]
            return lambda values: [f(values) for f in parts]
        if isinstance(value, str):
            return self._compile_text(value, where)
        if value is None or isinstance(value, bool | int | float):
            return lambda values: value
        raise AdapterError(f"{where}: a template holds JSON values, not {type(value).__name__}")

    def _compile_text(self, text: str, where: str) -> Callable[[Mapping[str, Any]], Any]:
        try:
            parsed = list(string.Formatter().parse(text))
        except ValueError as exc:
            raise AdapterError(f"{where}: {text!r} is not a valid template ({exc})") from None
        fields = [(name, spec, conv) for _, name, spec, conv in parsed if name is not None]
        for name, _, _ in fields:
            if not name.isidentifier():
                raise AdapterError(
                    f"{where}: {{{name}}} in {text!r} is not a placeholder "
                    "(use names such as {room}; write {{ and }} for literal braces)"
                )
            if name not in self.allowed:
                known = ", ".join(f"{{{n}}}" for n in sorted(self.allowed)) or "none"
                raise AdapterError(
                    f"{where}: unknown placeholder {{{name}}} (this frame may use {known})"
                )
            self.names.add(name)
        if not fields:
            constant = text.format()
            return lambda values: constant
        if len(parsed) == 1 and not parsed[0][0] and not fields[0][1] and not fields[0][2]:
            return operator.itemgetter(fields[0][0])
        try:
            text.format_map(dict.fromkeys(self.names, 0))  # bad format specs fail here, once
        except (ValueError, TypeError) as exc:
            raise AdapterError(f"{where}: {text!r} is not a valid template ({exc})") from None
        return text.format_map


def frame_values(marked: bool, body: str, req: int, **extra: Any) -> dict[str, Any]:
    """The placeholder values of one message frame; the marker fields come from the body's
    marker, read only when the template uses them (``marked``: this runs on every send)."""
    values: dict[str, Any] = {"req": req, "body": body, **extra}
    if marked:
        found = parse_marker(body)
        if found is not None:
            values["sender"], values["stream"], values["counter"], values["ts"] = found
    return values


def render_headers(
    templates: Mapping[str, Template], user: str, token: str | None
) -> dict[str, str] | None:
    """Upgrade headers from ``{user}``/``{token}`` templates (None when there are none)."""
    if not templates:
        return None
    values = {"user": user, "token": token or user}
    return {k: str(t.render(values)) for k, t in templates.items()}
