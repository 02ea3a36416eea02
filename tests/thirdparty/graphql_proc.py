"""The Node GraphQL-over-WebSocket test server (``graphql_server/server.mjs``) as a subprocess.

It is the real thing: the graphql-ws library (graphql-transport-ws) or
subscriptions-transport-ws (``--legacy``) from npm on ws, with the graphql-ws README's
getting-started schema grown into a chat. Its npm packages are installed on demand
(``npm ci`` from the committed lock file; node_modules is never committed), and a
machine without Node.js skips these tests, or fails them under RTBENCH_REQUIRE_SERVICES=1.
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

from tests.conftest import need_service
from tests.thirdparty.servers import ServerProc

SERVER_DIR = Path(__file__).resolve().parent / "graphql_server"


def ensure_graphql_server() -> None:
    """Node.js there (else skip, or fail in CI) and the server's npm packages installed."""
    have_node = shutil.which("node") is not None and shutil.which("npm") is not None
    need_service("Node.js and npm", have_node, "Debian: apt-get install nodejs npm")
    if (SERVER_DIR / "node_modules" / "graphql-ws").is_dir():
        return
    done = subprocess.run(
        ["npm", "ci", "--no-audit", "--no-fund"],
        cwd=SERVER_DIR, capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    last = (done.stderr or done.stdout).strip().splitlines()[-1:] or ["no output"]
    need_service("the GraphQL test server's npm packages", done.returncode == 0, last[0])


class GraphQLServer(ServerProc):
    """``node server.mjs --port 0 FLAGS``: ``url``, ``stats()``, ``stop()`` by its PID."""

    def __init__(self, *flags: str) -> None:
        super().__init__("unused")
        self.argv = ["node", str(SERVER_DIR / "server.mjs"), "--port", "0", *flags]


def graphql_servers() -> Iterator[Callable[..., GraphQLServer]]:
    """A fixture body: a factory of servers, each stopped at the end of the test."""
    ensure_graphql_server()
    servers: list[GraphQLServer] = []

    def start(*flags: str) -> GraphQLServer:
        server = GraphQLServer(*flags)
        server.start()
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.close()
