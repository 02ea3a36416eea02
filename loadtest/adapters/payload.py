"""A message payload template whose marker can be found again in what the server relays.

The Phoenix, Action Cable, Pusher and Centrifugo adapters each send a JSON payload the
user may reshape (``protocol_options``: ``payload = { body = "{body}", ... }``) and must
find the marker in the same place of the payload the server relays. This compiles the
template once and remembers the path of the string holding ``{body}``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from loadtest.adapters.base import AdapterError
from loadtest.adapters.rules import FieldPath, find_marker
from loadtest.adapters.templates import ALLOWED, Template, frame_values


def _body_path(value: Any, prefix: str) -> str | None:
    """The dotted path of the first string holding ``{body}`` in a template value."""
    if isinstance(value, str):
        return prefix if "{body}" in value else None
    if isinstance(value, dict):
        pairs = list(value.items())
    elif isinstance(value, list):
        pairs = list(enumerate(value))
    else:
        return None
    for key, inner in pairs:
        found = _body_path(inner, f"{prefix}.{key}" if prefix else str(key))
        if found is not None:
            return found
    return None


class PayloadTemplate:
    """``protocol_options.<where>``: a JSON template with ``{body}`` somewhere in it."""

    __slots__ = ("marked", "path", "plain", "template")

    def __init__(self, value: Any, where: str, kind: str = "send") -> None:
        self.template = Template(value, ALLOWED[kind], where)
        self.marked = self.template.marked
        path = _body_path(value, "")
        if path is None:
            raise AdapterError(f"{where}: holds no {{body}}, so no delivery can be recognised")
        self.plain = path == ""  # the payload is the text itself
        self.path = None if self.plain else FieldPath(path, where)

    def render(self, body: str, req_id: int, **extra: Any) -> Any:
        return self.template.render(frame_values(self.marked, body, req_id, **extra))

    def marker(self, payload: Any) -> tuple[int, int, int, int] | None:
        """(sender, stream, counter, sched_ns) from a relayed payload, or None."""
        return find_marker(payload if self.path is None else self.path.get(payload))

    def render_values(self, values: Mapping[str, Any]) -> Any:
        return self.template.render(values)
