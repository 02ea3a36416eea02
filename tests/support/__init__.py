"""Shared test helpers: the reference server as a subprocess, and a protocol client.

Use them from any test package's conftest.py::

    from tests.support.fixtures import reference_server, start_server  # noqa: F401

``reference_server`` is a fresh server (picows, temp SQLite store, --insecure-dev)
per test; ``start_server(**options)`` starts more with other options (see
``ServerProcess``). ``Client.connect(server.url, "alice")`` says hello as alice.
"""

from tests.support.client import Client
from tests.support.server import ServerProcess, write_config

__all__ = ["Client", "ServerProcess", "write_config"]
