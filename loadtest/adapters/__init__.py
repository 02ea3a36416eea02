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

import importlib
import importlib.util
import inspect
import sys
from collections.abc import Iterator, MutableMapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

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

if TYPE_CHECKING:  # at run time each is imported when first asked for (``__getattr__``)
    from loadtest.adapters.actioncable import ActionCableAdapter
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

_BUILT_IN: tuple[tuple[str, str, str], ...] = (
    # (protocol name, module in this package, class); the order is the listing's
    ("reference", "reference", "ReferenceAdapter"),
    ("echo", "echo", "EchoAdapter"),
    ("socketio", "socketio", "SocketIOAdapter"),
    ("generic", "generic", "GenericAdapter"),
    ("graphql-ws", "graphql_ws", "GraphQLWSAdapter"),
    ("graphql-legacy", "graphql_legacy", "GraphQLLegacyAdapter"),
    ("nats", "nats", "NatsAdapter"),
    ("mqtt", "mqtt", "MqttAdapter"),
    ("stomp", "stomp", "StompAdapter"),
    ("phoenix", "phoenix", "PhoenixAdapter"),
    ("centrifugo", "centrifugo", "CentrifugoAdapter"),
    ("actioncable", "actioncable", "ActionCableAdapter"),
    ("pusher", "pusher", "PusherAdapter"),
    ("sse", "sse", "SSEAdapter"),
)
_MODULE_OF_CLASS = {cls: module for _, module, cls in _BUILT_IN}


def _load(module: str, cls: str) -> type[Adapter]:
    found: type[Adapter] = getattr(importlib.import_module(f"{__name__}.{module}"), cls)
    return found


class AdapterRegistry(MutableMapping[str, type[Adapter]]):
    """Adapter classes by protocol name. A built-in adapter's module is imported the
    first time its name is asked for, not when the package is: every command imports
    the scenario model, and with it this package, while a run uses one protocol
    (importing all fourteen made ``rtbench --help`` take 0.19 s instead of 0.13 s).
    Listing the names imports nothing."""

    def __init__(self, built_in: tuple[tuple[str, str, str], ...]) -> None:
        self._entries: dict[str, type[Adapter] | tuple[str, str]] = {
            name: (module, cls) for name, module, cls in built_in
        }

    def __getitem__(self, name: str) -> type[Adapter]:
        entry = self._entries[name]
        if isinstance(entry, tuple):
            entry = self._entries[name] = _load(*entry)
        return entry

    def __setitem__(self, name: str, cls: type[Adapter]) -> None:
        self._entries[name] = cls

    def __delitem__(self, name: str) -> None:
        del self._entries[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries)

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, name: object) -> bool:
        return name in self._entries


ADAPTERS: AdapterRegistry = AdapterRegistry(_BUILT_IN)


def __getattr__(name: str) -> Any:
    """``from loadtest.adapters import ReferenceAdapter``: that adapter's module only."""
    module = _MODULE_OF_CLASS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return _load(module, name)


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
    "ActionCableAdapter",
    "Adapter",
    "AdapterError",
    "AdapterRegistry",
    "CentrifugoAdapter",
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
    "PhoenixAdapter",
    "PusherAdapter",
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
