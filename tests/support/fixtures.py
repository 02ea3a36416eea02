"""pytest fixtures around ``ServerProcess`` (import them in a conftest.py)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

from tests.support.server import ServerProcess


@pytest.fixture
def reference_server(tmp_path: Any) -> Iterator[ServerProcess]:
    """A reference server of its own for one test: port 0, temp SQLite store, insecure-dev."""
    server = ServerProcess(tmp_path / "reference-server").start()
    try:
        yield server
    finally:
        server.stop("kill" if server.alive() else "term")


@pytest.fixture
def start_server(tmp_path: Any) -> Iterator[Callable[..., ServerProcess]]:
    """Factory: ``start_server(config={...}, transport="websockets", store="memory")``."""
    servers: list[ServerProcess] = []

    def start(**options: Any) -> ServerProcess:
        server = ServerProcess(tmp_path / f"server-{len(servers)}", **options).start()
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.stop("kill")


@pytest.fixture(scope="module")
def shared_server(tmp_path_factory: Any) -> Iterator[ServerProcess]:
    """One server for a whole test module (tests use their own room names)."""
    server = ServerProcess(tmp_path_factory.mktemp("shared-server")).start()
    try:
        yield server
    finally:
        server.stop("kill")
