"""Fixtures of the third-party tests: a real python-socketio server and a plain JSON
broadcast server, each a subprocess on port 0, started per test with its faults."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.thirdparty.servers import ServerProc

GENERIC_OPTIONS = {
    "join": {"action": "subscribe", "channel": "{room}", "ref": "{req}"},
    "joined": {"match": {"event": "subscribed"}, "room": "channel"},
    "send": {
        "action": "publish",
        "channel": "{room}",
        "ref": "{req}",
        "data": {"text": "{body}"},
    },
    "ping": {"action": "echo", "data": {"text": "{body}"}},
    "delivery": [
        {"match": {"event": "message"}, "room": "channel", "marker": "data.text"},
        {"match": {"event": "echo"}, "marker": "data.text"},
    ],
    "ack": {"match": {"event": "ok"}, "id": "ref"},
    "error": {"match": {"event": "error"}, "id": "ref", "code": "code", "message": "reason"},
    "kind": "event",
}
"""``protocol_options`` that make the generic adapter speak ``json_server``'s protocol."""
PONG_RULE = {"match": {"event": "ping"}, "send": {"action": "pong"}}
"""The ``reply`` rule answering ``json_server --app-ping``."""


def toml_value(value: Any) -> str:
    """A value as TOML (inline tables and arrays), for scenario files written by tests."""
    if isinstance(value, dict):
        return (
            "{ " + ", ".join(f"{json.dumps(k)} = {toml_value(v)}" for k, v in value.items()) + " }"
        )
    if isinstance(value, list):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    return json.dumps(value)


def scenario_toml(path: Path, options: dict[str, Any], **fields: Any) -> Path:
    """Write a scenario file: top-level ``fields`` and a ``[protocol_options]`` table."""
    lines = [f"{k} = {toml_value(v)}" for k, v in fields.items()]
    lines.append("[protocol_options]")
    lines += [f"{k} = {toml_value(v)}" for k, v in options.items()]
    path.write_text("\n".join(lines) + "\n")
    return path


def _factory(module: str) -> Iterator[Callable[..., ServerProc]]:
    servers: list[ServerProc] = []

    def start(*flags: str, **faults: float) -> ServerProc:
        args = [*flags, "--faults", json.dumps(faults)] if faults else list(flags)
        server = ServerProc(module, *args).start()
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.close()


@pytest.fixture
def sio_server() -> Iterator[Callable[..., ServerProc]]:
    """Factory: ``sio_server("--echo-sender", drop_every=7)`` starts a Socket.IO server."""
    yield from _factory("tests.thirdparty.sio_server")


@pytest.fixture
def json_server() -> Iterator[Callable[..., ServerProc]]:
    """Factory: ``json_server("--no-ack", dup_every=5)`` starts the plain JSON server."""
    yield from _factory("tests.thirdparty.json_server")
