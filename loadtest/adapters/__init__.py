"""Protocol adapters by name, and user adapters loaded from one Python file.

``--protocol reference``, ``echo``, ``socketio`` (Socket.IO v4), ``generic`` (any
JSON-over-WebSocket server, configured by ``protocol_options``: docs/ADAPTERS.md),
``graphql-ws`` (graphql-transport-ws), ``graphql-legacy`` (subscriptions-transport-ws),
``nats`` (NATS over WebSocket), ``mqtt`` (MQTT 3.1.1 / 5), ``stomp`` (STOMP 1.2),
``phoenix`` (Phoenix Channels), ``actioncable`` (Rails Action Cable), ``pusher`` (the
Pusher Channels protocol), ``centrifugo`` and ``sse`` (Server-Sent Events, over HTTP)
are built in. ``--protocol
path/to/myproto.py`` loads that file and uses the one ``Adapter`` subclass it defines
(or the one named ``path/to/myproto.py:ClassName``): adding a protocol is one file.
See docs/LOADTEST.md, "Adding a protocol".
"""

from __future__ import annotations

import importlib.util
import inspect
import sys
from pathlib import Path

from loadtest.adapters.actioncable import ActionCableAdapter
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
    Reply,
    marker,
    parse_marker,
    parse_marker_bytes,
)
from loadtest.adapters.centrifugo import CentrifugoAdapter
from loadtest.adapters.echo import EchoAdapter
from loadtest.adapters.generic import GenericAdapter
from loadtest.adapters.graphql_legacy import GraphQLLegacyAdapter
from loadtest.adapters.graphql_ws import GraphQLWSAdapter
from loadtest.adapters.mqtt import MqttAdapter
from loadtest.adapters.nats import NatsAdapter
from loadtest.adapters.phoenix import PhoenixAdapter
from loadtest.adapters.pusher import PusherAdapter
from loadtest.adapters.reference import ReferenceAdapter
from loadtest.adapters.socketio import SocketIOAdapter
from loadtest.adapters.sse import SSEAdapter
from loadtest.adapters.stomp import StompAdapter

ADAPTERS: dict[str, type[Adapter]] = {
    ReferenceAdapter.name: ReferenceAdapter,
    EchoAdapter.name: EchoAdapter,
    SocketIOAdapter.name: SocketIOAdapter,
    GenericAdapter.name: GenericAdapter,
    GraphQLWSAdapter.name: GraphQLWSAdapter,
    GraphQLLegacyAdapter.name: GraphQLLegacyAdapter,
    NatsAdapter.name: NatsAdapter,
    MqttAdapter.name: MqttAdapter,
    StompAdapter.name: StompAdapter,
    PhoenixAdapter.name: PhoenixAdapter,
    CentrifugoAdapter.name: CentrifugoAdapter,
    ActionCableAdapter.name: ActionCableAdapter,
    PusherAdapter.name: PusherAdapter,
    SSEAdapter.name: SSEAdapter,
}


def register(cls: type[Adapter]) -> type[Adapter]:
    """Class decorator: make an adapter available by its ``name`` (for plugins and tests)."""
    ADAPTERS[cls.name] = cls
    return cls


def adapter_class(spec: str) -> type[Adapter]:
    """The adapter class for a built-in name or a ``FILE.py[:Class]`` spec."""
    if spec in ADAPTERS:
        return ADAPTERS[spec]
    path_text, _, class_name = spec.partition(":")
    if not path_text.endswith(".py"):
        known = ", ".join(sorted(ADAPTERS))
        raise AdapterError(f"unknown protocol {spec!r}; built in: {known}, or a FILE.py")
    path = Path(path_text)
    if not path.is_file():
        raise AdapterError(f"protocol file {path} does not exist")
    module_name = f"rtbench_user_adapter_{path.stem}"
    module_spec = importlib.util.spec_from_file_location(module_name, path)
    if module_spec is None or module_spec.loader is None:
        raise AdapterError(f"cannot load protocol file {path}")
    module = importlib.util.module_from_spec(module_spec)
    sys.modules[module_name] = module
    try:
        module_spec.loader.exec_module(module)
    except Exception as exc:
        raise AdapterError(f"protocol file {path} failed to load: {exc}") from None
    found = [
        obj
        for obj in vars(module).values()
        if inspect.isclass(obj)
        and issubclass(obj, Adapter)
        and obj is not Adapter
        and obj.__module__ == module_name
    ]
    if class_name:
        found = [cls for cls in found if cls.__name__ == class_name]
    if len(found) != 1:
        what = f"an Adapter subclass named {class_name}" if class_name else "one Adapter subclass"
        raise AdapterError(f"protocol file {path} must define {what} (found {len(found)})")
    return found[0]


def make_adapter(spec: str, options: dict | None = None) -> Adapter:
    """A configured adapter; bad ``options`` raise AdapterError with one line."""
    return adapter_class(spec)(options)


__all__ = [
    "ADAPTERS",
    "Ack",
    "Adapter",
    "AdapterError",
    "Delivery",
    "EchoAdapter",
    "Event",
    "Feature",
    "GenericAdapter",
    "GraphQLLegacyAdapter",
    "GraphQLWSAdapter",
    "MqttAdapter",
    "NatsAdapter",
    "Notice",
    "Ready",
    "ReferenceAdapter",
    "Rejected",
    "Reply",
    "SSEAdapter",
    "SocketIOAdapter",
    "StompAdapter",
    "adapter_class",
    "make_adapter",
    "marker",
    "parse_marker",
    "parse_marker_bytes",
    "register",
]
